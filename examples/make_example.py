"""Generate examples/synthetic_stack.tif: a small phase-contrast-like time-lapse made by cellseg's authors.

Cells are granular ellipses near the background's grey with a bright halo (as T98G cells at 10x), on an
uneven background, drifting and growing a little from frame to frame; the matching instance labels go to
synthetic_labels.tif. Run:

    python examples/make_example.py [--frames 8] [--size 384]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.draw import ellipse

HERE = Path(__file__).resolve().parent


def make_stack(frames: int = 8, size: int = 384, cells: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(T, Y, X) uint16 images and uint16 instance labels of a synthetic phase-contrast time-lapse."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(30, size - 30, (cells, 2))
    axes = rng.uniform(9, 18, (cells, 2))
    angles = rng.uniform(0, np.pi, cells)
    drift = rng.normal(0, 1.5, (cells, 2))
    yy, xx = np.mgrid[:size, :size] / size
    background = 0.5 + 0.05 * np.sin(3 * yy + 1) * np.cos(2 * xx)
    images, labels = [], []
    for t in range(frames):
        lab = np.zeros((size, size), np.uint16)
        for i in range(cells):
            cy, cx = centres[i] + t * drift[i]
            ry, rx = axes[i] * (1 + 0.02 * t)
            rr, cc = ellipse(cy, cx, ry, rx, shape=lab.shape, rotation=angles[i])
            free = lab[rr, cc] == 0
            lab[rr[free], cc[free]] = i + 1
        cell = lab > 0
        texture = ndi.gaussian_filter(rng.normal(0, 1, lab.shape), 1)
        texture /= texture.std()
        halo = ndi.gaussian_filter(cell.astype(float), 3) - ndi.gaussian_filter(cell.astype(float), 1)
        # as T98G cells at 10x: granular bodies near the background's grey, ringed by a bright halo
        image = background - 0.02 * cell + 0.08 * texture * cell + 0.8 * np.clip(halo, 0, None)
        image = image + rng.normal(0, 0.015, lab.shape)
        images.append(np.clip(image * 40000, 0, 65535).astype(np.uint16))
        labels.append(lab)
    return np.stack(images), np.stack(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    images, labels = make_stack(args.frames, args.size)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"axes": "TYX", "unit": "um"}
    res = (1 / 0.65, 1 / 0.65)
    tifffile.imwrite(args.out / "synthetic_stack.tif", images, imagej=True, resolution=res, metadata=meta,
                     compression="zlib")
    tifffile.imwrite(args.out / "synthetic_labels.tif", labels, imagej=True, resolution=res, metadata=meta,
                     compression="zlib")
    print(f"wrote {args.out / 'synthetic_stack.tif'} {images.shape} and synthetic_labels.tif")


if __name__ == "__main__":
    main()
