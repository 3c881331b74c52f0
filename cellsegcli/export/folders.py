"""Export folders: checked before anything is written, built under a hidden temporary name beside the
destination and renamed into place at the end, so an interrupted export never leaves a folder that
looks complete."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import CellsegError, OutputExistsError
from ..io.atomic import AtomicOutput, remove_path, remove_stale_partials, temp_path_for

EXPORT_FILE = re.compile(r"^(?:.+_labels\.tif|.+_t\d{4,}\.(?:tif|zip|png)|mask\d{3,}\.tif|res_track\.txt)$")
"""Names of the files ``cellseg export`` writes (TIFF, ROIs, outlines, CTC)."""


def check_destination(folder: Path, *, option: str, result: Path, overwrite: bool) -> None:
    """Refuse an export folder that cannot be (re)written, with one line naming ``option``.

    The folder must not be (or lie inside) the result; an existing one is refused without ``overwrite``,
    and even with it when it holds anything an export does not write, since ``--overwrite`` replaces the
    whole folder (``--tiff ~/Desktop --overwrite`` must not delete a desktop).
    """
    folder, result = Path(folder), Path(result)
    where, inside = folder.resolve(), result.resolve()
    if where == inside or inside in where.parents:
        raise CellsegError(f"{option} {folder} is inside the result {result}; export to a folder outside it")
    if not (folder.exists() or folder.is_symlink()):
        return
    if not overwrite:
        raise OutputExistsError(f"{option} {folder} exists; pass --overwrite to replace it, or choose another folder")
    if not folder.is_dir() or folder.is_symlink():
        raise CellsegError(f"{option} {folder} is not a folder; give a folder path (it is created)")
    for entry in folder.iterdir():
        if not (entry.is_file() and not entry.is_symlink() and EXPORT_FILE.match(entry.name)):
            raise CellsegError(f"{option} {folder} holds {entry.name}, which an export does not write; --overwrite "
                               f"replaces the whole folder, so choose a new folder or empty this one")


class StagedFolder(AtomicOutput):
    """A folder built at ``.NAME.partial-<pid>`` beside ``path`` and renamed to ``path`` by :meth:`commit`;
    leaving a ``with`` block without committing removes it."""

    def __init__(self, path: Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.temp_path = temp_path_for(self.path)
        self._state = "open"
        with self._on_os_error():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(self.path)
            remove_path(self.temp_path)
            self.temp_path.mkdir()

    def file(self, name: str) -> Path:
        """Where the file ``name`` is written while the folder is being built."""
        self._check_open("file")
        return self.temp_path / name

    def commit(self) -> Path:
        """Rename the finished folder to ``path`` (replacing an existing one only with ``overwrite``)."""
        self._check_open("commit")
        with self._on_os_error():
            self._publish(self.temp_path, overwrite=self.overwrite)
        self._state = "committed"
        return self.path

    def abort(self) -> None:
        """Remove the temporary folder; ``path`` is left as it was. Safe to call twice."""
        if self._state != "committed":
            self._state = "aborted"
            remove_path(self.temp_path)
