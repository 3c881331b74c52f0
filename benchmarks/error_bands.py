"""Where a model's pixel errors lie: near the annotated outlines, or in whole objects one side left out.

For each validation image, segmented exactly as `cellseg segment` does it (no TTA), prints the pixel Jaccard,
the share of wrong pixels within ``--band`` px of an annotated outline, the Jaccard outside that band, the share
of false-positive pixels in predicted objects that touch no annotated one (and of false negatives in annotated
objects that no prediction touches), and the mean Jaccard of the thresholded cell probability at several
thresholds.

    python benchmarks/error_bands.py ANNOTATIONS --model phase [--band 2] [--names-from-model]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from cellsegcli.device import autocast_dtype, resolve_device
from cellsegcli.inference import InferenceOptions, TiledPredictor, network_callable
from cellsegcli.instances import label_instances
from cellsegcli.models import load_model
from cellsegcli.normalize import normalize, to_grey
from cellsegcli.pipeline import CPU_TILE
from cellsegcli.training.data import find_pairs, mask_to_labels, read_image

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def _jaccard(p: np.ndarray, g: np.ndarray) -> float:
    union = np.count_nonzero(p | g)
    return np.count_nonzero(p & g) / union if union else 1.0


def _outside_objects(mask: np.ndarray, other: np.ndarray) -> int:
    """Pixels of ``mask`` in its connected pieces that do not touch ``other``."""
    pieces, _ = ndi.label(mask)
    touched = np.unique(pieces[other & mask])
    return int(np.count_nonzero(mask & ~np.isin(pieces, touched)))


def error_bands(labels: np.ndarray, gt: np.ndarray, prob: np.ndarray, band: int) -> dict[str, float]:
    """One image's row: see the module docstring. ``prob`` is the cell probability (Y, X)."""
    p, g = labels > 0, gt > 0
    near = ndi.binary_dilation(find_boundaries(gt, mode="thick"), iterations=max(band - 1, 0))
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
    parser.add_argument("--band", type=int, default=2, help="px on each side of an annotated outline")
    parser.add_argument("--names-from-model", action="store_true",
                        help="only the validation images recorded in the model's config.json")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    model = load_model(args.model)
    c = model.config
    device = resolve_device(args.device)
    tile = CPU_TILE if device.type == "cpu" else c.tile
    predictor = TiledPredictor(network_callable(model.network, device), device, InferenceOptions(tile=tile),
                               autocast=autocast_dtype(device))
    folder = args.annotations / "val" if (args.annotations / "val").is_dir() else args.annotations
    pairs = find_pairs(folder)
    if args.names_from_model:
        names = set(c.training["val_names"])
        pairs = [p for p in pairs if p.name in names]
    rows = []
    for pair in pairs:
        prob = predictor.predict(normalize(to_grey(read_image(pair.image)), c.percentiles))
        labels = label_instances(prob[0], prob[1] if prob.shape[0] > 1 else None, threshold=c.threshold,
                                 seed_threshold=c.seed_threshold, min_size=c.min_size)
        rows.append(error_bands(labels, mask_to_labels(read_image(pair.mask)), prob[0], args.band))
        print(pair.name, " ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()), flush=True)
    print(f"mean over {len(rows)} images ({c.name}, band {args.band} px):")
    for key in rows[0]:
        print(f"  {key}: {np.mean([r[key] for r in rows]):.3f}")


if __name__ == "__main__":
    main()
