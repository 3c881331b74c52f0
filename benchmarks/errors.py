"""Where the held-out F1 goes: the error kinds (merges, splits, misses, ...) of cross-validation folds.

Each finished fold of a ``benchmarks/crossval.py`` run segments its own test frames (the names in its
``scores.json``) with its model, as `cellseg segment` does, and every unmatched object is sorted into one
kind (:mod:`cellsegcli.error_kinds`). Prints a table per fold and for all folds together:

    python benchmarks/errors.py runs/cv/phase-crop384 --data ../shared/data/usiigaci-phase [--tta none]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scores import network_segmenter  # noqa: E402

from cellsegcli.device import resolve_device  # noqa: E402
from cellsegcli.error_kinds import FN_KINDS, FP_KINDS, error_kinds  # noqa: E402
from cellsegcli.training.data import find_pairs, mask_to_labels  # noqa: E402


def fold_test_pairs(fold: Path, pairs: dict) -> list:
    """The pairs of ``fold``'s test frames (the names its ``scores.json`` scored), from ``{name: pair}``."""
    names = [r["name"] for r in json.loads((fold / "scores.json").read_text())["rows"]]
    missing = [n for n in names if n not in pairs]
    if missing:
        raise SystemExit(f"{fold}: test frame {missing[0]} is not in the data folder; give the folder the folds "
                         f"came from")
    return [pairs[n] for n in names]


def fold_errors(fold: Path, pairs: dict, *, tta: str, device) -> dict[str, int]:
    """Summed error kinds of ``fold``'s model over its test frames."""
    tests = fold_test_pairs(fold, pairs)
    _, _, segment = network_segmenter(str(fold / "model"), tta=tta, device=device)
    total: dict[str, int] = {}
    for pair in tests:
        labels, _ = segment(pair.read_image())
        for k, v in error_kinds(labels, mask_to_labels(pair.read_mask())).items():
            total[k] = total.get(k, 0) + v
    total["frames"] = len(tests)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a crossval.py output folder")
    parser.add_argument("--data", type=Path, required=True, help="the annotated folder the folds came from")
    parser.add_argument("--tta", choices=["none", "flip", "d4"], default="none")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    folds = sorted(p.parent for p in args.run.glob("fold-*/scores.json"))
    if not folds:
        raise SystemExit(f"{args.run}: no finished fold (fold-*/scores.json); run benchmarks/crossval.py first")
    pairs = {p.name: p for p in find_pairs(args.data)}
    device = resolve_device(args.device)
    columns = ("frames", "n_gt", "tp", *FN_KINDS, "n_pred", *FP_KINDS)
    rows = [(f.name, fold_errors(f, pairs, tta=args.tta, device=device)) for f in folds]
    rows.append(("all", {k: sum(r[k] for _, r in rows) for k in columns}))
    print(f"error kinds at IoU > 0.5, {args.run}, TTA {args.tta} (cellsegcli/error_kinds.py)")
    print("| fold | " + " | ".join(columns) + " | pooled F1 |")
    print("|---" * (len(columns) + 2) + "|")
    for name, r in rows:
        f1 = 2 * r["tp"] / max(r["n_gt"] + r["n_pred"], 1)
        print(f"| {name} | " + " | ".join(str(r[k]) for k in columns) + f" | {f1:.3f} |")


if __name__ == "__main__":
    main()
