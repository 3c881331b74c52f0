"""Test-time augmentation: the 8 transforms of the dihedral group of the square, and their inverses.

Transform ``k`` (0..7) is ``rot90(flip^f(x), r)`` with ``r = k % 4`` quarter turns and ``f = k // 4``
horizontal flips, acting on the last two axes of any ``(..., Y, X)`` tensor.
"""

from __future__ import annotations

import torch

MODES: dict[str, tuple[int, ...]] = {
    "none": (0,),
    "flip": (0, 4, 6, 2),   # identity, horizontal flip, vertical flip, both (= rotation by 180 degrees)
    "d4": tuple(range(8)),
}


def transforms(mode: str) -> tuple[int, ...]:
    try:
        return MODES[mode]
    except KeyError:
        raise ValueError(f"TTA mode {mode!r}: choose one of {', '.join(MODES)}") from None


def apply(x: torch.Tensor, k: int) -> torch.Tensor:
    """Transform ``k`` of (..., Y, X)."""
    if k // 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x


def invert(y: torch.Tensor, k: int) -> torch.Tensor:
    """Undo transform ``k`` of (..., Y, X): ``invert(apply(x, k), k) == x``."""
    if k % 4:
        y = torch.rot90(y, -(k % 4), dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if k // 4 else y


def permutations(size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(8, size * size) index maps of the transforms of a square tile and of their inverses, so that for
    any (..., size, size) ``x``: ``apply(x, k).flatten(-2) == x.flatten(-2)[..., forward[k]]`` and
    ``invert(y, k).flatten(-2) == y.flatten(-2)[..., inverse[k]]``; one gather then transforms a whole
    batch of tiles, each by its own ``k``."""
    grid = torch.arange(size * size, device=device).view(size, size)
    forward = torch.stack([apply(grid, k).reshape(-1) for k in range(8)])
    inverse = torch.stack([invert(grid, k).reshape(-1) for k in range(8)])
    return forward, inverse
