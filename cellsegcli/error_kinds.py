"""Where object F1 goes: every unmatched object of a frame sorted into one kind of error.

At IoU > 0.5 (the F1 matching of :mod:`cellsegcli.metrics`) an object is matched or it is not; this says
why not. "p holds g" means more than half of ground-truth cell ``g`` lies inside prediction ``p``.

Missed cells (false negatives), in this order:

- ``fn_merged``: a prediction that holds it holds another cell too (touching cells not parted);
- ``fn_missed``: predictions cover less than half of it (not found);
- ``fn_split``: two or more predictions hold at least 20 % of it each (cut in pieces);
- ``fn_outline``: the rest (found, one prediction, but the outline is off by too much).

Unmatched predictions (false positives), in this order:

- ``fp_merge``: it holds two or more cells;
- ``fp_spurious``: more than half of it is background;
- ``fp_fragment``: more than half of it lies in one cell, which it holds half of or less (a piece);
- ``fp_outline``: the rest.

The kinds of each side add up to the false negatives and false positives of ``object_scores``.
"""

from __future__ import annotations

import numpy as np

from .metrics import Matching, match_objects

FN_KINDS = ("fn_merged", "fn_missed", "fn_split", "fn_outline")
FP_KINDS = ("fp_merge", "fp_spurious", "fp_fragment", "fp_outline")


def error_kinds(pred: np.ndarray, gt: np.ndarray, *, matching: Matching | None = None) -> dict[str, int]:
    """Counts of ``tp``, ``n_gt``, ``n_pred`` and of each kind in :data:`FN_KINDS` and :data:`FP_KINDS` for
    one frame's (Y, X) instance labels (0 is background; binary input is split into connected components);
    ``matching``: their ``match_objects`` when the caller has it already."""
    m = match_objects(pred, gt) if matching is None else matching
    inter = m.intersection.astype(np.float64)
    hit = m.iou > 0.5
    of_gt = inter / np.maximum(m.gt_areas, 1)[:, None]       # share of each cell inside each prediction
    of_pred = inter / np.maximum(m.pred_areas, 1)[None, :]   # share of each prediction inside each cell
    holds = of_gt > 0.5
    merges = holds.sum(axis=0) >= 2                          # predictions holding several cells

    counts = dict.fromkeys(("tp", *FN_KINDS, *FP_KINDS), 0)
    counts.update(tp=int(hit.sum()), n_gt=m.n_gt, n_pred=m.n_pred)
    for g in np.flatnonzero(~hit.any(axis=1)):
        if (holds[g] & merges).any():
            counts["fn_merged"] += 1
        elif of_gt[g].sum() < 0.5:
            counts["fn_missed"] += 1
        elif (of_gt[g] >= 0.2).sum() >= 2:
            counts["fn_split"] += 1
        else:
            counts["fn_outline"] += 1
    for p in np.flatnonzero(~hit.any(axis=0)):
        inside = of_pred[:, p]
        if merges[p]:
            counts["fp_merge"] += 1
        elif inside.sum() < 0.5:
            counts["fp_spurious"] += 1
        elif inside.size and inside.max() > 0.5 and of_gt[int(inside.argmax()), p] <= 0.5:
            counts["fp_fragment"] += 1
        else:
            counts["fp_outline"] += 1
    return counts


def describe(counts: dict[str, int]) -> str:
    """One line for people: where the unmatched cells and objects of ``counts`` (:func:`error_kinds`, or
    sums of it) went."""
    missed = counts["n_gt"] - counts["tp"]
    extra = counts["n_pred"] - counts["tp"]
    return (f"{missed} of {counts['n_gt']} cells unmatched ({counts['fn_merged']} merged with a neighbour, "
            f"{counts['fn_missed']} not found, {counts['fn_split']} split, {counts['fn_outline']} outline off); "
            f"{extra} of {counts['n_pred']} objects unmatched ({counts['fp_merge']} merges, {counts['fp_spurious']} "
            f"on background, {counts['fp_fragment']} pieces of a cell, {counts['fp_outline']} outline off)")
