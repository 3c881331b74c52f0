"""Set a shipped model's ``min_size`` to the share of the typical cell area that cross-validation folds chose.

    python weights/min_size.py phase runs/cv/phase            # print the folds' shares and the result
    python weights/min_size.py phase runs/cv/phase --write    # and write it into weights/phase/config.json
    python weights/min_size.py phase runs/cv/phase --thresholds --write   # the folds' thresholds as well

Each fold of ``benchmarks/crossval.py`` calibrates its smallest cell on its own validation frames (with
``--recalibrate``: ``fold-i/model-recalibrated``). The share each chose is its ``min_size`` over the area of
a disk of that fold model's cell diameter; the shipped model gets the median share times the area of a disk
of its own diameter. Its own validation frames also chose its epoch, so they do not choose this too; the
record goes into ``training.min_size_rule``.

``--thresholds`` also gives the model the median cell and seed thresholds of the folds and the clump splitting
most of them chose (a tie: off), recorded in ``training.threshold_rule``: for a model trained on every
annotated frame, whose own validation frames were also training frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from pathlib import Path

from cellsegcli.models import read_config, write_config

HERE = Path(__file__).resolve().parent


def disk_area(diameter: float) -> float:
    return math.pi / 4 * diameter**2


def fold_configs(cv: Path):
    """``(fold name, config)`` of every finished fold under ``cv``: its ``model-recalibrated`` when there is one."""
    for fold in sorted(cv.glob("fold-*")):
        folder = fold / "model-recalibrated" if (fold / "model-recalibrated").is_dir() else fold / "model"
        if (folder / "config.json").is_file():
            yield fold.name, read_config(folder)


def fold_shares(cv: Path) -> dict[str, float]:
    """``{fold: min_size / disk area of its diameter}`` for every finished, size-calibrated fold under ``cv``."""
    shares = {}
    for name, config in fold_configs(cv):
        sizes = config.training.get("calibration", {}).get("sizes")
        if sizes is None or not config.diameter:
            continue  # calibrated before the smallest cell was chosen
        shares[name] = config.min_size / disk_area(config.diameter)
    return shares


def fold_thresholds(cv: Path) -> dict[str, tuple[float, float, bool]]:
    """``{fold: (threshold, seed_threshold, split_clumps)}`` for every finished, calibrated fold under ``cv``."""
    return {name: (config.threshold, config.seed_threshold, bool(config.split_clumps))
            for name, config in fold_configs(cv) if config.training.get("calibration")}


def threshold_rule(chosen: dict[str, tuple[float, float, bool]]) -> dict:
    """The median thresholds and the majority's clump splitting of the folds' choices."""
    values = list(chosen.values())
    return {"threshold": statistics.median(v[0] for v in values),
            "seed_threshold": statistics.median(v[1] for v in values),
            "split_clumps": sum(v[2] for v in values) > len(values) / 2,
            "folds": {k: {"threshold": v[0], "seed_threshold": v[1], "split_clumps": v[2]} for k, v in chosen.items()},
            "rule": f"median thresholds and the majority's clump splitting of {len(values)} cross-validation folds "
                    f"(each calibrated on its own validation frames)"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("cv", type=Path, help="a benchmarks/crossval.py output folder")
    parser.add_argument("--write", action="store_true", help="write min_size into weights/NAME/config.json")
    parser.add_argument("--weights", type=Path, default=HERE, help="the folder of model folders (default: weights/)")
    parser.add_argument("--thresholds", action="store_true",
                        help="also the folds' median cell and seed thresholds and their majority's clump splitting")
    args = parser.parse_args(argv)

    shares = fold_shares(args.cv)
    if not shares:
        raise SystemExit(f"{args.cv}: no fold has a size calibration; run benchmarks/crossval.py ... --recalibrate")
    share = statistics.median(shares.values())
    config = read_config(args.weights / args.name)
    if not config.diameter:
        raise SystemExit(f"{args.weights / args.name}: config.json has no diameter")
    min_size = round(share * disk_area(config.diameter))
    folds = ", ".join(f"{k} {v:.3f}" for k, v in shares.items())
    rule = {"share_of_cell_area": round(share, 4), "diameter": config.diameter, "min_size": min_size,
            "folds": {k: round(v, 4) for k, v in shares.items()},
            "rule": f"median of the shares of the cell area that {len(shares)} cross-validation folds chose "
                    f"(held-out calibration), times the area of a disk of this model's cell diameter"}
    summary = {"model": args.name, "was": config.min_size, "min_size": min_size, "share": round(share, 4),
               "folds": folds}
    changes = {"min_size": min_size}
    training = {**config.training, "min_size_rule": rule}
    if args.thresholds:
        thresholds = threshold_rule(fold_thresholds(args.cv))
        picked = {k: thresholds[k] for k in ("threshold", "seed_threshold", "split_clumps")}
        changes.update(picked)
        summary.update(picked, threshold_folds=thresholds["folds"])
        training["threshold_rule"] = thresholds
    print(json.dumps(summary, indent=1))
    if args.write:
        write_config(args.weights / args.name, dataclasses.replace(config, **changes, training=training))
    return summary


if __name__ == "__main__":
    main()
