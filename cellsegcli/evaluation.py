"""Scoring predicted labels against ground truth, frame by frame.

A label source is an OME-Zarr written by ``cellseg segment`` (its ``labels/cells``), a label array inside
a zarr, a TIFF stack, or a folder of single-frame images. Two folders are paired by file stem (a
``_masks`` suffix is ignored, for Cellpose-style names); anything else is paired frame by frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CellsegError

MASK_SUFFIXES = ("_masks", "_mask", "_labels", "_label")


@dataclass
class LabelSource:
    """Frames of label images, read lazily: ``frame(i)`` -> (Y, X) integer array."""

    path: Path
    names: list[str]
    read: Callable[[int], np.ndarray]
    close: Callable[[], None] = lambda: None

    def __len__(self) -> int:
        return len(self.names)

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` as labels, checked (see :func:`checked_labels`)."""
        return checked_labels(self.read(t), f"{self.path}: {self.names[t]}")


def select_frames(source: LabelSource, numbers: range) -> LabelSource:
    """Frames ``numbers`` of ``source`` as a source of their own (ground truth of a whole movie scored
    against a ``--frames`` result); closing it closes ``source``."""
    return LabelSource(source.path, [source.names[n] for n in numbers], lambda i: source.read(numbers[i]),
                       source.close)


def checked_labels(frame: np.ndarray, where: str) -> np.ndarray:
    """``frame`` as a (Y, X) array of non-negative integer labels; whole-number floats (Fiji's 32-bit label
    images) and booleans (a mask: one label) are converted; anything else is a one-line CellsegError."""
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise CellsegError(f"{where}: a label image must be one (Y, X) plane, got shape {frame.shape}; save labels "
                           f"as a single channel")
    if frame.dtype.kind == "b":
        return frame.astype(np.uint8)
    if frame.dtype.kind == "f":
        if not np.isfinite(frame).all() or not (frame == np.round(frame)).all():
            raise CellsegError(f"{where}: label values must be whole numbers, found fractions or NaN ({frame.dtype}); "
                               f"save instance labels as integers (0 = background)")
        frame = frame.astype(np.int64)
    elif frame.dtype.kind not in "iu":
        raise CellsegError(f"{where}: {frame.dtype} is not a label image; save instance labels as integers")
    if frame.dtype.kind == "i" and frame.size and frame.min() < 0:
        raise CellsegError(f"{where}: negative labels (min {int(frame.min())}); background must be 0 and cells 1, 2, "
                           f"...: shift or replace the negative values")
    return frame


def _stem(path: Path) -> str:
    stem = path.name.split(".")[0]
    for suffix in MASK_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def open_labels(path: Path) -> LabelSource:
    """Open ``path`` (zarr, TIFF stack or folder of images) as a sequence of label frames."""
    path = Path(path)
    if not path.exists():
        raise CellsegError(f"{path}: no such file or folder; give a .zarr from cellseg segment, a TIFF stack or a "
                           f"folder of label images")
    if path.suffix == ".zarr" or (path / "zarr.json").is_file():
        import zarr

        try:
            node = zarr.open(path, mode="r")
        except Exception as exc:
            raise CellsegError(f"{path}: cannot open as zarr ({exc})") from None
        for key in ("labels/cells/0", "0"):
            if isinstance(node, zarr.Group) and key in node:
                node = node[key]
                break
        if not isinstance(node, zarr.Array) or node.ndim not in (2, 3):
            raise CellsegError(f"{path}: no label array found (expected labels/cells/0 of shape (T, Y, X))")
        array = node if node.ndim == 3 else node[None]
        return LabelSource(path, [f"frame{t}" for t in range(array.shape[0])], lambda t: np.asarray(array[t]))
    if path.is_dir():
        from .io.readers import list_images
        from .training.data import read_image

        files = list_images(path)
        return LabelSource(path, [_stem(f) for f in files], lambda t: _as_labels(read_image(files[t]), files[t]))
    from .io.readers import open_stack

    stack = open_stack(path, z="slices")   # label images: a Z axis of masks is their frames
    if "S" in stack.info.axes or "C" in stack.info.axes:
        stack.close()
        raise CellsegError(f"{path}: holds colour or several channels ({stack.info.axes}); a label stack has one "
                           f"integer plane per frame")
    return LabelSource(path, [f"frame{t}" for t in range(len(stack))], stack.frame, stack.close)


def _as_labels(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 3:
        if not (image[..., :1] == image[..., :3]).all():
            raise CellsegError(f"{path}: an RGB image is not a label image; save labels as a single channel")
        image = image[..., 0]
    return image


def annotated_in_place(gt: LabelSource) -> bool:
    """Whether an empty frame of ``gt`` means "not annotated": a label stack annotated in place (every tenth
    frame, say) leaves the other frames empty, as training reads it; a folder's files and a single frame
    are ground truth as they are."""
    folder = gt.path.is_dir() and not (gt.path / "zarr.json").exists()
    return len(gt) > 1 and not folder


def pair_frames(pred: LabelSource, gt: LabelSource) -> list[tuple[str, int, int]]:
    """(name, pred index, gt index) for every frame to score."""
    if pred.path.is_dir() and gt.path.is_dir() and not (pred.path / "zarr.json").exists() \
            and not (gt.path / "zarr.json").exists():
        p = {n: i for i, n in enumerate(pred.names)}
        g = {n: i for i, n in enumerate(gt.names)}
        missing = sorted(set(g) - set(p))
        extra = sorted(set(p) - set(g))
        if missing or extra:
            parts = ([f"no prediction for {', '.join(missing[:5])}"] if missing else []) + \
                    ([f"no ground truth for {', '.join(extra[:5])}"] if extra else [])
            raise CellsegError(f"{pred.path} vs {gt.path}: {'; '.join(parts)}; name files alike in both folders")
        return [(n, p[n], g[n]) for n in gt.names]
    if len(pred) != len(gt):
        raise CellsegError(f"{pred.path} has {len(pred)} frames but {gt.path} has {len(gt)}; "
                           f"score stacks of the same length")
    return [(gt.names[i], i, i) for i in range(len(gt))]


@dataclass
class Evaluation:
    pred: Path
    gt: Path
    rows: list[dict] = field(default_factory=list)     # per frame: name + metrics.FRAME_KEYS
    summary: dict[str, dict[str, float]] = field(default_factory=dict)  # key -> {mean, std}
    pooled: dict[str, float] = field(default_factory=dict)  # sequence-level SEG and object counts
    unannotated: list[str] = field(default_factory=list)   # frames of a ground-truth stack left empty
    errors: dict[str, int] = field(default_factory=dict)    # error kinds summed over the frames (error_kinds)

    def as_dict(self) -> dict:
        return {"pred": str(self.pred), "gt": str(self.gt), "frames": len(self.rows), "summary": self.summary,
                "pooled": self.pooled, "errors": self.errors, "unannotated_frames": self.unannotated,
                "per_frame": self.rows}


def evaluate(pred: Path, gt: Path, *, progress: Callable[..., None] | None = None,
             gt_frames: range | None = None) -> Evaluation:
    """Score every frame of ``pred`` against ``gt`` (see :mod:`cellsegcli.metrics` for the definitions);
    ``gt_frames``: score against these frames of ``gt`` only (its frames ``gt_frames[i]`` for ``pred``'s i)."""

    p_src = open_labels(pred)
    try:
        g_src = open_labels(gt)
    except BaseException:
        p_src.close()
        raise
    if gt_frames is not None:
        g_src = select_frames(g_src, gt_frames)
    try:
        return _score(p_src, g_src, progress)
    finally:
        p_src.close()
        g_src.close()


def _score(p_src: LabelSource, g_src: LabelSource, progress: Callable[..., None] | None) -> Evaluation:
    from .error_kinds import error_kinds
    from .metrics import frame_scores, match_objects, pooled_scores, summarize

    pred, gt = p_src.path, g_src.path
    pairs = pair_frames(p_src, g_src)
    sparse = annotated_in_place(g_src)
    result = Evaluation(pred, gt)
    for done, (name, i, j) in enumerate(pairs, start=1):
        p, g = p_src.frame(i), g_src.frame(j)
        if p.shape != g.shape:
            raise CellsegError(f"{pred}: frame {name} has shape {p.shape} but the ground truth has {g.shape}; "
                               f"score predictions of the ground truth's images")
        if sparse and not g.any():
            result.unannotated.append(name)
        else:
            matching = match_objects(p, g)   # once, for the scores and the error kinds
            result.rows.append({"frame": name, **frame_scores(p, g, matching=matching)})
            for k, v in error_kinds(p, g, matching=matching).items():
                result.errors[k] = result.errors.get(k, 0) + v
        if progress is not None:
            progress(done, len(pairs))
    if not result.rows:
        raise CellsegError(f"{gt}: every one of its {len(pairs)} frames is empty; nothing to score against "
                           f"(give labels for at least one frame)")
    result.summary = summarize([{k: v for k, v in r.items() if k != "frame"} for r in result.rows])
    result.pooled = pooled_scores(result.rows)
    return result
