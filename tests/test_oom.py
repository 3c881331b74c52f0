"""Out-of-memory back-off, tested on the CPU by injecting the device's error: the batch is halved, then the
tile, then blending moves to the CPU; the output equals that of a run started with the smaller setting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
import zarr
from typer.testing import CliRunner

from cellsegcli import inference
from cellsegcli.cli import app
from cellsegcli.inference import InferenceOptions, OutOfMemory, TiledPredictor, is_out_of_memory

CPU = torch.device("cpu")


def _model():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 2, 5, padding=2)

    def model(x):
        with torch.no_grad():   # not equivariant (a ramp), not local (a per-tile mean)
            return conv(x) + torch.linspace(-1, 1, x.shape[-1]) + x.mean(dim=(1, 2, 3), keepdim=True)

    return model


def _failing(model, *, max_batch: int = 10**9, max_tile: int = 10**9, after: int = 0):
    """``model`` that raises CUDA's out-of-memory error for batches above ``max_batch`` or tiles above
    ``max_tile``, once ``after`` calls have succeeded."""
    calls = [0]

    def run(x):
        calls[0] += 1
        if calls[0] > after and (x.shape[0] > max_batch or x.shape[-1] > max_tile):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return model(x)

    return run


def _frames(n=4, shape=(300, 280)):
    rng = np.random.default_rng(0)
    return [rng.random(shape).astype(np.float32) for _ in range(n)]


def _run(model, notes=None, **opts):
    pred = TiledPredictor(model, CPU, InferenceOptions(**opts), notify=None if notes is None else notes.append)
    return pred, list(pred.predict_stream(_frames()))


def test_outputs_do_not_depend_on_how_jobs_fall_into_batches():
    ref = _run(_model(), tile=128, tta="d4", batch_size=1)[1]
    for batch in (3, 8, 13):
        for a, b in zip(_run(_model(), tile=128, tta="d4", batch_size=batch)[1], ref, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("after", [0, 7])   # at the first batch, or after the first frame was yielded
def test_batch_is_halved_until_it_fits_and_results_equal_a_run_started_there(after):
    notes: list[str] = []
    pred, got = _run(_failing(_model(), max_batch=2, after=after), notes, tile=128, tta="d4", batch_size=8)
    ref = _run(_model(), tile=128, tta="d4", batch_size=2)[1]
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)
    assert pred.options.batch_size == 2 and pred.backoffs == ["batch size 8 -> 4", "batch size 4 -> 2"]
    assert len(notes) == 2 and all(n.startswith("out of memory on cpu: batch size") for n in notes)


def test_then_the_tile_is_halved():
    pred, got = _run(_failing(_model(), max_batch=1, max_tile=128), tile=256, tta="flip", batch_size=2)
    ref = _run(_model(), tile=128, tta="flip", batch_size=1)[1]
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)
    assert pred.backoffs == ["batch size 2 -> 1", "tile 256 -> 128"]


def test_blending_already_on_the_cpu_is_not_a_step_left():
    """On a GPU the step after the smallest tile keeps the network there and accumulates on the host; with
    blending on the CPU already (always so on a CPU device) the back-off gives up at once. The CUDA path
    itself runs in tests/test_gpu.py when a GPU is present."""
    pred = TiledPredictor(_failing(_model(), max_batch=0), CPU, InferenceOptions(tile=128, batch_size=1))
    pred.blend_device = torch.device("cpu")
    with pytest.raises(OutOfMemory, match="out of memory on cpu even at --batch-size 1 --tile 128"):
        list(pred.predict_stream(_frames(1)))
    assert pred.backoffs == []


def test_gives_up_with_one_line_at_the_smallest_setting():
    pred = TiledPredictor(_failing(_model(), max_batch=0), CPU, InferenceOptions(tile=256, batch_size=4))
    with pytest.raises(OutOfMemory) as info:
        list(pred.predict_stream(_frames(1)))
    assert "\n" not in str(info.value) and "--device cpu" in str(info.value)
    assert pred.backoffs == ["batch size 4 -> 2", "batch size 2 -> 1", "tile 256 -> 128"]


def test_other_errors_are_not_taken_for_out_of_memory():
    def broken(x):
        raise RuntimeError("Given groups=1, weight of size [2, 1, 5, 5], expected input to have 1 channels")

    with pytest.raises(RuntimeError, match="groups"):
        TiledPredictor(broken, CPU, InferenceOptions(tile=128, batch_size=4)).predict(_frames(1)[0])
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB)"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 34359738368 bytes"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_segment_backs_off_with_one_notice_and_the_same_labels(env, tmp_path, monkeypatch):
    src = tmp_path / "movie.tif"
    rng = np.random.default_rng(1)
    tifffile.imwrite(src, (rng.random((3, 150, 140)) * 1000).astype(np.uint16), imagej=True,
                     metadata={"axes": "TYX"})
    runner = CliRunner()
    base = ["segment", str(src), "--model", "tiny", "--device", "cpu", "--tile", "64", "--tta", "flip", "--json"]
    ref = runner.invoke(app, [*base, "-o", str(tmp_path / "ref.zarr"), "--batch-size", "1"])
    assert ref.exit_code == 0, ref.output
    make = inference.network_callable
    monkeypatch.setattr(inference, "network_callable",
                        lambda network, device: _failing(make(network, device), max_batch=1, after=2))
    got = runner.invoke(app, [*base, "-o", str(tmp_path / "got.zarr"), "--batch-size", "4"])
    assert got.exit_code == 0, got.output
    summary = json.loads(got.stdout)
    assert summary["out_of_memory_backoffs"] == ["batch size 4 -> 2", "batch size 2 -> 1"]
    notes = [line for line in got.stderr.splitlines() if "out of memory" in line]
    assert len(notes) == 2
    a = zarr.open_group(tmp_path / "ref.zarr", mode="r")["labels/cells/0"][:]
    b = zarr.open_group(tmp_path / "got.zarr", mode="r")["labels/cells/0"][:]
    np.testing.assert_array_equal(a, b)
    assert (tmp_path / "ref.cells.csv").read_bytes() == (tmp_path / "got.cells.csv").read_bytes()
