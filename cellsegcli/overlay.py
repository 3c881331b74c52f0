"""Pictures people can read: outlines over the image, false negatives magenta and false positives green
(as in the papers' figures), per frame as PNG and for a whole stack as an animated GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import CellsegError

OUTLINE = (255, 255, 0)      # predicted cell outlines: yellow
FALSE_NEGATIVE = (255, 0, 255)  # ground truth missed: magenta
FALSE_POSITIVE = (0, 255, 0)    # predicted where there is no cell: green


def to_display(image: np.ndarray) -> np.ndarray:
    """(Y, X) any dtype -> (Y, X) uint8 stretched between the 1st and 99.8th percentiles."""
    image = np.asarray(image, dtype=np.float32)
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, (1, 99.8)) if finite.size else (0.0, 1.0)
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return (np.clip(np.nan_to_num(scaled), 0, 1) * 255).astype(np.uint8)


def overlay_frame(image: np.ndarray, labels: np.ndarray, gt: np.ndarray | None = None, *,
                  alpha: float = 0.45) -> np.ndarray:
    """(Y, X, 3) uint8 RGB: the image in grey, FN/FP tinted when ``gt`` is given, predicted outlines on top."""
    from skimage.segmentation import find_boundaries

    if labels.shape != image.shape[:2]:
        raise CellsegError(f"labels {labels.shape} and image {image.shape} differ in shape")
    grey = to_display(image)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    if gt is not None:
        if gt.shape != labels.shape:
            raise CellsegError(f"ground truth {gt.shape} and labels {labels.shape} differ in shape")
        pred, truth = labels > 0, gt > 0
        for mask, colour in ((truth & ~pred, FALSE_NEGATIVE), (pred & ~truth, FALSE_POSITIVE)):
            rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.array(colour, np.float32)
    rgb[find_boundaries(labels, mode="inner")] = OUTLINE
    return rgb.astype(np.uint8)


def save_png(rgb: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def save_gif(frames: list[np.ndarray], path: Path, *, fps: float = 4.0, max_side: int = 768) -> Path:
    """An animated GIF of RGB frames, downscaled so the longest side is at most ``max_side``."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    scale = max_side / max(images[0].size)
    if scale < 1:
        size = (round(images[0].width * scale), round(images[0].height * scale))
        images = [im.resize(size, Image.Resampling.LANCZOS) for im in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright colour of its own for each track id (golden-ratio hues: neighbouring ids differ)."""
    import colorsys

    hue = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def overlay_tracks_frame(image: np.ndarray, labels: np.ndarray, paths: dict[int, list[tuple[float, float]]]) -> np.ndarray:
    """(Y, X, 3) uint8 RGB: the image in grey, each cell outlined in its track's colour and each track's
    recent path (``paths[track_id]``: centroids, oldest first, ending at this frame) drawn as a line."""
    from skimage.draw import line
    from skimage.segmentation import find_boundaries

    if labels.shape != image.shape[:2]:
        raise CellsegError(f"labels {labels.shape} and image {image.shape} differ in shape")
    rgb = np.repeat(to_display(image)[..., None], 3, axis=-1)
    edges = find_boundaries(labels, mode="inner")
    ids = labels[edges]
    for track in np.unique(ids):
        rgb[tuple(np.argwhere(edges)[ids == track].T)] = track_colour(track)
    h, w = labels.shape
    for track, points in paths.items():
        colour = track_colour(track)
        for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
            rr, cc = line(int(round(y0)), int(round(x0)), int(round(y1)), int(round(x1)))
            keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            rgb[rr[keep], cc[keep]] = colour
    return rgb
