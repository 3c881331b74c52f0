"""Metrics on small constructed images whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cellsegcli.metrics import (
    FRAME_KEYS,
    frame_scores,
    match_objects,
    mean_average_precision,
    object_scores,
    pixel_scores,
    pooled_scores,
    seg_score,
    summarize,
)


def _square(shape, top, left, size, value=1, out=None):
    out = np.zeros(shape, np.uint32) if out is None else out
    out[top : top + size, left : left + size] = value
    return out


# --- pixel level -----------------------------------------------------------------------------------


def test_pixel_scores_of_squares_shifted_by_two_pixels():
    gt = _square((20, 20), 5, 5, 10)
    pred = _square((20, 20), 5, 7, 10)  # 10 x 8 = 80 shared, union 10 x 12 = 120
    scores = pixel_scores(pred, gt)
    assert scores["jaccard"] == pytest.approx(80 / 120)
    assert scores["dice"] == pytest.approx(2 * 80 / 200)
    assert scores["precision"] == pytest.approx(80 / 100)
    assert scores["recall"] == pytest.approx(80 / 100)


def test_pixel_precision_and_recall_differ_for_a_contained_prediction():
    gt = _square((20, 20), 0, 0, 10)  # 100 px
    pred = _square((20, 20), 0, 0, 5)  # 25 px, inside gt
    assert pixel_scores(pred, gt) == pytest.approx(
        {"jaccard": 0.25, "dice": 50 / 125, "precision": 1.0, "recall": 0.25,
         "px_inter": 25, "px_pred": 25, "px_gt": 100}
    )


@pytest.mark.parametrize(
    ("pred_empty", "gt_empty", "expected"),
    [(True, True, 1.0), (True, False, 0.0), (False, True, 0.0)],
    ids=["both-empty", "empty-pred", "empty-gt"],
)
def test_pixel_scores_empty_conventions(pred_empty, gt_empty, expected):
    full = _square((8, 8), 2, 2, 4)
    empty = np.zeros((8, 8), np.uint32)
    scores = pixel_scores(empty if pred_empty else full, empty if gt_empty else full)
    ratios = {key: scores[key] for key in ("jaccard", "dice", "precision", "recall")}
    assert ratios == {"jaccard": expected, "dice": expected, "precision": expected, "recall": expected}


def test_pixel_scores_same_for_instance_and_binary_input(disks):
    pred = np.roll(disks, 3, axis=1)
    assert pixel_scores(pred, disks) == pixel_scores(pred > 0, disks > 0)
    assert pixel_scores(pred.astype(np.uint8) * 255 // 3, disks) == pixel_scores(pred > 0, disks)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        pixel_scores(np.zeros((4, 4)), np.zeros((4, 5)))


# --- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [7, 2**40], ids=["small-ids", "huge-ids"])
def test_iou_matrix_matches_a_naive_loop_on_random_labels(step):
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, (30, 40)).astype(np.uint64) * step  # non-contiguous ids 0, step, ..., 5 step
    pred = rng.integers(0, 9, (30, 40)).astype(np.uint16) + 100
    pred[rng.random((30, 40)) < 0.3] = 0
    m = match_objects(pred, gt)
    assert m.gt_ids.tolist() == [step * k for k in range(1, 6)]
    assert m.pred_ids.tolist() == list(range(100, 109))
    for i, g in enumerate(m.gt_ids):
        for j, p in enumerate(m.pred_ids):
            inter = np.count_nonzero((gt == g) & (pred == p))
            union = np.count_nonzero((gt == g) | (pred == p))
            assert m.intersection[i, j] == inter
            assert m.iou[i, j] == pytest.approx(inter / union)
        assert m.gt_areas[i] == np.count_nonzero(gt == g)


def test_binary_input_is_split_into_8_connected_components():
    mask = np.zeros((10, 10), bool)
    mask[0:3, 0:3] = True
    mask[3:6, 3:6] = True  # touches the first square at one corner only: same 8-connected object
    mask[7:9, 7:9] = True
    assert match_objects(mask, mask).n_gt == 2
    assert match_objects(mask.astype(np.uint8) * 255, mask).n_pred == 2  # 0/255 mask is binary too


def test_integer_labels_are_kept_even_when_disconnected():
    labels = np.zeros((10, 10), np.int32)
    labels[0:2, 0:2] = 1
    labels[8:10, 8:10] = 1  # same id, far away: one object
    labels[4:6, 4:6] = 2
    m = match_objects(labels, labels)
    assert m.gt_ids.tolist() == [1, 2]
    assert m.gt_areas.tolist() == [8, 4]


@pytest.mark.parametrize("bad", [np.full((4, 4), 0.5), np.full((4, 4), -1)], ids=["float", "negative"])
def test_match_objects_rejects_non_label_input(bad):
    with pytest.raises(ValueError):
        match_objects(bad, np.zeros((4, 4), np.int32))


# --- object level --------------------------------------------------------------------------------


def test_object_scores_counts_and_f1():
    shape = (40, 40)
    gt = np.zeros(shape, np.uint32)
    pred = np.zeros(shape, np.uint32)
    for k, (top, left) in enumerate([(0, 0), (0, 20), (20, 0), (20, 20)], start=1):
        _square(shape, top, left, 8, k, out=gt)
    _square(shape, 0, 0, 8, 1, out=pred)  # exact: IoU 1
    _square(shape, 0, 21, 8, 2, out=pred)  # shifted by 1: IoU 56 / 72 > 0.5
    _square(shape, 30, 30, 8, 3, out=pred)  # on background: false positive
    # TP 2, FP 1, FN 2
    assert object_scores(pred, gt) == pytest.approx(
        {"tp": 2, "fp": 1, "fn": 2, "n_pred": 3, "n_gt": 4, "precision": 2 / 3, "recall": 2 / 4,
         "f1": 4 / 7, "dsb_precision": 2 / 5}
    )
    assert object_scores(pred, gt, iou_threshold=0.8)["tp"] == 1  # 56 / 72 = 0.78 no longer counts


def test_object_scores_low_threshold_uses_optimal_not_greedy_matching():
    # One row repeated; ground truth A = [0, 10), B = [12, 20); prediction X = [5, 15), Y = [0, 3).
    # IoU(A, X) = 5/15, IoU(A, Y) = 3/10, IoU(B, X) = 3/15. Greedy (best pair first) takes A-X and
    # leaves B and Y alone: 1 match. The best one-to-one matching is A-Y and B-X: 2 matches.
    gt = np.zeros((3, 20), np.uint8)
    gt[:, 0:10], gt[:, 12:20] = 1, 2
    pred = np.zeros((3, 20), np.uint8)
    pred[:, 5:15], pred[:, 0:3] = 1, 2
    assert object_scores(pred, gt, iou_threshold=0.15)["tp"] == 2
    assert object_scores(pred, gt, iou_threshold=0.25)["tp"] == 1  # only A-X and A-Y are above


@pytest.mark.parametrize(
    ("pred_empty", "gt_empty", "expected"),
    [(True, True, 1.0), (True, False, 0.0), (False, True, 0.0)],
    ids=["both-empty", "empty-pred", "empty-gt"],
)
def test_object_scores_empty_conventions(pred_empty, gt_empty, expected):
    full = _square((8, 8), 2, 2, 4)
    empty = np.zeros((8, 8), np.uint32)
    pred, gt = (empty if pred_empty else full), (empty if gt_empty else full)
    scores = object_scores(pred, gt)
    assert [scores[k] for k in ("precision", "recall", "f1", "dsb_precision")] == [expected] * 4
    assert mean_average_precision(pred, gt) == expected


def _three_objects(sizes):
    """Ground-truth 25 x 20 rectangles (500 px), each holding a (rows, cols) prediction: IoU = area / 500."""
    gt = np.zeros((25, 80), np.uint32)
    pred = np.zeros((25, 80), np.uint32)
    for k, (rows, cols) in enumerate(sizes):
        gt[:, 25 * k : 25 * k + 20] = k + 1
        pred[:rows, 25 * k : 25 * k + cols] = k + 1
    return pred, gt


def test_mean_average_precision_with_ious_at_thresholds():
    # IoUs exactly 0.55, 0.75, 0.96. A pair counts when IoU > t (strictly), and an unmatched pair is
    # one FP and one FN, so score(t) = TP / (TP + 2 (3 - TP)) = TP / (6 - TP):
    #   t = 0.50            TP 3 -> 1
    #   t = 0.55 ... 0.70   TP 2 -> 0.5  (4 thresholds; 0.55 is not > 0.55)
    #   t = 0.75 ... 0.95   TP 1 -> 0.2  (5 thresholds; 0.75 is not > 0.75, 0.96 > 0.95)
    # mean = (1 + 4 * 0.5 + 5 * 0.2) / 10 = 0.4
    pred, gt = _three_objects([(25, 11), (25, 15), (24, 20)])  # 275, 375, 480 px
    assert match_objects(pred, gt).iou.diagonal().tolist() == [0.55, 0.75, 0.96]
    assert mean_average_precision(pred, gt) == pytest.approx(0.4)
    assert mean_average_precision(pred, gt, thresholds=np.arange(0.5, 1.0, 0.05)) == pytest.approx(0.4)


def test_mean_average_precision_with_ious_between_thresholds():
    # IoUs 0.56, 0.76, 0.96: TP 3 at t = 0.50, 0.55 (score 1); TP 2 at 0.60 ... 0.75 (0.5, 4 times);
    # TP 1 at 0.80 ... 0.95 (0.2, 4 times). mean = (2 + 2 + 0.8) / 10 = 0.48
    pred, gt = _three_objects([(14, 20), (19, 20), (24, 20)])  # 280, 380, 480 px
    assert mean_average_precision(pred, gt) == pytest.approx(0.48)
    assert mean_average_precision(pred, gt, thresholds=[0.5]) == pytest.approx(1.0)


def test_seg_score_counts_only_objects_covered_over_half():
    gt = np.zeros((20, 60), np.uint32)
    pred = np.zeros((20, 60), np.uint32)
    gt[0:10, 0:10] = 1  # R1, 100 px
    gt[0:10, 20:30] = 2  # R2, 100 px
    gt[0:10, 40:50] = 3  # R3, 100 px
    pred[0:10, 4:12] = 1  # covers 60 px of R1 (> 50), 80 px: J = 60 / (100 + 80 - 60) = 0.5
    pred[0:10, 20:24] = 2  # covers 40 px of R2 (< 50): J = 0
    pred[0:10, 40:45] = 3  # covers exactly 50 px of R3, not more than half: J = 0
    assert seg_score(pred, gt) == pytest.approx((0.5 + 0 + 0) / 3)
    assert seg_score(gt, gt) == 1.0


def test_seg_score_is_nan_without_reference_objects():
    pred = _square((8, 8), 2, 2, 4)
    assert math.isnan(seg_score(pred, np.zeros((8, 8), np.uint8)))
    assert seg_score(np.zeros((8, 8), np.uint8), pred) == 0.0


# --- per frame and summary -----------------------------------------------------------------------


def test_frame_scores_has_fixed_keys_and_agrees_with_the_parts(disks):
    pred = np.roll(disks, 2, axis=0)
    row = frame_scores(pred, disks)
    assert tuple(row) == FRAME_KEYS
    assert all(isinstance(v, float) for v in row.values())
    objects = object_scores(pred, disks)
    assert row["jaccard"] == pixel_scores(pred, disks)["jaccard"]
    assert row["f1"] == objects["f1"] and row["tp"] == objects["tp"] == 3
    assert row["mean_ap"] == mean_average_precision(pred, disks)
    assert row["seg"] == seg_score(pred, disks)
    perfect = frame_scores(disks, disks)
    assert all(perfect[k] == 1.0 for k in FRAME_KEYS[:9])
    assert (perfect["fp"], perfect["fn"], perfect["n_gt"]) == (0.0, 0.0, 3.0)


def test_summarize_gives_nan_aware_mean_and_sample_std():
    rows = [{"a": 1.0, "b": math.nan}, {"a": 3.0, "b": 2.0}, {"a": 5.0, "b": 4.0, "c": 7.0}]
    summary = summarize(rows)
    assert list(summary) == ["a", "b", "c"]
    assert summary["a"] == pytest.approx({"mean": 3.0, "std": 2.0, "n": 3})  # sqrt((4 + 0 + 4) / 2)
    assert summary["b"] == pytest.approx({"mean": 3.0, "std": math.sqrt(2), "n": 2})
    assert summary["c"]["mean"] == 7.0 and math.isnan(summary["c"]["std"]) and summary["c"]["n"] == 1
    assert summarize([]) == {}
    all_nan = summarize([{"seg": math.nan}])["seg"]
    assert math.isnan(all_nan["mean"]) and all_nan["n"] == 0


def _side_by_side(a, b):
    """Two label frames as one image, ids of ``b`` shifted past ``a``'s so no two objects share an id."""
    return np.hstack([a, np.where(b > 0, b + a.max(), 0)])


def test_pooled_scores_equal_scoring_all_frames_as_one_image(disks):
    gt1 = np.zeros((20, 60), np.uint32)
    gt1[0:10, 0:10], gt1[0:10, 20:30], gt1[0:10, 40:50] = 1, 2, 3
    pred1 = np.zeros_like(gt1)
    pred1[0:10, 4:12], pred1[0:10, 20:24], pred1[12:18, 50:58] = 1, 2, 3   # J 0.5, a miss, a false positive
    gt2 = disks[:20, :60].astype(np.uint32)
    pred2 = np.roll(gt2, 1, axis=1)
    rows = [frame_scores(pred1, gt1), frame_scores(pred2, gt2), frame_scores(np.zeros_like(gt1), 0 * gt1)]
    pooled = pooled_scores(rows)
    whole_p = _side_by_side(_side_by_side(pred1, pred2), np.zeros_like(gt1))
    whole_g = _side_by_side(_side_by_side(gt1, gt2), 0 * gt1)
    assert pooled["seg"] == pytest.approx(seg_score(whole_p, whole_g))
    objects = object_scores(whole_p, whole_g)
    for key in ("tp", "fp", "fn", "n_gt", "n_pred"):
        assert pooled[key] == objects[key]
    assert pooled["f1"] == pytest.approx(objects["f1"])
    pixels = pixel_scores(whole_p, whole_g)
    for key in ("jaccard", "dice", "precision", "recall"):
        assert pooled[key] == pytest.approx(pixels[key])
    assert pooled["jaccard"] != pytest.approx(np.mean([row["jaccard"] for row in rows]))  # not the frame mean
    # frames weigh by their object count: 3 objects at SEG 1/6 and n at SEG s pool to (0.5 + n s) / (3 + n)
    n2 = rows[1]["n_gt"]
    assert n2 > 0 and pooled["seg"] == pytest.approx((0.5 + n2 * rows[1]["seg"]) / (3 + n2))


def test_pooled_scores_of_frames_without_reference_objects():
    empty = frame_scores(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    pooled = pooled_scores([empty, empty])
    assert math.isnan(pooled["seg"]) and pooled["f1"] == 1.0 and pooled["jaccard"] == 1.0
