"""Early stopping as a small state machine (after Lightning's EarlyStopping)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Stop when the monitored value (lower is better) has not improved by ``min_delta`` for ``patience`` updates."""

    patience: int
    min_delta: float = 0.0
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> tuple[bool, bool, str]:
        """Record ``value`` for ``epoch``; returns (improved, should_stop, reason)."""
        if not math.isfinite(value):
            return False, True, f"validation loss is {value}"
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True, False, ""
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            return False, True, f"no improvement for {self.patience} epochs (best {self.best:.4f} at epoch {self.best_epoch})"
        return False, False, ""

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
