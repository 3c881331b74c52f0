"""Train the papers' three architectures on one fixed split and score them, with and without TTA, next to
the classical baselines (PHANTAST, EGT): the papers' table layout.

    python benchmarks/compare.py ANNOTATIONS -o runs/compare [--epochs 100] [--val-fraction 0.2] [--seed 0]

Each architecture is trained with `cellseg train` (same split, seed and recipe), so every row can be
reproduced from the printed commands. Train on a GPU: on 2 CPU cores one architecture takes hours.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from cellsegcli.device import resolve_device
from cellsegcli.training.data import find_pairs
from cellsegcli.training.loop import checkpoint_path, split_pairs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scores import print_table, run, score_all  # noqa: E402

ARCHITECTURES = ("resnet18-unet", "resnet18-fpn", "resnet18-unet-rp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--lr", type=float, help="default: cellseg train's")
    parser.add_argument("--schedule", choices=["plateau", "cosine"], default="plateau")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", action="append", choices=ARCHITECTURES, help="default: all three")
    parser.add_argument("--json", type=Path, help="also write the results here (default: OUT/scores.json)")
    args = parser.parse_args()
    models = []
    for arch in args.arch or ARCHITECTURES:
        out = args.out / arch
        cmd = ["cellseg", "train", str(args.annotations), "-o", str(out), "--arch", arch, "--epochs",
               str(args.epochs), "--patience", str(args.patience), "--crop", str(args.crop), "--val-fraction",
               str(args.val_fraction), "--seed", str(args.seed), "--device", args.device, "--schedule",
               args.schedule]
        if args.lr:
            cmd += ["--lr", str(args.lr)]
        if args.steps_per_epoch:
            cmd += ["--steps-per-epoch", str(args.steps_per_epoch)]
        if checkpoint_path(out).exists():
            cmd.append("--resume")
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        if subprocess.run(cmd).returncode:
            sys.exit(f"error: cellseg train failed for {arch} (its message is above)")
        models.append(str(out))
    if (args.annotations / "val").is_dir():
        pairs = find_pairs(args.annotations / "val")
    else:
        pairs = split_pairs(args.annotations, args.val_fraction, args.seed)[1]
    device: torch.device = resolve_device(args.device)
    results = score_all(models + ["phantast", "egt"], pairs, ttas=["none", "d4"], device=device)
    print_table(results, f"{len(pairs)} validation frames of {args.annotations}; mean +- std over frames")
    (args.json or args.out / "scores.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    run(main)
