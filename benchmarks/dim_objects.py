"""Dim objects beside bright ones: are nuclei at 5-10 % of the brightest one's intensity still found?

    python benchmarks/dim_objects.py ANNOTATIONS --model nuclei [--model other] [--names-from-model]
        [--level 0.2 --level 0.1 --level 0.05]

In every annotated image, half of the objects (seeded) are dimmed in raw intensity space so that their mean
intensity above the background (the median of the unannotated pixels) is ``level`` times that of the
image's brightest object (objects already dimmer stay as they are); the gain map is blurred by 1.5 px so an
object's rim and halo dim with it. Each image is then segmented as ``cellseg segment`` does it. Reported:
the recall at IoU 0.5 of the dimmed objects and of the others, object F1 and pixel Jaccard of the whole
image (mean over images; ``level`` 1 is the unchanged image).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from cellsegcli.device import resolve_device
from cellsegcli.metrics import frame_scores, match_objects
from cellsegcli.normalize import to_grey
from cellsegcli.training.data import mask_to_labels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scores import add_selection_options, network_segmenter, run, select_pairs  # noqa: E402


def dim(raw: np.ndarray, labels: np.ndarray, chosen: np.ndarray, level: float, *, soften: float = 1.5) -> np.ndarray:
    """``raw`` (Y, X) with the objects whose ids are in ``chosen`` brought to ``level`` x the brightest
    object's mean intensity above the background (never brightened)."""
    raw = raw.astype(np.float32)
    background = float(np.median(raw[labels == 0])) if (labels == 0).any() else float(raw.min())
    n = int(labels.max())
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    means = np.bincount(labels.ravel(), weights=raw.ravel(), minlength=n + 1) / np.maximum(counts, 1) - background
    means[0] = 0
    gains = np.ones(n + 1, np.float32)
    target = level * means[1:].max() if n else 0.0
    for i in chosen:
        if means[i] > target > 0:
            gains[i] = target / means[i]
    gain_map = gains[labels]
    if soften > 0:
        gain_map = ndi.gaussian_filter(gain_map, soften)
    return background + (raw - background) * gain_map


def recall_of(pred: np.ndarray, gt: np.ndarray, ids: np.ndarray) -> tuple[int, int]:
    """(found, total) of the ground-truth objects ``ids``: matched by a prediction with IoU > 0.5."""
    m = match_objects(pred, gt)
    hit = (m.iou > 0.5).any(axis=1)
    which = np.isin(m.gt_ids, ids)
    return int(hit[which].sum()), int(which.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--level", action="append", type=float)
    parser.add_argument("--tta", default="none", choices=["none", "flip", "d4"])
    add_selection_options(parser)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    pairs = select_pairs(args, model=args.model[0])
    if not pairs:
        raise SystemExit(f"{args.annotations}: no annotated images selected")
    levels = [1.0] + (args.level or [0.2, 0.1, 0.05])
    device = resolve_device(args.device)
    rng = np.random.default_rng(args.seed)
    data = []
    for p in pairs:
        gt = mask_to_labels(p.read_mask())
        ids = np.unique(gt[gt > 0])
        chosen = ids[rng.random(len(ids)) < 0.5]
        data.append((to_grey(p.read_image()).astype(np.float32), gt, chosen, np.setdiff1d(ids, chosen)))
    print(f"{len(pairs)} images of {args.annotations}, half of each image's objects dimmed, TTA {args.tta}")
    print("| model | dimmed to | recall, dimmed | recall, others | F1@0.5 | Jaccard |")
    print("|---|---|---|---|---|---|")
    for spec in args.model:
        _, _, segment = network_segmenter(spec, tta=args.tta, device=device)
        for level in levels:
            found = [0, 0, 0, 0]
            f1, jac = [], []
            for raw, gt, chosen, others in data:
                labels = segment(dim(raw, gt, chosen, level) if level < 1 else raw)[0]
                a, b = recall_of(labels, gt, chosen)
                c, d = recall_of(labels, gt, others)
                found = [found[0] + a, found[1] + b, found[2] + c, found[3] + d]
                scores = frame_scores(labels, gt)
                f1.append(scores["f1"])
                jac.append(scores["jaccard"])
            print(f"| {spec} | {level:g} | {found[0] / max(found[1], 1):.3f} ({found[0]}/{found[1]}) | "
                  f"{found[2] / max(found[3], 1):.3f} | {np.mean(f1):.3f} | {np.mean(jac):.3f} |", flush=True)


if __name__ == "__main__":
    run(main)
