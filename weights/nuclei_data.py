"""Make the nuclei model's training folders: links into dsb2018-train, with a test set that chooses nothing.

    python weights/nuclei_data.py runs/nuclei-data runs/nuclei-test [--source ../shared/data/dsb2018-train]

The 100 images that validated every stage of the earlier nuclei models (``VAL_FROM``'s ``val_names``, the
seeded 15 % split of ``cellseg train --val-fraction 0.15 --seed 0``) are halved: every other one, in name
order within grey and colour images, goes to ``runs/nuclei-data/val`` (chooses the best epoch and the
thresholds), the rest to ``runs/nuclei-test`` (scored, chooses nothing). The other 564 images train.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
VAL_FROM = HERE / "nuclei-val-names.json"


def split(source: Path, val_names: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(train, val, test) image names of ``source``."""
    with open(source / "index.csv") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    held = sorted(n for n in val_names if n in rows)
    val, test = [], []
    for kind in ("1", "3"):
        names = [n for n in held if rows[n]["channels"] == kind]
        val += names[0::2]
        test += names[1::2]
    train = sorted(set(rows) - set(held))
    return train, sorted(val), sorted(test)


def link(folder: Path, source: Path, names: list[str]) -> None:
    with open(source / "index.csv") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    for name in names:
        for kind in ("image", "mask"):
            rel = Path(rows[name][kind])
            dst = folder / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink() or dst.exists():
                dst.unlink()
            dst.symlink_to((source / rel).resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--source", type=Path, default=HERE.parent.parent / "shared" / "data" / "dsb2018-train")
    args = parser.parse_args()
    train, val, test = split(args.source, json.loads(VAL_FROM.read_text()))
    link(args.data, args.source, train)
    link(args.data / "val", args.source, val)
    link(args.test, args.source, test)
    print(f"{args.data}: {len(train)} to train, {len(val)} in val/; {args.test}: {len(test)} held out")


if __name__ == "__main__":
    main()
