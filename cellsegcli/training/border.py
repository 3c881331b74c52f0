"""U-Net's separation weights: pixels between touching or nearby cells count more in the loss.

Ronneberger, Fischer & Brox (MICCAI 2015) weight each pixel's cross-entropy by
``w(x) = 1 + w0 * exp(-(d1(x) + d2(x))**2 / (2 sigma**2))``, where ``d1`` and ``d2`` are the distances to
the nearest and the second-nearest cell, so that the network pays for the thin gaps that keep touching
cells apart. Here the distance to a cell is 0 on the cell itself, so the rims on both sides of a contact
line (where the interior channel must be 0 for the seeds to stay apart) weigh ``1 + w0 exp(-d2**2 / 2 sigma**2)``
as well as the background between them; an isolated cell and open background weigh 1.

Most merges of the held-out phase-contrast folds are touching cells whose seeds run together
(docs/measurements.md, "Where the phase F1 goes"): this is the papers' lineage's answer to that.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi


def border_weights(labels: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The (Y, X) float32 weight map ``1 + w0 exp(-(d1 + d2)^2 / (2 sigma^2))`` of instance ``labels``.

    ``d1``, ``d2`` are the Euclidean distances (pixels) to the nearest and second-nearest instance, 0
    inside an instance. Only pixels within ``3 sigma`` of two instances can weigh more than
    ``1 + w0 exp(-4.5)`` (~1 + 0.011 w0); beyond that the map is exactly 1, so each instance's distance
    is computed in its bounding box grown by ``3 sigma`` only.

    Parameters
    ----------
    labels : (Y, X) integer array
        Instance labels, 0 is background.
    w0 : float
        Peak extra weight (the paper: 10); 0 gives a map of ones.
    sigma : float
        Width of the decay, pixels (the paper: about 5).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    if not (w0 >= 0 and sigma > 0):
        raise ValueError(f"w0 must be >= 0 and sigma > 0, got w0={w0}, sigma={sigma}")
    out = np.ones(labels.shape, np.float32)
    if w0 == 0:
        return out
    margin = math.ceil(3 * sigma)
    d1 = np.full(labels.shape, np.inf, np.float32)
    d2 = np.full(labels.shape, np.inf, np.float32)
    h, w = labels.shape
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        ys, xs = box
        grown = (slice(max(0, ys.start - margin), min(h, ys.stop + margin)),
                 slice(max(0, xs.start - margin), min(w, xs.stop + margin)))
        # the whole instance lies in its box, so the distance to it is exact inside the grown box
        dist = ndi.distance_transform_edt(labels[grown] != i).astype(np.float32)
        near, second = d1[grown], d2[grown]
        np.minimum(second, np.maximum(near, dist), out=second)
        np.minimum(near, dist, out=near)
    both = np.isfinite(d2)
    total = d1[both] + d2[both]
    out[both] += w0 * np.exp(-(total * total) / (2 * sigma * sigma))
    return out
