"""`cellseg segment --resume` and the run folder's lock: an interrupted run continues to the same bytes as
an uninterrupted one; a second writer is refused at once; an interrupted publish is completed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from cellsegcli import pipeline
from cellsegcli.cli import app
from cellsegcli.io.rundir import RunFolder, run_folder_for

runner = CliRunner()


def _stack(path: Path, frames: int = 6, shape=(64, 96)) -> Path:
    rng = np.random.default_rng(1)
    tifffile.imwrite(path, (rng.random((frames, *shape)) * 1000).astype(np.uint16), imagej=True,
                     metadata={"axes": "TYX"})
    return path


def _segment(*args: str):
    return runner.invoke(app, ["segment", "--model", "tiny", "--device", "cpu", "--tile", "64", *args])


def _result(folder: Path, name: str) -> tuple[np.ndarray, bytes, bytes]:
    labels = zarr.open_group(folder / f"{name}.zarr", mode="r")["labels/cells/0"][:]
    return labels, (folder / f"{name}.cells.csv").read_bytes(), (folder / f"{name}.frames.csv").read_bytes()


@pytest.mark.parametrize("track", [False, True])
def test_an_interrupted_run_resumes_to_the_same_bytes(env, tmp_path, monkeypatch, track):
    src = _stack(tmp_path / "movie.tif")
    extra = ["--track"] if track else []
    whole = tmp_path / "whole"
    assert _segment(str(src), "-o", str(whole), *extra).exit_code == 0

    calls = {"n": 0}
    real = pipeline.segment_frame

    def interrupted(*args, **kwargs):   # Ctrl-C while frame 3 is post-processed
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "segment_frame", interrupted)
    out = tmp_path / "resumed"
    first = _segment(str(src), "-o", str(out), *extra)
    assert first.exit_code == 130
    assert not (out / "movie.zarr").exists() and not (out / "movie.cells.csv").exists()
    run = run_folder_for(out / "movie.zarr")
    assert sorted(p.name for p in (run / "parts").iterdir()) == [f"t{t:06d}.npz" for t in range(3)]
    assert not (run / "lock.json").exists()   # given up: the next run need not wait for a heartbeat

    monkeypatch.setattr(pipeline, "segment_frame", real)
    second = _segment(str(src), "-o", str(out), "--resume", "--json", *extra)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["frames_resumed"] == 3
    for a, b in zip(_result(whole, "movie"), _result(out, "movie"), strict=True):
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
    if track:
        assert (whole / "movie.tracks.csv").read_bytes() == (out / "movie.tracks.csv").read_bytes()
        assert (whole / "movie.lineage.json").read_bytes() == (out / "movie.lineage.json").read_bytes()
    assert not run.exists()
    assert zarr.open_group(out / "movie.zarr", mode="r").attrs["cellseg"]["complete"] is True


def test_kill_9_then_resume(env, tmp_path):
    """A real SIGKILL part-way through, in a separate process; the rerun with --resume completes it."""
    src = _stack(tmp_path / "movie.tif", frames=40, shape=(128, 160))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cellsegcli", "segment", str(src), "-o", str(out), "--model", "tiny",
           "--device", "cpu", "--tile", "64", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    parts = run_folder_for(out / "movie.zarr") / "parts"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("t*.npz"))) >= 3:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed (a fast machine)")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "movie.zarr").exists()
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["frames_resumed"] >= 3 and summary["frames"] == 40
    labels = zarr.open_group(out / "movie.zarr", mode="r")["labels/cells/0"]
    assert labels.shape == (40, 128, 160)
    frames = (out / "movie.frames.csv").read_text().splitlines()
    assert len(frames) == 41 and [int(r.split(",")[0]) for r in frames[1:]] == list(range(40))


def test_resume_refuses_another_model_or_options(env, tmp_path, monkeypatch):
    src = _stack(tmp_path / "movie.tif")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "segment_frame", stop)
    assert _segment(str(src), "-o", str(tmp_path)).exit_code == 130
    monkeypatch.undo()
    monkeypatch.setenv("CELLSEG_WEIGHTS", str(env))
    result = _segment(str(src), "-o", str(tmp_path), "--resume", "--threshold", "0.7")
    assert result.exit_code == 1
    assert "--resume" in result.stderr and "threshold" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    # without --resume the leftovers are discarded, with a notice, and the run starts over
    fresh = _segment(str(src), "-o", str(tmp_path), "--threshold", "0.7")
    assert fresh.exit_code == 0
    assert not run_folder_for(tmp_path / "movie.zarr").exists()


def test_a_second_writer_is_refused_at_once(env, tmp_path):
    zarr_path = tmp_path / "movie.zarr"
    live = RunFolder(zarr_path, {"x": 1}, n_frames=3)
    live.acquire(resume=False)
    try:
        # another machine's live run: its heartbeat is fresh and its pid means nothing here
        lock = json.loads((live.path / "lock.json").read_text())
        (live.path / "lock.json").write_text(json.dumps({**lock, "host": "elsewhere"}))
        src = _stack(tmp_path / "movie.tif")
        result = _segment(str(src), "-o", str(tmp_path))
        assert result.exit_code == 1
        assert "another cellseg run" in result.stderr and "elsewhere" in result.stderr
        assert live.path.is_dir()   # never deleted under a live run
    finally:
        live.release(remove=True)


def test_a_stale_heartbeat_is_an_interrupted_run(tmp_path):
    zarr_path = tmp_path / "movie.zarr"
    dead = RunFolder(zarr_path, {"x": 1}, n_frames=3)
    dead.acquire(resume=False)
    dead.write_part(0, {"label": np.array([1, 2])}, {"frame": 0}, 2)
    dead._stop.set()   # its process froze / its machine died: the heartbeat stops, the lock stays
    lock = json.loads((dead.path / "lock.json").read_text())
    (dead.path / "lock.json").write_text(json.dumps({**lock, "host": "elsewhere"}))
    old = time.time() - 3600
    os.utime(dead.path / "lock.json", (old, old))
    again = RunFolder(zarr_path, {"x": 1}, n_frames=3)
    assert again.acquire(resume=True) == [0]
    cells, row, n = again.read_part(0)
    assert np.array_equal(cells["label"], [1, 2]) and row == {"frame": 0} and n == 2
    again.release(remove=True)


def test_an_interrupted_publish_is_completed(tmp_path):
    zarr_path = tmp_path / "movie.zarr"
    run = RunFolder(zarr_path, {"x": 1}, n_frames=1)
    run.acquire(resume=False)
    (run.path / "movie.cells.csv").write_text("new cells\n")
    (run.path / "movie.zarr").mkdir()
    (tmp_path / "movie.cells.csv").write_text("old cells\n")
    moves = [(run.path / "movie.cells.csv", tmp_path / "movie.cells.csv"), (run.path / "movie.zarr", zarr_path)]
    (run.path / "publish.json").write_text(json.dumps([[str(a), str(b)] for a, b in moves]))
    os.replace(run.path / "movie.cells.csv", tmp_path / "movie.cells.csv")   # the first rename, then a crash
    run._stop.set()
    (run.path / "lock.json").unlink()
    later = RunFolder(zarr_path, {"x": 1}, n_frames=1)
    with pytest.raises(Exception, match="publishing"):
        later.acquire(resume=True)
    assert (tmp_path / "movie.cells.csv").read_text() == "new cells\n" and zarr_path.is_dir()
    assert not (run.path / "publish.json").exists()
    later.release(remove=True)
