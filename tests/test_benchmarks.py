"""Exact tests of the pure parts of the benchmark scripts (the scripts themselves need models and data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells():
    gt = np.zeros((40, 60), np.uint16)
    gt[10:20, 10:20] = 1                        # one annotated cell, 100 px
    gt[30:36, 50:56] = 2                        # a second one the prediction misses entirely, 36 px
    labels = np.zeros_like(gt)
    labels[11:21, 10:20] = 1                    # the first cell moved down by 1 px: 10 FP + 10 FN along its outline
    labels[25:29, 30:34] = 2                    # a cell nobody annotated: 16 FP away from every outline
    return labels, gt


def test_error_bands_split_outline_errors_from_whole_objects():
    error_bands = _load("error_bands").error_bands
    labels, gt = _cells()
    row = error_bands(labels, gt, (labels > 0).astype(np.float32), band=2)
    assert row["jaccard"] == pytest.approx(90 / (100 + 36 + 10 + 16))
    assert row["fp_in_unmatched_objects"] == pytest.approx(16 / 26)
    assert row["fn_in_missed_objects"] == pytest.approx(36 / 46)
    # the band is the 2 px on each side of every annotated outline: it holds the 20 shifted pixels and the
    # missed 6x6 cell but for its central 2x2; the unannotated cell lies outside it
    assert row["error_near_outline"] == pytest.approx((20 + 32) / (20 + 36 + 16))
    # outside it: the first cell's 6x6 core (agreed), the unannotated cell (16 FP) and the missed centre (4 FN)
    assert row["jaccard_outside_band"] == pytest.approx(36 / (36 + 16 + 4))
    assert row["jaccard_at_0.5"] == row["jaccard"]


def test_error_band_of_one_pixel_is_the_outline_itself():
    error_bands = _load("error_bands").error_bands
    labels, gt = _cells()
    row = error_bands(labels, gt, (labels > 0).astype(np.float32), band=1)
    # the 20 shifted pixels touch the outline; of the missed 6x6 cell only its 20-pixel rim does
    assert row["error_near_outline"] == pytest.approx((20 + 20) / (20 + 36 + 16))


def test_finetune_subset_links_pair_by_name_whatever_the_source_layout(tmp_path):
    import tifffile

    from cellsegcli.training.data import find_pairs

    source = tmp_path / "cellpose"                     # name.tif beside name_masks.tif
    source.mkdir()
    for name in ("a", "b", "c"):
        tifffile.imwrite(source / f"{name}.tif", np.zeros((8, 8), np.uint8))
        tifffile.imwrite(source / f"{name}_masks.tif", np.ones((8, 8), np.uint8))
    pairs = find_pairs(source)
    _load("finetune").link_subset(pairs[:2], tmp_path / "subset")
    linked = find_pairs(tmp_path / "subset")
    assert [p.name for p in linked] == ["a", "b"]
    assert [(p.image.resolve(), p.mask.resolve()) for p in linked] == [(p.image, p.mask) for p in pairs[:2]]


def test_calibration_on_few_frames_is_scored_on_the_frames_left_out():
    from cellsegcli.calibrate import Setting

    held_out_gains = _load("calibration_frames").held_out_gains

    def frame(current, other):  # objective = (jaccard + f1) / 2
        return [Setting(0.5, 0.5, current, current, 0.0), Setting(0.6, 0.9, other, other, 0.0)]

    per_frame = [frame(0.8, 0.9), frame(0.8, 0.7), frame(0.8, 0.7)]
    # calibrated on frame 0 alone the other pair wins (0.9) and loses 0.1 on frames 1 and 2; on frame 1 or 2
    # the current pair stays
    assert held_out_gains(per_frame, (0.5, 0.5), 1, 0.0) == pytest.approx([-0.1, 0.0, 0.0])
    assert held_out_gains(per_frame, (0.5, 0.5), 1, 0.2) == pytest.approx([0.0, 0.0, 0.0])
    # on frames {0, 1} the pairs tie (0.8 each): the current one stays; scored on what is left
    assert held_out_gains(per_frame, (0.5, 0.5), 2, 0.0) == pytest.approx([0.0, 0.0, 0.0])


def test_magnification_zooms_image_and_labels_together_and_keeps_label_ids():
    mod = _load("magnification")
    labels = np.zeros((40, 60), np.uint16)
    labels[10:20, 10:30] = 7                    # 10 x 20 px, area 200
    image = (labels > 0).astype(np.float32) * 100
    img, lab = mod.zoomed(image, labels, 2.0)
    assert img.shape == lab.shape == (80, 120) and set(np.unique(lab)) == {0, 7}
    assert (lab == 7).sum() == 800 and np.array_equal(img > 50, lab > 0)
    rgb, lab_half = mod.zoomed(np.stack([image] * 3, axis=-1), labels, 0.5)
    assert rgb.shape == (20, 30, 3) and (lab_half == 7).sum() == 50
    assert mod.median_diameter([labels]) == pytest.approx(2 * np.sqrt(200 / np.pi))


def test_robustness_perturbations_act_on_raw_intensities():
    robustness = _load("robustness")
    image = np.tile(np.linspace(100, 1100, 1001, dtype=np.float32), (3, 1))
    lo, hi = np.percentile(image, (0.1, 99.9))
    g = robustness.gamma(image, 2.0)
    assert g.min() == pytest.approx(lo) and g.max() == pytest.approx(hi)
    assert image[0, 500] == pytest.approx((lo + hi) / 2)  # halfway up the range: 0.5 ** 2 of the way after it
    assert g[0, 500] == pytest.approx(lo + 0.25 * (hi - lo), rel=1e-4)
    r = robustness.ramp(np.ones((2, 5), np.float32), 0.5)
    assert np.allclose(r, [[0.5, 0.75, 1.0, 1.25, 1.5]] * 2)
    p = robustness.perturbations()
    assert list(p)[0] == "none" and p["none"](image) is image
    assert all(p[n](image).shape == image.shape for n in p)


def _named_pairs(tmp_path, names):
    import tifffile

    from cellsegcli.training.data import find_pairs

    root = tmp_path / "ann"
    root.mkdir()
    for name in names:
        tifffile.imwrite(root / f"{name}.tif", np.zeros((8, 8), np.uint8))
        tifffile.imwrite(root / f"{name}_masks.tif", np.ones((8, 8), np.uint8))
    return find_pairs(root)


def test_crossval_folds_test_every_frame_once_and_keep_a_field_together(tmp_path):
    cv = _load("crossval")
    pairs = _named_pairs(tmp_path, [f"set{i:02d}" for i in range(1, 12)])
    groups = cv.groups_of(pairs, ["set03,set11"])
    assert len(groups) == 10 and [p.name for p in groups[2]] == ["set03", "set11"]
    folds = cv.make_folds(groups, 3, seed=0)
    assert sorted(g for f in folds for g in f) == list(range(10))
    assert sorted(sum(len(groups[g]) for g in f) for f in folds) == [3, 4, 4]     # balanced by frames
    tested = []
    for i in range(3):
        train, val, test = cv.fold_split(groups, folds, i, 0.2, seed=0)
        names = [{p.name for p in part} for part in (train, val, test)]
        assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
        assert len(names[0] | names[1] | names[2]) == 11 and len(names[1]) >= 1
        assert {"set03", "set11"} <= names[0] or {"set03", "set11"} <= names[1] or {"set03", "set11"} <= names[2]
        tested += names[2]
    assert sorted(tested) == sorted(p.name for p in pairs)
    with pytest.raises(SystemExit, match="--folds 11"):
        cv.make_folds(groups, 11, seed=0)


@pytest.mark.slow
def test_crossval_end_to_end_on_a_tiny_set(tmp_path):
    import json
    import subprocess
    import sys

    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for root, n in ((tmp_path / "ann", 6), (tmp_path / "test", 2)):
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        for i in range(n):
            labels = np.zeros((64, 64), np.uint16)
            for j in range(1, 4):
                cy, cx = rng.uniform(12, 52, 2)
                labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= 36) & (labels == 0)] = j
            tifffile.imwrite(root / "images" / f"im{i}.tif", ((labels > 0) * 800 + rng.normal(200, 30, (64, 64))).astype(np.uint16))
            tifffile.imwrite(root / "masks" / f"im{i}.tif", labels)
    args = [sys.executable, str(BENCHMARKS / "crossval.py"), str(tmp_path / "ann"), "-o", str(tmp_path / "cv"),
            "--folds", "2", "--arch", "resnet18-fpn", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
            "--crop", "64", "--device", "cpu", "--test", str(tmp_path / "test"), "--ensemble", "--loader-workers", "1"]
    one = subprocess.run(args + ["--only", "1"], capture_output=True, text=True)     # one fold, the others later
    assert one.returncode == 0, one.stderr[-2000:]
    assert "fold 1:" in one.stderr and "fold 0:" not in one.stderr
    assert json.loads((tmp_path / "cv" / "partial.json").read_text())["held_out"]["frames"] == 3
    wrong = subprocess.run(args + ["--only", "2"], capture_output=True, text=True)
    assert wrong.returncode != 0 and "--only 2: folds are numbered 0 to 1" in wrong.stderr
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fold 0:" in done.stderr and "fold 1:" not in done.stderr                 # fold 1 is kept
    report = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    assert report["held_out"]["frames"] == 6
    assert sorted(n for f in report["folds"] for n in f["test"]) == [f"im{i}" for i in range(6)]
    assert [r["model"] for r in report["test"]] == ["model", "model", "ensemble of 2"]
    assert "held out: 6 frames" in done.stdout and "ensemble:" in done.stdout
    again = subprocess.run(args + ["--recalibrate"], capture_output=True, text=True)   # finished: not retrained
    assert again.returncode == 0 and "fold 0:" not in again.stderr, again.stderr[-2000:]
    recalibrated = json.loads((tmp_path / "cv" / "crossval.json").read_text())["recalibrated"]
    assert recalibrated["held_out"]["frames"] == 6 and "fold 1 recalibrated:" in again.stderr
    assert all((tmp_path / "cv" / f"fold-{i}" / "model-recalibrated" / "config.json").is_file() for i in (0, 1))
    flips = subprocess.run(args[:5] + ["--folds", "2", "--report", "--recalibrate", "--tta", "flip", "--device", "cpu"],
                           capture_output=True, text=True)                   # finished folds scored with TTA
    assert flips.returncode == 0 and "fold 0:" not in flips.stderr and "recalibrated:" not in flips.stderr, \
        flips.stderr[-2000:]
    for i in (0, 1):
        fold = tmp_path / "cv" / f"fold-{i}"
        scored = json.loads((fold / "scores-flip.json").read_text())
        assert scored["tta"] == "flip" and scored["frames"] == 3
        assert json.loads((fold / "scores-recalibrated-flip.json").read_text())["tta"] == "flip"
    report_only = subprocess.run(args[:5] + ["--folds", "2", "--report"], capture_output=True, text=True)
    assert report_only.returncode == 0, report_only.stderr[-2000:]
    assert json.loads((tmp_path / "cv" / "partial.json").read_text())["held_out"]["frames"] == 6
    nothing = subprocess.run([*args[:4], str(tmp_path / "empty"), "--report"], capture_output=True, text=True)
    assert nothing.returncode != 0 and "no fold has finished" in nothing.stderr
    errors = subprocess.run([sys.executable, str(BENCHMARKS / "errors.py"), str(tmp_path / "cv"), "--data",
                             str(tmp_path / "ann"), "--device", "cpu"], capture_output=True, text=True)
    assert errors.returncode == 0, errors.stderr[-2000:]
    table = [line.split("|")[1:-1] for line in errors.stdout.splitlines() if line.startswith("| ")]
    header, rows = [c.strip() for c in table[0]], {r[0].strip(): [c.strip() for c in r] for r in table[1:]}
    assert sorted(rows) == ["all", "fold-0", "fold-1"] and rows["all"][header.index("frames")] == "6"
    assert int(rows["all"][header.index("n_gt")]) == 18   # the 6 frames' 3 cells, each counted once


def test_dim_objects_brings_chosen_objects_to_a_share_of_the_brightest():
    mod = _load("dim_objects")
    labels = np.zeros((30, 40), np.int64)
    labels[2:8, 2:8] = 1
    labels[15:25, 15:25] = 2
    raw = np.full(labels.shape, 100.0, np.float32)
    raw[labels == 1] = 1000
    raw[labels == 2] = 500
    out = mod.dim(raw, labels, np.array([1, 2]), 0.1, soften=0)
    assert np.allclose(out[labels == 1], 100 + 90) and np.allclose(out[labels == 2], 100 + 90)
    assert np.array_equal(out[labels == 0], raw[labels == 0])
    same = mod.dim(raw, labels, np.array([2]), 0.9, soften=0)          # already dimmer than 0.9 x 900: kept
    assert np.array_equal(same, raw)
    assert mod.recall_of(labels, labels, np.array([2])) == (1, 1)
    assert mod.recall_of(np.where(labels == 2, 0, labels), labels, np.array([1, 2])) == (1, 2)


def test_image_kinds():
    kind = _load("scores").image_kind
    rng = np.random.default_rng(0)
    dark = rng.normal(10, 2, (50, 50))
    dark[10:20, 10:20] = 200
    assert kind(dark) == "fluorescence"
    assert kind(255 - dark) == "brightfield"
    grey_rgb = np.stack([dark] * 3, axis=-1)
    assert kind(grey_rgb) == "fluorescence"
    tissue = np.stack([dark + 120, dark * 0.4 + 30, dark + 150], axis=-1)
    assert kind(tissue) == "stained tissue"


def test_results_split_by_image_kind():
    scores = _load("scores")
    from cellsegcli.metrics import frame_scores

    labels, gt = _cells()
    one = frame_scores(labels, gt)
    rows = [{"name": n, "kind": k, **one, "jaccard": j}
            for n, k, j in (("a", "fluorescence", 0.8), ("b", "stained tissue", 0.4), ("c", "fluorescence", 0.6))]
    result = {"model": "m", "architecture": "x", "tta": "none", "frames": 3, "rows": rows, **scores.aggregate(rows)}
    parts = scores.by_kind([result])
    assert [p["model"] for p in parts] == ["m, fluorescence (2)", "m, stained tissue (1)"]
    assert parts[0]["summary"]["jaccard"]["mean"] == pytest.approx(0.7) and parts[1]["frames"] == 1


def _size_curve(objectives: dict, frames: int = 4) -> dict:
    """A curve whose every frame scores the given objective (Jaccard = F1 = objective)."""
    return {k: {"jaccard": v, "f1": v, "mean_ap": v / 2, "seg": v, "frames": [v] * frames,
                "size": 30 if k == "rule" else round(k * 1000)} for k, v in objectives.items()}


def test_size_rules_pick_on_calibration_frames_and_score_on_test_frames():
    sr = _load("size_rules")
    shares = sorted({*sr.OLD_FRACTIONS, *sr.SIZE_FRACTIONS, 0.5})
    # calibration: 0.1 beats the annotations' size by 0.005 (under the old margin), 0.25 is best of all but was
    # not on the old grid; test frames: the score is the share itself, so every pick reads off directly
    cal = {sr.RULE: 0.800, **{s: 0.800 for s in shares}, 0.1: 0.805, 0.25: 0.809}
    test = {sr.RULE: 0.01, **{s: s for s in shares}}
    table = {row["rule"]: row for row in sr.score_rules({"fold-0": {"cal": _size_curve(cal),
                                                                    "test": _size_curve(test)}}, fixed=0.3)}
    before, now = (next(r for name, r in table.items() if name.startswith(p)) for p in ("before", "now"))
    assert before["picks"] == {"fold-0": sr.RULE} and before["f1"] == 0.01      # the margin kept the rule's size
    assert now["picks"] == {"fold-0": 0.25} and now["f1"] == 0.25 and now["mean_ap"] == 0.125
    assert table["fixed 0.3"]["f1"] == 0.3 and table["the annotations' size"]["f1"] == 0.01
    assert table["best on the test frames (a ceiling, not a rule)"]["picks"] == {"fold-0": 0.4}


def test_size_plateau_takes_the_middle_of_the_shares_level_with_the_best():
    sr = _load("size_rules")
    flat = {s: {"jaccard": 0.8, "f1": 0.8, "frames": [0.78, 0.82, 0.80, 0.80]} for s in sr.SIZE_FRACTIONS}
    flat[0.05]["frames"] = [0.60, 0.62, 0.61, 0.60]                 # clearly worse on every frame
    flat[0.1]["frames"] = [0.70, 0.72, 0.71, 0.70]
    flat[0.4]["frames"] = [0.50, 0.50, 0.50, 0.50]
    for s in sr.SIZE_FRACTIONS:
        flat[s]["jaccard"] = flat[s]["f1"] = float(np.mean(flat[s]["frames"]))
    # level with the best: 0.15 ... 0.35; their geometric middle is sqrt(0.15 * 0.35) = 0.229 -> 0.25
    assert sr.pick_plateau(flat, sr.SIZE_FRACTIONS) == 0.25
