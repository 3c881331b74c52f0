"""End-to-end runs of `cellseg segment` and `cellseg models` through typer's CliRunner, with a small
randomly initialised model built in the test (network outputs are not asserted, only the product)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from cellsegcli.cli import app
from cellsegcli.models import ModelConfig, build, save_model

runner = CliRunner()


def _stack(path: Path, frames: int = 3, shape=(96, 128), dtype=np.uint16) -> Path:
    rng = np.random.default_rng(0)
    data = (rng.random((frames, *shape)) * 1000).astype(dtype)
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.5, 1 / 0.5), metadata={"axes": "TYX", "unit": "um"})
    return path


def _segment(*args: str):
    return runner.invoke(app, ["segment", "--model", "tiny", "--device", "cpu", *args])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".tif")


def test_segment_writes_labels_tables_and_summary(env, tmp_path):
    src = _stack(tmp_path / "movie.tif")
    result = _segment(str(src), "--json", "--tile", "64")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames"] == 3 and summary["shape"] == [96, 128] and summary["pixel_size_um"] == 0.5
    assert summary["model"] == "tiny" and summary["tta"] == "none" and summary["tile"] == 64
    assert 0 < summary["post_seconds"] < summary["seconds"]
    stages = summary["stage_seconds"]
    assert set(stages) == {"read", "label", "write", "tables"} and all(v > 0 for v in stages.values())
    assert stages["label"] + stages["write"] + stages["tables"] == pytest.approx(summary["post_seconds"], abs=2e-3)
    labels = zarr.open_group(tmp_path / "movie.zarr", mode="r")["labels/cells/0"]
    assert labels.shape == (3, 96, 128) and labels.dtype == np.uint32 and labels.chunks == (1, 96, 128)
    root = zarr.open_group(tmp_path / "movie.zarr", mode="r")
    assert root.attrs["cellseg"]["complete"] is True
    assert root.attrs["cellseg"]["model_sha256"] == summary["model_sha256"]
    np.testing.assert_array_equal(root["0"][:], tifffile.imread(src))
    frames = pd.read_csv(tmp_path / "movie.frames.csv")
    assert list(frames["frame"]) == [0, 1, 2]
    assert list(frames["cell_count"]) == [int(labels[t].max()) for t in range(3)]
    cells = pd.read_csv(tmp_path / "movie.cells.csv")
    assert len(cells) == frames["cell_count"].sum()
    assert _leftovers(tmp_path) == ["movie.cells.csv", "movie.frames.csv", "movie.zarr"]


def test_segment_output_is_readable_by_ome_zarr(env, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    src = _stack(tmp_path / "a.tif", frames=2)
    assert _segment(str(src), "-o", str(tmp_path / "out" / "res.zarr")).exit_code == 0
    nodes = list(Reader(parse_url(str(tmp_path / "out" / "res.zarr")))())
    assert any(node.load(Label) for node in nodes)
    assert (tmp_path / "out" / "res.cells.csv").is_file()


def test_several_inputs_go_to_one_output_folder(env, tmp_path):
    a, b = _stack(tmp_path / "a.tif", frames=1), _stack(tmp_path / "b.tif", frames=2)
    result = _segment(str(a), str(b), "-o", str(tmp_path / "res"), "--json", "--no-image", "--table-format",
                      "parquet")
    assert result.exit_code == 0, result.output
    assert [s["frames"] for s in json.loads(result.stdout)] == [1, 2]
    assert len(pd.read_parquet(tmp_path / "res" / "b.frames.parquet")) == 2


def _error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_existing_output_is_refused_then_replaced_with_overwrite(env, tmp_path):
    src = _stack(tmp_path / "m.tif", frames=1)
    assert _segment(str(src)).exit_code == 0
    again = _segment(str(src))
    assert again.exit_code == 1
    assert re.search(r"m\.zarr exists; pass --overwrite", _error_line(again))
    assert _segment(str(src), "--overwrite").exit_code == 0


@pytest.mark.parametrize("case", ["missing", "corrupt", "nan", "constant", "axes", "model", "tile"])
def test_bad_input_gives_one_line_exit_1_and_no_output(env, tmp_path, case):
    src = tmp_path / "bad.tif"
    args: list[str] = []
    if case == "missing":
        src = tmp_path / "nope.tif"
    elif case == "corrupt":
        src.write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    elif case in ("nan", "constant"):
        data = np.random.default_rng(0).random((3, 64, 64), dtype=np.float32)
        data[1] = np.nan if case == "nan" else 7.0
        tifffile.imwrite(src, data, photometric="minisblack", metadata={"axes": "TYX"})
    else:
        _stack(src, frames=2)
        args = {"axes": ["--axes", "CZYX"], "model": ["--model", "nosuchmodel"], "tile": ["--tile", "100"]}[case]
    result = _segment(str(src), *args)
    assert result.exit_code == 1, result.output
    line = _error_line(result)
    if case == "nan":
        assert "frame 1" in line and "NaN" in line
    if case == "constant":
        assert "frame 1" in line and "constant" in line
    if case == "model":
        assert "tiny" in line  # lists the models there are
    assert _leftovers(tmp_path) == []


def test_unwritable_output_location_fails_cleanly(env, tmp_path):
    src = _stack(tmp_path / "m.tif", frames=1)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _segment(str(src), "-o", str(blocker / "sub"))
    assert result.exit_code == 1
    assert str(blocker) in _error_line(result)


def test_models_lists_shipped_models_as_json(env):
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["tiny"] and rows[0]["architecture"] == "resnet18-fpn"
    assert len(rows[0]["sha256"]) == 64


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("cellseg ")


def test_segment_with_ground_truth_writes_scores(env, tmp_path):
    src = _stack(tmp_path / "m.tif", frames=2)
    gt = np.zeros((2, 96, 128), np.uint16)
    gt[:, 10:40, 10:40] = 1
    tifffile.imwrite(tmp_path / "gt.tif", gt, photometric="minisblack", metadata={"axes": "TYX"})
    result = _segment(str(src), "--gt", str(tmp_path / "gt.tif"), "--json", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    scores = pd.read_csv(summary["scores_table"])
    assert len(scores) == 2 and 0 <= summary["scores"]["jaccard"]["mean"] <= 1
    errors = summary["scores"]["errors"]   # the error kinds of both frames (cellsegcli.error_kinds)
    assert errors["n_gt"] == 2 and errors["n_gt"] - errors["tp"] == sum(v for k, v in errors.items() if k[:3] == "fn_")


def test_ground_truth_of_the_wrong_length_is_refused_before_segmenting(env, tmp_path):
    src = _stack(tmp_path / "m.tif", frames=2)
    tifffile.imwrite(tmp_path / "gt.tif", np.zeros((3, 96, 128), np.uint16), photometric="minisblack",
                     metadata={"axes": "TYX"})
    result = _segment(str(src), "--gt", str(tmp_path / "gt.tif"))
    assert result.exit_code == 1 and "3 ground-truth frames for a stack of 2" in _error_line(result)
    assert _leftovers(tmp_path) == []


def test_classical_baseline_runs_as_a_model(env, tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(1000, 5, (1, 120, 120))
    yy, xx = np.mgrid[:120, :120]
    image[0][(yy - 60) ** 2 + (xx - 60) ** 2 < 30**2] += rng.normal(0, 300, (120, 120))[(yy - 60) ** 2 + (xx - 60) ** 2 < 30**2]
    tifffile.imwrite(tmp_path / "s.tif", image.astype(np.uint16), metadata={"axes": "TYX"})
    result = runner.invoke(app, ["segment", str(tmp_path / "s.tif"), "--model", "phantast", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"] == "phantast" and summary["cells_total"] >= 1


def test_threshold_options_override_the_model_and_are_recorded(env, tmp_path):
    src = _stack(tmp_path / "movie.tif", frames=1)
    result = _segment(str(src), "--tile", "64", "--threshold", "0.4", "--seed-threshold", "0.7", "--min-size", "9")
    assert result.exit_code == 0, result.output
    attrs = zarr.open_group(tmp_path / "movie.zarr", mode="r").attrs["cellseg"]
    assert (attrs["threshold"], attrs["seed_threshold"], attrs["min_size"]) == (0.4, 0.7, 9)


@pytest.fixture(scope="module")
def sized(tmp_path_factory) -> Path:
    """A model folder that records the cell diameter it was trained on (20 px) and a min_size of 40 px."""
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sized") / "sized"
    save_model(build("resnet18-fpn", in_channels=1, classes=2),
               ModelConfig(name="sized", architecture="resnet18-fpn", diameter=20.0, min_size=40), folder, half=True)
    return folder


def test_diameter_resizes_frames_for_the_model_and_labels_come_back_full_size(env, sized, tmp_path):
    src = _stack(tmp_path / "movie.tif", frames=2)
    result = runner.invoke(app, ["segment", str(src), "--model", str(sized), "--device", "cpu", "--tile", "64",
                                 "--diameter", "40", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scale"] == 0.5
    root = zarr.open_group(tmp_path / "movie.zarr", mode="r")
    attrs = root.attrs["cellseg"]
    # cells twice as wide as the model's: frames halved for it; its 40 px smallest cell is 160 px here
    assert (attrs["diameter"], attrs["scale"], attrs["min_size"]) == (40.0, 0.5, 160)
    assert root["labels/cells/0"].shape[-2:] == (96, 128)


def test_the_models_own_diameter_changes_nothing(env, sized, tmp_path):
    src = _stack(tmp_path / "movie.tif", frames=1)
    outs = []
    for i, extra in enumerate(([], ["--diameter", "20"])):
        out = tmp_path / f"o{i}.zarr"
        result = runner.invoke(app, ["segment", str(src), "--model", str(sized), "--device", "cpu", "--tile", "64",
                                     "-o", str(out), *extra])
        assert result.exit_code == 0, result.output
        outs.append(zarr.open_group(out, mode="r")["labels/cells/0"][:])
    assert np.array_equal(*outs)


@pytest.mark.parametrize("case", ["unknown", "zero", "far", "baseline"])
def test_a_diameter_that_cannot_apply_is_one_line(env, sized, tmp_path, case):
    src = _stack(tmp_path / "m.tif", frames=1)
    model, value = {"unknown": ("tiny", "30"), "zero": (str(sized), "0"), "far": (str(sized), "1000"),
                    "baseline": ("phantast", "30")}[case]
    result = runner.invoke(app, ["segment", str(src), "--model", model, "--device", "cpu", "--diameter", value])
    assert result.exit_code == 1, result.output
    line = _error_line(result)
    assert {"unknown": "records no training cell diameter", "zero": "positive", "far": "trained on cells 20 px",
            "baseline": "network models"}[case] in line
    assert _leftovers(tmp_path) == []


def test_post_processing_in_worker_processes_gives_the_same_outputs(env, tmp_path):
    src = _stack(tmp_path / "movie.tif", frames=5)
    for name, extra in (("one", []), ("three", ["--post-workers", "2"])):
        result = _segment(str(src), "--tile", "64", "--save-probabilities", "-o", str(tmp_path / name), *extra)
        assert result.exit_code == 0, result.output
    a = zarr.open_group(tmp_path / "one" / "movie.zarr", mode="r")
    b = zarr.open_group(tmp_path / "three" / "movie.zarr", mode="r")
    for key in ("0", "labels/cells/0", "probabilities/0"):
        np.testing.assert_array_equal(a[key][:], b[key][:])
    assert b.attrs["cellseg"]["complete"] is True
    for table in ("movie.cells.csv", "movie.frames.csv"):
        assert (tmp_path / "three" / table).read_text() == (tmp_path / "one" / table).read_text()
    result = _segment(str(src), "--post-workers", "0", "-o", str(tmp_path / "zero"))
    assert result.exit_code == 1 and "--post-workers 0" in result.output and not (tmp_path / "zero").exists()


def test_labelling_on_the_device_is_recorded_and_falls_back_for_baselines(env, tmp_path):
    src = _stack(tmp_path / "movie.tif", frames=2)
    result = _segment(str(src), "--tile", "64", "--label-on", "device", "--json", "-o", str(tmp_path / "dev"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["label_on"] == "device" and summary["stage_seconds"]["label"] > 0
    root = zarr.open_group(tmp_path / "dev" / "movie.zarr", mode="r")
    assert root.attrs["cellseg"]["label_on"] == "device" and root.attrs["cellseg"]["complete"] is True
    result = runner.invoke(app, ["segment", str(src), "--model", "phantast", "--label-on", "device", "--json",
                                 "-o", str(tmp_path / "base")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["label_on"] == "cpu"   # a binary baseline: labelled on the CPU
    result = _segment(str(src), "--label-on", "gpu", "-o", str(tmp_path / "bad"))
    assert result.exit_code == 2 and not (tmp_path / "bad").exists()


def test_clump_splitting_follows_the_model_and_the_option_on_either_labeller(env, tmp_path):
    import dataclasses

    from cellsegcli.models import read_config, write_config

    folder = tmp_path / "splitter"
    shutil.copytree(env / "tiny", folder)
    write_config(folder, dataclasses.replace(read_config(folder), split_clumps=True))
    src = _stack(tmp_path / "movie.tif", frames=2)
    runs = {"model": [], "off": ["--no-split-clumps"], "device": ["--label-on", "device"]}
    for name, extra in runs.items():
        result = runner.invoke(app, ["segment", str(src), "--model", str(folder), "--device", "cpu", "--tile", "64",
                                     "--json", "-o", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        attrs = zarr.open_group(tmp_path / name / "movie.zarr", mode="r").attrs["cellseg"]
        assert attrs["split_clumps"] is (name != "off")
        assert attrs["label_on"] == ("device" if name == "device" else "cpu")
    result = _segment(str(src), "--tile", "64", "--json", "-o", str(tmp_path / "tiny"))
    assert zarr.open_group(tmp_path / "tiny" / "movie.zarr", mode="r").attrs["cellseg"]["split_clumps"] is False


@pytest.mark.data
def test_labelling_on_the_device_agrees_with_the_cpu_on_a_real_movie(shared_data, tmp_path):
    from cellsegcli.metrics import object_scores

    with tifffile.TiffFile(shared_data / "t98g-timelapse" / "stack.tif") as tif:
        frames = tif.series[0].asarray()[:2, 200:520, 300:700]
    src = tmp_path / "t98g.tif"
    tifffile.imwrite(src, frames, metadata={"axes": "TYX"})
    out = {}
    for where in ("cpu", "device"):
        result = runner.invoke(app, ["segment", str(src), "--model", "phase", "--device", "cpu", "--label-on",
                                     where, "-o", str(tmp_path / where), "--json"])
        assert result.exit_code == 0, result.output
        out[where] = zarr.open_group(tmp_path / where / "t98g.zarr", mode="r")["labels/cells/0"][:]
    for t in range(2):
        assert out["cpu"][t].max() > 10
        assert object_scores(out["device"][t], out["cpu"][t])["f1"] >= 0.98


def test_labelling_on_the_device_keeps_the_probabilities_it_is_asked_to(env, tmp_path):
    src = _stack(tmp_path / "movie.tif", frames=2)
    for where in ("cpu", "device"):
        result = _segment(str(src), "--tile", "64", "--label-on", where, "--save-probabilities", "-o",
                          str(tmp_path / where))
        assert result.exit_code == 0, result.output
    a = zarr.open_group(tmp_path / "cpu" / "movie.zarr", mode="r")
    b = zarr.open_group(tmp_path / "device" / "movie.zarr", mode="r")
    np.testing.assert_array_equal(a["probabilities/0"][:], b["probabilities/0"][:])
