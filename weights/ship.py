"""Turn a finished training run into a shipped model folder under weights/.

    python weights/ship.py phase  RUN_DIR DATA
    python weights/ship.py nuclei RUN_DIR DATA

Copies the best checkpoint (``model.safetensors``, fp16), ``history.csv`` and ``curves.png``; sets
``min_size`` and ``diameter`` by the rules ``cellseg train`` applies (half the 1st percentile of the annotated
cell areas of the training split; their median equivalent diameter), so a model fine-tuned from one without
them gets them too; calibrates the cell and seed thresholds on the run's validation split (the images its
config.json names, ``cellsegcli.calibrate``, TTA none); and writes paths relative to the project (``../shared/data/...``) into the provenance.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import torch

from cellsegcli.calibrate import apply, calibrate_samples
from cellsegcli.models import load_model, read_config, write_config
from cellsegcli.training.data import cell_diameter, load_sample, suggest_min_size
from cellsegcli.training.loop import split_pairs

HERE = Path(__file__).resolve().parent
DESCRIPTIONS = {
    "phase": "Whole cells in phase contrast (10x), trained on usiigaci-phase; the default model.",
    "nuclei": "Nuclei in fluorescence, brightfield and stained tissue, trained on DSB2018 stage-1 train.",
}


def _relative(value):
    """This machine's run paths (absolute, or relative to the checkout) -> the project's names, recursively."""
    if isinstance(value, str):
        return value.replace("/work/shared/", "../shared/").replace("/work/runs/", "runs/").replace("../runs/", "runs/")
    if isinstance(value, dict):
        return {k: _relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v) for v in value]
    return value


def run_split(data: Path, val_names: list[str]):
    """The run's (training, validation) pairs: ``data/val`` when there is one, else exactly the recorded names."""
    train_pairs, val_pairs = split_pairs(data, 0.0, 0, keep_in_val=val_names)
    missing = set(val_names) - {p.name for p in val_pairs}
    if not (data / "val").is_dir() and (missing or len(val_pairs) != len(val_names)):
        raise SystemExit(f"{data}: lacks {len(missing)} of the run's {len(val_names)} validation images; "
                         f"wrong folder?")
    return train_pairs, val_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    args = parser.parse_args()

    dst = HERE / args.name
    dst.mkdir(exist_ok=True)
    for f in ("model.safetensors", "config.json", "history.csv", "curves.png"):
        shutil.copy2(args.run / f, dst / f)
    config = read_config(dst)
    train_pairs, val_pairs = run_split(args.data, config.training["val_names"])
    percentiles = config.percentiles
    train_samples = [load_sample(p, percentiles=percentiles) for p in train_pairs]
    min_size, diameter = suggest_min_size(train_samples), cell_diameter(train_samples)
    training = _relative({**config.training,
                          "min_size_rule": "half the 1st percentile of annotated cell areas (training set)"})
    write_config(dst, dataclasses.replace(config, name=args.name, min_size=min_size, diameter=diameter,
                                          description=DESCRIPTIONS.get(args.name, config.description),
                                          training=training))
    model = load_model(dst)
    samples = [load_sample(p, percentiles=percentiles) for p in val_pairs]
    result = calibrate_samples(model, samples, torch.device("cpu"))
    apply(dst, result)
    print(json.dumps({"model": args.name, "min_size": min_size, "diameter": diameter, "calibration": result.record()}, indent=1))


if __name__ == "__main__":
    main()
