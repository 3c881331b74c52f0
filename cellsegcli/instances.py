"""Probability maps -> instance labels, and the interior target that makes touching cells separable.

cellseg's own models predict two maps per frame: channel 0 is the cell (foreground) probability and
channel 1 the cell *interior* (each instance eroded so that touching cells are apart, see
:func:`interior_target`). :func:`label_instances` thresholds the foreground into a mask and grows the
connected interior blobs into it with a marker-controlled watershed; a binary-only model gets a
distance-transform watershed instead.

Defaults were measured on the 40 Usiigaci phase-contrast frames (2,485 cells) and the StarDist nuclei
sample by feeding "perfect" probabilities (foreground = ground truth, interior = :func:`interior_target`,
both blurred by a Gaussian of sigma 0-2 px) back through :func:`label_instances`: object F1 at IoU 0.5
is 0.999 / 0.985 / 0.982 (Usiigaci, sigma 0 / 1 / 2) and 1.0 / 1.0 / 0.976 (StarDist). ``width=2``
survives the sigma-2 blur (``width=1`` falls to F1 0.86 there) and matches or beats widths 3-6 (by
up to 0.006); ``min_seed_size=16`` drops the seed specks blur leaves behind (+0.004 to 0.006); keeping
only the largest piece of each eroded interior (one seed per cell) adds 0.005 on top of that (0.045
without a minimum seed size). The distance-transform fallback gets F1 0.950 (Usiigaci) and 0.968
(StarDist) from the binary union alone, against 0.82 / 0.87 for its connected components.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as _label
from skimage.morphology import h_maxima
from skimage.segmentation import find_boundaries, relabel_sequential, watershed

from . import declump, flood, regions

__all__ = ["clean_instances", "fill_holes", "interior_target", "label_instances", "label_instances_reference"]

_EIGHT = np.ones((3, 3), bool)


def label_instances(
    foreground: np.ndarray,
    interior: np.ndarray | None = None,
    *,
    threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size: int = 0,
    min_seed_size: int = 16,
    cell_radius: float | None = None,
    holes: bool = False,
    split_clumps: bool = False,
) -> np.ndarray:
    """Split a foreground probability map into cell instances.

    Parameters
    ----------
    foreground : (Y, X) float array
        Cell probability in [0, 1]; pixels with ``foreground >= threshold`` form the cell mask.
    interior : (Y, X) float array, optional
        Cell-interior probability in [0, 1] (channel 1 of cellseg's models). The 8-connected blobs of
        ``interior >= seed_threshold`` inside the mask seed a watershed of ``-interior`` restricted to
        the mask; mask components that hold no seed become one instance each. Without it, the seeds
        are the h-maxima of the mask's smoothed distance transform (see ``cell_radius``).
    threshold : float
        Foreground probability at or above which a pixel belongs to a cell.
    seed_threshold : float
        Interior probability at or above which a pixel is a seed pixel.
    min_size : int
        Instances with fewer pixels than this (after separation) join the instance of at least ``min_size``
        they border most (:func:`absorb_small`: a fragment split off a cell goes back to it); those that
        border none are removed.
    min_seed_size : int
        Seeds with fewer pixels than this are ignored (specks of the interior map would each split
        off a piece of their cell).
    cell_radius : float, optional
        Distance-transform fallback only: the typical radius of a cell in pixels. It sets both the
        smoothing (sigma = 0.15 r) and the depth (h = 0.15 r) a maximum of the distance transform needs
        to seed a cell. Default: the median, over the mask's connected components, of the largest
        inscribed radius.
    holes : bool
        Keep holes in instances. By default whatever an instance encloses (background where the
        foreground map dips, at nucleoli say, or small instances seeded there) becomes part of it
        (:func:`fill_holes`); models trained on annotations with holes set ``holes`` in their config.
    split_clumps : bool
        Inside clumps (mask components of at least twice the frame's typical object), split seeds that part
        at higher interior levels (:mod:`cellsegcli.declump`): touching nuclei whose seeds run together at
        a low ``seed_threshold`` come apart without breaking textured nuclei elsewhere.

    Returns
    -------
    (Y, X) uint32 array
        Instance labels numbered 1..N, 0 is background.

    Notes
    -----
    The labels are those of :func:`label_instances_reference` (the watershed over the whole frame),
    computed one connected component of the mask at a time: a component with no seed is one instance, one
    with a single seed is that seed's instance, and only components with several seeds are flooded
    (:mod:`cellsegcli.flood`, scikit-image's order); holes are looked for only where an instance's Euler
    number shows one. With the compiled passes this is about 8x faster on a 2568x1912 phase-contrast frame
    (``benchmarks/postprocess.py``); ids come in the same order. Flood ties may resolve differently within
    one component than over the whole frame (none did on the frames measured).
    """
    foreground = np.asarray(foreground)
    if foreground.ndim != 2:
        raise ValueError(f"foreground must be a (Y, X) array, got shape {foreground.shape}")
    if interior is None:
        return label_instances_reference(foreground, None, threshold=threshold, min_size=min_size,
                                         cell_radius=cell_radius, holes=holes)
    interior = np.ascontiguousarray(interior, dtype=np.float32)
    if interior.shape != foreground.shape:
        raise ValueError(f"interior shape {interior.shape} differs from foreground {foreground.shape}")
    mask = foreground >= threshold
    labels, n = _seeded_growth(mask, interior, seed_threshold, min_seed_size,   # a new array: ours to change
                               min_size if split_clumps else None)
    if holes and min_size <= 1:
        return _sequential(labels, min_size, in_place=True)
    if holes:
        areas, boxes = regions.areas_and_boxes(labels)
    else:
        areas, boxes, euler = regions.areas_boxes_euler(labels, n)
        _fill_enclosed(labels, boxes, np.flatnonzero((boxes[:, 2] > 0) & (euler < 1)) + 1, areas)
    labels, areas = _absorb(labels, min_size, areas, boxes, in_place=True)
    return _sequential(labels, min_size, areas, in_place=True)


# the 8 neighbours of a pixel, as (dy, dx)
_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)


def absorb_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """``labels`` where each instance of fewer than ``min_size`` pixels has joined the instance of at least
    ``min_size`` pixels it shares the most 8-adjacent pixel pairs with (ties: the lower id); one that borders
    no such instance keeps its id (for removal). One pass over the original labels, so the order of the
    small instances does not matter; only their boxes are visited. ``device_labels`` does the same in torch.
    """
    if min_size <= 1:
        return labels
    return _absorb(labels, min_size, *regions.areas_and_boxes(labels))[0]


def _absorb(labels: np.ndarray, min_size: int, areas: np.ndarray, boxes: np.ndarray, *,
            in_place: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`absorb_small` given the labels' areas and boxes (``regions.areas_and_boxes``); returns the new
    labels (``labels`` itself, changed, with ``in_place``) and their areas."""
    small = (areas > 0) & (areas < min_size)
    small[0] = False
    ids = np.flatnonzero(small)
    if not len(ids):
        return labels, areas
    big = areas >= min_size
    big[0] = False
    h, w = labels.shape
    areas = areas.copy()
    moves = []   # applied after every small instance has looked at the original labels
    for i in ids:
        y0, x0, y1, x1 = (int(v) for v in boxes[i - 1])
        ya, xa, yb, xb = max(y0 - 1, 0), max(x0 - 1, 0), min(y1 + 1, h), min(x1 + 1, w)
        window = labels[ya:yb, xa:xb]
        own = window == i
        found = []
        for dy, dx in _OFFSETS:   # the neighbour q = p + (dy, dx) of each pixel p of the instance
            hh, ww = own.shape
            p = own[max(-dy, 0):hh - max(dy, 0), max(-dx, 0):ww - max(dx, 0)]
            q = window[max(dy, 0):hh - max(-dy, 0), max(dx, 0):ww - max(-dx, 0)]
            found.append(q[p])
        near = np.concatenate(found)
        near = near[big[near]]
        if len(near):
            target = np.bincount(near).argmax()
            moves.append((ya, yb, xa, xb, own, target))
            areas[target] += areas[i]
            areas[i] = 0
    out = labels if in_place else labels.copy()
    for ya, yb, xa, xb, own, target in moves:
        out[ya:yb, xa:xb][own] = target
    return out, areas


def _seeded_growth(mask: np.ndarray, interior: np.ndarray, seed_threshold: float,
                   min_seed_size: int, split_min_size: int | None = None) -> tuple[np.ndarray, int]:
    """The reference's watershed and orphan instances, one mask component at a time: a lookup gives the
    components with no seed (a new id each, after all seeds, in component order) or one seed (its id);
    only components with several seeds are flooded, inside their boxes. With ``split_min_size`` (the
    smallest cell), seeds in clumps are split first (:func:`_split_clumps`)."""
    seeds, n_seeds, size, seed_boxes, first = regions.label8_regions((interior >= seed_threshold) & mask)
    components, n_components, component_areas, boxes, _ = regions.label8_regions(mask)
    if split_min_size is not None:
        size, first = _split_clumps(seeds, size, seed_boxes, first, interior, components, component_areas,
                                    seed_threshold, min_seed_size, split_min_size)
    component_of = np.concatenate(([0], components.reshape(-1)[first]))   # a seed lies in one component
    kept = size >= max(min_seed_size, 1)   # seeds big enough
    kept[0] = False
    ids = np.flatnonzero(kept)
    per_component = np.bincount(component_of[ids], minlength=n_components + 1)
    lookup = np.zeros(n_components + 1, np.int32)
    single = per_component[component_of[ids]] == 1
    lookup[component_of[ids[single]]] = ids[single]
    orphans = np.flatnonzero(per_component[1:] == 0) + 1
    lookup[orphans] = int(ids.max(initial=0)) + 1 + np.arange(len(orphans))
    out = regions.relabel(components, lookup)
    several = np.flatnonzero(per_component > 1)
    if len(several):
        for c in several:   # the flood's values: -interior
            flood.flood_member(interior, components, c, seeds, kept, out, boxes[c - 1], negate=True)
    return out, int(ids.max(initial=0)) + len(orphans)


def _split_clumps(seeds: np.ndarray, size: np.ndarray, seed_boxes: np.ndarray, first: np.ndarray,
                  interior: np.ndarray, components: np.ndarray, component_areas: np.ndarray,
                  seed_threshold: float, min_seed_size: int, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`declump.split_seeds` on ``seeds`` (in place); returns the
    seeds' pixel counts and first pixels with the pieces appended and the split seeds' counts set to 0."""
    split, piece_sizes, piece_first = declump.split_seeds(
        seeds, size, seed_boxes, interior, components, component_areas, seed_threshold=seed_threshold,
        min_seed_size=min_seed_size, min_size=min_size)
    if not split:
        return size, first
    size = np.concatenate((size, piece_sizes))
    size[split] = 0
    return size, np.concatenate((first, piece_first))


def _box(row: np.ndarray) -> tuple[slice, slice]:
    return slice(int(row[0]), int(row[2])), slice(int(row[1]), int(row[3]))


def _sequential(labels: np.ndarray, min_size: int = 0, areas: np.ndarray | None = None, *,
                in_place: bool = False) -> np.ndarray:
    """``labels`` without the ids of fewer than ``min_size`` pixels, renumbered 1..N in the order of their
    ids, as uint32 (``_drop_small`` + ``relabel_sequential`` in one pass); ``areas``: their pixel counts,
    when known. ``in_place``: an int32 ``labels`` is renumbered in its own memory, returned as uint32."""
    present = (regions.label_areas(labels) if areas is None else areas) >= max(min_size, 1)
    present[0] = False
    lookup = np.cumsum(present).astype(np.uint32)
    lookup[~present] = 0
    own = in_place and labels.dtype == np.int32 and labels.flags.c_contiguous
    return regions.relabel(labels, lookup, out=labels.view(np.uint32) if own else None)


def label_instances_reference(
    foreground: np.ndarray,
    interior: np.ndarray | None = None,
    *,
    threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size: int = 0,
    min_seed_size: int = 16,
    cell_radius: float | None = None,
    holes: bool = False,
    split_clumps: bool = False,
) -> np.ndarray:
    """:func:`label_instances` the straightforward way: one watershed over the whole frame, then the mask's
    seedless components as instances of their own. Same parameters and result; kept as the reference the
    fast version is tested and timed against (``benchmarks/postprocess.py``)."""
    foreground = np.asarray(foreground)
    if foreground.ndim != 2:
        raise ValueError(f"foreground must be a (Y, X) array, got shape {foreground.shape}")
    mask = foreground >= threshold
    if interior is not None:
        interior = np.asarray(interior, dtype=np.float32)
        if interior.shape != foreground.shape:
            raise ValueError(f"interior shape {interior.shape} differs from foreground {foreground.shape}")
        seeds = _label((interior >= seed_threshold) & mask, connectivity=2).astype(np.int32)
        if split_clumps:
            components = _label(mask, connectivity=2)
            n = int(seeds.max(initial=0))
            declump.split_seeds(seeds, np.bincount(seeds.ravel(), minlength=n + 1), regions.boxes(seeds, n),
                                interior, components, np.bincount(components.ravel()),
                                seed_threshold=seed_threshold, min_seed_size=min_seed_size, min_size=min_size)
        seeds = _drop_small(seeds, min_seed_size)
        labels = watershed(-interior, seeds, mask=mask, connectivity=2)
    else:
        labels = _distance_watershed(mask, cell_radius)
    orphans = _label(mask & (labels == 0), connectivity=2)
    labels = np.where(orphans > 0, orphans + labels.max(), labels)
    if not holes:
        labels = fill_holes(labels)
    labels = _drop_small(absorb_small(labels, min_size), min_size)
    return relabel_sequential(labels.astype(np.uint32, copy=False))[0]


def fill_holes(labels: np.ndarray, *, connected: bool = False) -> np.ndarray:
    """Each instance takes what it encloses: background holes and instances lying wholly inside it.

    Parameters
    ----------
    labels : (Y, X) integer array
        Instance labels, 0 is background.
    connected : bool
        Every instance is one 8-connected piece (as :func:`label_instances`' are before this step): then
        only the instances whose Euler number shows a hole are looked at, not every instance's box.

    Returns
    -------
    (Y, X) array of the same dtype
        A copy in which every pixel enclosed by one instance (not 4-connected to the outside without
        crossing it) carries that instance's id; an instance swallowed this way disappears.
    """
    out = np.array(labels, copy=True)
    n = int(out.max(initial=0))
    if n == 0:
        return out
    boxes, euler = regions.boxes_and_euler(out, n)
    present = boxes[:, 2] > 0
    _fill_enclosed(out, boxes, np.flatnonzero(present & (euler < 1) if connected else present) + 1)
    return out


def _fill_enclosed(out: np.ndarray, boxes: np.ndarray, candidates: np.ndarray, areas: np.ndarray | None = None):
    """:func:`fill_holes` in place for the instances ``candidates`` (ids, ascending) of ``out``, whose boxes
    are ``boxes``; keeps ``areas`` (pixel counts by id) up to date when given (the boxes stay right: what
    an instance encloses lies in its box, and a swallowed instance has no pixels left)."""
    for i in candidates:   # in id order: an instance swallowed by an earlier one has no pixels left
        box = _box(boxes[i - 1])
        own = out[box] == i   # of `out`, so an inner instance processed before its host is still swallowed
        hole = _enclosed(own)
        if hole is not None:
            if areas is not None:
                taken = out[box][hole]
                np.subtract.at(areas, taken, 1)
                areas[i] += len(taken)
            out[box][hole] = i


def _enclosed(own: np.ndarray) -> np.ndarray | None:
    """Pixels of a box that ``own`` encloses (``binary_fill_holes(own) & ~own``: the 4-connected pieces of
    the rest that do not touch the box's edge), or None when there are none."""
    rest, n = ndi.label(~own)
    if n == 0:
        return None
    edge = np.zeros(n + 1, bool)
    for side in (rest[0], rest[-1], rest[:, 0], rest[:, -1]):
        edge[side] = True
    if edge[1:].all():
        return None
    edge[0] = True
    return ~edge[rest]


def count_holed(labels: np.ndarray, *, min_fraction: float = 0.01) -> tuple[int, int]:
    """(instances with a hole, instances) of an annotation; a hole counts when it covers at least
    ``min_fraction`` of its instance's filled area (annotators leave stray unpainted pixels: 39 of the 40
    holes in the Usiigaci annotations are 1-19 px in cells of 260-15,000 px)."""
    labels = np.asarray(labels)
    n = holed = 0
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        own = labels[box] == i
        filled = ndi.binary_fill_holes(own)
        n += 1
        holed += int(filled.sum() - own.sum()) >= min_fraction * filled.sum()
    return holed, n


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set the ids with fewer than ``min_size`` pixels to 0."""
    if min_size <= 1:
        return labels
    small = np.bincount(labels.ravel()) < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)


def _distance_watershed(mask: np.ndarray, cell_radius: float | None) -> np.ndarray:
    """Watershed of the mask's smoothed distance transform from its maxima at least 0.15 r deep."""
    dist = ndi.distance_transform_edt(mask)
    if cell_radius is None:
        components, n = ndi.label(mask)
        if n == 0:
            return components
        cell_radius = float(np.median(_max_per_label(dist, components, n)[1:]))
    depth = 0.15 * cell_radius
    dist = ndi.gaussian_filter(dist, sigma=max(0.5, depth)) * mask
    # h-maxima (a sort of every pixel) on a grid ~depth/1.5 apart: 4x faster at r = 22 px, same F1
    step = max(1, int(depth / 1.5))
    seeds = np.zeros(mask.shape, np.int32)
    seeds[::step, ::step] = _label(h_maxima(dist[::step, ::step], depth), connectivity=2)
    return watershed(-dist, seeds, mask=mask, connectivity=2)


def _max_per_label(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """(n + 1,) maximum of ``values`` over each label 0..n (0 where a label is absent)."""
    out = np.zeros(n + 1, values.dtype)
    inside = labels > 0
    np.maximum.at(out, labels[inside], values[inside])
    return out


def interior_target(labels: np.ndarray, *, width: int = 2, fraction: float = 0.5) -> np.ndarray:
    """Training target for the interior channel: every instance eroded so touching cells are apart.

    A pixel is interior when its distance to the nearest pixel of its instance's rim (pixels
    4-adjacent to background or to another instance) is at least ``min(width, fraction * d_max)``,
    where ``d_max`` is the instance's largest such distance, so that a small or thin cell keeps its
    core; of an interior cut in pieces by the erosion only the largest 8-connected piece is kept, so
    every instance gives exactly one seed. Interiors of different instances never touch, not even
    diagonally, except for instances that are all rim (one pixel thin), which are kept whole.

    Parameters
    ----------
    labels : (Y, X) integer array
        Instance labels, 0 is background.
    width : int
        Erosion depth in pixels for cells large enough to afford it.
    fraction : float
        Cap of the erosion depth relative to each cell's inscribed radius, in (0, 1].

    Returns
    -------
    (Y, X) bool array
    """
    labels = np.asarray(labels)
    rim = find_boundaries(labels, connectivity=1, mode="inner")
    dist = ndi.distance_transform_edt(~rim)
    n = int(labels.max())
    if n == 0:
        return np.zeros(labels.shape, bool)
    d_max = _max_per_label(dist, labels, n)
    depth = np.minimum(width, fraction * d_max)
    depth[0] = np.inf
    # all-rim instances (d_max == 0) keep everything; others drop at least their rim
    inside = (dist >= depth[labels]) & ((dist > 0) | (d_max[labels] == 0))
    # erosion can cut a cell's interior in pieces (thin necks, ragged outlines): keep the largest, one seed per cell
    return clean_instances(np.where(inside, labels, 0)) > 0


def clean_instances(labels: np.ndarray) -> np.ndarray:
    """Keep only the largest 8-connected piece of each instance id (drop stray annotation fragments).

    Parameters
    ----------
    labels : (Y, X) integer array
        Instance labels, 0 is background.

    Returns
    -------
    (Y, X) array of the same dtype
        The labels with every piece but the largest of each id set to 0; ids are not renumbered.
    """
    labels = np.asarray(labels)
    pieces, n = _label(labels, background=0, connectivity=2, return_num=True)
    if n == 0:
        return labels.copy()
    size = np.bincount(pieces.ravel(), minlength=n + 1)
    owner = np.zeros(n + 1, labels.dtype)
    owner[pieces.ravel()] = labels.ravel()
    # sort pieces by (id, size): the last piece of each id is its largest
    order = np.lexsort((size[1:], owner[1:])) + 1
    ids = owner[order]
    largest = order[np.r_[ids[1:] != ids[:-1], True]]
    keep = np.zeros(n + 1, bool)
    keep[largest] = True
    return np.where(keep[pieces], labels, 0).astype(labels.dtype, copy=False)
