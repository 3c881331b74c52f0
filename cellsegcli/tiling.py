"""Tile grids and Gaussian blending weights for frames of any size (numpy only, no model).

A frame of shape (Y, X) is padded (reflect) to at least one tile per side; square tiles of ``tile`` pixels
(a multiple of 32) start every ``tile - overlap`` pixels, the last one flush with the far edge. Each tile's
prediction is weighted by a Gaussian importance map (nnU-Net's: sigma = tile / 8, peak 1, never zero) and
the weighted sum divided by the summed weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Tile:
    """Window ``(rows, cols)`` of a padded frame fed to the model; its output lands on the same window."""

    rows: slice
    cols: slice


@dataclass(frozen=True)
class Grid:
    """The tiling of one frame: padded shape, padding at the far ends, tiles."""

    shape: tuple[int, int]          # original (Y, X)
    padded: tuple[int, int]         # after padding
    tile: int
    tiles: tuple[Tile, ...]


def effective_tile(shape: tuple[int, int], tile: int) -> int:
    """The tile actually used: ``tile``, or the smallest multiple of 32 covering the frame if that is smaller."""
    if tile % 32 or tile <= 0:
        raise ValueError(f"tile size {tile} must be a positive multiple of 32")
    need = 32 * math.ceil(max(shape) / 32)
    return min(tile, need)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``length`` (>= tile) with tiles overlapping by at least ``overlap``."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    n = math.ceil((length - tile) / stride) + 1
    # spread the tiles evenly so that every overlap is at least ``overlap``
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def make_grid(shape: tuple[int, int], *, tile: int, overlap: float = 0.25) -> Grid:
    """Tiles for a frame of ``shape`` (Y, X); ``overlap`` is a fraction of the tile (0 <= overlap < 1)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap {overlap} must be in [0, 1)")
    t = effective_tile(shape, tile)
    padded = (max(shape[0], t), max(shape[1], t))
    ov = int(round(overlap * t))
    tiles = tuple(
        Tile(slice(y, y + t), slice(x, x + t))
        for y in tile_starts(padded[0], t, ov)
        for x in tile_starts(padded[1], t, ov)
    )
    return Grid(shape=tuple(shape), padded=padded, tile=t, tiles=tiles)


def pad_frame(frame: np.ndarray, padded: tuple[int, int]) -> np.ndarray:
    """Pad (..., Y, X) at the far ends to ``padded`` by reflection (edge mode where reflection cannot reach)."""
    py, px = padded[0] - frame.shape[-2], padded[1] - frame.shape[-1]
    if py == 0 and px == 0:
        return frame
    widths = [(0, 0)] * (frame.ndim - 2) + [(0, py), (0, px)]
    mode = "reflect" if py < frame.shape[-2] and px < frame.shape[-1] else "symmetric"
    return np.pad(frame, widths, mode=mode)


@lru_cache(maxsize=8)
def gaussian_weights(tile: int, sigma_scale: float = 1 / 8) -> np.ndarray:
    """(tile, tile) float32 importance map: a Gaussian with sigma = tile * sigma_scale, peak 1, minimum > 0."""
    r = np.arange(tile, dtype=np.float64) - (tile - 1) / 2
    g = np.exp(-(r**2) / (2 * (tile * sigma_scale) ** 2))
    w = np.outer(g, g)
    w /= w.max()
    w = np.maximum(w, 1e-3)
    out = w.astype(np.float32)
    out.setflags(write=False)
    return out
