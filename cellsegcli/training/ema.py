"""An exponential moving average of a network's weights (``--ema``), the copy that is validated and saved.

After every optimizer step ``avg <- d * avg + (1 - d) * weights`` for every floating-point parameter and
buffer (BatchNorm's running statistics too, so the average needs no re-estimation pass); integer buffers
(BatchNorm's step counters) are copied. The decay warms up as ``d_t = min(decay, (1 + t) / (10 + t))`` at
step ``t``, so a fresh run is not held back by its random start (the schedule of TensorFlow's
ExponentialMovingAverage with ``num_updates``, as timm's ``ModelEmaV2`` uses it).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(step: int, decay: float) -> float:
    """The decay applied at update number ``step`` (1-based): ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1 + step) / (10 + step))


class WeightAverage:
    """An exponential moving average of ``network``'s weights, kept in a copy of it (``.module``)."""

    def __init__(self, network: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay {decay:g} must be between 0 and 1")
        self.decay = decay
        self.steps = 0
        self.module = copy.deepcopy(network).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """Fold ``network``'s current weights into the average (call after each optimizer step)."""
        self.steps += 1
        weight = 1.0 - ema_decay(self.steps, self.decay)
        avg, now = self.module.state_dict(), network.state_dict()
        floats = [k for k, v in avg.items() if v.is_floating_point()]
        torch._foreach_lerp_([avg[k] for k in floats], [now[k].detach() for k in floats], weight)
        for k, v in avg.items():
            if not v.is_floating_point():
                v.copy_(now[k])

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "steps": self.steps, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])
