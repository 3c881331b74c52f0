"""Per-label sums over a whole label image in a few compiled passes (numba), for :mod:`.morphology` (the
cell table) and :mod:`.instances` (connected components, boxes, Euler numbers, relabelling).

:func:`region_sums` visits every pixel three times, whatever the number of cells, instead of cutting out
each cell's box in Python: pass 1 the sizes, coordinate and intensity sums and the boxes; pass 2 the
configurations of every 2x2 window (Crofton perimeter, Euler number); pass 3 the central second moments
(exact integer arithmetic) and each cell's leftmost and rightmost pixel per row; then one convex hull per
cell from those row ends. Passes that can go a run of one id in a row at a time do (closed-form sums over
the run): a label image is mostly runs, and one update per run avoids a chain of adds to one counter.
Every value equals the per-cell computation (scikit-image's ``perimeter_crofton``, the hull of the pixel
centres by Pick's theorem) up to float rounding; ``tests/test_morphology.py`` checks it. :func:`label8` is
``scipy.ndimage.label`` with 8-connectivity as a union-find over runs (about half its time).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["CROFTON4", "areas_and_boxes", "areas_boxes_euler", "boxes", "boxes_and_euler", "label8", "label8_regions", "label_areas", "region_sums", "relabel"]

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


def label8(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The 8-connected components of a (Y, X) bool mask: ``scipy.ndimage.label(mask, np.ones((3, 3)))``, the
    same ids (in raster order of each component's first pixel) as int32, found run by run (a union-find
    over the rows' runs of mask pixels rather than over pixels)."""
    labels, n = label8_regions(mask)[:2]
    return labels, n


def label8_regions(mask: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`label8` and, from the same runs, each id's pixel count ((n + 1,), 0 unused), box ((n, 4),
    as :func:`boxes`) and first pixel in raster order ((n,) flat indices)."""
    mask = np.ascontiguousarray(mask, dtype=np.bool_)
    if mask.ndim != 2:
        raise ValueError(f"label8 labels (Y, X) masks, got shape {mask.shape}")
    labels, n, areas, box, first = _label8(mask)
    return labels, int(n), areas, box, first


def relabel(labels: np.ndarray, lookup: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``lookup[labels]`` (a new array of ``lookup``'s dtype, or written into ``out``, which may be
    ``labels`` itself or a view of it), without numpy's intermediate index array."""
    labels = np.ascontiguousarray(labels)
    if out is None:
        out = np.empty(labels.shape, lookup.dtype)
    elif out.shape != labels.shape or out.dtype != lookup.dtype or not out.flags.c_contiguous:
        raise ValueError("relabel: out must be C-contiguous, of the labels' shape and the lookup's dtype")
    _relabel(labels, lookup, out)
    return out


def boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """(n, 4) half-open boxes y0, x0, y1, x1 of the ids 1..n of ``labels`` (y1 = 0 for an absent id)."""
    return _boxes(np.ascontiguousarray(labels), n)


def boxes_and_euler(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) half-open boxes y0, x0, y1, x1 of the ids 1..n (y1 = 0 for an absent id) and (n,) their Euler
    numbers with 8-connected cells and 4-connected background (pieces - holes), from the bit quads."""
    labels = np.ascontiguousarray(labels)
    return _boxes(labels, n), _euler(_quads(labels, n))


def areas_boxes_euler(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`areas_and_boxes` (ids 0..n) and the Euler numbers of :func:`boxes_and_euler`: ((n + 1,) pixel
    counts, (n, 4) boxes, (n,) Euler numbers)."""
    labels = np.ascontiguousarray(labels)
    areas, box = _counts_boxes(labels, n)
    return areas, box, _euler(_quads(labels, n))


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
    area, sum_y, sum_x, sum_i, bbox = _pass_sums(dense, n, pixels, has_image)
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
    """Counted by runs of one id (label images are mostly runs): one add per run, not a chain of adds to
    the same counter, each waiting for the last."""
    out = np.zeros(top + 1, np.int64)
    flat = labels.ravel()
    if flat.size == 0:
        return out
    prev = flat[0]
    run = 0
    for v in flat:
        if v == prev:
            run += 1
        else:
            out[prev] += run
            prev = v
            run = 1
    out[prev] += run
    return out


@njit(cache=True, nogil=True)
def _counts_boxes(labels, top):  # pragma: no cover - compiled
    h, w = labels.shape
    out = np.zeros(top + 1, np.int64)
    box = _empty_boxes(top, h, w)
    for y in range(h):
        x = 0
        while x < w:   # a run of one id at a time
            v = labels[y, x]
            end = _run_end(labels, y, x)
            out[v] += end - x
            if v != 0:
                _grow_run(box, v - 1, y, x, end)
            x = end
    return out, box


@njit(cache=True, nogil=True)
def _empty_boxes(n, h, w):  # pragma: no cover - compiled
    """(n, 4) boxes that any pixel shrinks: y0 = h, x0 = w, y1 = x1 = 0."""
    box = np.zeros((n, 4), np.int64)
    box[:, 0] = h
    box[:, 1] = w
    return box


@njit(cache=True, nogil=True, inline="always")
def _run_end(labels, y, x):  # pragma: no cover - compiled
    """One past the last column of the run of ``labels[y, x]``'s id that starts at (y, x)."""
    w = labels.shape[1]
    v = labels[y, x]
    end = x + 1
    while end < w and labels[y, end] == v:
        end += 1
    return end


@njit(cache=True, nogil=True, inline="always")
def _grow_run(box, i, y, x0, x1):  # pragma: no cover - compiled
    box[i, 0] = min(box[i, 0], y)
    box[i, 1] = min(box[i, 1], x0)
    box[i, 2] = max(box[i, 2], y + 1)
    box[i, 3] = max(box[i, 3], x1)


@njit(cache=True, nogil=True)
def _label8(mask):  # pragma: no cover - compiled
    h, w = mask.shape
    runs = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and (x == 0 or not mask[y, x - 1]):
                runs += 1
    row = np.empty(runs, np.int64)      # each run's row, first and one-past-last column
    x0s = np.empty(runs, np.int64)
    x1s = np.empty(runs, np.int64)
    parent = np.arange(runs)
    k = 0
    previous = 0                         # the first run of the row above
    for y in range(h):
        first = k
        x = 0
        while x < w:
            if not mask[y, x]:
                x += 1
                continue
            end = _run_end(mask, y, x)
            row[k], x0s[k], x1s[k] = y, x, end
            k += 1
            x = end
        j = previous   # runs above that touch a run here, diagonals included: x0 - 1 <= x < x1 + 1
        for i in range(first, k):
            while j < first and x1s[j] < x0s[i]:
                j += 1
            m = j
            while m < first and x0s[m] <= x1s[i]:
                _union(parent, i, m)
                m += 1
            if m > j:
                j = m - 1   # the last run above touched may touch the next run here too
        previous = first
    ids = np.zeros(runs, np.int32)
    out = np.zeros((h, w), np.int32)
    areas = np.zeros(runs + 1, np.int64)
    box = _empty_boxes(runs, h, w)
    first = np.zeros(runs, np.int64)
    n = 0
    for i in range(runs):   # raster order of the runs is raster order of their first pixels
        r = _find(parent, i)
        if ids[r] == 0:
            n += 1
            ids[r] = n
            first[n - 1] = row[i] * w + x0s[i]
        v = ids[r]
        out[row[i], x0s[i]:x1s[i]] = v
        areas[v] += x1s[i] - x0s[i]
        _grow_run(box, v - 1, row[i], x0s[i], x1s[i])
    return out, n, areas[:n + 1].copy(), box[:n].copy(), first[:n].copy()


@njit(cache=True, nogil=True, inline="always")
def _find(parent, i):  # pragma: no cover - compiled
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:   # path compression
        parent[i], i = root, parent[i]
    return root


@njit(cache=True, nogil=True, inline="always")
def _union(parent, a, b):  # pragma: no cover - compiled
    ra, rb = _find(parent, a), _find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@njit(cache=True, nogil=True)
def _relabel(labels, lookup, out):  # pragma: no cover - compiled
    flat, src = out.ravel(), labels.ravel()
    for k in range(src.size):
        flat[k] = lookup[src[k]]
    return out


@njit(cache=True, nogil=True)
def _boxes(labels, n):  # pragma: no cover - compiled
    h, w = labels.shape
    box = _empty_boxes(n, h, w)
    for y in range(h):
        x = 0
        while x < w:
            v = labels[y, x]
            end = _run_end(labels, y, x)
            if v != 0:
                _grow_run(box, v - 1, y, x, end)
            x = end
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
    """Areas, sums of rows and columns, intensity sums and boxes, a run of one id in a row at a time."""
    h, w = dense.shape
    area = np.zeros(n, np.int64)
    sum_y = np.zeros(n, np.int64)
    sum_x = np.zeros(n, np.int64)
    sum_i = np.zeros(n, np.float64)
    box = _empty_boxes(n, h, w)
    for y in range(h):
        x = 0
        while x < w:
            v = dense[y, x]
            end = _run_end(dense, y, x)
            if v != 0:
                i = v - 1
                m = end - x
                area[i] += m
                sum_y[i] += y * m
                sum_x[i] += (x + end - 1) * m // 2
                if has_image:
                    total = 0.0
                    for k in range(x, end):
                        total += image[y, k]
                    sum_i[i] += total
                _grow_run(box, i, y, x, end)
            x = end
    return area, sum_y, sum_x, sum_i, box


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
        x = 0
        while x < w:   # a run of one id, dx = a..b from the box's corner, at a time (closed-form sums)
            v = dense[y, x]
            end = _run_end(dense, y, x)
            if v != 0:
                i = v - 1
                m = end - x
                dy = y - bbox[i, 0]
                a = x - bbox[i, 1]
                b = a + m - 1
                sdx = (a + b) * m // 2
                syy[i] += dy * dy * m
                sxx[i] += (b * (b + 1) * (2 * b + 1) - (a - 1) * a * (2 * a - 1)) // 6
                sxy[i] += dy * sdx
                row = starts[i] + dy
                if x < left[row]:
                    left[row] = x
                if end - 1 > right[row]:
                    right[row] = end - 1
            x = end
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
