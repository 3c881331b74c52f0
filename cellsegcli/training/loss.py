"""The papers' loss: Dice loss + beta * binary cross-entropy, per output channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(probs: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - 2 sum(p g) / (sum p^2 + sum g^2) per channel over batch and pixels, averaged over channels."""
    dims = (0, 2, 3)
    inter = (probs * targets).sum(dims)
    denom = (probs * probs).sum(dims) + (targets * targets).sum(dims)
    return (1 - (2 * inter + eps) / (denom + eps)).mean()


def bce_dice_loss(logits: torch.Tensor, targets: torch.Tensor, *, beta: float = 1.0) -> torch.Tensor:
    """Dice loss + beta * BCE; ``logits`` and ``targets`` are (B, K, Y, X)."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    return soft_dice_loss(torch.sigmoid(logits), targets) + beta * bce
