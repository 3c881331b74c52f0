"""How should calibration choose the smallest cell? Rules scored on cross-validation folds' held-out frames.

For each finished fold of a ``benchmarks/crossval.py`` run, the fold model segments its calibration frames
(``fold-i/data/val``) and its test frames (the names in its ``scores.json``) once; ``label_instances`` then
runs at every candidate smallest cell (shares of the area of a disk of the model's cell diameter, and the
annotations' own rule of thumb) at the fold's calibrated thresholds. Each rule picks a size from the
calibration frames alone; the table gives the test frames' mean F1@0.5 and mean AP at the picks (the
objective is calibration's: the mean of pixel Jaccard and F1):

    python benchmarks/size_rules.py runs/cv/phase-crop384 ../shared/data/usiigaci-phase [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from errors import fold_test_pairs  # noqa: E402
from scores import run  # noqa: E402

from cellsegcli.calibrate import MARGIN, SIZE_FRACTIONS, Setting, best_size  # noqa: E402

OLD_FRACTIONS = (0.05, 0.1, 0.15, 0.2, 0.3)   # the grid before 2026-12-03 (with MARGIN for the rule's size)
CANDIDATES = sorted({*OLD_FRACTIONS, *SIZE_FRACTIONS, 0.5})
RULE = "rule"   # the annotations' size: half the 1st percentile of the annotated areas


def objective(row: dict) -> float:
    return (row["jaccard"] + row["f1"]) / 2


def pick_best(curve: dict, keys, *, current=RULE, margin: float = 0.0):
    """Calibration's own choice (:func:`cellsegcli.calibrate.best_size`) among ``keys``, the sizes in pixels
    ``curve[key]["size"]``; ties go to the one nearest ``current``'s size."""
    by_size = {curve[k]["size"]: k for k in keys}
    settings = [Setting(0.5, 0.5, curve[k]["jaccard"], curve[k]["f1"], curve[k]["mean_ap"], min_size=size)
                for size, k in by_size.items()]
    return by_size[best_size(settings, curve[current]["size"], margin=margin).min_size]


def pick_plateau(curve: dict, keys, *, k: float = 1.0):
    """The share in the middle (geometric) of those within ``k`` standard errors (paired over frames) of the best."""
    keys = [key for key in keys if key != RULE]
    top = max(keys, key=lambda key: objective(curve[key]))
    best = np.asarray(curve[top]["frames"])
    level = []
    for key in keys:
        d = best - np.asarray(curve[key]["frames"])
        se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else 0.0
        if d.mean() <= k * se:
            level.append(key)
    middle = math.sqrt(min(level) * max(level))
    return min(level, key=lambda key: abs(math.log(key / middle)))


def rules(fixed: float) -> dict:
    """``{name: pick(calibration curve) -> key}``; keys are shares of the cell disk or :data:`RULE`."""
    return {
        f"before: {OLD_FRACTIONS[0]}-{OLD_FRACTIONS[-1]} + margin {MARGIN} for the rule's size":
            lambda c: pick_best(c, [RULE, *OLD_FRACTIONS], margin=MARGIN),
        f"now: {SIZE_FRACTIONS[0]}-{SIZE_FRACTIONS[-1]}, no margin": lambda c: pick_best(c, [RULE, *SIZE_FRACTIONS]),
        "middle of the shares within 1 SE of the best": lambda c: pick_plateau(c, SIZE_FRACTIONS),
        f"fixed {fixed}": lambda c: fixed,
        "the annotations' size": lambda c: RULE,
    }


def score_rules(folds: dict, fixed: float = 0.25) -> list[dict]:
    """One row per rule: its picks per fold and the test frames' mean scores at them (plus the test ceiling)."""
    table = []
    named = {**rules(fixed), "best on the test frames (a ceiling, not a rule)": None}
    for name, rule in named.items():
        picks = {f: (max([RULE, *SIZE_FRACTIONS], key=lambda k: objective(c["test"][k])) if rule is None
                     else rule(c["cal"])) for f, c in folds.items()}
        rows = [folds[f]["test"][p] for f, p in picks.items()]
        table.append({"rule": name, "picks": picks,
                      **{m: float(np.mean([r[m] for r in rows])) for m in ("jaccard", "f1", "mean_ap", "seg")}})
    return table


def fold_curves(fold: Path, pairs: dict, device) -> dict:
    """Calibration and test curves of one fold: ``{"cal"|"test": {share|RULE: mean scores + per-frame objective}}``."""
    from cellsegcli.instances import label_instances
    from cellsegcli.metrics import frame_scores
    from cellsegcli.models import load_model
    from cellsegcli.pipeline import SegmentConfig, make_predictor
    from cellsegcli.training.data import find_pairs, load_sample, suggest_min_size

    model = load_model(fold / "model")
    c = model.config
    predictor, _ = make_predictor(model, device, SegmentConfig(tta="none"))
    area = math.pi / 4 * c.diameter ** 2
    sets = {"cal": [load_sample(p, percentiles=c.percentiles) for p in find_pairs(fold / "data" / "val")],
            "test": [load_sample(p, percentiles=c.percentiles) for p in fold_test_pairs(fold, pairs)]}
    rule = suggest_min_size(sets["cal"])
    out = {}
    for tag, samples in sets.items():
        maps = list(predictor.predict_stream(s.image for s in samples))
        curve = {}
        for key in (RULE, *CANDIDATES):
            size = rule if key == RULE else max(1, round(key * area))
            scores = [frame_scores(label_instances(m[0], m[1] if m.shape[0] > 1 else None, threshold=c.threshold,
                                                   seed_threshold=c.seed_threshold, min_size=size, holes=c.holes,
                                                   split_clumps=c.split_clumps),
                                   s.labels) for m, s in zip(maps, samples, strict=True)]
            curve[key] = {m: float(np.mean([r[m] for r in scores])) for m in ("jaccard", "f1", "mean_ap", "seg")}
            curve[key].update(size=size, frames=[objective(r) for r in scores])
        out[tag] = curve
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    from cellsegcli.device import resolve_device
    from cellsegcli.training.data import find_pairs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cv", type=Path, help="a benchmarks/crossval.py output folder")
    parser.add_argument("data", type=Path, help="the annotated folder the folds came from")
    parser.add_argument("--fixed", type=float, default=0.25, help="the fixed share to compare (default 0.25)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the curves and the table here")
    args = parser.parse_args(argv)
    pairs = {p.image.stem: p for p in find_pairs(args.data)}
    device = resolve_device(args.device)
    folds = {}
    for fold in sorted(args.cv.glob("fold-*")):
        if (fold / "model" / "config.json").is_file() and (fold / "scores.json").is_file():
            folds[fold.name] = fold_curves(fold, pairs, device)
            print(f"{fold.name}: done", file=sys.stderr, flush=True)
    if not folds:
        raise SystemExit(f"{args.cv}: no finished fold (fold-i/model and fold-i/scores.json)")
    table = score_rules(folds, args.fixed)
    print(f"{len(folds)} folds of {args.cv}: smallest-cell rules, picked on each fold's calibration frames, "
          f"scored on its test frames (mean over folds)")
    print("| rule | picks (share of the cell disk) | Jaccard | F1@0.5 | mean AP | SEG |")
    print("|---|---|---|---|---|---|")
    for row in table:
        picks = " / ".join(str(p) for p in row["picks"].values())
        print(f"| {row['rule']} | {picks} | {row['jaccard']:.3f} | {row['f1']:.3f} | {row['mean_ap']:.3f} | "
              f"{row['seg']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"folds": {f: {t: {str(k): v for k, v in c.items()} for t, c in d.items()}
                                                   for f, d in folds.items()}, "table": table}, indent=1))
    return table


if __name__ == "__main__":
    run(main)
