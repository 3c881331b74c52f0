"""Per-cell and per-frame tables as CSV or Parquet, written atomically.

A table arrives as dicts of equally long 1-D columns (what :mod:`cellsegcli.morphology` returns), one
dict per frame for the per-cell table. :class:`TableWriter` appends them to a hidden sibling
``.NAME.partial-<pid>`` and renames it to ``NAME`` in :meth:`TableWriter.commit`, so an interrupted
run never leaves a table that looks finished.

- CSV: comma separated, a header line, no index column, ``\\n`` line ends; floats in the shortest form
  that reads back to the same value (Python's ``repr``), so centroids of large frames keep every
  digit; NaN is an empty field; booleans ``True``/``False``.
- Parquet (needs pyarrow): the dtypes of the first non-empty append (uint32 stays uint32), later
  appends cast to them; appends are gathered into row groups of about 65,536 rows.

A zero-row append (a frame without cells) is fine, and a table with no rows still has its header
(its columns come from the first append: a writer committed without any append writes an empty file).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CellsegError, OutputExistsError
from .atomic import AtomicOutput, remove_stale_partials, temp_path_for

FORMATS = ("csv", "parquet")
ROW_GROUP_ROWS = 65_536


def table_path(zarr_path: Path, kind: str, format: str = "csv") -> Path:
    """The ``kind`` table of a result ``NAME.zarr``: ``NAME.<kind>.csv`` (or ``.parquet``)."""
    base = Path(zarr_path).with_suffix("")
    return base.with_name(f"{base.name}.{kind}.{'parquet' if format == 'parquet' else 'csv'}")


def write_table(
    columns: dict[str, np.ndarray | list], path: Path, *, format: str = "csv", overwrite: bool = False
) -> Path:
    """Write one table of ``columns`` to ``path`` atomically; see :class:`TableWriter`.

    Returns
    -------
    Path
        ``path``.
    """
    with TableWriter(path, format=format, overwrite=overwrite) as writer:
        writer.append(columns)
        return writer.commit()


class TableWriter(AtomicOutput):
    """Stream a table to CSV or Parquet one block of rows at a time.

    Parameters
    ----------
    path : Path
        The table file; its parent folder is created if missing.
    format : {"csv", "parquet"}
        File format; ``"parquet"`` needs pyarrow.
    overwrite : bool
        Replace an existing ``path`` at :meth:`commit`; without it an existing ``path`` raises
        :class:`~cellsegcli.errors.OutputExistsError` here.

    Examples
    --------
    >>> with TableWriter(out / "cells.csv") as table:
    ...     for t, labels in enumerate(stack_labels):
    ...         table.append({"frame": np.full(n, t), "label": ids, "area": areas})
    ...     table.commit()
    """

    def __init__(self, path: Path, *, format: str = "csv", overwrite: bool = False) -> None:
        self.path = Path(path)
        self.format = format
        self.overwrite = overwrite
        self.temp_path = temp_path_for(self.path)
        self._names: list[str] | None = None
        self._state = "open"  # -> "committed" | "aborted"
        self._file = None  # CSV: the open temp file
        self._parquet = None  # Parquet: pyarrow.parquet.ParquetWriter, opened at the first row
        self._empty_schema = None  # Parquet: schema of the first append, kept in case no rows follow
        self._pending: list = []  # Parquet: arrow tables waiting to form a row group
        if format not in FORMATS:
            raise CellsegError(f"unknown table format {format!r}; choose one of: {', '.join(FORMATS)}")
        if format == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise CellsegError(
                    f"{self.path}: writing Parquet needs pyarrow; run `pip install pyarrow` or choose CSV"
                ) from None
        if (self.path.exists() or self.path.is_symlink()) and not overwrite:
            raise OutputExistsError(f"{self.path} exists; pass --overwrite to replace it")
        with self._on_os_error():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(self.path)
            self._file = open(self.temp_path, "w", newline="", encoding="utf-8")  # noqa: SIM115
            if format == "parquet":  # the file only checked that the folder is writable
                self._file.close()
                self._file = None

    def append(self, columns: dict[str, np.ndarray | list]) -> None:
        """Append the rows in ``columns``: the same names in the same order every call.

        Parameters
        ----------
        columns : dict of str to 1-D array or list
            Equally long columns; zero rows is allowed.
        """
        self._check_open("append")
        names = list(columns)
        if self._names is None:
            self._names = names
        elif names != self._names:
            raise ValueError(f"columns {names} differ from the first append's {self._names}")
        lengths = {name: len(column) for name, column in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns have different lengths: {lengths}")
        with self._on_os_error():
            if self.format == "csv":
                import pandas as pd   # here, not at the top: 0.5 s to import, and table_path() is used at start-up

                header = self._file.tell() == 0
                pd.DataFrame(columns).to_csv(self._file, header=header, index=False, lineterminator="\n")
            else:
                self._append_parquet(columns)

    def _append_parquet(self, columns: dict[str, np.ndarray | list]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({name: pa.array(column) for name, column in columns.items()})
        if self._empty_schema is None:
            self._empty_schema = table.schema
        if table.num_rows == 0:
            return
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.temp_path, table.schema)
        elif table.schema != self._parquet.schema:
            table = table.cast(self._parquet.schema)
        self._pending.append(table)
        if sum(t.num_rows for t in self._pending) >= ROW_GROUP_ROWS:
            self._flush_parquet()

    def _flush_parquet(self) -> None:
        import pyarrow as pa

        if self._pending:
            self._parquet.write_table(pa.concat_tables(self._pending))
            self._pending = []

    def commit(self) -> Path:
        """Finish the file and rename it to ``path``; returns ``path``."""
        if self._state == "committed":
            return self.path
        self._check_open("commit")
        with self._on_os_error():
            if self.format == "csv":
                self._file.close()
            elif self._parquet is not None:
                self._flush_parquet()
                self._parquet.close()
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table((self._empty_schema or pa.schema([])).empty_table(), self.temp_path)
            if self.path.exists() and not self.overwrite:
                self.abort()
                raise OutputExistsError(f"{self.path} exists; pass --overwrite to replace it")
            os.replace(self.temp_path, self.path)
        self._state = "committed"
        return self.path

    def abort(self) -> None:
        """Remove the temporary file; ``path`` is left as it was. Safe to call twice."""
        if self._state == "committed":
            return
        self._state = "aborted"
        for handle in (self._file, self._parquet):
            try:
                if handle is not None:
                    handle.close()
            except Exception:  # noqa: BLE001 - closing a half-written file must not hide the real error
                pass
        self._file = self._parquet = None
        try:
            self.temp_path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass
