"""Score models on annotated validation images, in the papers' table layout (mean +- std over frames).

For each model and TTA setting, every image of the annotated folder is segmented exactly as
`cellseg segment` does it (percentile normalisation, tiled inference, instance labelling with the model's
thresholds) and scored with `cellsegcli.metrics.frame_scores` against its mask (instance masks are
cleaned the same way as for training: the largest piece of each id).

    python benchmarks/scores.py ANNOTATIONS --model phase [--model other] [--tta none --tta d4] [--names a,b]

ANNOTATIONS is a folder in one of the layouts `cellseg train` reads; ``--names`` restricts it to the named
images (e.g. the validation names recorded in a model's config.json, ``--names-from-model``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from cellsegcli.device import resolve_device
from cellsegcli.instances import label_instances
from cellsegcli.metrics import frame_scores, pooled_scores, summarize
from cellsegcli.models import load_model, load_models
from cellsegcli.normalize import normalize, to_grey
from cellsegcli.pipeline import SegmentConfig, frame_settings, label_frame, make_predictor
from cellsegcli.training.data import find_pairs, mask_to_labels

COLUMNS = ("jaccard", "dice", "precision", "recall", "f1", "mean_ap", "seg")


def network_segmenter(model_spec: str, *, tta: str, device: torch.device, diameter: float | None = None):
    """``(name, architecture, segment)`` where ``segment(raw) -> (labels, probabilities)`` does what
    `cellseg segment [--diameter D]` does to one frame (its predictor, the model's thresholds)."""
    model = load_models(model_spec)
    c = model.config
    config = SegmentConfig(tta=tta, diameter=diameter)
    predictor, _ = make_predictor(model, device, config)
    s = frame_settings(c, config)

    def segment(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prob = predictor.predict(normalize(to_grey(raw), c.percentiles))
        return label_frame(prob, s), prob

    return c.name, c.architecture, segment


def _baseline_segmenter(name: str):
    from cellsegcli import baselines

    method = getattr(baselines, name)

    def segment(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask = method(to_grey(raw)).astype(np.float32)
        return label_instances(mask), mask[None]

    return name, "classical", segment


def image_kind(raw: np.ndarray) -> str:
    """What an image shows, for the nuclei tables: ``stained tissue`` (colour), ``brightfield`` (grey on a
    light background) or ``fluorescence`` (grey on a dark background)."""
    grey = raw.astype(np.float32)
    if raw.ndim == 3:
        rgb = grey[..., :3]
        if (rgb.max(-1) - rgb.min(-1)).mean() > 0.04 * max(float(rgb.max()), 1.0):
            return "stained tissue"
        grey = rgb.mean(-1)
    lo, hi = np.percentile(grey, (1, 99.8))
    return "brightfield" if np.median(grey) - lo > 0.5 * (hi - lo) else "fluorescence"


def score_model(model_spec, pairs, *, tta: str, device: torch.device) -> dict:
    """Segment and score every pair; ``model_spec`` is a model folder/name, a list of them (an ensemble) or
    a classical baseline. The result keeps every frame's row (``rows``: name, kind and scores)."""
    import time

    from cellsegcli.pipeline import BASELINES

    if isinstance(model_spec, str) and model_spec in BASELINES:
        name, arch, segment = _baseline_segmenter(model_spec)
        tta = "-"
    else:
        name, arch, segment = network_segmenter(model_spec, tta=tta, device=device)
    rows, seconds = [], 0.0
    for pair in pairs:
        raw = pair.read_image()
        began = time.perf_counter()
        labels, _ = segment(raw)
        seconds += time.perf_counter() - began
        rows.append({"name": pair.name, "kind": image_kind(raw),
                     **frame_scores(labels, mask_to_labels(pair.read_mask()))})
        print(f"  {pair.name}: Jaccard {rows[-1]['jaccard']:.4f}, F1 {rows[-1]['f1']:.4f}", file=sys.stderr)
    return {"model": name, "architecture": arch, "tta": tta, "frames": len(rows), **aggregate(rows),
            "seconds": round(seconds, 3), "rows": rows}


def aggregate(rows: list[dict]) -> dict:
    """``summary`` (mean +- std over frames) and ``pooled`` scores of per-frame rows (their numbers)."""
    numbers = [{k: v for k, v in r.items() if not isinstance(v, str)} for r in rows]
    return {"summary": summarize(numbers), "pooled": pooled_scores(numbers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--tta", action="append", choices=["none", "flip", "d4"])
    add_selection_options(parser)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--by-kind", action="store_true", help="also a table per image kind (fluorescence, "
                        "brightfield, stained tissue)")
    args = parser.parse_args()
    pairs = select_pairs(args, model=args.model[0])
    device = resolve_device(args.device)
    results = score_all(args.model, pairs, ttas=args.tta or ["none", "d4"], device=device)
    print_table(results, f"{len(pairs)} frames of {args.annotations}; mean +- std over frames")
    if args.by_kind:
        print_table(by_kind(results), "by image kind")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def by_kind(results: list[dict]) -> list[dict]:
    """Each result split into one per image kind (``model`` then names the kind and the frame count); nothing
    for a result whose images are all of one kind (the kinds are the nuclei sets': grey phase-contrast frames
    would be called "fluorescence")."""
    out = []
    for r in results:
        kinds = sorted({row["kind"] for row in r["rows"]})
        for kind in kinds if len(kinds) > 1 else []:
            rows = [row for row in r["rows"] if row["kind"] == kind]
            out.append({**r, "model": f"{r['model']}, {kind} ({len(rows)})", "frames": len(rows), **aggregate(rows)})
    return out


def add_selection_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose which annotated images to score (see :func:`select_pairs`)."""
    parser.add_argument("--names", help="comma-separated image names to score (default: all)")
    parser.add_argument("--names-from-model", action="store_true",
                        help="score the validation images recorded in the (first) model's config.json")
    parser.add_argument("--val-fraction", type=float, help="score the validation split `cellseg train "
                        "--val-fraction F --seed S` makes of ANNOTATIONS")
    parser.add_argument("--seed", type=int, default=0)


def select_pairs(args: argparse.Namespace, *, model: str) -> list:
    """The annotated pairs to score: ANNOTATIONS/val/ when there is one, else the --val-fraction split, else
    all; then only --names, or only the validation names recorded in ``model``'s config."""
    pairs = find_pairs(args.annotations)
    if (args.annotations / "val").is_dir():
        pairs = find_pairs(args.annotations / "val")
    elif args.val_fraction:
        from cellsegcli.training.loop import split_pairs

        pairs = split_pairs(args.annotations, args.val_fraction, args.seed)[1]
    names = None
    if args.names:
        names = set(args.names.split(","))
    elif args.names_from_model:
        names = set(load_model(model).config.training["val_names"])
    return pairs if names is None else [p for p in pairs if p.name in names]


def score_all(models: list[str], pairs, *, ttas: list[str], device: torch.device) -> list[dict]:
    from cellsegcli.pipeline import BASELINES

    return [score_model(m, pairs, tta=t, device=device) for m in models
            for t in (["-"] if m in BASELINES else ttas)]


def print_table(results: list[dict], title: str) -> None:
    print(title)
    print("| model | architecture | TTA | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for r in results:
        s = r["summary"]
        cells = [f"{s[k]['mean']:.3f} +- {s[k]['std']:.3f}" for k in COLUMNS]
        print(f"| {r['model']} | {r['architecture']} | {r['tta']} | " + " | ".join(cells) + " |")
    for r in results:
        p = r["pooled"]
        print(f"pooled over frames (as one image): {r['model']} TTA {r['tta']}: pixel Jaccard {p['jaccard']:.3f}, "
              f"Dice {p['dice']:.3f}, object F1 {p['f1']:.3f}, SEG {p['seg']:.3f}")


def run(main) -> None:
    """Run a benchmark's ``main``; a user error (bad folder, bad model) exits 1 with its one line."""
    from cellsegcli.errors import CellsegError

    try:
        main()
    except CellsegError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    run(main)
