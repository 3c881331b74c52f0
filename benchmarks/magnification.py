"""Images at another magnification than the model's: `cellseg segment` as it is, and with `--diameter`.

Each annotated image and its labels are resized by each ``--zoom`` factor (image: bilinear, antialiased when
shrinking; labels: nearest), as if taken with a ``zoom`` times stronger objective, and segmented twice the way
`cellseg segment` does (no TTA): at the model's scale as given, and with ``--diameter`` set to the model's
training cell diameter times ``zoom`` (the value a user reads off their images). Prints, per zoom, pixel
Jaccard and object F1 at IoU 0.5 (mean +- std over images) and the median equivalent diameter of the
annotated cells.

    python benchmarks/magnification.py ANNOTATIONS --model phase --zoom 0.5 --zoom 1 --zoom 2 [--names-from-model]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from skimage.transform import resize

from cellsegcli.device import resolve_device
from cellsegcli.metrics import frame_scores, summarize
from cellsegcli.models import load_model
from cellsegcli.training.data import mask_to_labels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scores import add_selection_options, network_segmenter, run, select_pairs  # noqa: E402


def zoomed(image: np.ndarray, labels: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (Y, X[, C]) and ``labels`` (Y, X) resized by ``zoom``; labels stay integer ids."""
    shape = tuple(max(1, round(n * zoom)) for n in labels.shape)
    img = resize(image.astype(np.float32), shape + image.shape[2:], order=1, anti_aliasing=zoom < 1,
                 preserve_range=True)
    lab = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(labels.dtype)
    return img, lab


def median_diameter(labels: list[np.ndarray]) -> float:
    areas = np.concatenate([np.bincount(lab.ravel())[1:] for lab in labels])
    areas = areas[areas > 0]
    return float(np.median(2 * np.sqrt(areas / np.pi)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path)
    parser.add_argument("--model", default="phase")
    parser.add_argument("--zoom", type=float, action="append", help="magnification factors (default 0.5 1 2)")
    add_selection_options(parser)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    pairs = select_pairs(args, model=args.model)
    device = resolve_device(args.device)
    trained = load_model(args.model).config.diameter
    data = [(p.name, p.read_image(), mask_to_labels(p.read_mask())) for p in pairs]
    print(f"{len(pairs)} images of {args.annotations}, model {args.model} (trained on cells {trained:g} px "
          f"across), TTA none; mean +- std over images")
    print("| zoom | cell diameter (px) | as given: Jaccard | F1@0.5 | --diameter | Jaccard | F1@0.5 |")
    print("|---|---|---|---|---|---|---|")
    for zoom in args.zoom or [0.5, 1.0, 2.0]:
        images = [(name, *zoomed(img, lab, zoom)) for name, img, lab in data]
        row = [f"{zoom:g}", f"{median_diameter([lab for _, _, lab in images]):.0f}"]
        for diameter in (None, round(trained * zoom, 1)):
            _, _, segment = network_segmenter(args.model, tta="none", device=device, diameter=diameter)
            rows = []
            for name, img, lab in images:
                rows.append(frame_scores(segment(img)[0], lab))
                print(f"  zoom {zoom:g} diameter {diameter}: {name} Jaccard {rows[-1]['jaccard']:.4f}",
                      file=sys.stderr)
            s = summarize(rows)
            row += ([] if diameter is None else [f"{diameter:g}"]) + [
                f"{s[k]['mean']:.3f} +- {s[k]['std']:.3f}" for k in ("jaccard", "f1")]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    run(main)
