"""Input normalisation shared by training and inference: per-frame percentiles to [0, 1]."""

from __future__ import annotations

import numpy as np

from .errors import CellsegError


class BadFrameError(CellsegError):
    """A frame that cannot be normalised (NaN/inf values or a constant image)."""


def to_grey(image: np.ndarray) -> np.ndarray:
    """(Y, X) or (Y, X, S) with S in {3, 4} -> (Y, X): RGB averaged, alpha dropped."""
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return image[..., :3].astype(np.float32).mean(axis=-1)
    if image.ndim != 2:
        raise CellsegError(f"expected a (Y, X) image, got shape {image.shape}")
    return image


def percentile_range(frame: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.8)) -> tuple[float, float]:
    """The (low, high) intensity percentiles of ``frame`` (Y, X); large frames are subsampled on a grid."""
    step = max(1, int(np.sqrt(frame.size / 1_000_000)))
    sample = frame[::step, ::step]
    if frame.dtype.kind == "f" and not np.isfinite(frame).all():
        raise BadFrameError("frame contains NaN or infinite values")
    lo, hi = np.percentile(sample, percentiles)
    if hi <= lo:
        lo, hi = float(frame.min()), float(frame.max())
        if hi <= lo:
            raise BadFrameError(f"frame is constant (every pixel is {lo:g})")
    return float(lo), float(hi)


def normalize(frame: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.8)) -> np.ndarray:
    """(Y, X) -> float32 with the low percentile at 0 and the high one at 1, clipped to [-1, 2].

    Raises :class:`BadFrameError` for frames with NaN/inf values or a single intensity.
    """
    lo, hi = percentile_range(frame, percentiles)
    if frame.dtype.itemsize > 2 and frame.dtype.kind in "iu" or frame.dtype == np.float64:
        # 32/64-bit values with a large offset lose their detail in float32: subtract first, in float64
        return np.clip((frame.astype(np.float64) - lo) / (hi - lo), -1.0, 2.0).astype(np.float32)
    out = frame.astype(np.float32, copy=True)
    out -= lo
    out *= 1.0 / (hi - lo)
    np.clip(out, -1.0, 2.0, out=out)
    return out
