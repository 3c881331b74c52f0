"""Scale-out over Dask: a stack segmented by in-process Dask workers equals the same stack segmented here,
and a worker's failure leaves no output behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

pytest.importorskip("distributed")

from cellsegcli import pipeline  # noqa: E402
from cellsegcli.cli import app  # noqa: E402
from cellsegcli.distributed import connect  # noqa: E402
from cellsegcli.errors import CellsegError  # noqa: E402
from cellsegcli.models import ModelConfig, build, save_model  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights") / "tiny"
    save_model(build("resnet18-fpn", in_channels=1, classes=2), ModelConfig(name="tiny", architecture="resnet18-fpn"),
               folder, half=True)
    return folder


@pytest.fixture(scope="module")
def sized_dir(tmp_path_factory) -> Path:
    """The same network, recording a training cell diameter of 10 px and a smallest cell of 20 px."""
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights") / "sized"
    save_model(build("resnet18-fpn", in_channels=1, classes=2),
               ModelConfig(name="sized", architecture="resnet18-fpn", diameter=10.0, min_size=20), folder, half=True)
    return folder


@pytest.fixture(scope="module")
def client():
    with connect("local:2") as c:
        yield c


def _disks(path: Path, frames: int = 7, nan_frame: int | None = None) -> Path:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:96, :128]
    stack = np.zeros((frames, 96, 128), np.float32)
    for t in range(frames):
        for _ in range(5):
            cy, cx, r = rng.uniform(15, 80), rng.uniform(15, 110), rng.uniform(6, 12)
            stack[t][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        stack[t] = stack[t] * 800 + rng.normal(200, 20, (96, 128))
    if nan_frame is not None:
        stack[nan_frame] = np.nan
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TYX"})
    return path


@pytest.mark.parametrize("model", ["tiny", "sized", "phantast", "ensemble"])
def test_dask_workers_give_the_same_outputs_as_one_process(tmp_path, model_dir, sized_dir, client, model):
    src = _disks(tmp_path / "movie.tif")
    network = model in ("tiny", "sized", "ensemble")
    spec = {"tiny": str(model_dir), "sized": str(sized_dir), "ensemble": (str(model_dir), str(model_dir))}.get(model, model)
    config = pipeline.SegmentConfig(model=spec, device="cpu", tile=64, save_probabilities=network,
                                    diameter=15.0 if model == "sized" else None)   # frames resized by 2/3
    here = pipeline.segment(src, config, out=tmp_path / "here")
    there = pipeline.segment(src, config, out=tmp_path / "there", scheduler=client, frames_per_task=2)
    assert there.cells_per_frame == here.cells_per_frame and there.device.startswith("dask ")
    a = zarr.open_group(tmp_path / "here" / "movie.zarr", mode="r")
    b = zarr.open_group(tmp_path / "there" / "movie.zarr", mode="r")
    for key in ["0", "labels/cells/0"] + (["probabilities/0"] if network else []):
        np.testing.assert_array_equal(a[key][:], b[key][:])
    assert b.attrs["cellseg"]["complete"] is True
    if model == "sized":   # the model's 20 px smallest cell is 20 / (2/3)^2 = 45 px of these frames
        assert (b.attrs["cellseg"]["scale"], b.attrs["cellseg"]["min_size"]) == (0.6667, 45)
    for table in ("movie.cells.csv", "movie.frames.csv"):
        assert (tmp_path / "there" / table).read_text() == (tmp_path / "here" / table).read_text()
    assert sorted(p.name for p in (tmp_path / "there").iterdir()) == ["movie.cells.csv", "movie.frames.csv",
                                                                     "movie.zarr"]


def test_a_failing_worker_leaves_no_output(tmp_path, model_dir, client):
    src = _disks(tmp_path / "movie.tif", nan_frame=4)
    config = pipeline.SegmentConfig(model=str(model_dir), device="cpu", tile=64)
    with pytest.raises(CellsegError, match="frame 4"):
        pipeline.segment(src, config, out=tmp_path / "out", scheduler=client, frames_per_task=2)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unreachable_scheduler_is_one_clear_error():
    with pytest.raises(CellsegError, match="cannot reach the Dask scheduler"):
        connect("tcp://127.0.0.1:9", timeout=1)


def test_segment_cli_with_a_local_cluster(tmp_path, model_dir):
    src = _disks(tmp_path / "movie.tif", frames=3)
    result = runner.invoke(app, ["segment", str(src), "-m", str(model_dir), "--device", "cpu", "--tile", "64",
                                 "--scheduler", "local:2", "--frames-per-task", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames"] == 3 and summary["device"].startswith("dask ")
    assert zarr.open_group(tmp_path / "movie.zarr", mode="r")["labels/cells/0"].shape == (3, 96, 128)


def test_a_worker_refuses_weights_that_differ_from_the_clients(model_dir):
    import torch

    from cellsegcli.distributed import _model

    with pytest.raises(CellsegError, match="differ from the client's"):
        _model(str(model_dir), "0" * 64, torch.device("cpu"))


def test_tracking_on_the_client_gives_the_same_tracks_as_one_process(tmp_path, model_dir, client):
    src = _disks(tmp_path / "movie.tif")
    config = pipeline.SegmentConfig(model=str(model_dir), device="cpu", tile=64, track=True)
    here = pipeline.segment(src, config, out=tmp_path / "here")
    there = pipeline.segment(src, config, out=tmp_path / "there", scheduler=client, frames_per_task=3)
    assert here.tracking["tracks"] == there.tracking["tracks"]
    a = zarr.open_group(tmp_path / "here" / "movie.zarr", mode="r")
    b = zarr.open_group(tmp_path / "there" / "movie.zarr", mode="r")
    np.testing.assert_array_equal(a["labels/cells/0"][:], b["labels/cells/0"][:])
    np.testing.assert_array_equal(a["tracks/lineage"][:], b["tracks/lineage"][:])
    for table in ("movie.cells.csv", "movie.tracks.csv", "movie.napari-tracks.csv", "movie.lineage.json"):
        assert (tmp_path / "there" / table).read_text() == (tmp_path / "here" / table).read_text()
