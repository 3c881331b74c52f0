"""Frame ranges (--frames), time (frame interval -> NGFF t axis and time_s columns), Z stacks (--z), and
checks of all inputs before the first is segmented."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from cellsegcli.cli import app
from cellsegcli.errors import CellsegError
from cellsegcli.io.frames import parse_frames

runner = CliRunner()


def _segment(*args: str, tile: int = 64):
    return runner.invoke(app, ["segment", "--model", "tiny", "--device", "cpu", "--tile", str(tile), *args])


def _stack(path: Path, frames: int = 6, shape=(64, 96), **metadata) -> Path:
    rng = np.random.default_rng(1)
    tifffile.imwrite(path, (rng.random((frames, *shape)) * 1000).astype(np.uint16), imagej=True,
                     metadata={"axes": "TYX", **metadata})
    return path


def _t_axis(result: Path) -> tuple[dict, list[float], list[float]]:
    ms = zarr.open_group(result / "labels" / "cells", mode="r").attrs["ome"]["multiscales"][0]
    scale, translation = ms["datasets"][0]["coordinateTransformations"]
    return ms["axes"][0], scale["scale"], translation["translation"]


@pytest.mark.parametrize(("spec", "n", "want"), [
    ("10:20", 37, range(10, 20)), (":5", 37, range(0, 5)), ("30:", 37, range(30, 37)), ("0:37:10", 37, range(0, 37, 10)),
    ("4", 37, range(4, 5)), ("::2", 5, range(0, 5, 2)),
])
def test_frame_ranges_are_python_slices(spec, n, want):
    assert parse_frames(spec, n) == want


@pytest.mark.parametrize(("spec", "message"), [
    ("a:b", "give START:STOP"), ("1:2:3:4", "give START:STOP"), ("-5:", "count from 0"), ("0:10:0", "STEP from 1"),
    ("37:40", "selects no frame of this stack of 37"), ("5:5", "selects no frame"), ("0:38", "give STOP <= 37"),
])
def test_bad_frame_ranges_are_one_line(spec, message):
    with pytest.raises(CellsegError, match=message) as info:
        parse_frames(spec, 37, where="movie.tif")
    assert str(info.value).startswith("movie.tif: --frames") and "\n" not in str(info.value)


@pytest.mark.data
def test_frames_10_20_of_a_real_movie_keep_their_numbers(shared_data, env, tmp_path):
    movie = shared_data / "t98g-timelapse" / "stack.tif"
    out = tmp_path / "part.zarr"
    result = _segment(str(movie), "--frames", "10:20", "-o", str(out), "--json", tile=1024)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == 10
    labels = zarr.open_group(out, mode="r")["labels/cells/0"]
    assert labels.shape[0] == 10
    frames = pd.read_csv(tmp_path / "part.frames.csv")
    assert frames["frame"].tolist() == list(range(10, 20))
    cells = pd.read_csv(tmp_path / "part.cells.csv")
    assert set(cells["frame"]) <= set(range(10, 20)) and cells["frame"].is_monotonic_increasing
    axis, scale, translation = _t_axis(out)   # no interval in this file: frame numbers on the t axis
    assert axis == {"name": "t", "type": "time"} and scale[0] == 1.0 and translation[0] == 10.0
    attrs = zarr.open_group(out, mode="r").attrs["cellseg"]
    assert attrs["frames"] == {"start": 10, "stop": 20, "step": 1, "of": 37}
    # the same frames segmented from the whole movie: the same labels
    with tifffile.TiffFile(movie) as tif:
        part = tif.asarray(key=range(10, 20))
    tifffile.imwrite(tmp_path / "cut.tif", part, imagej=True, metadata={"axes": "TYX"})
    assert _segment(str(tmp_path / "cut.tif"), "-o", str(tmp_path / "cut.zarr"), tile=1024).exit_code == 0
    np.testing.assert_array_equal(labels[:], zarr.open_group(tmp_path / "cut.zarr", mode="r")["labels/cells/0"][:])


def test_frame_interval_from_imagej_metadata_and_from_the_option(env, tmp_path):
    src = _stack(tmp_path / "m.tif", finterval=30.0)
    assert _segment(str(src), "-o", str(tmp_path / "a.zarr"), "--frames", "1:6:2").exit_code == 0
    axis, scale, translation = _t_axis(tmp_path / "a.zarr")
    assert axis["unit"] == "second" and scale[0] == 60.0 and translation[0] == 30.0
    rows = pd.read_csv(tmp_path / "a.frames.csv")
    assert rows["frame"].tolist() == [1, 3, 5] and rows["time_s"].tolist() == [30.0, 90.0, 150.0]
    cells = pd.read_csv(tmp_path / "a.cells.csv")
    np.testing.assert_array_equal(cells["time_s"], cells["frame"] * 30.0)
    # the option overrides the file
    assert _segment(str(src), "-o", str(tmp_path / "b.zarr"), "--frame-interval", "2min").exit_code == 0
    assert _t_axis(tmp_path / "b.zarr")[1][0] == 120.0
    assert pd.read_csv(tmp_path / "b.frames.csv")["time_s"].tolist() == [120.0 * t for t in range(6)]


def test_unknown_interval_leaves_time_empty(env, tmp_path):
    src = _stack(tmp_path / "m.tif", frames=2)
    assert _segment(str(src), "-o", str(tmp_path / "r.zarr")).exit_code == 0
    assert pd.read_csv(tmp_path / "r.frames.csv")["time_s"].isna().all()
    assert "unit" not in _t_axis(tmp_path / "r.zarr")[0]


def test_a_z_stack_is_refused_unless_told_what_z_is(env, tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.random((3, 64, 64)) * 1000).astype(np.uint16)
    src = tmp_path / "z.tif"
    tifffile.imwrite(src, data, imagej=True, metadata={"axes": "ZYX"})
    refused = _segment(str(src), "-o", str(tmp_path / "r.zarr"))
    assert refused.exit_code == 1 and "holds a Z stack (Z=3" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not list(tmp_path.glob("r*"))
    assert _segment(str(src), "-o", str(tmp_path / "max.zarr"), "--z", "max").exit_code == 0
    stored = zarr.open_group(tmp_path / "max.zarr", mode="r")
    np.testing.assert_array_equal(stored["0"][:], data.max(axis=0)[None])
    assert stored.attrs["cellseg"]["z"] == "max"
    assert _segment(str(src), "-o", str(tmp_path / "sl.zarr"), "--z", "slices").exit_code == 0
    assert zarr.open_group(tmp_path / "sl.zarr", mode="r")["labels/cells/0"].shape[0] == 3


def test_every_input_is_checked_before_the_first_is_segmented(env, tmp_path):
    good = _stack(tmp_path / "good.tif", frames=2)
    result = _segment(str(good), str(tmp_path / "missing.tif"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1 and "missing.tif: no such file" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    bad_range = _segment(str(good), str(good), "--frames", "5:9", "-o", str(tmp_path / "out"))
    assert bad_range.exit_code == 1 and "selects no frame" in bad_range.stderr


def test_one_zarr_path_for_several_inputs_is_refused(env, tmp_path):
    a, b = _stack(tmp_path / "a.tif", frames=1), _stack(tmp_path / "b.tif", frames=1)
    result = _segment(str(a), str(b), "-o", str(tmp_path / "both.zarr"))
    assert result.exit_code == 1 and "a .zarr path names the result of one input" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "both.zarr").exists()
    (tmp_path / "x").mkdir()
    same = _stack(tmp_path / "x" / "a.tif", frames=1)
    clash = _segment(str(a), str(same), "-o", str(tmp_path / "out"))
    assert clash.exit_code == 1 and "would both be written to" in clash.stderr


def test_a_tracked_frame_range_numbers_tables_by_the_movie_and_napari_by_the_result(env, tmp_path):
    rng = np.random.default_rng(3)
    movie = np.zeros((7, 64, 64), np.uint16)
    for t in range(7):   # two bright squares drifting right: one cell each, easy to link
        movie[t, 10:22, 5 + t:17 + t] = 1000
        movie[t, 40:52, 30 + t:42 + t] = 1000
    movie += (rng.random(movie.shape) * 50).astype(np.uint16)
    src = tmp_path / "m.tif"
    tifffile.imwrite(src, movie, imagej=True, metadata={"axes": "TYX"})
    result = _segment(str(src), "--frames", "1:6:2", "--track", "-o", str(tmp_path / "r.zarr"),
                      "--threshold", "0.5")
    assert result.exit_code == 0, result.output
    cells = pd.read_csv(tmp_path / "r.cells.csv")
    assert set(cells["frame"]) <= {1, 3, 5} and (cells["label"] == cells["track_id"]).all()
    tracks = pd.read_csv(tmp_path / "r.tracks.csv")
    assert set(tracks["first_frame"]) | set(tracks["last_frame"]) <= {1, 3, 5}
    napari = pd.read_csv(tmp_path / "r.napari-tracks.csv")
    assert set(napari["t"]) <= {0, 1, 2}   # the zarr's frames, which napari shows
    labels = zarr.open_group(tmp_path / "r.zarr", mode="r")["labels/cells/0"][:]
    for _, row in cells.iterrows():        # every row's id is in its frame of the relabelled zarr
        assert (labels[(int(row["frame"]) - 1) // 2] == int(row["label"])).any()


def test_ground_truth_of_the_whole_movie_scores_a_frame_range(env, tmp_path):
    src = _stack(tmp_path / "m.tif", frames=6)
    rng = np.random.default_rng(5)
    truth = np.zeros((6, 64, 96), np.uint16)
    for t in range(6):
        truth[t, 10:30, 10 + 5 * t:40 + 5 * t] = 1
        truth[t, 40:60, 50:80] = 2 + (rng.random() > 0.5)
    tifffile.imwrite(tmp_path / "gt.tif", truth, imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "gt_cut.tif", truth[2:5], imagej=True, metadata={"axes": "TYX"})
    whole = _segment(str(src), "--frames", "2:5", "--gt", str(tmp_path / "gt.tif"), "-o", str(tmp_path / "a.zarr"),
                     "--json")
    assert whole.exit_code == 0, whole.output
    cut = _segment(str(src), "--frames", "2:5", "--gt", str(tmp_path / "gt_cut.tif"), "-o",
                   str(tmp_path / "b.zarr"), "--json")
    assert cut.exit_code == 0, cut.output
    a, b = json.loads(whole.stdout)["scores"], json.loads(cut.stdout)["scores"]
    assert a["pooled"] == b["pooled"] and len(pd.read_csv(tmp_path / "a.scores.csv")) == 3
    wrong = _segment(str(src), "--frames", "2:5", "--gt", str(tmp_path / "gt_cut.tif"), "-o",
                     str(tmp_path / "c.zarr"), "--frames", "0:2")
    assert wrong.exit_code == 1 and "3 ground-truth frames for a stack of 2" in wrong.stderr


def test_relinking_a_frame_range_keeps_the_movies_numbers(env, tmp_path):
    src = _stack(tmp_path / "m.tif", frames=6, finterval=30.0)
    assert _segment(str(src), "--frames", "1:6:2", "-o", str(tmp_path / "r.zarr")).exit_code == 0
    relinked = runner.invoke(app, ["track", str(tmp_path / "r.zarr"), "-o", str(tmp_path / "t.zarr")])
    assert relinked.exit_code == 0, relinked.output
    rows = pd.read_csv(tmp_path / "t.frames.csv")
    assert rows["frame"].tolist() == [1, 3, 5] and rows["time_s"].tolist() == [30.0, 90.0, 150.0]
    axis, scale, translation = _t_axis(tmp_path / "t.zarr")
    assert axis["unit"] == "second" and scale[0] == 60.0 and translation[0] == 30.0
