"""The two classical baselines of the papers, as functions ``frame -> binary mask``.

- :func:`phantast` -- PHANTAST, local contrast thresholding (Jaccard et al., 2014).
- :func:`egt` -- EGT, Empirical Gradient Threshold (Chalfoun et al., 2015, NIST).

Both take one ``(Y, X)`` grey image and return a ``(Y, X)`` bool mask of cell pixels. PHANTAST works on
the raw intensities, as the original ImageJ plugin does, with its published defaults (sigma 1.2, epsilon
0.03): its contrast is a ratio of local standard deviation to local mean, so it depends on where the
intensity scale starts, and a percentile rescaling would change the meaning of epsilon. EGT thresholds a
percentile of the gradient and is unaffected by a linear rescaling; it scales by percentiles first
(:func:`normalize`). PHANTAST keeps its published parameters; EGT's two sizes, which EGT asks its user
for, are set for 10x frames. They are the papers' reference rows, not methods tuned to our data.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["normalize", "local_contrast", "phantast", "egt_percentile", "egt"]

_EIGHT = np.ones((3, 3), bool)


def normalize(image: np.ndarray, *, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Map the ``low`` and ``high`` percentiles of ``image`` to 0 and 1, clipping outside.

    Parameters
    ----------
    image : (Y, X) array
    low, high : float
        Percentiles, 0 <= low < high <= 100.

    Returns
    -------
    (Y, X) float32 array in [0, 1]; all zeros for a constant image.
    """
    image = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:
        return np.zeros(image.shape, np.float32)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be a (Y, X) array; got shape {image.shape}")
    return image.astype(np.float64)


def _fill_holes(mask: np.ndarray, max_size: float) -> np.ndarray:
    """Fill background regions enclosed by ``mask`` (8-connected objects) of at most ``max_size`` pixels."""
    holes = ndimage.binary_fill_holes(mask) & ~mask
    if not np.isfinite(max_size):
        return mask | holes
    labels, n = ndimage.label(holes)  # holes are 4-connected background, the dual of 8-connected objects
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = sizes <= max_size
    small[0] = False
    return mask | small[labels]


def _remove_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop 8-connected objects of fewer than ``min_size`` pixels."""
    if min_size <= 1:
        return mask
    labels, n = ndimage.label(mask, structure=_EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


# --- PHANTAST ------------------------------------------------------------------------------------

# The eight neighbours clockwise from north, as (row, col) offsets.
_COMPASS = np.array([(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)])


def local_contrast(image: np.ndarray, *, sigma: float) -> np.ndarray:
    """PHANTAST's local contrast: local standard deviation / local mean, Gaussian-weighted.

    Parameters
    ----------
    image : (Y, X) non-negative array
    sigma : float
        Standard deviation of the Gaussian window, pixels.

    Returns
    -------
    (Y, X) float64 array; 0 where the window is constant, ``inf`` where its mean is 0 but it is not.
    """
    image = _check_image(image)
    mean = ndimage.gaussian_filter(image, sigma)
    var = np.maximum(ndimage.gaussian_filter(image * image, sigma) - mean * mean, 0.0)
    std = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, std / np.where(mean > 0, mean, 0.0), 0.0)


def _kirsch_direction(image: np.ndarray) -> np.ndarray:
    """Index into ``_COMPASS`` of the Kirsch compass kernel with the largest response, per pixel.

    The kernel of direction d weighs the three ring neighbours centred on d by 5 and the other five by -3,
    so its response is 8 * (sum of those three) - 3 * (sum of all eight): the largest response is the
    direction whose three neighbours are brightest, i.e. the direction in which intensity rises.
    """
    padded = np.pad(image.astype(np.float32), 1, mode="edge")
    h, w = image.shape
    ring = np.stack([padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in _COMPASS])
    triples = ring + np.roll(ring, 1, axis=0) + np.roll(ring, -1, axis=0)
    return np.argmax(triples, axis=0)


def _remove_halo(mask: np.ndarray, image: np.ndarray, *, iterations: int) -> np.ndarray:
    """Peel halo pixels off the outside of ``mask``, one contour layer per iteration.

    A contour pixel (foreground with a background 8-neighbour) is halo when its Kirsch gradient points
    into the foreground: intensity rises towards the object, as on the outer flank of the bright halo
    that rings a dark cell in positive phase contrast. Pixels whose gradient points outwards (the dark
    cell edge, or the inner flank of the halo) stop the peeling there.
    """
    h, w = mask.shape
    offsets = _COMPASS[_kirsch_direction(image)]
    rows, cols = np.indices(mask.shape)
    target = np.clip(rows + offsets[..., 0], 0, h - 1) * w + np.clip(cols + offsets[..., 1], 0, w - 1)
    mask = mask.copy()
    for _ in range(iterations):
        contour = mask & ~ndimage.binary_erosion(mask, _EIGHT, border_value=1)
        halo = contour & mask.ravel()[target]
        if not halo.any():
            break
        mask &= ~halo
    return mask


def phantast(
    image: np.ndarray,
    *,
    sigma: float = 1.2,
    epsilon: float = 0.03,
    min_size: int = 1000,
    fill_holes: bool = True,
    halo_removal: bool = True,
    halo_iterations: int = 6,
) -> np.ndarray:
    """PHANTAST (Jaccard et al., 2014): local contrast thresholding for phase-contrast images.

    Steps, as implemented:

    1. take the raw intensities (shifted to start at 0 if the image has negative values);
    2. local contrast C = local std / local mean under a Gaussian window of ``sigma``
       (:func:`local_contrast`); foreground where C > ``epsilon``;
    3. fill holes;
    4. halo removal: the paper corrects the bright phase-contrast halo using the direction of the
       intensity gradient from Kirsch compass kernels. Our reading: on the Gaussian-smoothed image
       (``sigma``), each pixel gets the Kirsch direction of steepest rise; contour pixels of the mask whose
       direction points into the mask lie on the halo's outer flank and are removed, layer by layer, for at
       most ``halo_iterations`` layers. The bound is ours: unbounded peeling also eats textured cell
       bodies, while a halo at 10x is a few pixels wide. Holes are filled again afterwards;
    5. remove 8-connected objects smaller than ``min_size`` pixels (debris).

    Parameters
    ----------
    image : (Y, X) array
        One grey phase-contrast frame, any intensity range.
    sigma : float
        Gaussian window of the local contrast, pixels (the paper: 1.2 to 1.4).
    epsilon : float
        Contrast threshold on the raw intensities; 0.03 is PHANTAST's published default.
    min_size : int
        Smallest object kept, pixels.
    fill_holes, halo_removal : bool
        Run steps 3 and 4.
    halo_iterations : int
        Largest halo width removed, pixels.

    Returns
    -------
    (Y, X) bool array, True on cells.

    Notes
    -----
    With the published defaults, on the 40 Usiigaci frames (T98G, 10x phase contrast): pixel Jaccard
    0.596 +- 0.110 (the papers report 0.55 on their MDA-MB-231 data). An earlier version scaled the
    image to [0, 1] first and tuned epsilon to 0.06 on these frames (0.622 +- 0.135): above the
    papers' range for classical methods and no longer PHANTAST's own parameters, so it was dropped.
    """
    norm = _check_image(image)
    norm = norm - min(0.0, float(norm.min())) if norm.size else norm
    mask = local_contrast(norm, sigma=sigma) > epsilon
    if fill_holes:
        mask = _fill_holes(mask, np.inf)
    if halo_removal and halo_iterations > 0:
        mask = _remove_halo(mask, ndimage.gaussian_filter(norm, sigma), iterations=halo_iterations)
        if fill_holes:
            mask = _fill_holes(mask, np.inf)
    return _remove_small(mask, min_size)


# --- EGT -----------------------------------------------------------------------------------------


def egt_percentile(gradient: np.ndarray, *, greedy: float = 0.0) -> float:
    """EGT's empirical rule: the percentile of the gradient magnitude to threshold at.

    The gradient magnitudes are binned into 1000 bins. Pixels whose gradient lies between 3 times the
    histogram's mode and the bin where the histogram first falls below 5 % of the mode's count make up
    ``density`` percent of the image; the more there are, the more of the image is cells. The paper's
    linear rule maps density 3 % to the 95th percentile and 42 % to the 40th, clipped to [25, 98];
    ``greedy`` is then subtracted (a larger ``greedy`` keeps more foreground) and the result clipped to
    [0, 100].

    The constants (1000 bins, 3 x mode, 3 % -> 95th and 42 % -> 40th percentile, clip to [25, 98]) are
    the paper's as we recall them; the paper and NIST's code could not be consulted here, and the 5 %
    upper edge of the band is our reading. With ``greedy=0`` the rule needed no tuning on real frames.

    Parameters
    ----------
    gradient : (Y, X) array
        Gradient magnitude.
    greedy : float
        Percentile points subtracted from the empirical percentile.

    Returns
    -------
    float
        A percentile in [0, 100].
    """
    counts, _ = np.histogram(gradient, bins=1000)
    mode = int(np.argmax(counts))
    below = np.flatnonzero(counts[mode:] < 0.05 * counts[mode])
    upper = mode + int(below[0]) if below.size else counts.size
    density = 100.0 * counts[3 * mode : upper].sum() / counts.sum()
    slope = (95.0 - 40.0) / (3.0 - 42.0)
    percentile = float(np.clip(round(95.0 + slope * (density - 3.0)), 25, 98))
    return float(np.clip(percentile - greedy, 0, 100))


def egt(
    image: np.ndarray,
    *,
    min_cell_size: int = 1000,
    min_hole_size: float = 1000,
    greedy: float = 0.0,
) -> np.ndarray:
    """EGT, Empirical Gradient Threshold (Chalfoun et al., 2015, NIST).

    Steps, as implemented:

    1. scale ``image`` to [0, 1] by its 1st and 99.8th percentiles (:func:`normalize`; EGT itself is
       unaffected by linear scaling, only the 0.2 % brightest pixels are clipped);
    2. Sobel gradient magnitude (edges replicated);
    3. threshold at the percentile from :func:`egt_percentile` (histogram mode and density rule);
    4. fill holes smaller than ``min_hole_size`` pixels (``np.inf``: all holes);
    5. erode by one pixel (3 x 3 cross), taking back the rim the gradient adds outside the cell edge;
    6. remove 8-connected objects smaller than ``min_cell_size`` pixels.

    Parameters
    ----------
    image : (Y, X) array
        One grey frame, any intensity range.
    min_cell_size : int
        Smallest object kept, pixels.
    min_hole_size : float
        Holes of this many pixels or more stay background; smaller ones are filled.
    greedy : float
        Percentile points subtracted from the empirical percentile: positive keeps more foreground.
        0, the paper's rule unchanged, was also the best on the Usiigaci frames.

    Returns
    -------
    (Y, X) bool array, True on cells.

    Notes
    -----
    The sizes are set for 10x frames (chosen on the 40 Usiigaci frames, T98G): pixel Jaccard
    0.591 +- 0.110 (the papers report 0.42 on their MDA-MB-231 data).
    """
    norm = normalize(_check_image(image))
    gradient = np.hypot(ndimage.sobel(norm, axis=0, mode="nearest"),
                        ndimage.sobel(norm, axis=1, mode="nearest"))
    mask = gradient > np.percentile(gradient, egt_percentile(gradient, greedy=greedy))
    mask = _fill_holes(mask, min_hole_size - 1)
    mask = ndimage.binary_erosion(mask, ndimage.generate_binary_structure(2, 1))
    return _remove_small(mask, min_cell_size)
