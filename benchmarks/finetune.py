"""How far a handful of annotated frames goes: fine-tune a model on N frames against training from scratch
on the same N frames, at an equal budget, scored on held-out frames.

    python benchmarks/finetune.py ANNOTATIONS -o runs/finetune --frames 10 --init nuclei --init none
        [--epochs 15] [--steps-per-epoch 20] [--lr 5e-4] [--seed 0]

The held-out frames are ANNOTATIONS/val (or the `--val-fraction`/`--seed` split `cellseg train` makes); N
training frames are drawn (seeded) from the rest and linked into OUT/data (images/, masks/, val/), so every
`cellseg train` run sees the same frames. Each run is `cellseg train OUT/data --init X` with the same
budget and a cosine schedule; the validation frames choose its best epoch and calibrate its thresholds, as in
every `cellseg train`. Each --init model is also scored as it is, before any fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cellsegcli.device import resolve_device
from cellsegcli.training.data import find_pairs
from cellsegcli.training.loop import checkpoint_path, split_pairs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scores import print_table, run, score_all  # noqa: E402


def link_subset(pairs, folder: Path) -> None:
    """``folder/images/NAME.ext`` and ``folder/masks/NAME.ext`` links to each pair's files (a frame of an
    annotated stack is written out as ``NAME.tif``)."""
    import tifffile

    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for p in pairs:
        for sub, src, read in (("images", p.image, p.read_image), ("masks", p.mask, p.read_mask)):
            path = folder / sub / f"{p.name}{src.suffix if p.frame is None else '.tif'}"
            if path.exists():
                continue
            if p.frame is None:
                path.symlink_to(src.resolve())
            else:
                tifffile.imwrite(path, read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=10, help="annotated training frames (default 10)")
    parser.add_argument("--init", action="append", required=True,
                        help="a model name or folder to fine-tune, or none (from scratch); repeat to compare")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--steps-per-epoch", type=int, default=20)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if (args.annotations / "val").is_dir():
        rest, held_out = find_pairs(args.annotations), find_pairs(args.annotations / "val")
    else:
        rest, held_out = split_pairs(args.annotations, args.val_fraction, args.seed)
    if len(rest) < args.frames:
        sys.exit(f"error: {args.annotations} has {len(rest)} training frames; ask for --frames {len(rest)} or fewer")
    chosen = sorted(np.random.default_rng(args.seed).choice(len(rest), args.frames, replace=False))
    data = args.out / "data"
    link_subset([rest[i] for i in chosen], data)
    link_subset(held_out, data / "val")
    print(f"{args.frames} training frames: {', '.join(rest[i].name for i in chosen)}", file=sys.stderr)
    models, minutes = [], {}
    for init in args.init:
        out = args.out / f"from-{Path(init).name}"
        cmd = ["cellseg", "train", str(data), "-o", str(out), "--init", init, "--epochs", str(args.epochs),
               "--patience", str(args.epochs), "--steps-per-epoch", str(args.steps_per_epoch), "--lr", str(args.lr),
               "--schedule", "cosine", "--crop", str(args.crop), "--seed", str(args.seed), "--device", args.device,
               "--name", out.name]
        if checkpoint_path(out).exists():
            cmd.append("--resume")
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        began = time.monotonic()
        if subprocess.run(cmd).returncode:
            sys.exit(f"error: cellseg train failed for --init {init} (its message is above)")
        minutes[str(out)] = (time.monotonic() - began) / 60
        models.append(str(out))
    untouched = [m for m in args.init if m != "none"]
    device: torch.device = resolve_device(args.device)
    results = score_all(untouched + models, held_out, ttas=["none"], device=device)
    for r, spec in zip(results, untouched + models):
        r["init"] = spec
        r["train_minutes"] = round(minutes.get(spec, 0.0), 2)
    print_table(results, f"{len(held_out)} held-out frames of {args.annotations}; mean +- std over frames; "
                         f"{args.frames} training frames, {args.epochs} epochs of {args.steps_per_epoch} batches")
    for r in results:
        print(f"{r['init']}: {r['train_minutes']:.1f} min of training")
    (args.out / "scores.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    run(main)
