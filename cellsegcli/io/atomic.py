"""Shared machinery of the output writers: temporary names, atomic renames, one-line I/O errors."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from ..errors import OutputExistsError, WriteError


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


STALE_AFTER_S = 3600   # a partial output untouched this long, of a process that is gone, is removed


def temp_path_for(path: Path) -> Path:
    """The hidden temporary name under which ``path`` is built: ``.NAME.partial-<pid>``."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (EPERM)
        return True
    return True


def remove_stale_partials(path: Path, *, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove ``.NAME.partial-<pid>`` siblings of ``path`` left by killed runs: their process is not
    running on this machine and they were not modified for ``older_than_s`` seconds (a run on another
    machine writing to a shared folder keeps its partial fresh). Returns what was removed."""
    import time

    removed = []
    prefix = f".{path.name}.partial-"
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for sibling in siblings:
        pid = sibling.name[len(prefix):]
        if not sibling.name.startswith(prefix) or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            age = time.time() - sibling.lstat().st_mtime
        except OSError:
            continue
        if age > older_than_s and not pid_alive(int(pid)):
            remove_path(sibling)
            removed.append(sibling)
    return removed


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
            raise WriteError(os_error_message(self.path, exc)) from exc

    def _publish(self, temp: Path, *, overwrite: bool) -> None:
        """Rename ``temp`` to ``self.path``; an output that appeared there meanwhile aborts the writer."""
        try:
            replace_path(temp, self.path, overwrite=overwrite)
        except OutputExistsError:
            self.abort()
            raise

    def __enter__(self):
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()
