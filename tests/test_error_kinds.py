"""Error kinds: each unmatched object sorted into one kind, the kinds adding up to F1's misses."""

from __future__ import annotations

import numpy as np
import pytest

from cellsegcli.error_kinds import FN_KINDS, FP_KINDS, error_kinds
from cellsegcli.metrics import object_scores


def _two_cells() -> np.ndarray:
    gt = np.zeros((40, 80), np.uint16)
    gt[10:30, 10:40], gt[10:30, 40:70] = 1, 2   # two 20 x 30 cells sharing an edge
    return gt


def _only(counts: dict, **expected) -> None:
    others = {k: v for k, v in counts.items() if k in FN_KINDS + FP_KINDS and k not in expected}
    assert {k: counts[k] for k in expected} == expected and not any(others.values()), counts


def test_a_perfect_prediction_has_no_errors():
    gt = _two_cells()
    counts = error_kinds(gt, gt)
    assert counts["tp"] == counts["n_gt"] == counts["n_pred"] == 2
    _only(counts)


def test_touching_cells_in_one_prediction_are_a_merge():
    gt = _two_cells()
    _only(error_kinds((gt > 0).astype(np.uint16), gt), fn_merged=2, fp_merge=1)


def test_a_cell_cut_in_halves_is_a_split_with_two_fragments():
    gt = np.zeros((40, 40), np.uint16)
    gt[10:30, 10:30] = 1
    pred = np.zeros_like(gt)
    pred[10:30, 10:20], pred[10:30, 20:30] = 1, 2   # IoU 0.5 each: neither matches
    _only(error_kinds(pred, gt), fn_split=1, fp_fragment=2)
    pred[10:30, 10:22], pred[10:30, 22:30] = 1, 2   # the larger piece matches (IoU 0.6), the other is a piece
    counts = error_kinds(pred, gt)
    assert counts["tp"] == 1
    _only(counts, fp_fragment=1)


def test_an_unfound_cell_is_missed_and_a_prediction_on_background_is_spurious():
    gt = np.zeros((40, 80), np.uint16)
    gt[5:20, 5:20] = 1
    pred = np.zeros_like(gt)
    pred[20:35, 50:70] = 7
    _only(error_kinds(pred, gt), fn_missed=1, fp_spurious=1)


def test_a_shifted_outline_is_an_outline_error_on_both_sides():
    gt = np.zeros((40, 60), np.uint16)
    gt[10:30, 10:30] = 1
    pred = np.zeros_like(gt)
    pred[10:30, 18:38] = 1   # 60 % of the cell, IoU 0.43
    _only(error_kinds(pred, gt), fn_outline=1, fp_outline=1)


@pytest.mark.parametrize("seed", range(5))
def test_the_kinds_add_up_to_the_false_negatives_and_positives(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    gt = np.zeros((96, 96), np.int32)
    pred = np.zeros_like(gt)
    for i in range(1, 12):
        cy, cx, r = rng.uniform(10, 86, 2).tolist() + [rng.uniform(5, 11)]
        gt[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (gt == 0)] = i
        dy, dx, s = rng.normal(0, 3, 2).tolist() + [rng.uniform(0.7, 1.4)]
        pred[((yy - cy - dy) ** 2 + (xx - cx - dx) ** 2 <= (s * r) ** 2) & (pred == 0)] = rng.integers(1, 8)
    counts, scores = error_kinds(pred, gt), object_scores(pred, gt)
    assert counts["tp"] == scores["tp"]
    assert sum(counts[k] for k in FN_KINDS) == scores["fn"] and sum(counts[k] for k in FP_KINDS) == scores["fp"]
