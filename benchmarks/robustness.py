"""How a model's scores hold up when the validation images are changed as other microscopes change them.

Each annotated validation image is perturbed in raw intensity space (before cellseg's percentile
normalisation, as a different camera, lamp or focus would have recorded it) and segmented exactly as
`cellseg segment` does it; the table gives pixel Jaccard and object F1 (mean over images) per perturbation:

    python benchmarks/robustness.py ANNOTATIONS --model phase [--model runs/x] [--names-from-model]

Perturbations: a Gaussian blur of 1 and 2 px (focus, lower-NA optics), a gamma curve of 0.6 and 1.6 on the
image's own 0.1-99.9 % range (camera response, display-adjusted exports), a horizontal illumination ramp
from 0.5x to 1.5x gain (uneven lamp) and Gaussian noise of 20 % of the image's standard deviation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from cellsegcli.device import resolve_device
from cellsegcli.metrics import frame_scores, summarize
from cellsegcli.normalize import to_grey
from cellsegcli.training.data import mask_to_labels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scores import add_selection_options, network_segmenter, run, select_pairs  # noqa: E402


def gamma(image: np.ndarray, g: float) -> np.ndarray:
    """``image`` through ``x ** g`` on its own 0.1-99.9 percentile range (clipped to it), in the same units."""
    lo, hi = np.percentile(image, (0.1, 99.9))
    if hi <= lo:
        return image.astype(np.float32)
    return (np.clip((image - lo) / (hi - lo), 0, 1) ** g * (hi - lo) + lo).astype(np.float32)


def ramp(image: np.ndarray, amplitude: float) -> np.ndarray:
    """``image`` times a gain rising linearly from 1 - amplitude (left) to 1 + amplitude (right)."""
    return (image * (1 + amplitude * np.linspace(-1, 1, image.shape[-1]))).astype(np.float32)


def perturbations(seed: int = 0) -> dict:
    """Name -> function of a raw grey (Y, X) image; ``none`` first."""
    rng = np.random.default_rng(seed)
    return {
        "none": lambda x: x,
        "blur 1 px": lambda x: ndi.gaussian_filter(x, 1.0),
        "blur 2 px": lambda x: ndi.gaussian_filter(x, 2.0),
        "gamma 0.6": lambda x: gamma(x, 0.6),
        "gamma 1.6": lambda x: gamma(x, 1.6),
        "ramp 0.5-1.5x": lambda x: ramp(x, 0.5),
        "noise 20 % std": lambda x: x + rng.normal(0, 0.2 * x.std(), x.shape).astype(np.float32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--tta", default="none", choices=["none", "flip", "d4"])
    add_selection_options(parser)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    pairs = select_pairs(args, model=args.model[0])
    if not pairs:
        raise SystemExit(f"{args.annotations}: no annotated images selected")
    device = resolve_device(args.device)
    names = list(perturbations())
    data = [(to_grey(p.read_image()).astype(np.float32), mask_to_labels(p.read_mask())) for p in pairs]
    table = {}
    for spec in args.model:
        _, _, segment = network_segmenter(spec, tta=args.tta, device=device)
        rows = {n: [] for n in names}
        for raw, gt in data:
            for n, f in perturbations().items():  # a fresh noise generator per image: every model sees the same
                rows[n].append(frame_scores(segment(f(raw))[0], gt))
        table[spec] = {n: summarize(r) for n, r in rows.items()}
        print(f"  {spec}: done", file=sys.stderr)
    print(f"{len(pairs)} images of {args.annotations}, TTA {args.tta}; pixel Jaccard / object F1 (mean over images)")
    print("| perturbation | " + " | ".join(args.model) + " |")
    print("|---|" + "---|" * len(args.model))
    for n in names:
        cells = [f"{table[m][n]['jaccard']['mean']:.3f} / {table[m][n]['f1']['mean']:.3f}" for m in args.model]
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    run(main)
