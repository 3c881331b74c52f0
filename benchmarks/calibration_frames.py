"""How many annotated frames does threshold calibration need? Calibrate on every subset of k frames of an
annotated folder and score the chosen thresholds on the frames left out, against keeping the model's own.

    python benchmarks/calibration_frames.py ANNOTATIONS --model phase [--model other] [--k 1,2,4]
        [--margin 0 --margin 0.01]

Each model's probabilities are computed once per frame (no TTA, as `cellseg train` calibrates); every
(threshold, seed threshold) pair of `cellsegcli.calibrate`'s grid is scored per frame; then, for every subset
of k frames, `cellsegcli.calibrate.best` chooses a pair on the subset (with each --margin), and the table
gives the change of the objective (mean of pixel Jaccard and F1@0.5) on the other frames.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from cellsegcli.calibrate import SEED_THRESHOLDS, THRESHOLDS, Setting, best, sweep
from cellsegcli.device import resolve_device
from cellsegcli.models import load_model
from cellsegcli.pipeline import SegmentConfig, make_predictor
from cellsegcli.training.data import find_pairs, load_sample

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scores import run  # noqa: E402


def held_out_gains(per_frame: list[list[Setting]], current: tuple[float, float], k: int,
                   margin: float) -> np.ndarray:
    """For every k-subset of frames: objective on the other frames of the pair ``best`` picks on the subset,
    minus that of the ``current`` pair. ``per_frame[f]`` holds frame f's score for every pair (same order)."""
    objective = np.array([[s.objective for s in frame] for frame in per_frame])
    grid = per_frame[0]
    at = next(i for i, s in enumerate(grid) if (s.threshold, s.seed_threshold) == current)
    gains = []
    for subset in itertools.combinations(range(len(per_frame)), k):
        rest = [f for f in range(len(per_frame)) if f not in subset]
        means = objective[list(subset)].mean(axis=0)
        pooled = [Setting(s.threshold, s.seed_threshold, m, m, 0.0) for s, m in zip(grid, means)]
        chosen = pooled.index(best(pooled, current, margin=margin))
        gains.append(objective[rest, chosen].mean() - objective[rest, at].mean())
    return np.array(gains)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--k", default="1,2,4", help="subset sizes (default 1,2,4)")
    parser.add_argument("--margin", action="append", type=float, help="default: 0 and 0.01")
    parser.add_argument("--current", help="T,S: compare against this pair instead of the model's own (e.g. "
                        "0.5,0.5 for a model as training leaves it before calibration)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    pairs = find_pairs(args.annotations / "val" if (args.annotations / "val").is_dir() else args.annotations)
    device = resolve_device(args.device)
    print(f"{len(pairs)} frames of {args.annotations}; change of the objective on the frames left out, "
          f"calibrated on k frames vs the model's own thresholds (mean over subsets, worst, subsets that lose)")
    print("| model | current | k | margin | mean | worst | lose |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.model:
        model = load_model(spec)
        c = model.config
        predictor, _ = make_predictor(model, device, SegmentConfig(tta="none"))
        samples = [load_sample(p, percentiles=c.percentiles) for p in pairs]
        maps = list(predictor.predict_stream(s.image for s in samples))
        current = (c.threshold, c.seed_threshold if len(c.outputs) > 1 else 0.5)
        if args.current:
            current = tuple(float(x) for x in args.current.split(","))
        grid = dict(thresholds=sorted({*THRESHOLDS, current[0]}), seed_thresholds=sorted({*SEED_THRESHOLDS,
                                                                                          current[1]}))
        per_frame = [sweep([m], [s.labels], min_size=c.min_size, **grid) for m, s in zip(maps, samples)]
        for k in (int(x) for x in args.k.split(",")):
            for margin in args.margin or [0.0, 0.01]:
                g = held_out_gains(per_frame, current, k, margin)
                print(f"| {spec} | {current[0]:g}/{current[1]:g} | {k} | {margin:g} | {g.mean():+.4f} | "
                      f"{g.min():+.4f} | {(g < -1e-9).sum()}/{len(g)} |", flush=True)


if __name__ == "__main__":
    run(main)
