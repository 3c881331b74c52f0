"""Where a model's pixel errors lie: near the annotated outlines, or in whole objects one side left out.

For each validation image, segmented exactly as `cellseg segment` does it (no TTA), prints the pixel Jaccard,
the share of wrong pixels within ``--band`` px of an annotated outline, the Jaccard outside that band, the share
of false-positive pixels in predicted objects that touch no annotated one (and of false negatives in annotated
objects that no prediction touches), and the mean Jaccard of the thresholded cell probability at several
thresholds.

    python benchmarks/error_bands.py ANNOTATIONS --model phase [--band 2] [--names-from-model | --val-fraction F]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from cellsegcli.device import resolve_device
from cellsegcli.metrics import pixel_scores
from cellsegcli.training.data import mask_to_labels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scores import add_selection_options, network_segmenter, run, select_pairs  # noqa: E402

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def _jaccard(p: np.ndarray, g: np.ndarray) -> float:
    return pixel_scores(p, g)["jaccard"]


def _outside_objects(mask: np.ndarray, other: np.ndarray) -> int:
    """Pixels of ``mask`` in its connected pieces that do not touch ``other``."""
    pieces, _ = ndi.label(mask)
    touched = np.unique(pieces[other & mask])
    return int(np.count_nonzero(mask & ~np.isin(pieces, touched)))


def error_bands(labels: np.ndarray, gt: np.ndarray, prob: np.ndarray, band: int) -> dict[str, float]:
    """One image's row: see the module docstring. ``prob`` is the cell probability (Y, X)."""
    p, g = labels > 0, gt > 0
    near = find_boundaries(gt, mode="thick")   # 1 px on each side of every outline
    if band > 1:  # (iterations=0 would dilate until nothing changes)
        near = ndi.binary_dilation(near, iterations=band - 1)
    wrong = p ^ g
    fp, fn = p & ~g, g & ~p
    row = {
        "jaccard": _jaccard(p, g),
        "error_near_outline": np.count_nonzero(wrong & near) / max(np.count_nonzero(wrong), 1),
        "jaccard_outside_band": _jaccard(p & ~near, g & ~near),
        "fp_in_unmatched_objects": _outside_objects(p, g) / max(np.count_nonzero(fp), 1),
        "fn_in_missed_objects": _outside_objects(g, p) / max(np.count_nonzero(fn), 1),
    }
    row.update({f"jaccard_at_{t}": _jaccard(prob > t, g) for t in THRESHOLDS})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--band", type=int, default=2, help="px on each side of an annotated outline (>= 1)")
    add_selection_options(parser)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.band < 1:
        parser.error(f"--band {args.band}: give at least 1 px")
    name, _, segment = network_segmenter(args.model, tta="none", device=resolve_device(args.device))
    rows = []
    for pair in select_pairs(args, model=args.model):
        labels, prob = segment(pair.read_image())
        rows.append(error_bands(labels, mask_to_labels(pair.read_mask()), prob[0], args.band))
        print(pair.name, " ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()), flush=True)
    print(f"mean over {len(rows)} images ({name}, band {args.band} px):")
    for key in rows[0]:
        print(f"  {key}: {np.mean([r[key] for r in rows]):.3f}")


if __name__ == "__main__":
    run(main)
