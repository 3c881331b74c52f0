"""Per-label sums over a whole label image in a few compiled passes (numba), for :mod:`.morphology` (the
cell table) and :mod:`.instances` (boxes, Euler numbers, relabelling).

:func:`region_sums` visits every pixel four times, whatever the number of cells, instead of cutting out
each cell's box in Python: pass 1 the sizes, coordinate and intensity sums, pass 2 the boxes; pass 3 the
configurations of every 2x2 window (Crofton perimeter, Euler number); pass 4 the central second moments
(exact integer arithmetic) and each cell's leftmost and rightmost pixel per row; then one convex hull per
cell from those row ends. Every value equals the per-cell computation (scikit-image's
``perimeter_crofton``, the hull of the pixel centres by Pick's theorem) up to float rounding;
``tests/test_morphology.py`` checks it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["CROFTON4", "areas_and_boxes", "boxes", "boxes_and_euler", "label_areas", "region_sums", "relabel", "seed_components"]

_S2 = np.sqrt(2)
CROFTON4 = np.array([0, np.pi / 4 * (1 + 1 / _S2), np.pi / (4 * _S2), np.pi / (2 * _S2), 0, np.pi / 4 * (1 + 1 / _S2),
                     0, np.pi / (4 * _S2), np.pi / 4, np.pi / 2, np.pi / (4 * _S2), np.pi / (4 * _S2), np.pi / 4,
                     np.pi / 2, 0, 0])  # fmt: skip
"""Weights of the 16 configurations of a 2x2 window in scikit-image's 4-direction Crofton perimeter; the
code of a window is 8 (top left) + 2 (top right) + 4 (bottom left) + 1 (bottom right) for the pixels that
belong to the cell."""


def label_areas(labels: np.ndarray) -> np.ndarray:
    """(max + 1,) pixel count of every id 0..max of a (Y, X) non-negative integer array."""
    return _counts(np.ascontiguousarray(labels), int(labels.max(initial=0)))


def areas_and_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`label_areas` and :func:`boxes` of every id 1..max in one pass: ((max + 1,) pixel counts,
    (max, 4) half-open boxes y0, x0, y1, x1, y1 = 0 for an absent id)."""
    return _counts_boxes(np.ascontiguousarray(labels), int(labels.max(initial=0)))


def relabel(labels: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """``lookup[labels]`` (a new array of ``lookup``'s dtype), without numpy's intermediate index array."""
    return _relabel(np.ascontiguousarray(labels), lookup)


def seed_components(seeds: np.ndarray, components: np.ndarray, n_seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_seeds + 1,) pixel count of every seed id, and the id in ``components`` of each seed (of its last
    pixel; a seed lies in one component when ``seeds`` > 0 only inside ``components`` > 0 pieces that
    contain it)."""
    return _seed_components(np.ascontiguousarray(seeds), np.ascontiguousarray(components), n_seeds)


def boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """(n, 4) half-open boxes y0, x0, y1, x1 of the ids 1..n of ``labels`` (y1 = 0 for an absent id)."""
    return _boxes(np.ascontiguousarray(labels), n)


def boxes_and_euler(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) half-open boxes y0, x0, y1, x1 of the ids 1..n (y1 = 0 for an absent id) and (n,) their Euler
    numbers with 8-connected cells and 4-connected background (pieces - holes), from the bit quads."""
    labels = np.ascontiguousarray(labels)
    return _boxes(labels, n), _euler(_quads(labels, n))


def region_sums(dense: np.ndarray, n: int, image: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Sums over each of the labels 1..n of ``dense`` (0 is background), as (n,) arrays.

    Keys: ``area``, ``bbox`` (n, 4) y0, x0, y1, x1 (half-open), ``sum_y``, ``sum_x`` (of pixel rows and
    columns), ``sum_intensity`` (NaN without ``image``), ``crofton`` (n, 16) window configuration counts,
    ``var_y``, ``var_x``, ``cov`` (central second moments of the pixel centres) and ``hull_count``
    (pixel centres inside or on the convex hull of the cell's pixel centres).
    """
    dense = np.ascontiguousarray(dense, dtype=np.int64 if dense.dtype == np.uint64 else None)
    has_image = image is not None
    pixels = np.ascontiguousarray(image) if has_image else np.zeros((1, 1), np.float32)
    area, sum_y, sum_x, sum_i = _pass_sums(dense, n, pixels, has_image)
    bbox = _boxes(dense, n)
    crofton = _quads(dense, n)
    heights = np.maximum(bbox[:, 2] - bbox[:, 0], 0)
    starts = np.concatenate(([0], np.cumsum(heights)))
    var_y, var_x, cov, left, right = _pass_moments(dense, n, bbox, starts, sum_y, sum_x, area)
    hull = _hull_counts(bbox, starts, left, right)
    if not has_image:
        sum_i[:] = np.nan
    return {"area": area, "bbox": bbox, "sum_y": sum_y, "sum_x": sum_x, "sum_intensity": sum_i,
            "crofton": crofton, "var_y": var_y, "var_x": var_x, "cov": cov, "hull_count": hull}  # fmt: skip


@njit(cache=True, nogil=True)
def _counts(labels, top):  # pragma: no cover - compiled
    out = np.zeros(top + 1, np.int64)
    for v in labels.ravel():
        out[v] += 1
    return out


@njit(cache=True, nogil=True)
def _counts_boxes(labels, top):  # pragma: no cover - compiled
    h, w = labels.shape
    out = np.zeros(top + 1, np.int64)
    box = _empty_boxes(top, h, w)
    for y in range(h):
        for x in range(w):
            v = labels[y, x]
            out[v] += 1
            if v != 0:
                _grow_box(box, v - 1, y, x)
    return out, box


@njit(cache=True, nogil=True)
def _empty_boxes(n, h, w):  # pragma: no cover - compiled
    """(n, 4) boxes that any pixel shrinks: y0 = h, x0 = w, y1 = x1 = 0."""
    box = np.zeros((n, 4), np.int64)
    box[:, 0] = h
    box[:, 1] = w
    return box


@njit(cache=True, nogil=True, inline="always")
def _grow_box(box, i, y, x):  # pragma: no cover - compiled
    box[i, 0] = min(box[i, 0], y)
    box[i, 1] = min(box[i, 1], x)
    box[i, 2] = max(box[i, 2], y + 1)
    box[i, 3] = max(box[i, 3], x + 1)


@njit(cache=True, nogil=True)
def _relabel(labels, lookup):  # pragma: no cover - compiled
    out = np.empty(labels.shape, lookup.dtype)
    flat, src = out.ravel(), labels.ravel()
    for k in range(src.size):
        flat[k] = lookup[src[k]]
    return out


@njit(cache=True, nogil=True)
def _seed_components(seeds, components, n_seeds):  # pragma: no cover - compiled
    size = np.zeros(n_seeds + 1, np.int64)
    component_of = np.zeros(n_seeds + 1, np.int64)
    s, c = seeds.ravel(), components.ravel()
    for k in range(s.size):
        if s[k] != 0:
            size[s[k]] += 1
            component_of[s[k]] = c[k]
    return size, component_of


@njit(cache=True, nogil=True)
def _boxes(labels, n):  # pragma: no cover - compiled
    h, w = labels.shape
    box = _empty_boxes(n, h, w)
    for y in range(h):
        for x in range(w):
            v = labels[y, x]
            if v != 0:
                _grow_box(box, v - 1, y, x)
    return box


@njit(cache=True, nogil=True)
def _quads(labels, n):  # pragma: no cover - compiled
    """(n, 16) counts of each label's configurations in the 2x2 windows (r, c), (r, c + 1), (r + 1, c),
    (r + 1, c + 1) for r in -1..h-1, c in -1..w-1, outside the frame being background; codes as in
    :data:`CROFTON4`."""
    h, w = labels.shape
    quads = np.zeros((n, 16), np.int64)
    for r in range(-1, h):
        for c in range(-1, w):
            a = labels[r, c] if r >= 0 and c >= 0 else 0
            b = labels[r, c + 1] if r >= 0 and c + 1 < w else 0
            d = labels[r + 1, c] if r + 1 < h and c >= 0 else 0
            e = labels[r + 1, c + 1] if r + 1 < h and c + 1 < w else 0
            if a == b and a == d and a == e:
                continue  # inside one cell (code 15, weight 0) or background
            if a != 0:
                quads[a - 1, 8 + 2 * (b == a) + 4 * (d == a) + (e == a)] += 1
            if b != 0 and b != a:
                quads[b - 1, 2 + 4 * (d == b) + (e == b)] += 1
            if d != 0 and d != a and d != b:
                quads[d - 1, 4 + (e == d)] += 1
            if e != 0 and e != a and e != b and e != d:
                quads[e - 1, 1] += 1
    return quads


@njit(cache=True, nogil=True)
def _euler(quads):  # pragma: no cover - compiled
    """Euler numbers from :func:`_quads` (Gray's bit quads, 8-connected cells): (Q1 - Q3 - 2 QD) / 4."""
    n = quads.shape[0]
    euler = np.zeros(n, np.int64)
    for i in range(n):
        q1 = quads[i, 1] + quads[i, 2] + quads[i, 4] + quads[i, 8]
        q3 = quads[i, 7] + quads[i, 11] + quads[i, 13] + quads[i, 14]
        euler[i] = (q1 - q3 - 2 * (quads[i, 6] + quads[i, 9])) // 4
    return euler


@njit(cache=True, nogil=True)
def _pass_sums(dense, n, image, has_image):  # pragma: no cover - compiled
    h, w = dense.shape
    area = np.zeros(n, np.int64)
    sum_y = np.zeros(n, np.int64)
    sum_x = np.zeros(n, np.int64)
    sum_i = np.zeros(n, np.float64)
    for y in range(h):
        for x in range(w):
            v = dense[y, x]
            if v == 0:
                continue
            i = v - 1
            area[i] += 1
            sum_y[i] += y
            sum_x[i] += x
            if has_image:
                sum_i[i] += image[y, x]
    return area, sum_y, sum_x, sum_i


@njit(cache=True, nogil=True)
def _pass_moments(dense, n, bbox, starts, sum_y, sum_x, area):  # pragma: no cover - compiled
    h, w = dense.shape
    # second moments about each box's corner, exact in int64 for any cell whose n * max(h, w) < 3e9
    syy = np.zeros(n, np.int64)
    sxx = np.zeros(n, np.int64)
    sxy = np.zeros(n, np.int64)
    left = np.full(starts[n], w, np.int64)
    right = np.full(starts[n], -1, np.int64)
    for y in range(h):
        for x in range(w):
            v = dense[y, x]
            if v == 0:
                continue
            i = v - 1
            dy = y - bbox[i, 0]
            dx = x - bbox[i, 1]
            syy[i] += dy * dy
            sxx[i] += dx * dx
            sxy[i] += dy * dx
            row = starts[i] + dy
            if x < left[row]:
                left[row] = x
            if x > right[row]:
                right[row] = x
    var_y = np.zeros(n)
    var_x = np.zeros(n)
    cov = np.zeros(n)
    for i in range(n):
        m = area[i]
        if m == 0:
            continue
        sy = sum_y[i] - m * bbox[i, 0]   # sums about the corner
        sx = sum_x[i] - m * bbox[i, 1]
        span = max(bbox[i, 2] - bbox[i, 0], bbox[i, 3] - bbox[i, 1])
        if m * span < 3_000_000_000:   # n^2 var = n S2 - S1^2 in integers: no rounding before the division
            var_y[i] = (m * syy[i] - sy * sy) / (m * m)
            var_x[i] = (m * sxx[i] - sx * sx) / (m * m)
            cov[i] = (m * sxy[i] - sy * sx) / (m * m)
        else:
            fm = float(m)
            var_y[i] = syy[i] / fm - (sy / fm) ** 2
            var_x[i] = sxx[i] / fm - (sx / fm) ** 2
            cov[i] = sxy[i] / fm - (sy / fm) * (sx / fm)
    return var_y, var_x, cov, left, right


@njit(cache=True, nogil=True)
def _cross(oy, ox, ay, ax, by, bx):  # pragma: no cover - compiled
    return (ay - oy) * (bx - ox) - (ax - ox) * (by - oy)


@njit(cache=True, nogil=True)
def _hull_counts(bbox, starts, left, right):  # pragma: no cover - compiled
    n = bbox.shape[0]
    out = np.zeros(n, np.int64)
    for i in range(n):
        k = starts[i + 1] - starts[i]
        # the row ends in (row, column) order: lexicographically sorted points for the monotone chain
        py = np.empty(2 * k, np.int64)
        px = np.empty(2 * k, np.int64)
        m = 0
        for j in range(k):
            row = starts[i] + j
            if right[row] < 0:
                continue  # a row without pixels of this cell (a cell in pieces)
            py[m] = bbox[i, 0] + j
            px[m] = left[row]
            m += 1
            if right[row] != left[row]:
                py[m] = bbox[i, 0] + j
                px[m] = right[row]
                m += 1
        if m == 0:
            continue
        hy = np.empty(2 * m + 1, np.int64)
        hx = np.empty(2 * m + 1, np.int64)
        t = 0
        for j in range(m):  # lower chain
            while t >= 2 and _cross(hy[t - 2], hx[t - 2], hy[t - 1], hx[t - 1], py[j], px[j]) <= 0:
                t -= 1
            hy[t] = py[j]
            hx[t] = px[j]
            t += 1
        lower = t + 1
        for j in range(m - 2, -1, -1):  # upper chain
            while t >= lower and _cross(hy[t - 2], hx[t - 2], hy[t - 1], hx[t - 1], py[j], px[j]) <= 0:
                t -= 1
            hy[t] = py[j]
            hx[t] = px[j]
            t += 1
        t = max(t - 1, 1)  # the last point repeats the first
        twice_area = 0
        boundary = 0
        for j in range(t):
            ay, ax = hy[j], hx[j]
            by, bx = hy[(j + 1) % t], hx[(j + 1) % t]
            twice_area += ay * bx - ax * by
            boundary += _gcd(abs(by - ay), abs(bx - ax))
        if t == 1:
            out[i] = 1
        elif t == 2:
            out[i] = boundary // 2 + 1   # a segment: its lattice points (each edge counted twice)
        else:
            out[i] = (abs(twice_area) + boundary) // 2 + 1   # Pick: interior + boundary = A + B/2 + 1
    return out


@njit(cache=True, nogil=True)
def _gcd(a, b):  # pragma: no cover - compiled
    while b:
        a, b = b, a % b
    return a
