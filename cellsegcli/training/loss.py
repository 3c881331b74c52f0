"""Training losses, per output channel: the papers' Dice + beta * BCE, and BCE + the Lovász hinge.

The Lovász hinge (Berman, Triki & Blaschko, CVPR 2018) is the convex (Lovász) extension of the Jaccard
loss applied to hinge errors: it optimises the image's IoU itself rather than a per-pixel surrogate.
Pure Lovász from scratch is known to train slowly, so, as is usual, it comes with BCE (``bce-lovasz``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LOSSES = ("bce-dice", "bce-lovasz")


def soft_dice_loss(probs: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - 2 sum(p g) / (sum p^2 + sum g^2) per channel over batch and pixels, averaged over channels."""
    dims = (0, 2, 3)
    inter = (probs * targets).sum(dims)
    denom = (probs * probs).sum(dims) + (targets * targets).sum(dims)
    return (1 - (2 * inter + eps) / (denom + eps)).mean()


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy of (B, K, Y, X) logits; each pixel's term times ``weight`` (B, 1, Y, X),
    the same for every channel, when given (:func:`~cellsegcli.training.border.border_weights`)."""
    if weight is None:
        return F.binary_cross_entropy_with_logits(logits, targets)
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (per_pixel * weight).mean()


def bce_dice_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None, *,
                  beta: float = 1.0) -> torch.Tensor:
    """Dice loss + beta * BCE (pixel-weighted by ``weight`` when given); ``logits`` and ``targets`` are
    (B, K, Y, X)."""
    logits = logits.float()
    return soft_dice_loss(torch.sigmoid(logits), targets) + beta * weighted_bce(logits, targets, weight)


def _lovasz_grad(sorted_targets: torch.Tensor) -> torch.Tensor:
    """Gradient of the Jaccard loss's Lovász extension at targets sorted by decreasing error (last axis)."""
    total = sorted_targets.sum(-1, keepdim=True)
    intersection = total - sorted_targets.cumsum(-1)
    union = total + (1 - sorted_targets).cumsum(-1)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def lovasz_hinge(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Lovász hinge of (B, K, Y, X) logits against binary targets, per image and channel, averaged.

    For hinge errors ``max(0, 1 - logit * sign)`` that are all 0 or 1 it equals the Jaccard loss of the
    pixels whose error is 1 counted as mispredicted.
    """
    logits = logits.float().flatten(2)
    targets = targets.float().flatten(2)
    errors = 1 - logits * (2 * targets - 1)
    errors, order = errors.sort(dim=-1, descending=True)
    grad = _lovasz_grad(targets.gather(-1, order))
    return (F.relu(errors) * grad).sum(-1).mean()


def bce_lovasz_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE (pixel-weighted by ``weight`` when given) + Lovász hinge; ``logits`` and ``targets`` are
    (B, K, Y, X)."""
    logits = logits.float()
    return weighted_bce(logits, targets, weight) + lovasz_hinge(logits, targets)


def loss_function(name: str) -> Callable[..., torch.Tensor]:
    """The loss called ``name`` (one of :data:`LOSSES`): ``loss(logits, targets, weight=None)``."""
    return {"bce-dice": bce_dice_loss, "bce-lovasz": bce_lovasz_loss}[name]
