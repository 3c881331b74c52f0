"""`cellseg evaluate`: sources (folders, TIFF stacks, zarr), pairing, outputs and the quality gate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from cellsegcli.cli import app

runner = CliRunner()


def _square(y, x, size=10, shape=(40, 40)):
    a = np.zeros(shape, np.uint16)
    a[y : y + size, x : x + size] = 1
    return a


@pytest.fixture
def folders(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    # frame a: a 10x10 square shifted by 2 px -> IoU 80/120; frame b: identical
    tifffile.imwrite(gt / "a_masks.tif", _square(5, 5))
    tifffile.imwrite(pred / "a.tif", _square(5, 7))
    tifffile.imwrite(gt / "b_masks.tif", _square(20, 20) * 3)
    tifffile.imwrite(pred / "b.tif", _square(20, 20))
    return pred, gt


def test_folders_pair_by_stem_and_score(folders, tmp_path):
    pred, gt = folders
    result = runner.invoke(app, ["evaluate", str(pred), str(gt), "--json", "--csv", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    rows = {r["frame"]: r for r in out["per_frame"]}
    assert rows["a"]["jaccard"] == pytest.approx(80 / 120)
    assert rows["a"]["f1"] == 1.0 and rows["b"]["seg"] == 1.0
    assert out["summary"]["jaccard"]["mean"] == pytest.approx((80 / 120 + 1) / 2)
    assert out["pooled"]["seg"] == pytest.approx((80 / 120 + 1) / 2) and out["pooled"]["tp"] == 2
    assert list(pd.read_csv(tmp_path / "s.csv")["frame"]) == ["a", "b"]


def test_min_jaccard_gate_exits_3(folders):
    pred, gt = folders
    assert runner.invoke(app, ["evaluate", str(pred), str(gt), "--min-jaccard", "0.8"]).exit_code == 0
    result = runner.invoke(app, ["evaluate", str(pred), str(gt), "--min-jaccard", "0.9"])
    assert result.exit_code == 3 and "below --min-jaccard 0.9" in result.stderr


def test_unpaired_names_are_reported(folders):
    pred, gt = folders
    (pred / "b.tif").rename(pred / "c.tif")
    result = runner.invoke(app, ["evaluate", str(pred), str(gt)])
    assert result.exit_code == 1
    assert "no prediction for b" in result.stderr and "no ground truth for c" in result.stderr


def test_tiff_stack_against_zarr_labels(tmp_path):
    gt = np.stack([_square(5, 5), _square(10, 10)]).astype(np.uint32)
    tifffile.imwrite(tmp_path / "gt.tif", gt, metadata={"axes": "TYX"})
    root = zarr.open_group(tmp_path / "p.zarr", mode="w")
    root.create_array("labels/cells/0", data=gt)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "p.zarr"), str(tmp_path / "gt.tif"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["mean_ap"]["mean"] == 1.0


def test_empty_frames_of_a_ground_truth_stack_are_not_annotated(tmp_path):
    gt = np.stack([_square(5, 5), np.zeros((40, 40)), _square(10, 10), np.zeros((40, 40))]).astype(np.uint16)
    pred = gt.copy()
    pred[1] = _square(20, 20)  # cells found where nobody annotated: not held against the prediction
    tiff = {"photometric": "minisblack", "metadata": {"axes": "TYX"}}
    tifffile.imwrite(tmp_path / "gt.tif", gt, **tiff)
    tifffile.imwrite(tmp_path / "p.tif", pred, **tiff)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "gt.tif"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["frames"] == 2 and report["summary"]["jaccard"]["mean"] == 1.0
    assert [row["frame"] for row in report["per_frame"]] == ["frame0", "frame2"]
    assert report["unannotated_frames"] == ["frame1", "frame3"]
    tifffile.imwrite(tmp_path / "gt.tif", np.zeros_like(gt), **tiff)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "gt.tif")])
    assert result.exit_code == 1 and "every one of its 4 frames is empty" in result.stderr


def test_frame_count_mismatch_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((2, 8, 8), np.uint16), metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "g.tif", np.zeros((3, 8, 8), np.uint16), photometric="minisblack", metadata={"axes": "TYX"})
    result = runner.invoke(app, ["evaluate", str(tmp_path / "p.tif"), str(tmp_path / "g.tif")])
    assert result.exit_code == 1 and "has 2 frames but" in result.stderr


def test_error_kinds_are_summed_over_frames_and_said_in_one_line(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    two = np.zeros((40, 60), np.uint16)
    two[10:30, 10:30], two[10:30, 30:50] = 1, 2                      # two touching cells
    tifffile.imwrite(gt / "a_masks.tif", two)
    tifffile.imwrite(pred / "a.tif", (two > 0).astype(np.uint16))     # predicted as one: a merge
    tifffile.imwrite(gt / "b_masks.tif", _square(5, 5))
    tifffile.imwrite(pred / "b.tif", _square(5, 5) + 2 * _square(25, 25))   # the cell, and one on background
    out = json.loads(runner.invoke(app, ["evaluate", str(pred), str(gt), "--json"]).stdout)
    errors = out["errors"]
    assert (errors["tp"], errors["n_gt"], errors["n_pred"]) == (1, 3, 3)
    assert errors["fn_merged"] == 2 and errors["fp_merge"] == 1 and errors["fp_spurious"] == 1
    assert sum(v for k, v in errors.items() if k.startswith(("fn_", "fp_"))) == 4
    text = runner.invoke(app, ["evaluate", str(pred), str(gt)])
    assert text.exit_code == 0
    assert ("2 of 3 cells unmatched (2 merged with a neighbour" in " ".join(text.output.split())
            and "1 on background" in text.output)
