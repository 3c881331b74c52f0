"""The scripts under weights/ that set what a shipped model ships with."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import shutil
from pathlib import Path

import pytest

from cellsegcli.models import read_config, write_config

WEIGHTS = Path(__file__).parents[1] / "weights"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, WEIGHTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fold(cv: Path, name: str, diameter: float, min_size: int, *, sizes: bool = True, sub: str = "model",
          thresholds: tuple[float, float, bool] = (0.5, 0.5, False)):
    folder = cv / name / sub
    shutil.copytree(WEIGHTS / "phase", folder, ignore=shutil.ignore_patterns("*.safetensors", "*.png", "*.csv"))
    config = read_config(folder)
    calibration = {"sizes": {"model_min_size": min_size}} if sizes else {}
    threshold, seed, split = thresholds
    write_config(folder, dataclasses.replace(config, diameter=diameter, min_size=min_size, threshold=threshold,
                                             seed_threshold=seed, split_clumps=split,
                                             training={"calibration": calibration}))


def test_shipped_min_size_is_the_median_share_of_cell_area_the_folds_chose(tmp_path):
    tool = _script("min_size")
    cv = tmp_path / "cv"
    _fold(cv, "fold-0", 50.0, round(0.3 * math.pi / 4 * 50.0**2))
    _fold(cv, "fold-1", 40.0, round(0.2 * math.pi / 4 * 40.0**2))
    _fold(cv, "fold-1", 40.0, round(0.1 * math.pi / 4 * 40.0**2), sub="model-recalibrated")  # preferred
    _fold(cv, "fold-2", 60.0, 100, sizes=False)                   # calibrated before sizes were chosen: ignored
    _fold(cv, "fold-3", 45.0, round(0.25 * math.pi / 4 * 45.0**2))
    shares = tool.fold_shares(cv)
    assert sorted(shares) == ["fold-0", "fold-1", "fold-3"]
    assert shares["fold-0"] == pytest.approx(0.3, abs=1e-3) and shares["fold-1"] == pytest.approx(0.1, abs=1e-3)

    weights = tmp_path / "weights"
    shutil.copytree(WEIGHTS / "phase", weights / "phase")
    before = read_config(weights / "phase")
    summary = tool.main(["phase", str(cv), "--weights", str(weights)])          # prints; writes nothing
    assert read_config(weights / "phase") == before
    assert summary["min_size"] == round(0.25 * math.pi / 4 * before.diameter**2)
    tool.main(["phase", str(cv), "--weights", str(weights), "--write"])
    after = read_config(weights / "phase")
    assert after.min_size == summary["min_size"] and after.training["min_size_rule"]["share_of_cell_area"] == pytest.approx(0.25, abs=1e-3)
    assert after.threshold == before.threshold and after.seed_threshold == before.seed_threshold


def test_min_size_tool_refuses_folds_without_a_size_calibration(tmp_path):
    tool = _script("min_size")
    _fold(tmp_path / "cv", "fold-0", 50.0, 100, sizes=False)
    with pytest.raises(SystemExit, match="no fold has a size calibration"):
        tool.main(["phase", str(tmp_path / "cv")])


def test_thresholds_option_gives_the_folds_median_thresholds_and_majority_splitting(tmp_path):
    tool = _script("min_size")
    cv = tmp_path / "cv"
    area = math.pi / 4 * 50.0**2
    _fold(cv, "fold-0", 50.0, round(0.3 * area), thresholds=(0.4, 0.9, True))
    _fold(cv, "fold-0", 50.0, round(0.3 * area), thresholds=(0.5, 0.9, True), sub="model-recalibrated")  # preferred
    _fold(cv, "fold-1", 50.0, round(0.2 * area), thresholds=(0.6, 0.5, False))
    _fold(cv, "fold-2", 50.0, round(0.2 * area), thresholds=(0.45, 0.8, True))
    _fold(cv, "fold-3", 50.0, round(0.3 * area), thresholds=(0.3, 0.7, False))
    assert tool.fold_thresholds(cv)["fold-0"] == (0.5, 0.9, True)

    weights = tmp_path / "weights"
    shutil.copytree(WEIGHTS / "phase", weights / "phase")
    before = read_config(weights / "phase")
    summary = tool.main(["phase", str(cv), "--weights", str(weights), "--thresholds"])   # prints; writes nothing
    assert read_config(weights / "phase") == before
    # medians of (0.5, 0.6, 0.45, 0.3) and (0.9, 0.5, 0.8, 0.7); splitting 2 of 4 is no majority: off
    assert summary["threshold"] == pytest.approx(0.475) and summary["seed_threshold"] == pytest.approx(0.75)
    assert summary["split_clumps"] is False
    tool.main(["phase", str(cv), "--weights", str(weights), "--thresholds", "--write"])
    after = read_config(weights / "phase")
    assert (after.threshold, after.seed_threshold, after.split_clumps) == (pytest.approx(0.475), pytest.approx(0.75), False)
    assert after.min_size == summary["min_size"] == round(0.25 * math.pi / 4 * before.diameter**2)
    assert after.training["threshold_rule"]["folds"]["fold-1"] == {"threshold": 0.6, "seed_threshold": 0.5,
                                                                   "split_clumps": False}
