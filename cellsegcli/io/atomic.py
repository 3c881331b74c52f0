"""Shared machinery of the output writers: temporary names, atomic renames, one-line I/O errors."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from ..errors import CellsegError, OutputExistsError


def os_error_message(path: Path, exc: OSError) -> str:
    """One line for the user: which output failed and what to do about it."""
    if exc.errno == errno.ENOSPC:
        return f"{path}: no space left on the device; free some space or choose another output folder"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: cannot write to {path.parent} (permission denied); choose a writable output folder"
    return f"{path}: cannot write ({exc.strerror or exc}); check the output folder"


def remove_path(path: Path) -> None:
    """Remove a file, link or folder tree if it exists; a missing path (or parent) is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        pass


def replace_path(src: Path, dst: Path, *, overwrite: bool) -> None:
    """Rename ``src`` to ``dst``; an existing ``dst`` is removed only once ``src`` is in place."""
    backup = None
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{dst} exists; pass --overwrite to replace it")
        backup = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        remove_path(backup)
        os.replace(dst, backup)
    try:
        os.replace(src, dst)
    except OSError:
        if backup is not None:
            os.replace(backup, dst)
        raise
    if backup is not None:
        remove_path(backup)


class AtomicOutput:
    """Mixin for writers that build ``self.path`` under a temporary name: subclasses set ``path`` and
    ``_state`` ("open" -> "committed" | "aborted") and implement ``abort``; leaving a ``with`` block
    without ``commit`` aborts."""

    path: Path
    _state: str

    def abort(self) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _check_open(self, action: str) -> None:
        if self._state != "open":
            raise RuntimeError(f"{self.path}: {action} after the writer was {self._state}")

    @contextmanager
    def _on_os_error(self) -> Iterator[None]:
        """Turn an OSError (disk full, no permission) into a one-line CellsegError; remove the temp."""
        try:
            yield
        except OSError as exc:
            self.abort()
            raise CellsegError(os_error_message(self.path, exc)) from exc

    def __enter__(self):
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()
