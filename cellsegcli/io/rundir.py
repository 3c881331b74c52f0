"""One result set, one writer: the hidden run folder in which ``cellseg segment`` builds its outputs.

A run builds everything under ``.NAME.zarr.cellseg-run/`` beside the result:

- ``lock.json``: owner host, PID and a token, rewritten every :data:`HEARTBEAT_S` seconds while the run
  lives. A second run on the same ``-o`` is refused at once while the heartbeat is fresh; a run folder
  whose heartbeat stopped :data:`STALE_S` seconds ago belongs to an interrupted run. Age is measured
  against a probe file written in the same folder just then, so clocks of different machines sharing the
  folder never enter.
- ``run.json``: what the run segments (input, model sha256, options); ``--resume`` continues only a run of
  the same.
- the store (``NAME.zarr``, frames written in place) and ``parts/tNNNNNN.npz``: one file per finished
  frame with its table rows, written after the frame's chunks: a frame is done when its part exists.
  The result tables are built from the parts, in frame order, at the end of every run, so a resumed run
  writes the same bytes as an uninterrupted one.
- ``publish.json``: the renames of the finished outputs into place, written before the first rename. A run
  that finds one completes it (every output in it was finished), so the outputs appear together or, after
  an interruption in the middle, on the next run.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import CellsegError
from .atomic import pid_alive, remove_path

HEARTBEAT_S = 10.0
STALE_S = 60.0

__all__ = ["RunFolder", "run_folder_for"]


def run_folder_for(zarr_path: Path) -> Path:
    """The hidden run folder of the result ``zarr_path``."""
    return zarr_path.with_name(f".{zarr_path.name}.cellseg-run")


class RunFolder:
    """The run folder of one ``cellseg segment`` result (see the module docstring).

    Parameters
    ----------
    zarr_path : Path
        The result's final ``NAME.zarr``.
    fingerprint : dict
        What this run segments (JSON values); a resumed run must have recorded the same.
    n_frames : int
        Frames of the stack.
    """

    def __init__(self, zarr_path: Path, fingerprint: dict, n_frames: int) -> None:
        self.zarr_path = Path(zarr_path)
        self.path = run_folder_for(self.zarr_path)
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.n_frames = int(n_frames)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # --- owning the folder ------------------------------------------------------------------------------

    def acquire(self, *, resume: bool, notify: Callable[[str], None] | None = None) -> list[int]:
        """Take the folder for this run; returns the frames already done (only with ``resume``).

        Raises a CellsegError when another run holds it, or when ``resume`` finds a run of something else.
        An interrupted run's folder without ``resume`` is discarded, with a notice.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(self.path)
        except FileExistsError:
            try:
                done = self._take_over(resume, notify)
            except BaseException:
                self.release(remove=False)   # give the lock back: the refusal leaves the folder as it was
                raise
        else:
            done = []
            if resume and notify is not None:
                notify(f"--resume: no interrupted run of {self.zarr_path.name} to continue; starting from frame 0")
            self._write_lock()
            _write_json(self.path / "run.json", self.fingerprint)
        (self.path / "parts").mkdir(exist_ok=True)
        self._beat = threading.Thread(target=self._heartbeat, name="cellseg-heartbeat", daemon=True)
        self._beat.start()
        return done

    def _take_over(self, resume: bool, notify) -> list[int]:
        lock = _read_json(self.path / "lock.json")
        age = self._heartbeat_age()
        gone = lock is not None and lock.get("host") == socket.gethostname() and not (isinstance(lock.get("pid"), int) and pid_alive(lock["pid"]))
        if age is not None and age < STALE_S and not gone:
            owner = f"host {lock.get('host')}, pid {lock.get('pid')}" if lock else "starting up"
            raise CellsegError(f"{self.zarr_path}: another cellseg run ({owner}) is writing this result "
                               f"(heartbeat {age:.0f} s ago); wait for it to finish or choose another -o")
        self._write_lock()   # ours now: a run starting after this sees a fresh heartbeat
        if (self.path / "publish.json").is_file():
            self.complete_publish()
            remove_path(self.path)
            raise CellsegError(f"{self.zarr_path}: an interrupted run had finished and was publishing its "
                               f"outputs; they are now in place (rerun with --overwrite to segment again)")
        recorded = _read_json(self.path / "run.json")
        done = self.done_frames()
        if not resume:
            if notify is not None and done:
                notify(f"discarding an interrupted run's {len(done)} of {self.n_frames} finished frames "
                       f"(pass --resume to continue it instead)")
            self._clear()
            return []
        if recorded != self.fingerprint:
            field = next((k for k in sorted(set(self.fingerprint) | set(recorded or {}))
                          if (recorded or {}).get(k) != self.fingerprint.get(k)), "run.json")
            raise CellsegError(f"{self.zarr_path}: --resume: the interrupted run differs in {field} "
                               f"({(recorded or {}).get(field)!r} there, {self.fingerprint.get(field)!r} now); "
                               f"rerun with its options, or without --resume to start over")
        if notify is not None:
            notify(f"--resume: {len(done)} of {self.n_frames} frames were finished; continuing")
        return done

    def _clear(self) -> None:
        for child in list(self.path.iterdir()):
            if child.name != "lock.json":
                remove_path(child)
        _write_json(self.path / "run.json", self.fingerprint)

    def _write_lock(self) -> None:
        _write_json(self.path / "lock.json", {"host": socket.gethostname(), "pid": os.getpid(),
                                              "token": self.token, "beat": time.time()})

    def _heartbeat_age(self) -> float | None:
        """Seconds since the lock was last written, by the folder's own clock (None: no lock)."""
        try:
            beat = (self.path / "lock.json").stat().st_mtime
        except OSError:
            return None
        probe = self.path.parent / f".{self.zarr_path.name}.probe-{self.token}"
        try:
            probe.touch()
            now = probe.stat().st_mtime
        finally:
            remove_path(probe)
        return max(now - beat, 0.0)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            lock = _read_json(self.path / "lock.json")
            if lock is None or lock.get("token") != self.token:
                return   # taken over (after this process was frozen for longer than STALE_S): stop beating
            try:
                self._write_lock()
            except OSError:
                pass

    def release(self, *, remove: bool) -> None:
        """Stop the heartbeat and give the lock up; with ``remove`` delete the folder (after a publish),
        else leave it for ``--resume``."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=HEARTBEAT_S + 5)
        if remove:
            remove_path(self.path)
        elif (_read_json(self.path / "lock.json") or {}).get("token") == self.token:
            remove_path(self.path / "lock.json")

    # --- frames -----------------------------------------------------------------------------------------

    @property
    def store_path(self) -> Path:
        return self.path / self.zarr_path.name

    def _part(self, t: int) -> Path:
        return self.path / "parts" / f"t{t:06d}.npz"

    def done_frames(self) -> list[int]:
        """Frames whose part was written, sorted."""
        try:
            names = os.listdir(self.path / "parts")
        except OSError:
            return []
        done = sorted(int(n[1:7]) for n in names if len(n) == 11 and n.startswith("t") and n.endswith(".npz")
                      and n[1:7].isdigit())
        return [t for t in done if t < self.n_frames]

    def write_part(self, t: int, cells: dict, row: dict, n_cells: int) -> None:
        """Record frame ``t`` as done, with its table rows (after its chunks were written)."""
        arrays = {f"cells.{k}": np.asarray(v) for k, v in cells.items()}
        arrays["row"] = np.array(json.dumps(row))
        arrays["n_cells"] = np.array(n_cells)
        final = self._part(t)
        temp = final.with_name(f".{final.name}.{self.token}")
        with open(temp, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temp, final)

    def read_part(self, t: int) -> tuple[dict, dict, int]:
        try:
            with np.load(self._part(t), allow_pickle=False) as data:
                cells = {k[6:]: data[k] for k in data.files if k.startswith("cells.")}
                return cells, json.loads(str(data["row"])), int(data["n_cells"])
        except (OSError, ValueError, KeyError) as exc:
            raise CellsegError(f"{self._part(t)}: unreadable ({exc}); rerun without --resume to start over") from None

    # --- publishing -------------------------------------------------------------------------------------

    def publish(self, moves: list[tuple[Path, Path]], *, overwrite: bool) -> None:
        """Rename the finished outputs ``(in the run folder, final path)`` into place, together."""
        from ..errors import OutputExistsError

        for _, final in moves:
            if (final.exists() or final.is_symlink()) and not overwrite:
                raise OutputExistsError(f"{final} exists; pass --overwrite to replace it")
        _write_json(self.path / "publish.json", [[str(a), str(b)] for a, b in moves])
        self.complete_publish()

    def complete_publish(self) -> None:
        """Carry out ``publish.json``: each output still in the run folder replaces its final path."""
        moves = _read_json(self.path / "publish.json") or []
        old = self.path / "old"
        old.mkdir(exist_ok=True)
        for src, dst in ((Path(a), Path(b)) for a, b in moves):
            if not src.exists():
                continue   # moved before an interruption
            if dst.exists() or dst.is_symlink():
                os.replace(dst, old / dst.name)
            os.replace(src, dst)
        remove_path(old)
        remove_path(self.path / "publish.json")


def _write_json(path: Path, value) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}")
    temp.write_text(json.dumps(value))
    os.replace(temp, path)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
