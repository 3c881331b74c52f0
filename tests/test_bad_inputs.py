"""The hostile-input matrix: every case ends in a one-line refusal (exit 1) naming the file or option, no
traceback, and nothing left behind that looks like a result. Timestamped progress notices printed before
the problem showed itself (``12:00:01 first frame took ...``) are not error output and are not counted."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from cellsegcli.cli import app

runner = CliRunner()


def _stack(path: Path, data: np.ndarray | None = None, **kw) -> Path:
    if data is None:
        data = (np.random.default_rng(0).random((3, 64, 96)) * 1000).astype(np.uint16)
    tifffile.imwrite(path, data, **({"imagej": True, "metadata": {"axes": "TYX"}} | kw))
    return path


def _one_line_refusal(result, *words: str) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not re.match(r"\d\d:\d\d:\d\d ", ln)]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _no_result(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if p.suffix in (".zarr", ".csv", ".parquet", ".json")
            or ".cellseg-run" in p.name]
    assert left == [], left


def _segment(tmp_path: Path, src: Path, *args: str):
    return runner.invoke(app, ["segment", str(src), "--model", "tiny", "--device", "cpu", "--tile", "64",
                               "-o", str(tmp_path / "out"), *args])


OPTION_CASES = {
    "tile 0": (["--tile", "0"], "--tile"),
    "batch 0": (["--batch-size", "0"], "--batch-size"),
    "threshold nan": (["--threshold", "nan"], "--threshold"),
    "threshold 7": (["--threshold", "7"], "--threshold"),
    "threshold -1": (["--threshold", "-1"], "--threshold"),
    "threshold 0": (["--threshold", "0"], "--threshold"),
    "seed threshold 2": (["--seed-threshold", "2"], "--seed-threshold"),
    "min size -3": (["--min-size", "-3"], "--min-size"),
    "overlap 1": (["--overlap", "1"], "--overlap"),
    "overlap nan": (["--overlap", "nan"], "--overlap"),
    "diameter inf": (["--diameter", "inf"], "--diameter"),
    "post workers 0": (["--post-workers", "0"], "--post-workers"),
    "series -1": (["--series", "-1"], "--series"),
}


@pytest.mark.parametrize("case", OPTION_CASES)
def test_segment_options_that_cannot_mean_anything(env, tmp_path, case):
    args, word = OPTION_CASES[case]
    src = _stack(tmp_path / "movie.tif")
    (tmp_path / "out").mkdir()
    _one_line_refusal(_segment(tmp_path, src, *args), word)
    _no_result(tmp_path / "out")


def _several_series(path: Path) -> Path:
    with tifffile.TiffWriter(path) as tif:
        tif.write((np.random.default_rng(0).random((2, 32, 32)) * 900).astype(np.uint16), photometric="minisblack",
                  metadata={"axes": "TYX"})
        tif.write(np.ones((40, 48), np.uint8))
    return path


STACK_CASES = {
    "bool": (lambda p: _stack(p, np.random.default_rng(0).random((3, 32, 32)) > 0.5, imagej=False, photometric="minisblack",
                              metadata={"axes": "TYX"}), "boolean"),
    "complex": (lambda p: _stack(p, np.ones((3, 32, 32), np.complex64), imagej=False, photometric="minisblack", metadata={"axes": "TYX"}),
                "complex"),
    "several series": (_several_series, "--series"),
    "missing": (lambda p: p, "no such file"),
    "empty file": (lambda p: (p.write_bytes(b""), p)[1], "TIFF"),
    "random bytes": (lambda p: (p.write_bytes(np.random.default_rng(1).bytes(5000)), p)[1], "TIFF"),
    "truncated": (lambda p: (p.write_bytes(_stack(p).read_bytes()[:3000]), p)[1], "TIFF"),
    "NaN frame": (lambda p: _stack(p, np.where(np.arange(3)[:, None, None] == 1, np.nan,
                                               np.random.default_rng(2).random((3, 32, 32))).astype(np.float32),
                                   imagej=False, photometric="minisblack", metadata={"axes": "TYX"}), "frame 1"),
    "constant frame": (lambda p: _stack(p, np.full((2, 32, 32), 7, np.uint16)), "constant"),
    "wrong axes": (lambda p: _stack(p, np.zeros((2, 3, 4, 32, 32), np.uint8) + 1, imagej=False, photometric="minisblack",
                                    metadata={"axes": "TZCYX"}), ""),
    "unsupported suffix": (lambda p: (p.with_suffix(".xyz").write_bytes(b"x"), p.with_suffix(".xyz"))[1],
                           "unsupported"),
    "empty folder": (lambda p: (p.with_suffix("").mkdir(), p.with_suffix(""))[1], "no images"),
}


@pytest.mark.parametrize("case", STACK_CASES)
def test_hostile_stacks(env, tmp_path, case):
    make, word = STACK_CASES[case]
    src = make(tmp_path / "movie.tif")
    (tmp_path / "out").mkdir()
    _one_line_refusal(_segment(tmp_path, src), word)
    _no_result(tmp_path / "out")


def test_several_series_segment_with_series(env, tmp_path):
    src = _several_series(tmp_path / "movie.tif")
    result = _segment(tmp_path, src, "--series", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == 2
    _one_line_refusal(_segment(tmp_path, src, "--series", "5", "--overwrite"), "--series 5", "2 series")


def test_a_large_offset_int64_stack_segments_as_its_uint32_twin(env, tmp_path):
    """int64 values far from zero keep their detail (normalised in float64, not float32)."""
    base = (np.random.default_rng(3).random((2, 64, 96)) * 1000).astype(np.uint32)
    from cellsegcli.normalize import normalize

    a = normalize(base[0])
    b = normalize(base[0].astype(np.int64) + 2**40)
    np.testing.assert_allclose(a, b, atol=1e-6)


GT_CASES = {
    "shape": (lambda: np.zeros((3, 32, 32), np.uint16), "same size"),
    "float fractions": (lambda: np.full((3, 64, 96), 0.5, np.float32), "whole numbers"),
    "negative": (lambda: np.full((3, 64, 96), -1, np.int16), "negative"),
    "frames": (lambda: np.zeros((2, 64, 96), np.uint16), "2 ground-truth frames"),
}


@pytest.mark.parametrize("case", GT_CASES)
def test_ground_truth_is_checked_before_segmenting(env, tmp_path, case, monkeypatch):
    from cellsegcli import pipeline

    make, word = GT_CASES[case]
    src = _stack(tmp_path / "movie.tif")
    gt = tmp_path / "gt.tif"
    tifffile.imwrite(gt, make(), photometric="minisblack")

    def never(*args, **kwargs):
        raise AssertionError("segmented before the ground truth was checked")

    monkeypatch.setattr(pipeline, "segment_frame", never)
    (tmp_path / "out").mkdir()
    _one_line_refusal(_segment(tmp_path, src, "--gt", str(gt)), word)
    _no_result(tmp_path / "out")


def test_rgb_ground_truth_stack_is_refused(env, tmp_path):
    src = _stack(tmp_path / "movie.tif")
    gt = tmp_path / "gt.tif"
    tifffile.imwrite(gt, np.zeros((3, 64, 96, 3), np.uint8), photometric="rgb")
    (tmp_path / "out").mkdir()
    _one_line_refusal(_segment(tmp_path, src, "--gt", str(gt)), "colour")


CONFIG_CASES = {
    "binary": b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
    "a list": b"[1, 2]",
    "percentiles 5": json.dumps({"name": "bad", "architecture": "resnet18-fpn", "percentiles": 5}).encode(),
    "percentiles [1]": json.dumps({"name": "bad", "architecture": "resnet18-fpn", "percentiles": [1]}).encode(),
    "architecture 5": json.dumps({"name": "bad", "architecture": 5}).encode(),
    "threshold high": json.dumps({"name": "bad", "architecture": "resnet18-fpn", "threshold": "high"}).encode(),
    "tile 50": json.dumps({"name": "bad", "architecture": "resnet18-fpn", "tile": 50}).encode(),
    "holes yes": json.dumps({"name": "bad", "architecture": "resnet18-fpn", "holes": "yes"}).encode(),
    "no name": json.dumps({"architecture": "resnet18-fpn"}).encode(),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_damaged_model_config(env, tmp_path, case):
    folder = tmp_path / "bad"
    shutil.copytree(env / "tiny", folder)
    (folder / "config.json").write_bytes(CONFIG_CASES[case])
    src = _stack(tmp_path / "movie.tif")
    (tmp_path / "out").mkdir()
    result = runner.invoke(app, ["segment", str(src), "--model", str(folder), "--device", "cpu",
                                 "-o", str(tmp_path / "out")])
    _one_line_refusal(result, "config")
    _no_result(tmp_path / "out")


EVALUATE_CASES = {
    "float labels": (np.full((2, 16, 16), 0.5, np.float32), "whole numbers"),
    "negative labels": (np.full((2, 16, 16), -1, np.int32), "negative"),
}


@pytest.mark.parametrize("case", EVALUATE_CASES)
def test_evaluate_refuses_labels_that_are_not_labels(tmp_path, case):
    data, word = EVALUATE_CASES[case]
    tifffile.imwrite(tmp_path / "pred.tif", data)
    tifffile.imwrite(tmp_path / "gt.tif", np.ones((2, 16, 16), np.uint16))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred.tif"), str(tmp_path / "gt.tif")])
    _one_line_refusal(result, word)


@pytest.mark.parametrize("value", ["nan", "2", "-0.5"])
def test_evaluate_refuses_a_meaningless_gate(tmp_path, value):
    tifffile.imwrite(tmp_path / "pred.tif", np.ones((2, 16, 16), np.uint16))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "pred.tif"), str(tmp_path / "pred.tif"),
                                 "--min-jaccard", value])
    _one_line_refusal(result, "--min-jaccard")


def _annotations(folder: Path, mask: np.ndarray | None = None) -> Path:
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(4):
        tifffile.imwrite(folder / "images" / f"a{i}.tif", (rng.random((64, 64)) * 255).astype(np.uint8))
        m = np.zeros((64, 64), np.uint16) if mask is None else mask
        if mask is None:
            m[10:30, 10:30] = 1
        tifffile.imwrite(folder / "masks" / f"a{i}.tif", m)
    return folder


TRAIN_CASES = {
    "lr nan": (["--lr", "nan"], None, "--lr"),
    "lr 0": (["--lr", "0"], None, "--lr"),
    "steps 0": (["--steps-per-epoch", "0"], None, "--steps-per-epoch"),
    "crop 0": (["--crop", "0"], None, "--crop"),
    "max minutes -1": (["--max-minutes", "-1"], None, "--max-minutes"),
    "ema nan": (["--ema", "nan"], None, "--ema"),
    "empty masks": ([], np.zeros((64, 64), np.uint16), "hold no cells"),
    "minus one background": ([], np.full((64, 64), -1, np.int16), "negative"),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_refuses(tmp_path, case):
    args, mask, word = TRAIN_CASES[case]
    data = _annotations(tmp_path / "ann", mask)
    result = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "model"), "--epochs", "1",
                                 "--device", "cpu", "--no-calibrate", *args])
    _one_line_refusal(result, word)
    assert not (tmp_path / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"PK\x03\x04garbage", "truncate"])
def test_train_resume_from_a_damaged_checkpoint(env, tmp_path, content):
    data = _annotations(tmp_path / "ann")
    model = tmp_path / "model"
    model.mkdir()
    if content == "truncate":
        import torch

        torch.save({"network": {"w": torch.zeros(1000)}, "optimizer": {}, "epoch": 1, "history": "[]"},
                   model / "last.pt")
        content = (model / "last.pt").read_bytes()[:200]
    (model / "last.pt").write_bytes(content)
    result = runner.invoke(app, ["train", str(data), "-o", str(model), "--epochs", "2", "--device", "cpu",
                                 "--resume", "--no-calibrate"])
    _one_line_refusal(result, "last.pt")


def test_train_onto_an_existing_model_needs_overwrite(env, tmp_path):
    data = _annotations(tmp_path / "ann")
    model = tmp_path / "model"
    shutil.copytree(env / "tiny", model)
    before = (model / "model.safetensors").read_bytes()
    result = runner.invoke(app, ["train", str(data), "-o", str(model), "--epochs", "1", "--device", "cpu"])
    _one_line_refusal(result, "--overwrite")
    assert (model / "model.safetensors").read_bytes() == before


def test_sigterm_is_handled_like_ctrl_c(env, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    src = _stack(tmp_path / "movie.tif", (np.random.default_rng(0).random((60, 128, 160)) * 1000).astype(np.uint16))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "cellsegcli", "segment", str(src), "-o", str(out), "--model",
                             "tiny", "--device", "cpu", "--tile", "64"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    parts = out / ".movie.zarr.cellseg-run" / "parts"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not (parts.is_dir() and any(parts.iterdir())):
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the run finished before SIGTERM could be sent")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert not (out / "movie.zarr").exists() and parts.is_dir()   # kept for --resume
