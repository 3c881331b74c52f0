"""Marker-controlled watershed (priority flood), compiled with numba.

:func:`watershed` gives the labels of ``skimage.segmentation.watershed(image, markers, mask=mask,
connectivity=2)``: the same flood (a pixel takes the label of the neighbour that reached it first; the
queue is ordered by ``max(value, value of the pixel it came from)``, markers by their own value, then by
arrival), the same
neighbour order and the same binary heap, so ties resolve the same way and the labels are equal pixel
for pixel (``tests/test_instances.py`` compares them). Only seed pixels that border unflooded ones are
queued (most seed pixels would queue nothing); on the 56 multi-seed components of a 2568x1912 phase-contrast
mosaic this took 0.085 s against scikit-image's 0.14 s. It releases the GIL.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["watershed"]


def watershed(image: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Flood ``image`` (Y, X) from the nonzero ``markers`` within ``mask``, 8-connected.

    ``image`` is taken as float32 (the probabilities cellseg floods are float32). Returns a new (Y, X)
    int32 array: every mask pixel connected to a marker carries a marker's label, the rest 0 (markers
    outside the mask are dropped, as in scikit-image).
    """
    image = np.ascontiguousarray(image, dtype=np.float32) + np.float32(0.0)   # -0.0 -> 0.0 (equal floats)
    markers = np.ascontiguousarray(markers, dtype=np.int32)
    members = np.ascontiguousarray(mask, dtype=np.int32)
    out = np.zeros(image.shape, np.int32)
    kept = np.ones(int(markers.max(initial=0)) + 1, np.bool_)
    kept[0] = False
    flood_member(image.view(np.int32), members, 1, markers, kept, out, (0, 0) + image.shape)
    return out


def flood_member(bits: np.ndarray, members: np.ndarray, member: int, seeds: np.ndarray, kept: np.ndarray,
                 out: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Flood, in place in ``out``, the pixels with ``members == member`` (all inside ``box`` = y0, x0, y1, x1)
    from those whose ``seeds`` id is ``kept``: the core of :func:`watershed` on whole-frame arrays.

    ``bits`` is the int32 view of the float32 values to flood (no -0.0, no NaN); ``out`` (int32) must be 0
    on the member's pixels. The result equals :func:`watershed` on the box cut out of these arrays.
    """
    _flood(bits, members, member, seeds, kept, out, *(int(v) for v in box))


@njit(cache=True, nogil=True)
def _key(bits, p):  # pragma: no cover - compiled
    """int64 key in the order of the float32 whose bits are ``bits[p]``, shifted left 32 bits to make room for
    the arrival count: one integer comparison orders the queue by (value, arrival)."""
    b = np.int64(bits[p])
    if b < 0:
        b = b ^ 0x7FFFFFFF
    return b << 32


@njit(cache=True, nogil=True)
def _flood(bits, members, member, seeds, kept, out, y0, x0, y1, x1):  # pragma: no cover - compiled
    h, w = out.shape
    dys = np.array([-1, 0, 0, 1, -1, -1, 1, 1])   # scikit-image's order: edge neighbours, then corners
    dxs = np.array([0, -1, 1, 0, -1, 1, -1, 1])
    for y in range(y0, y1):
        for x in range(x0, x1):
            if members[y, x] == member and kept[seeds[y, x]]:
                out[y, x] = seeds[y, x]
    cap = 1024
    heap = np.empty(cap, np.int64)    # key << 32 | arrival, a binary heap ...
    where = np.empty(cap, np.int64)   # ... and the pixel (y * w + x) of each entry
    items = 0
    clock = 1
    for y in range(y0, y1):   # markers in raster order; one inside its own seed would queue nothing
        for x in range(x0, x1):
            if members[y, x] == member and out[y, x] != 0 and _free_neighbour(members, member, out, y, x, dys, dxs):
                if items == cap:
                    heap, where, cap = _grow(heap, where, cap)
                items = _push(heap, where, items, _key(bits, (y, x)), y * w + x)   # markers arrive at 0
    while items > 0:
        top, here = heap[0], where[0]
        items = _pop(heap, where, items)
        level = top >> 32 << 32
        y, x = here // w, here % w
        label = out[y, x]
        for k in range(8):
            qy, qx = y + dys[k], x + dxs[k]
            if qy < 0 or qy >= h or qx < 0 or qx >= w or members[qy, qx] != member or out[qy, qx] != 0:
                continue
            clock += 1
            out[qy, qx] = label   # labelled when queued: nothing reaches it cheaper later
            if items == cap:
                heap, where, cap = _grow(heap, where, cap)
            items = _push(heap, where, items, max(_key(bits, (qy, qx)), level) | clock, qy * w + qx)


@njit(cache=True, nogil=True)
def _free_neighbour(members, member, out, y, x, dys, dxs):  # pragma: no cover - compiled
    h, w = out.shape
    for k in range(8):
        qy, qx = y + dys[k], x + dxs[k]
        if 0 <= qy < h and 0 <= qx < w and members[qy, qx] == member and out[qy, qx] == 0:
            return True
    return False


@njit(cache=True, nogil=True)
def _grow(heap, where, cap):  # pragma: no cover - compiled
    new_heap = np.empty(2 * cap, np.int64)
    new_where = np.empty(2 * cap, np.int64)
    new_heap[:cap] = heap
    new_where[:cap] = where
    return new_heap, new_where, 2 * cap


@njit(cache=True, nogil=True)
def _push(heap, where, items, key, p):  # pragma: no cover - compiled
    child = items
    while child > 0:   # sift up: parents <= children
        parent = (child + 1) // 2 - 1
        if key < heap[parent]:
            heap[child], where[child] = heap[parent], where[parent]
            child = parent
        else:
            break
    heap[child], where[child] = key, p
    return items + 1


@njit(cache=True, nogil=True)
def _pop(heap, where, items):  # pragma: no cover - compiled
    """Remove the smallest entry: the last entry moves to the root and sinks (scikit-image's order)."""
    items -= 1
    if items == 0:
        return items
    key, p = heap[items], where[items]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= items:
            break
        smallest, small = i, key
        if heap[left] < small:
            smallest, small = left, heap[left]
        if left + 1 < items and heap[left + 1] < small:
            smallest = left + 1
        if smallest == i:
            break
        heap[i], where[i] = heap[smallest], where[smallest]
        i = smallest
    heap[i], where[i] = key, p
    return items
