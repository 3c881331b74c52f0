"""Ensembles: several models' probabilities averaged, through the predictor and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from typer.testing import CliRunner

from cellsegcli.cli import app
from cellsegcli.errors import CellsegError
from cellsegcli.models import ModelConfig, build, load_model, load_models, save_model

runner = CliRunner()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ens")
    out = {}
    for i, (name, extra) in enumerate([("a", {}), ("b", {"threshold": 0.7}), ("odd", {"percentiles": (2.0, 98.0)})]):
        torch.manual_seed(i)
        out[name] = save_model(build("resnet18-fpn", in_channels=1, classes=2),
                               ModelConfig(name=name, architecture="resnet18-fpn", **extra), root / name)
    return out


def test_ensemble_averages_the_members_probabilities(folders):
    x = torch.rand(2, 1, 64, 64)
    a, b = load_model(folders["a"]), load_model(folders["b"])
    ens = load_models([folders["a"], folders["b"]])
    with torch.no_grad():
        expected = (torch.sigmoid(a.network(x)) + torch.sigmoid(b.network(x))) / 2
        got = torch.sigmoid(ens.network(x))
        same = torch.sigmoid(load_models([folders["a"], folders["a"]]).network(x))
        alone = torch.sigmoid(a.network(x))
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(same, alone, atol=1e-5)
    assert ens.name == "a+b" and ens.config.threshold == 0.5            # the first member's settings
    assert [m["name"] for m in ens.config.training["ensemble"]] == ["a", "b"]
    assert ens.members == (folders["a"], folders["b"]) and ens.sha256 not in (a.sha256, b.sha256)
    assert load_models(str(folders["a"])).sha256 == a.sha256             # one spec: the model itself


def test_members_made_for_other_inputs_are_refused(folders):
    with pytest.raises(CellsegError, match="normalisation percentiles"):
        load_models([folders["a"], folders["odd"]])


def test_segment_with_two_models(folders, tmp_path):
    src = tmp_path / "m.tif"
    tifffile.imwrite(src, (np.random.default_rng(0).random((2, 64, 96)) * 1000).astype(np.uint16))
    result = runner.invoke(app, ["segment", str(src), "--model", str(folders["a"]), "--model", str(folders["b"]),
                                 "--device", "cpu", "--json", "--save-probabilities"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"] == "a+b"
    root = zarr.open_group(tmp_path / "m.zarr", mode="r")
    assert root.attrs["cellseg"]["model"] == "a+b" and root["labels/cells/0"].shape == (2, 64, 96)
    assert [m["sha256"] for m in root.attrs["cellseg"]["ensemble"]] == [load_model(folders[k]).sha256 for k in "ab"]
    bad = runner.invoke(app, ["segment", str(src), "--model", str(folders["a"]), "--model", str(folders["odd"]),
                              "--device", "cpu", "-o", str(tmp_path / "bad.zarr")])
    assert bad.exit_code == 1 and "percentiles" in bad.output
    assert not (tmp_path / "bad.zarr").exists()
