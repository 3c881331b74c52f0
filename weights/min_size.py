"""Set a shipped model's ``min_size`` to the share of the typical cell area that cross-validation folds chose.

    python weights/min_size.py phase runs/cv/phase            # print the folds' shares and the result
    python weights/min_size.py phase runs/cv/phase --write    # and write it into weights/phase/config.json

Each fold of ``benchmarks/crossval.py`` calibrates its smallest cell on its own validation frames (with
``--recalibrate``: ``fold-i/model-recalibrated``). The share each chose is its ``min_size`` over the area of
a disk of that fold model's cell diameter; the shipped model gets the median share times the area of a disk
of its own diameter. Its own validation frames also chose its epoch, so they do not choose this too; the
record goes into ``training.min_size_rule``.
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


def fold_shares(cv: Path) -> dict[str, float]:
    """``{fold: min_size / disk area of its diameter}`` for every finished, size-calibrated fold under ``cv``."""
    shares = {}
    for fold in sorted(cv.glob("fold-*")):
        folder = fold / "model-recalibrated" if (fold / "model-recalibrated").is_dir() else fold / "model"
        if not (folder / "config.json").is_file():
            continue
        config = read_config(folder)
        sizes = config.training.get("calibration", {}).get("sizes")
        if sizes is None or not config.diameter:
            continue  # calibrated before the smallest cell was chosen
        shares[fold.name] = config.min_size / disk_area(config.diameter)
    return shares


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("cv", type=Path, help="a benchmarks/crossval.py output folder")
    parser.add_argument("--write", action="store_true", help="write min_size into weights/NAME/config.json")
    parser.add_argument("--weights", type=Path, default=HERE, help="the folder of model folders (default: weights/)")
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
    print(json.dumps(summary, indent=1))
    if args.write:
        write_config(args.weights / args.name, dataclasses.replace(
            config, min_size=min_size, training={**config.training, "min_size_rule": rule}))
    return summary


if __name__ == "__main__":
    main()
