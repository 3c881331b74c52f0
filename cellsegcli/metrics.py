"""Pixel and object metrics for one frame, and their summary over many frames.

Levels
------
- **pixel** (:func:`pixel_scores`): the papers' metrics on the foreground class (Jaccard, Dice, precision,
  recall); any nonzero value is foreground, so binary masks and instance labels score alike.
- **object** (:func:`match_objects`, :func:`object_scores`, :func:`mean_average_precision`,
  :func:`seg_score`): instances are matched on their intersection over union (IoU).

Conventions
-----------
- Inputs are ``(Y, X)`` arrays of the same shape; 0 is background.
- Object-level functions take instance labels. A *binary* input -- a bool array, or an integer array with
  at most one distinct nonzero value (e.g. a 0/255 mask) -- is split into connected components with
  8-connectivity, which is what ``skimage.measure.label`` does by default in 2D (``connectivity=ndim``).
  Any other integer array is taken as instance labels as it is: a label's pixels form one object even when
  they are not connected.
- Undefined ratios (0 / 0): **1.0 when both prediction and ground truth are empty** (nothing to find and
  nothing found is a perfect answer), **0.0 otherwise** (e.g. precision of an empty prediction against a
  non-empty ground truth). The exception is :func:`seg_score`, which is NaN for an empty ground truth, as
  SEG is a mean over reference objects and there are none.
- Object matching is one-to-one and requires ``IoU > threshold`` (strictly greater), as in the Data Science
  Bowl 2018 metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage, optimize

__all__ = [
    "Matching",
    "FRAME_KEYS",
    "DSB2018_THRESHOLDS",
    "pixel_scores",
    "match_objects",
    "object_scores",
    "mean_average_precision",
    "seg_score",
    "frame_scores",
    "summarize",
    "pooled_scores",
]

#: IoU thresholds of the Data Science Bowl 2018 metric: 0.50, 0.55, ..., 0.95 (ten values).
DSB2018_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))

#: Keys of :func:`frame_scores`, in order.
FRAME_KEYS: tuple[str, ...] = (
    "jaccard", "dice", "precision", "recall",
    "object_precision", "object_recall", "f1", "mean_ap", "seg",
    "tp", "fp", "fn", "n_pred", "n_gt",
    "px_inter", "px_pred", "px_gt",
)


def _ratio(num: float, den: float, *, both_empty: bool) -> float:
    """``num / den``; for ``den == 0``, 1.0 when prediction and ground truth are both empty, else 0.0."""
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num) / float(den)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one input check: two 2D arrays of the same shape."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(
            f"pred and gt must be (Y, X) arrays of the same shape; got {pred.shape} and {gt.shape}"
        )
    return pred, gt


def pixel_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Jaccard, Dice, precision and recall of the foreground class, and the pixel counts behind them.

    Parameters
    ----------
    pred, gt : (Y, X) arrays
        Prediction and ground truth; any nonzero value is foreground (binary masks or instance labels).

    Returns
    -------
    dict
        ``jaccard`` = |P n G| / |P u G|, ``dice`` = 2 |P n G| / (|P| + |G|),
        ``precision`` = |P n G| / |P|, ``recall`` = |P n G| / |G|.
        A ratio with a zero denominator is 1.0 when both masks are empty and 0.0 otherwise: an empty
        prediction against a non-empty ground truth scores 0 everywhere, and so does a non-empty prediction
        against an empty ground truth. ``px_inter``, ``px_pred``, ``px_gt`` are |P n G|, |P| and |G|.
    """
    pred, gt = _check_pair(pred, gt)
    p, g = pred != 0, gt != 0
    return _pixel_ratios(int(np.count_nonzero(p & g)), int(np.count_nonzero(p)), int(np.count_nonzero(g)))


def _pixel_ratios(inter: int, n_p: int, n_g: int) -> dict[str, float]:
    """The four pixel ratios of :func:`pixel_scores` from the intersection and the two foreground sizes."""
    both_empty = n_p == 0 and n_g == 0
    return {
        "jaccard": _ratio(inter, n_p + n_g - inter, both_empty=both_empty),
        "dice": _ratio(2 * inter, n_p + n_g, both_empty=both_empty),
        "precision": _ratio(inter, n_p, both_empty=both_empty),
        "recall": _ratio(inter, n_g, both_empty=both_empty),
        "px_inter": float(inter), "px_pred": float(n_p), "px_gt": float(n_g),
    }


@dataclass(frozen=True)
class Matching:
    """Overlaps between the objects of a ground truth and a prediction.

    Row ``i`` is ground-truth object ``gt_ids[i]``, column ``j`` is predicted object ``pred_ids[j]``.

    Attributes
    ----------
    gt_ids : (n_gt,) int64 array
        Ground-truth labels, ascending, background excluded.
    pred_ids : (n_pred,) int64 array
        Predicted labels, ascending, background excluded.
    intersection : (n_gt, n_pred) int64 array
        Pixels shared by each pair.
    gt_areas : (n_gt,) int64 array
    pred_areas : (n_pred,) int64 array
    iou : (n_gt, n_pred) float64 array
        ``intersection / (gt_area + pred_area - intersection)``.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    intersection: np.ndarray
    gt_areas: np.ndarray
    pred_areas: np.ndarray
    iou: np.ndarray

    @property
    def n_gt(self) -> int:
        return len(self.gt_ids)

    @property
    def n_pred(self) -> int:
        return len(self.pred_ids)


def _instances(labels: np.ndarray) -> np.ndarray:
    """Instance labels: binary input split into 8-connected components, other integer input unchanged."""
    if labels.dtype == bool:
        return ndimage.label(labels, structure=np.ones((3, 3), int))[0]
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a bool or integer array; got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be >= 0 (0 is background); found {labels.min()}")
    foreground = labels[labels != 0]
    if foreground.size == 0 or (foreground == foreground[0]).all():  # binary, e.g. 0/1 or 0/255
        return ndimage.label(labels != 0, structure=np.ones((3, 3), int))[0]
    return labels


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label ids with 0 first, and each pixel's index into them (0 = background)."""
    flat = labels.ravel()
    top = int(flat.max(initial=0))
    if top <= 4 * flat.size:  # a lookup table is cheaper than sorting the pixels
        flat = flat.astype(np.intp, copy=False)
        ids = np.flatnonzero(np.bincount(flat, minlength=1))
        ids = ids if ids.size and ids[0] == 0 else np.concatenate([[0], ids])
        lut = np.zeros(top + 1, np.int64)
        lut[ids] = np.arange(len(ids))
        return ids, lut[flat]
    ids, idx = np.unique(flat, return_inverse=True)
    if ids.size == 0 or ids[0] != 0:
        ids, idx = np.concatenate([[0], ids]), idx + 1
    return ids, idx.ravel()


def match_objects(pred: np.ndarray, gt: np.ndarray) -> Matching:
    """Intersection and IoU of every (ground truth, prediction) pair of objects.

    Parameters
    ----------
    pred, gt : (Y, X) bool or integer arrays
        Instance labels, 0 is background. Binary input (bool, or a single nonzero value) is split into
        8-connected components first.

    Returns
    -------
    Matching
        Built from one ``np.bincount`` over paired labels: no loop over objects.
    """
    pred, gt = _check_pair(pred, gt)
    # Row and column 0 are the background: counted for the areas, then dropped.
    gt_ids, gt_idx = _compact(_instances(gt))
    pred_ids, pred_idx = _compact(_instances(pred))
    n_g, n_p = len(gt_ids), len(pred_ids)
    pairs = gt_idx.astype(np.int64) * n_p + pred_idx
    table = np.bincount(pairs, minlength=n_g * n_p).reshape(n_g, n_p)
    gt_areas, pred_areas = table.sum(axis=1)[1:], table.sum(axis=0)[1:]
    inter = table[1:, 1:]
    union = gt_areas[:, None] + pred_areas[None, :] - inter
    iou = inter / np.maximum(union, 1)  # every object has area >= 1, so union >= 1
    return Matching(
        gt_ids=gt_ids[1:].astype(np.int64),
        pred_ids=pred_ids[1:].astype(np.int64),
        intersection=inter.astype(np.int64),
        gt_areas=gt_areas.astype(np.int64),
        pred_areas=pred_areas.astype(np.int64),
        iou=iou.astype(np.float64),
    )


def _true_positives(iou: np.ndarray, threshold: float) -> int:
    """Size of the one-to-one matching with ``IoU > threshold`` that has the most pairs.

    For ``threshold >= 0.5`` every object has at most one partner above the threshold, so counting pairs
    is the optimal matching. Below 0.5 an object may overlap several; a linear-sum assignment then finds
    the largest matching (ties broken by the larger total IoU), as StarDist's ``matching`` does.
    """
    hits = iou > threshold
    if threshold >= 0.5 or not hits.any():
        return int(np.count_nonzero(hits))
    n = min(iou.shape)
    cost = -hits.astype(float) - iou / (2 * n)  # the IoU term sums to < 1, so the count comes first
    rows, cols = optimize.linear_sum_assignment(cost)
    return int(np.count_nonzero(hits[rows, cols]))


def _counts(matching: Matching, threshold: float) -> dict[str, float]:
    tp = _true_positives(matching.iou, threshold)
    n_pred, n_gt = matching.n_pred, matching.n_gt
    fp, fn = n_pred - tp, n_gt - tp
    both_empty = n_pred == 0 and n_gt == 0
    return {
        "tp": float(tp), "fp": float(fp), "fn": float(fn),
        "n_pred": float(n_pred), "n_gt": float(n_gt),
        "precision": _ratio(tp, n_pred, both_empty=both_empty),
        "recall": _ratio(tp, n_gt, both_empty=both_empty),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, both_empty=both_empty),
        "dsb_precision": _ratio(tp, tp + fp + fn, both_empty=both_empty),
    }


def object_scores(pred: np.ndarray, gt: np.ndarray, *, iou_threshold: float = 0.5) -> dict[str, float]:
    """Object detection scores at one IoU threshold.

    Parameters
    ----------
    pred, gt : (Y, X) bool or integer arrays
        Instance labels (binary input is split into 8-connected components).
    iou_threshold : float
        A predicted and a ground-truth object match when their IoU is strictly greater than this; the
        matching is one-to-one and has as many pairs as possible.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``n_pred``, ``n_gt`` (counts, as floats); ``precision`` = TP / (TP + FP),
        ``recall`` = TP / (TP + FN), ``f1`` = 2 TP / (2 TP + FP + FN) and ``dsb_precision`` =
        TP / (TP + FP + FN), the Data Science Bowl 2018 "precision" at one threshold. Zero denominators
        give 1.0 when both images have no object, else 0.0.
    """
    return _counts(match_objects(pred, gt), float(iou_threshold))


def _thresholds(thresholds: Iterable[float]) -> list[float]:
    # Round so that np.arange(0.5, 1.0, 0.05) gives exactly 0.65, not 0.6500000000000001: an IoU of
    # exactly 13/20 must then not count as > 0.65.
    values = [round(float(t), 10) for t in np.ravel(np.asarray(list(thresholds), dtype=float))]
    if not values:
        raise ValueError("thresholds must hold at least one IoU threshold")
    return values


def _mean_ap(matching: Matching, thresholds: Sequence[float]) -> float:
    return float(np.mean([_counts(matching, t)["dsb_precision"] for t in thresholds]))


def mean_average_precision(
    pred: np.ndarray, gt: np.ndarray, *, thresholds: Iterable[float] = DSB2018_THRESHOLDS
) -> float:
    """The Data Science Bowl 2018 score of one image.

    Mean over IoU thresholds t of TP(t) / (TP(t) + FP(t) + FN(t)), where a predicted and a ground-truth
    object match when IoU > t (strictly).

    Parameters
    ----------
    pred, gt : (Y, X) bool or integer arrays
        Instance labels (binary input is split into 8-connected components).
    thresholds : iterable of float
        Default 0.50, 0.55, ..., 0.95 (ten values). Thresholds are rounded to 10 decimals, so
        ``np.arange(0.5, 1.0, 0.05)`` gives the same answer as the default.

    Returns
    -------
    float
        In [0, 1]; 1.0 when both images have no object, 0.0 when only one of them has none.
    """
    return _mean_ap(match_objects(pred, gt), _thresholds(thresholds))


def _seg(matching: Matching) -> float:
    if matching.n_gt == 0:
        return math.nan
    # P matches R when |R n P| > 0.5 |R|: at most one P per R. Integer test, no rounding.
    matched = 2 * matching.intersection > matching.gt_areas[:, None]
    jaccard = np.where(matched, matching.iou, 0.0).max(axis=1, initial=0.0)
    return float(jaccard.mean())


def seg_score(pred: np.ndarray, gt: np.ndarray) -> float:
    """The Cell Tracking Challenge SEG measure of one frame.

    For each reference object R, the predicted object P with |R n P| > 0.5 |R| (there is at most one)
    gives J = |R n P| / |R u P|; when there is none, J = 0. SEG is the mean of J over the reference
    objects of this frame. (The challenge's own tool averages over all reference objects of a whole
    sequence; :func:`pooled_scores` does that, averaging per-frame values weighs frames equally.)

    Parameters
    ----------
    pred, gt : (Y, X) bool or integer arrays
        Instance labels (binary input is split into 8-connected components).

    Returns
    -------
    float
        In [0, 1]; NaN when ``gt`` has no object (there is nothing to average).
    """
    return _seg(match_objects(pred, gt))


def frame_scores(pred: np.ndarray, gt: np.ndarray, *, matching: Matching | None = None) -> dict[str, float]:
    """Every metric of this module for one frame, as one flat row.

    Parameters
    ----------
    pred, gt : (Y, X) bool or integer arrays
        Instance labels or binary masks (see the module conventions).
    matching : Matching, optional
        ``match_objects(pred, gt)`` when the caller has it already (it is not computed again).

    Returns
    -------
    dict
        The keys of :data:`FRAME_KEYS`: pixel ``jaccard``, ``dice``, ``precision``, ``recall``;
        ``object_precision``, ``object_recall``, ``f1`` and the counts ``tp``, ``fp``, ``fn``,
        ``n_pred``, ``n_gt`` at IoU > 0.5; ``mean_ap`` (DSB2018) and ``seg`` (CTC, NaN for an empty gt).
    """
    pred, gt = _check_pair(pred, gt)
    matching = match_objects(pred, gt) if matching is None else matching
    counts = _counts(matching, 0.5)
    row = pixel_scores(pred, gt)
    row.update(
        object_precision=counts["precision"],
        object_recall=counts["recall"],
        f1=counts["f1"],
        mean_ap=_mean_ap(matching, DSB2018_THRESHOLDS),
        seg=_seg(matching),
    )
    row.update({key: counts[key] for key in ("tp", "fp", "fn", "n_pred", "n_gt")})
    return {key: row[key] for key in FRAME_KEYS}


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each key over frames, ignoring NaN.

    Parameters
    ----------
    rows : sequence of dict
        One dict per frame, e.g. from :func:`frame_scores`. A key missing from a row counts as NaN there.

    Returns
    -------
    dict
        ``{key: {"mean": ..., "std": ..., "n": ...}}`` in the keys' first-seen order, where ``n`` is the
        number of non-NaN values. ``std`` is the *sample* standard deviation (``ddof=1``), the usual
        "mean +- std over test frames"; it is NaN when ``n < 2``, and ``mean`` is NaN when ``n == 0``.
    """
    keys = list(dict.fromkeys(key for row in rows for key in row))
    summary = {}
    for key in keys:
        values = np.array([row.get(key, math.nan) for row in rows], dtype=float)
        values = values[~np.isnan(values)]
        n = len(values)
        summary[key] = {
            "mean": float(values.mean()) if n else math.nan,
            "std": float(values.std(ddof=1)) if n > 1 else math.nan,
            "n": float(n),
        }
    return summary


def pooled_scores(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Sequence-level scores: counts and SEG pooled over all frames instead of averaged per frame.

    The Cell Tracking Challenge's SEG is the mean Jaccard over *all* reference objects of a sequence, so a
    frame with many cells weighs more than a frame with few; object precision, recall and F1 @0.5 likewise
    come from the summed TP/FP/FN, and the pixel Jaccard, Dice, precision and recall from the summed pixel
    counts (as if the frames were one image). (:func:`summarize` weighs every frame equally.)

    Parameters
    ----------
    rows : sequence of dict
        Rows of :func:`frame_scores`.

    Returns
    -------
    dict
        Pixel ``jaccard``, ``dice``, ``precision``, ``recall``; ``seg`` (NaN when no frame has a reference
        object), ``object_precision``, ``object_recall``, ``f1``; the summed ``tp``, ``fp``, ``fn``,
        ``n_pred``, ``n_gt``, ``px_inter``, ``px_pred``, ``px_gt``.
    """
    total = {key: float(sum(row[key] for row in rows))
             for key in ("tp", "fp", "fn", "n_pred", "n_gt", "px_inter", "px_pred", "px_gt")}
    pixels = _pixel_ratios(total["px_inter"], total["px_pred"], total["px_gt"])
    tp, fp, fn = total["tp"], total["fp"], total["fn"]
    both_empty = total["n_pred"] == 0 and total["n_gt"] == 0
    # a frame's seg is a mean over its n_gt objects, so seg * n_gt is that frame's sum of object Jaccards
    seg_sum = sum(row["seg"] * row["n_gt"] for row in rows if row["n_gt"] > 0)
    return {
        **{key: pixels[key] for key in ("jaccard", "dice", "precision", "recall")},
        "seg": seg_sum / total["n_gt"] if total["n_gt"] > 0 else math.nan,
        "object_precision": _ratio(tp, total["n_pred"], both_empty=both_empty),
        "object_recall": _ratio(tp, total["n_gt"], both_empty=both_empty),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, both_empty=both_empty),
        **total,
    }
