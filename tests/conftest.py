"""Shared fixtures: the real-data folder (skips when absent), small synthetic images, and a tiny randomly
initialised model (``tiny``) found through ``CELLSEG_WEIGHTS``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    return Path(os.environ.get("CELLSEG_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (or $CELLSEG_DATA); skips the test when it is absent."""
    path = _data_dir()
    if not (path / "README.md").is_file():
        pytest.skip(f"real data not found at {path} (set CELLSEG_DATA to its location)")
    return path


@pytest.fixture
def disks() -> np.ndarray:
    """(64, 80) uint32 label image with three disks, two of them touching."""
    yy, xx = np.mgrid[:64, :80]
    labels = np.zeros((64, 80), np.uint32)
    for i, (cy, cx, r) in enumerate([(20, 20, 10), (20, 39, 10), (48, 60, 8)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return labels


@pytest.fixture
def annotate(tmp_path):
    """``annotate(labels)``: an annotation folder (images/, masks/) holding one image made from the label
    image ``labels`` (cells bright on a dim background) and ``labels`` as its mask."""
    import tifffile

    def make(labels: np.ndarray, name: str = "ann") -> Path:
        root = tmp_path / name
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        tifffile.imwrite(root / "images" / "a.tif", (labels > 0).astype(np.uint16) * 500 + 100)
        tifffile.imwrite(root / "masks" / "a.tif", labels)
        return root

    return make


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    """A folder holding the model ``tiny``: a randomly initialised FPN (outputs are never asserted)."""
    import torch

    from cellsegcli.models import ModelConfig, build, save_model

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    save_model(build("resnet18-fpn", in_channels=1, classes=2),
               ModelConfig(name="tiny", architecture="resnet18-fpn", description="random weights, tests"),
               root / "tiny", half=True)
    return root


@pytest.fixture
def env(weights, monkeypatch):
    monkeypatch.setenv("CELLSEG_WEIGHTS", str(weights))
    return weights
