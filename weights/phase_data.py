"""Make the phase model's training folders: links into usiigaci-phase, 32 frames to train, 8 in val/.

    python weights/phase_data.py runs/phase-data [--source ../shared/data/usiigaci-phase]
    python weights/phase_data.py runs/phase-all --all

The validation frames are sets 04, 09, ..., 39 (every fifth); sets 23 and 40, the same field, both train.
Every stage of the shipped `phase` model was trained on this folder (its data fingerprint 81c6b6b54542ef69
is in weights/phase/config.json and is checked here). ``--all`` makes the folder of the stage-6 experiment
(every frame trains, the same 8 also in val/; fingerprint f521c34ba49a4b02), which was not shipped: see
weights/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VAL = [f"set{i:02d}" for i in range(4, 41, 5)]
FINGERPRINT = "81c6b6b54542ef69"
FINGERPRINT_ALL = "f521c34ba49a4b02"


def make(out: Path, source: Path, every_frame: bool = False) -> str:
    """Link the 40 frames into ``out`` (images/, masks/, val/images/, val/masks/); with ``every_frame`` all
    40 train and the 8 validation frames are in val/ as well; returns the fingerprint."""
    from cellsegcli.training.data import fingerprint
    from cellsegcli.training.loop import split_pairs

    names = sorted(p.stem for p in (source / "images").glob("set*.tif"))
    if len(names) != 40:
        raise SystemExit(f"{source}: expected the 40 usiigaci-phase frames in images/, found {len(names)}")
    for name in names:
        bases = [out / "val"] if name in VAL else []
        if every_frame or name not in VAL:
            bases.append(out)
        for base in bases:
            for kind, ext in (("images", "tif"), ("masks", "png")):
                link = base / kind / f"{name}.{ext}"
                link.parent.mkdir(parents=True, exist_ok=True)
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to((source / kind / f"{name}.{ext}").resolve())
    train, val = split_pairs(out, 0.2, 0)
    assert sorted(p.name for p in val) == VAL and len(train) == (40 if every_frame else 32)
    return fingerprint(train + val)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", type=Path, default=HERE.parent.parent / "shared" / "data" / "usiigaci-phase")
    parser.add_argument("--all", action="store_true", help="every frame trains (the stage-6 experiment)")
    args = parser.parse_args()
    found = make(args.out, args.source, every_frame=args.all)
    expected = FINGERPRINT_ALL if args.all else FINGERPRINT
    print(f"{args.out}: {40 if args.all else 32} training frames, 8 in val/ ({', '.join(VAL)}); fingerprint {found}")
    if found != expected:
        sys.exit(f"fingerprint {found} differs from the recorded {expected}: not the same files")


if __name__ == "__main__":
    main()
