"""Tables: CSV and Parquet round trips through pandas, streaming appends, atomicity, errors."""

from __future__ import annotations

import errno
import os
import sys

import numpy as np
import pandas as pd
import pytest

from cellsegcli.errors import CellsegError, OutputExistsError
from cellsegcli.io.tables import ROW_GROUP_ROWS, TableWriter, write_table


def frame_columns(t: int, n: int) -> dict[str, np.ndarray | list]:
    """Per-cell columns of frame ``t`` with ``n`` cells (``n = 0`` is a frame without cells)."""
    return {
        "frame": np.full(n, t, np.int64),
        "label": np.arange(1, n + 1, dtype=np.uint32),
        "centroid_y": 2567.123456789 + np.arange(n) / 3,
        "area": np.arange(n, dtype=np.float32) + 0.5,
        "touches_border": np.arange(n) % 2 == 0,
        "name": [f"cell {t}-{i}" for i in range(n)],
    }


def read(path, format: str) -> pd.DataFrame:
    return pd.read_csv(path) if format == "csv" else pd.read_parquet(path)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("format", ["csv", "parquet"])
def test_streamed_table_round_trips_through_pandas(tmp_path, format):
    path = tmp_path / f"cells.{format}"
    with TableWriter(path, format=format) as writer:
        for t, n in enumerate([0, 3, 0, 2]):
            writer.append(frame_columns(t, n))
        assert writer.commit() == path
    got = read(path, format)
    want = pd.concat([pd.DataFrame(frame_columns(t, n)) for t, n in [(1, 3), (3, 2)]], ignore_index=True)
    assert list(got.columns) == ["frame", "label", "centroid_y", "area", "touches_border", "name"]
    assert got["frame"].tolist() == [1, 1, 1, 3, 3]
    np.testing.assert_array_equal(got["centroid_y"].to_numpy(), want["centroid_y"].to_numpy())  # every digit
    np.testing.assert_array_equal(got["area"].to_numpy(np.float32), want["area"].to_numpy())
    assert got["touches_border"].tolist() == [True, False, True, True, False]
    assert got["name"].tolist() == ["cell 1-0", "cell 1-1", "cell 1-2", "cell 3-0", "cell 3-1"]
    kinds = "".join(got[name].dtype.kind for name in ("frame", "label", "centroid_y", "area", "touches_border"))
    assert kinds == ("iiffb" if format == "csv" else "iuffb")  # CSV reads every integer back as int64
    assert leftovers(tmp_path) == [path.name]


def test_parquet_keeps_exact_dtypes(tmp_path):
    path = write_table(frame_columns(0, 2), tmp_path / "cells.parquet", format="parquet")
    dtypes = read(path, "parquet").dtypes
    assert [dtypes[c] for c in ("frame", "label", "centroid_y", "area", "touches_border")] == [
        np.int64, np.uint32, np.float64, np.float32, np.bool_,
    ]


def test_csv_text_is_plain_and_exact(tmp_path):
    columns = {"frame": [0, 1], "x": [0.1, 2567.1234567891], "ok": [True, False]}
    path = write_table(columns, tmp_path / "f.csv")
    assert path.read_text() == "frame,x,ok\n0,0.1,True\n1,2567.1234567891,False\n"


@pytest.mark.parametrize("format", ["csv", "parquet"])
def test_table_without_rows_keeps_its_header(tmp_path, format):
    path = tmp_path / f"cells.{format}"
    with TableWriter(path, format=format) as writer:
        writer.append(frame_columns(0, 0))
        writer.append(frame_columns(1, 0))
        writer.commit()
    got = read(path, format)
    assert len(got) == 0
    assert list(got.columns) == list(frame_columns(0, 0))


def test_parquet_gathers_appends_into_row_groups(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "cells.parquet"
    with TableWriter(path, format="parquet") as writer:
        for t in range(5):
            writer.append({"frame": np.full(ROW_GROUP_ROWS // 2, t), "v": np.zeros(ROW_GROUP_ROWS // 2)})
        writer.commit()
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_rows == 5 * ROW_GROUP_ROWS // 2
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [
        ROW_GROUP_ROWS, ROW_GROUP_ROWS, ROW_GROUP_ROWS // 2,
    ]


def test_parquet_later_appends_take_the_first_dtypes(tmp_path):
    path = tmp_path / "cells.parquet"
    with TableWriter(path, format="parquet") as writer:
        writer.append({"label": [], "area": []})  # no cells: types unknown yet
        writer.append({"label": np.array([1, 2], np.uint32), "area": np.array([3.0, 4.0])})
        writer.append({"label": [3], "area": [5]})  # python ints: cast to uint32 / float64
        writer.commit()
    got = read(path, "parquet")
    assert (got["label"].dtype, got["area"].dtype) == (np.uint32, np.float64)
    assert got["label"].tolist() == [1, 2, 3] and got["area"].tolist() == [3.0, 4.0, 5.0]


@pytest.mark.parametrize("format", ["csv", "parquet"])
def test_abort_and_exceptions_leave_nothing(tmp_path, format):
    with TableWriter(tmp_path / "a", format=format) as writer:
        writer.append(frame_columns(0, 2))
        writer.abort()
    with pytest.raises(KeyError), TableWriter(tmp_path / "b", format=format) as writer:
        writer.append(frame_columns(0, 2))
        assert writer.temp_path == tmp_path / f".b.partial-{os.getpid()}"
        assert writer.temp_path.exists()
        raise KeyError("interrupted")
    with TableWriter(tmp_path / "c", format=format) as writer:
        writer.append(frame_columns(0, 2))  # leaving without commit
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("format", ["csv", "parquet"])
def test_existing_file_refused_without_overwrite_and_replaced_with_it(tmp_path, format):
    path = tmp_path / f"cells.{format}"
    path.write_text("old")
    with pytest.raises(OutputExistsError) as info:
        TableWriter(path, format=format)
    assert str(info.value) == f"{path} exists; pass --overwrite to replace it"
    with pytest.raises(OutputExistsError):
        write_table(frame_columns(0, 1), path, format=format)
    assert path.read_text() == "old"

    with TableWriter(path, format=format, overwrite=True) as writer:
        writer.append(frame_columns(0, 1))
        assert path.read_text() == "old"  # replaced only at commit
        writer.commit()
    assert read(path, format)["name"].tolist() == ["cell 0-0"]
    assert leftovers(tmp_path) == [path.name]


def test_missing_parent_folders_are_created(tmp_path):
    path = write_table({"a": [1]}, tmp_path / "x" / "y" / "frames.csv")
    assert path.read_text() == "a\n1\n"


@pytest.mark.parametrize(
    ("second", "match"),
    [
        ({"b": [1], "a": [1]}, r"columns \['b', 'a'\] differ from the first append's \['a', 'b'\]"),
        ({"a": [1]}, r"columns \['a'\] differ"),
        ({"a": [1, 2], "b": [1]}, r"columns have different lengths: \{'a': 2, 'b': 1\}"),
    ],
)
def test_append_refuses_changed_or_ragged_columns(tmp_path, second, match):
    with TableWriter(tmp_path / "t.csv") as writer:
        writer.append({"a": [0], "b": [0]})
        with pytest.raises(ValueError, match=match):
            writer.append(second)


def test_unknown_format_names_the_valid_ones(tmp_path):
    with pytest.raises(CellsegError, match="unknown table format 'xlsx'; choose one of: csv, parquet"):
        TableWriter(tmp_path / "t.xlsx", format="xlsx")


def test_parquet_without_pyarrow_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` raise ImportError
    path = tmp_path / "t.parquet"
    with pytest.raises(CellsegError) as info:
        TableWriter(path, format="parquet")
    assert str(info.value) == f"{path}: writing Parquet needs pyarrow; run `pip install pyarrow` or choose CSV"
    assert leftovers(tmp_path) == []


def test_full_disk_is_a_user_error_and_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "cells.csv"
    writer = TableWriter(path)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    with pytest.raises(CellsegError) as info:
        writer.append(frame_columns(0, 2))
    assert str(info.value) == f"{path}: no space left on the device; free some space or choose another output folder"
    assert leftovers(tmp_path) == []


def test_parent_that_is_a_file_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "cells.csv"
    with pytest.raises(CellsegError, match=f"^{path}: cannot write"):
        TableWriter(path)
    assert leftovers(tmp_path) == ["file"]
