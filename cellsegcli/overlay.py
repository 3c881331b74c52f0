"""Pictures people can read: outlines over the image, false negatives magenta and false positives green
(as in the papers' figures), per frame as PNG and for a whole stack as an animated GIF; ``overlay_result``
draws them for a ``cellseg segment`` result (the ``cellseg overlay`` command)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class OverlayResult:
    pngs: list[Path]
    gif: Path | None
    plot: Path
    lineage_plot: Path | None = None


def overlay_result(result: Path, out: Path, *, image: Path | None = None, gt: Path | None = None,
                   frames: list[int] | None = None, progress: Callable[..., None] | None = None,
                   tracks: bool = False, trail: int = 10, frame_range: str | None = None) -> OverlayResult:
    """PNG overlays per frame (+ an animated GIF and a time-course plot) of a ``cellseg segment`` result;
    with ``tracks`` (a tracked result), cells coloured by track with their last ``trail`` frames' path,
    and a lineage plot. ``frame_range`` (``START:STOP[:STEP]``) picks frames like ``frames``, by the
    result's frame index."""
    import zarr

    from .evaluation import annotated_in_place, open_labels
    from .io.readers import open_stack
    from .metrics import pixel_scores
    from .morphology import frame_table_row
    from .plots import plot_timecourse

    lineage = None
    if tracks:
        from .io.omezarr import read_lineage

        if gt is not None:
            raise CellsegError("--tracks draws tracks, --gt draws errors: give one of them")
        try:
            lineage = read_lineage(result) if result.suffix == ".zarr" else None
        except Exception:   # not a zarr group
            lineage = None
        if lineage is None:
            raise CellsegError(f"{result}: holds no tracks; run `cellseg track {result}` (or segment with --track) "
                               f"first")
    labels = open_labels(result)
    if image is not None:
        stack = open_stack(image, z="slices")
        get_image, close_image = stack.frame, stack.close
    else:
        root = zarr.open_group(result, mode="r") if result.suffix == ".zarr" else None
        if root is None or "0" not in root:
            labels.close()
            raise CellsegError(f"{result}: holds no image (segmented with --no-image?); pass --image STACK")
        get_image, close_image = (lambda t: np.asarray(root["0"][t])), (lambda: None)
    truth = open_labels(gt) if gt is not None else None
    try:
        if truth is not None and len(truth) != len(labels):
            raise CellsegError(f"{gt}: {len(truth)} frames but {result} has {len(labels)}")
        sparse = truth is not None and annotated_in_place(truth)
        if frame_range is not None:
            from .io.frames import parse_frames

            if frames is not None:
                raise CellsegError("--frame and --frames both pick frames: give one of them")
            frames = list(parse_frames(frame_range, len(labels), where=str(result)))
        chosen = frames if frames is not None else list(range(len(labels)))
        bad = [t for t in chosen if not 0 <= t < len(labels)]
        if bad:
            raise CellsegError(f"--frame {bad[0]}: {result} has frames 0..{len(labels) - 1}")
        name = result.name.removesuffix(".zarr")
        history = _track_history(labels, max(chosen) + 1) if lineage is not None else None
        pngs, rgbs, table, jaccard = [], [], {"frame": [], "cell_count": [], "confluence_percent": []}, []
        for i, t in enumerate(chosen):
            lab = labels.frame(t)
            g = truth.frame(t) if truth is not None else None
            if g is not None and sparse and not g.any():
                g = None   # not annotated: outlines only, no false positives drawn
            if history is not None:
                present = set(np.unique(lab).tolist()) - {0}
                paths = {k: [(y, x) for s, y, x in v if t - trail <= s <= t] for k, v in history.items() if k in present}
                rgb = overlay_tracks_frame(get_image(t), lab, paths)
            else:
                rgb = overlay_frame(get_image(t), lab, g)
            pngs.append(save_png(rgb, out / f"{name}_t{t:04d}.png"))
            if len(chosen) > 1:
                rgbs.append(rgb)
            row = frame_table_row(lab, frame=t)
            for k in table:
                table[k].append(row[k])
            if truth is not None:
                jaccard.append(pixel_scores(lab, g)["jaccard"] if g is not None else float("nan"))
            if progress is not None:
                progress(i + 1, len(chosen))
        gif = save_gif(rgbs, out / f"{name}.gif") if rgbs else None
        plot = plot_timecourse(table, out / f"{name}_timecourse.png", jaccard=jaccard if truth else None,
                               title=name)
        lineage_plot = None
        if lineage is not None:
            from .plots import plot_lineage

            lineage_plot = plot_lineage(lineage, out / f"{name}_lineage.png", title=name)
    finally:
        labels.close()
        close_image()
        if truth is not None:
            truth.close()
    return OverlayResult(pngs, gif, plot, lineage_plot)


def _track_history(labels, n_frames: int) -> dict[int, list[tuple[int, float, float]]]:
    """``{track_id: [(frame, y, x), ...]}`` over the first ``n_frames`` frames of tracked labels."""
    from .tracking import detect

    history: dict[int, list[tuple[int, float, float]]] = {}
    for t in range(n_frames):
        d = detect(labels.frame(t), t)
        for k, y, x in zip(d.label.tolist(), d.y.tolist(), d.x.tolist()):
            history.setdefault(k, []).append((t, y, x))
    return history
