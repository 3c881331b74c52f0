"""Several models as one: their cell and interior probabilities averaged.

An ensemble is a :class:`~cellsegcli.models.folder.Model` whose network runs every member on the same
tile and returns the logit of the mean of their sigmoid probabilities, so the tiled, test-time-augmented
predictor (which applies the sigmoid) blends averaged probabilities without knowing it runs several
networks. The first member's config (thresholds, smallest cell, tile) applies to the ensemble; the
members must agree on what their inputs and outputs are (channels, outputs, normalisation, cell diameter).
A forward pass costs the sum of the members' (``benchmarks/crossval.py --ensemble`` measures the gain).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import CellsegError
from .folder import Model, load_model

EPS = 1e-6


class Ensemble(nn.Module):
    """``(B, C, Y, X)`` -> ``(B, K, Y, X)``: logit of the members' mean sigmoid probability."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.sigmoid(m(x).float()) for m in self.members]).mean(0)
        return torch.logit(p.clamp(EPS, 1 - EPS))


def _same(values, what: str, names: list[str]) -> None:
    if any(v != values[0] for v in values[1:]):
        listed = ", ".join(f"{n}: {v}" for n, v in zip(names, values))
        raise CellsegError(f"--model {' '.join(names)}: the models differ in {what} ({listed}); an ensemble "
                           f"needs models made for the same images")


def load_models(spec: str | Path | Sequence[str | Path]) -> Model:
    """One model (a folder or shipped name), or the ensemble of several."""
    specs = [spec] if isinstance(spec, (str, Path)) else list(spec)
    if not specs:
        raise CellsegError("--model: give at least one model")
    if len(specs) == 1:
        return load_model(specs[0])
    models = [load_model(s) for s in specs]
    names = [m.name for m in models]
    configs = [m.config for m in models]
    _same([c.in_channels for c in configs], "input channels", names)
    _same([tuple(c.outputs) for c in configs], "outputs", names)
    _same([tuple(c.percentiles) for c in configs], "normalisation percentiles", names)
    diameters = [c.diameter for c in configs]
    if any(abs(d - diameters[0]) > 0.1 * max(diameters[0], 1e-9) for d in diameters[1:]):
        _same(diameters, "training cell diameter (by more than 10 %)", names)
    first = configs[0]
    digest = hashlib.sha256("".join(m.sha256 or "" for m in models).encode()).hexdigest()
    config = dataclasses.replace(first, name="+".join(names), architecture="ensemble of " + ", ".join(
        sorted({c.architecture for c in configs})), training={"ensemble": [
            {"name": m.name, "path": str(m.path), "sha256": m.sha256} for m in models]})
    return Model(config=config, network=Ensemble([m.network for m in models]).eval(), path=None, sha256=digest,
                 members=tuple(m.path for m in models))
