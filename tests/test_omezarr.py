"""OmeZarrWriter: round trips, the exact NGFF 0.5 metadata, ome-zarr-py reading, atomicity, errors."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from cellsegcli.errors import CellsegError, OutputExistsError
from cellsegcli.io.omezarr import OmeZarrWriter

T, Y, X = 3, 12, 10
DISK_FULL = "no space left on the device; free some space or choose another output folder"


def frames(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, image and probabilities of frame ``t``, all different per frame."""
    labels = np.zeros((Y, X), np.uint32)
    labels[2:5, 1 + t : 4 + t] = 1
    labels[7:10, 5:8] = 2 + t
    image = (np.arange(Y * X, dtype=np.uint16).reshape(Y, X) * (t + 1)).astype(np.uint16)
    probs = np.linspace(-0.5, 1.5, Y * X).reshape(Y, X) + t / 100
    return labels, image, probs


def write(path, *, order=range(T), image=True, probabilities=False, **kwargs) -> OmeZarrWriter:
    """A committed store of the ``frames`` written in ``order``."""
    with OmeZarrWriter(
        path, n_frames=T, shape=(Y, X), image_dtype=np.uint16 if image else None,
        save_probabilities=probabilities, **kwargs,
    ) as writer:
        for t in order:
            labels, img, probs = frames(t)
            writer.write_frame(
                t, labels, image=img if image else None, probabilities=probs if probabilities else None
            )
        writer.commit()
    return writer


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_round_trip_keeps_frames_and_dtypes(tmp_path):
    path = tmp_path / "out.zarr"
    write(path, order=[2, 0, 1], probabilities=True)
    root = zarr.open_group(path, mode="r")
    labels, image, probs = root["labels/cells/0"], root["0"], root["probabilities/0"]
    assert (labels.dtype, image.dtype, probs.dtype) == (np.uint32, np.uint16, np.uint8)
    for array in (labels, image, probs):
        assert array.shape == (T, Y, X)
        assert array.chunks == (1, Y, X)
        assert array.metadata.dimension_names == ("t", "y", "x")
        assert array.metadata.fill_value == 0
        codecs = [codec.to_dict()["name"] for codec in array.metadata.codecs]
        assert codecs == ["bytes", "zstd"]
    for t in range(T):
        want_labels, want_image, want_probs = frames(t)
        np.testing.assert_array_equal(labels[t], want_labels)
        np.testing.assert_array_equal(image[t], want_image)
        np.testing.assert_array_equal(probs[t], np.rint(np.clip(want_probs, 0, 1) * 255).astype(np.uint8))
    assert probs[0, 0, 0] == 0 and probs[0, -1, -1] == 255
    assert leftovers(tmp_path) == ["out.zarr"]


def test_probabilities_are_rounded_to_255_steps(tmp_path):
    path = tmp_path / "p.zarr"
    with OmeZarrWriter(path, n_frames=1, shape=(1, 4), image_dtype=None, save_probabilities=True) as writer:
        writer.write_frame(0, np.zeros((1, 4), np.uint8), probabilities=np.array([[0.0, 0.2, 0.5, 1.0]]))
        writer.commit()
    np.testing.assert_array_equal(zarr.open_array(path / "probabilities" / "0")[0], [[0, 51, 128, 255]])


def test_labels_of_any_integer_dtype_become_uint32(tmp_path):
    path = tmp_path / "l.zarr"
    big = np.array([[0, 2**32 - 1]], np.int64)
    with OmeZarrWriter(path, n_frames=1, shape=(1, 2), image_dtype=None) as writer:
        writer.write_frame(0, big)
        writer.commit()
    stored = zarr.open_array(path / "labels" / "cells" / "0")
    assert stored.dtype == np.uint32
    np.testing.assert_array_equal(stored[0], [[0, 2**32 - 1]])


def test_full_size_frames_are_one_chunk_each(tmp_path):
    with OmeZarrWriter(tmp_path / "big.zarr", n_frames=2, shape=(1912, 2568), image_dtype=None) as writer:
        labels = np.zeros((1912, 2568), np.uint32)
        labels[1900:, 2500:] = 7
        writer.write_frame(1, labels)
        writer.write_frame(0, labels[::-1, ::-1])
        writer.commit()
    big = zarr.open_array(tmp_path / "big.zarr" / "labels" / "cells" / "0")
    assert big.chunks == (1, 1912, 2568)
    np.testing.assert_array_equal(big[1], labels)
    np.testing.assert_array_equal(big[0], labels[::-1, ::-1])


def test_a_frame_without_cells_is_stored_too(tmp_path):
    """Every written frame has its chunk file, a frame of zeros too (from the writer and from a FrameStore)."""
    with OmeZarrWriter(tmp_path / "e.zarr", n_frames=3, shape=(Y, X), image_dtype=np.uint16) as writer:
        writer.write_frame(0, np.zeros((Y, X), np.uint32), image=np.zeros((Y, X), np.uint16))
        writer.frame_store().write_frame(2, np.zeros((Y, X), np.uint32), image=np.zeros((Y, X), np.uint16))
        writer.mark_written(2)
        writer.write_frame(1, frames(1)[0], image=frames(1)[1])
        writer.commit()
    for array in ("0", "labels/cells/0"):
        chunks = sorted(p.name for p in (tmp_path / "e.zarr" / array / "c").iterdir())
        assert chunks == ["0", "1", "2"], array
    labels = zarr.open_array(tmp_path / "e.zarr" / "labels" / "cells" / "0")
    assert not labels[0].any() and not labels[2].any()
    np.testing.assert_array_equal(labels[1], frames(1)[0])


def test_many_frames_in_reverse_order(tmp_path):
    n = 100
    with OmeZarrWriter(tmp_path / "many.zarr", n_frames=n, shape=(4, 4), image_dtype=np.uint8) as writer:
        for t in reversed(range(n)):
            writer.write_frame(t, np.full((4, 4), t, np.uint32), image=np.full((4, 4), 2 * t, np.uint8))
        writer.commit()
    many = zarr.open_group(tmp_path / "many.zarr", mode="r")
    np.testing.assert_array_equal(many["labels/cells/0"][:, 0, 0], np.arange(n))
    np.testing.assert_array_equal(many["0"][:, 3, 3], 2 * np.arange(n))


def axes(unit: bool) -> list[dict]:
    space = {"type": "space", "unit": "micrometer"} if unit else {"type": "space"}
    return [{"name": "t", "type": "time"}, {"name": "y", **space}, {"name": "x", **space}]


def multiscales(name: str, scale: float, unit: bool) -> list[dict]:
    transforms = [
        {"type": "scale", "scale": [1.0, scale, scale]},
        {"type": "translation", "translation": [0.0, 0.0, 0.0]},
    ]
    datasets = [{"path": "0", "coordinateTransformations": transforms}]
    return [{"axes": axes(unit), "datasets": datasets, "name": name}]


def test_metadata_golden(tmp_path):
    path = tmp_path / "out.zarr"
    provenance = {"version": "0.1.0", "model": "unet-phase", "model_sha256": "ab" * 32, "tta": "d4"}
    with OmeZarrWriter(
        path, n_frames=1, shape=(Y, X), image_dtype=np.uint16, pixel_size_um=0.65,
        save_probabilities=True, attributes=provenance,
    ) as writer:
        labels, image, probs = frames(0)
        writer.write_frame(0, labels, image=image, probabilities=probs)
        writer.commit({"seconds": 12.5})

    def attrs(sub: str) -> dict:
        return zarr.open_group(path / sub, mode="r").attrs.asdict()

    assert attrs("") == {
        "ome": {"version": "0.5", "multiscales": multiscales("image", 0.65, unit=True)},
        "cellseg": {**provenance, "seconds": 12.5, "complete": True},
    }
    assert attrs("labels") == {"ome": {"version": "0.5", "labels": ["cells"]}}
    assert attrs("labels/cells") == {
        "ome": {
            "version": "0.5",
            "multiscales": multiscales("cells", 0.65, unit=True),
            "image-label": {"version": "0.5", "source": {"image": "../../"}},
        }
    }
    assert attrs("probabilities") == {
        "ome": {"version": "0.5", "multiscales": multiscales("probabilities", 0.65, unit=True)},
        "cellseg": {"content": "cell (foreground) probability", "value_scale": 1 / 255},
    }


def test_unknown_pixel_size_gives_scale_one_without_unit(tmp_path):
    write(tmp_path / "out.zarr")
    cells = zarr.open_group(tmp_path / "out.zarr" / "labels" / "cells", mode="r")
    assert cells.attrs["ome"]["multiscales"] == multiscales("cells", 1.0, unit=False)


def test_partial_store_is_marked_incomplete(tmp_path):
    path = tmp_path / "out.zarr"
    with OmeZarrWriter(path, n_frames=1, shape=(2, 2), image_dtype=None, attributes={"tile": 512}) as writer:
        assert writer.temp_path == tmp_path / f".out.zarr.partial-{os.getpid()}"
        partial = zarr.open_group(writer.temp_path, mode="r")
        assert partial.attrs["cellseg"] == {"tile": 512, "complete": False}
        assert not path.exists()


def test_ome_zarr_reader_finds_image_and_cells_label(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    path = tmp_path / "out.zarr"
    write(path, pixel_size_um=0.5)
    nodes = list(Reader(parse_url(path))())
    image = [n for n in nodes if n.load(Multiscales) and not n.load(Label)]
    cells = [n for n in nodes if n.load(Label)]
    assert len(image) == 1 and len(cells) == 1
    assert image[0].metadata["name"] == "image"
    assert cells[0].metadata["name"] == "cells"
    assert cells[0].zarr.path == str((path / "labels" / "cells").resolve())
    np.testing.assert_array_equal(np.asarray(image[0].data[0]), np.stack([frames(t)[1] for t in range(T)]))
    np.testing.assert_array_equal(np.asarray(cells[0].data[0]), np.stack([frames(t)[0] for t in range(T)]))


def test_no_image_layout_is_readable_from_the_labels_group(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    path = tmp_path / "out.zarr"
    write(path, image=False)
    root = zarr.open_group(path, mode="r")
    assert sorted(root.keys()) == ["labels"]
    assert root.attrs["ome"] == {"version": "0.5"}
    assert root["labels/cells"].attrs["ome"]["image-label"] == {"version": "0.5"}
    for entry in (path / "labels", path / "labels" / "cells"):
        cells = [n for n in Reader(parse_url(entry))() if n.load(Label)]
        assert len(cells) == 1
        want = np.stack([frames(t)[0] for t in range(T)])
        np.testing.assert_array_equal(np.asarray(cells[0].data[0]), want)


class Interrupted(Exception):
    pass


def test_exception_inside_with_leaves_nothing(tmp_path):
    path = tmp_path / "out.zarr"
    with pytest.raises(Interrupted):
        with OmeZarrWriter(path, n_frames=T, shape=(Y, X), image_dtype=np.uint16) as writer:
            writer.write_frame(0, frames(0)[0], image=frames(0)[1])
            assert writer.temp_path.is_dir()
            raise Interrupted
    assert leftovers(tmp_path) == []


def test_leaving_with_without_commit_removes_the_temp(tmp_path):
    with OmeZarrWriter(tmp_path / "out.zarr", n_frames=1, shape=(2, 2), image_dtype=None) as writer:
        writer.write_frame(0, np.ones((2, 2), np.uint32))
    assert leftovers(tmp_path) == []


def test_commit_with_a_missing_frame_is_a_bug(tmp_path):
    with OmeZarrWriter(tmp_path / "out.zarr", n_frames=3, shape=(2, 2), image_dtype=None) as writer:
        writer.write_frame(0, np.ones((2, 2), np.uint32))
        writer.write_frame(2, np.ones((2, 2), np.uint32))
        with pytest.raises(RuntimeError, match=r"1 frame\(s\) never written, first 1"):
            writer.commit()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"t": 1}, RuntimeError, "frame 1 written twice"),
        ({"t": 5}, IndexError, "frame 5 out of range for 3 frames"),
        ({"labels": np.ones((2, 3), np.uint8)}, ValueError, r"labels frame has shape \(2, 3\), expected \(2, 2\)"),
        ({"labels": np.ones((2, 2), np.float32)}, TypeError, "labels must be an integer array, got float32"),
        ({"labels": -np.ones((2, 2), np.int32)}, ValueError, r"labels must lie in \[0, 2\*\*32 - 1\]"),
        ({"image": None}, ValueError, "pass image= exactly when"),
        ({"image": np.ones((2, 2), np.float32)}, TypeError, "Cannot cast"),
        ({"probabilities": np.ones((2, 2))}, ValueError, "pass probabilities= exactly when"),
    ],
)
def test_write_frame_refuses_bad_input(tmp_path, kwargs, error, match):
    with OmeZarrWriter(tmp_path / "out.zarr", n_frames=3, shape=(2, 2), image_dtype=np.uint16) as writer:
        writer.write_frame(1, np.ones((2, 2), np.uint32), image=np.ones((2, 2), np.uint16))
        call = {"t": 0, "labels": np.ones((2, 2), np.uint32), "image": np.ones((2, 2), np.uint16), **kwargs}
        with pytest.raises(error, match=match):
            writer.write_frame(call.pop("t"), call.pop("labels"), **call)


def test_existing_output_is_refused_without_overwrite(tmp_path):
    path = tmp_path / "out.zarr"
    path.mkdir()
    (path / "old").write_text("old")
    with pytest.raises(OutputExistsError) as info:
        OmeZarrWriter(path, n_frames=1, shape=(2, 2), image_dtype=None)
    assert str(info.value) == f"{path} exists; pass --overwrite to replace it"
    assert leftovers(tmp_path) == ["out.zarr"]
    assert (path / "old").read_text() == "old"


def test_overwrite_replaces_the_old_output_only_at_commit(tmp_path):
    path = tmp_path / "out.zarr"
    path.mkdir()
    (path / "old").write_text("old")
    with OmeZarrWriter(path, n_frames=T, shape=(Y, X), image_dtype=None, overwrite=True) as writer:
        for t in range(T):
            writer.write_frame(t, frames(t)[0])
        assert (path / "old").read_text() == "old"
        writer.commit()
    assert not (path / "old").exists()
    np.testing.assert_array_equal(zarr.open_array(path / "labels" / "cells" / "0")[2], frames(2)[0])
    assert leftovers(tmp_path) == ["out.zarr"]


def test_interrupted_overwrite_keeps_the_old_output(tmp_path):
    path = tmp_path / "out.zarr"
    path.mkdir()
    (path / "old").write_text("old")
    with pytest.raises(Interrupted):
        with OmeZarrWriter(path, n_frames=1, shape=(2, 2), image_dtype=None, overwrite=True):
            raise Interrupted
    assert (path / "old").read_text() == "old"
    assert leftovers(tmp_path) == ["out.zarr"]


def test_missing_parent_folders_are_created(tmp_path):
    path = tmp_path / "a" / "b" / "out.zarr"
    write(path, image=False)
    assert zarr.open_group(path, mode="r").attrs["cellseg"] == {"complete": True}


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write into; skips where chmod does not stop it (root)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        (folder / "probe").touch()
    except PermissionError:
        yield folder
    else:
        pytest.skip(f"uid {os.geteuid()} can write into read-only folders (root with CAP_DAC_OVERRIDE)")
    finally:
        folder.chmod(0o700)


def test_unwritable_folder_is_a_user_error(read_only_folder):
    path = read_only_folder / "out.zarr"
    with pytest.raises(CellsegError) as info:
        OmeZarrWriter(path, n_frames=1, shape=(2, 2), image_dtype=None)
    assert str(info.value) == (
        f"{path}: cannot write to {read_only_folder} (permission denied); choose a writable output folder"
    )
    assert leftovers(read_only_folder) == []


def test_parent_that_is_a_file_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "out.zarr"
    with pytest.raises(CellsegError, match=f"^{path}: cannot write"):
        OmeZarrWriter(path, n_frames=1, shape=(2, 2), image_dtype=None)
    assert leftovers(tmp_path) == ["file"]


def test_full_disk_is_a_user_error_and_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "out.zarr"
    writer = OmeZarrWriter(path, n_frames=2, shape=(Y, X), image_dtype=np.uint16)
    writer.write_frame(0, frames(0)[0], image=frames(0)[1])

    async def full(self, key, value):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(LocalStore, "set", full)
    with pytest.raises(CellsegError) as info:
        writer.write_frame(1, frames(1)[0], image=frames(1)[1])
    assert str(info.value) == f"{path}: {DISK_FULL}"
    assert leftovers(tmp_path) == []


def test_output_created_meanwhile_is_not_replaced(tmp_path):
    path = tmp_path / "out.zarr"
    with OmeZarrWriter(path, n_frames=1, shape=(2, 2), image_dtype=None) as writer:
        writer.write_frame(0, np.ones((2, 2), np.uint32))
        path.mkdir()
        with pytest.raises(OutputExistsError, match="pass --overwrite to replace it"):
            writer.commit()
    assert leftovers(tmp_path) == ["out.zarr"]
    assert leftovers(path) == []


def test_attributes_are_stored_as_plain_json(tmp_path):
    import datetime
    from pathlib import Path

    attributes = {"threshold": np.float32(0.5), "tile": np.int64(512), "date": datetime.date(2025, 1, 2)}
    path = tmp_path / "a.zarr"
    with OmeZarrWriter(path, n_frames=1, shape=(2, 2), image_dtype=None, attributes=attributes) as writer:
        writer.write_frame(0, np.zeros((2, 2), np.uint32))
        writer.commit({"input": Path("/data/stack.tif"), "overlap": (32, 32), "seconds": np.float64(1.25)})
    assert zarr.open_group(path, mode="r").attrs["cellseg"] == {
        "threshold": 0.5, "tile": 512, "date": "2025-01-02",
        "input": "/data/stack.tif", "overlap": [32, 32], "seconds": 1.25, "complete": True,
    }


def test_pixel_size_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="pixel_size_um must be positive or None, got 0"):
        OmeZarrWriter(tmp_path / "a.zarr", n_frames=1, shape=(2, 2), image_dtype=None, pixel_size_um=0)
    assert leftovers(tmp_path) == []


def test_frames_written_through_a_pickled_frame_store_match_direct_writes(tmp_path):
    import pickle

    direct = tmp_path / "direct.zarr"
    write(direct, probabilities=True)
    remote = tmp_path / "remote.zarr"
    with OmeZarrWriter(remote, n_frames=T, shape=(Y, X), image_dtype=np.uint16, save_probabilities=True) as w:
        store = pickle.loads(pickle.dumps(w.frame_store()))  # as a Dask worker receives it
        for t in reversed(range(T)):
            labels, image, probs = frames(t)
            store.write_frame(t, labels, image=image, probabilities=probs)
        with pytest.raises(RuntimeError, match="never written"):
            w.commit()  # the writer only knows what it was told
        for t in range(T):
            w.mark_written(t)
        with pytest.raises(RuntimeError, match="twice"):
            w.mark_written(0)
        with pytest.raises(ValueError, match="probabilities"):
            store.write_frame(0, frames(0)[0], image=frames(0)[1])
        w.commit()
    a, b = zarr.open_group(direct, mode="r"), zarr.open_group(remote, mode="r")
    for key in ("0", "labels/cells/0", "probabilities/0"):
        np.testing.assert_array_equal(a[key][:], b[key][:])


def _dead_pid() -> int:
    pid = 2**22 - 7
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            pass
        pid -= 1


def test_stale_partials_of_killed_runs_are_removed_fresh_or_live_ones_kept(tmp_path):
    from cellsegcli.io.tables import TableWriter

    old = 1e9  # 2001: untouched for years
    stale = tmp_path / f".out.zarr.partial-{_dead_pid()}"
    fresh = tmp_path / f".out.zarr.partial-{_dead_pid() - 1}"   # dead, but touched just now
    live = tmp_path / f".out.zarr.partial-{os.getppid()}"       # old, but its process runs
    stale_table = tmp_path / f".out.cells.csv.partial-{_dead_pid()}"
    other = tmp_path / ".unrelated.partial-12"
    for folder in (stale, fresh, live):
        (folder / "labels").mkdir(parents=True)
    stale_table.write_text("frame\n")
    other.write_text("")
    for p in (stale, live, stale_table, other):
        os.utime(p, (old, old))
    write(tmp_path / "out.zarr")
    with TableWriter(tmp_path / "out.cells.csv") as table:
        table.append({"frame": np.zeros(1, int)})
        table.commit()
    assert not stale.exists() and not stale_table.exists()
    assert fresh.exists() and live.exists() and other.exists()
    assert (tmp_path / "out.zarr").is_dir() and (tmp_path / "out.cells.csv").is_file()
