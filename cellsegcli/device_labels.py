"""Instance labels computed where the probabilities already are (a GPU), in torch.

:func:`label_instances_torch` is the device-side counterpart of :func:`cellsegcli.instances.label_instances`
for two-channel models (cell probability + interior): the same steps, made of whole-frame tensor operations
that a GPU runs without the frame leaving it:

1. seeds: the 8-connected components of ``interior >= seed_threshold`` inside the mask, by minimum
   propagation (3x3 min-pooling of pixel indices) with pointer jumping; each component is named after its
   first pixel in raster order, so the ids come in the order ``ndi.label`` gives; seeds smaller than
   ``min_seed_size`` are dropped (one bincount); with ``split_clumps``, the seeds inside clumps are split
   as :mod:`cellsegcli.declump` splits them, one interior level at a time for all of them at once (the
   components of the clumps' seeds above the level; a seed with two or more pieces of ``min_size`` gives way
   to them), the pieces named after their first pixel like every component;
2. growth: the watershed of ``-interior`` from the seeds within the mask, as a flood by level sets: for
   interior levels from high to low the labels grow by masked 3x3 max-pooling into the mask pixels at or
   above the level, until they stop; a pixel thus goes to the seed it connects to through the highest
   interior (the watershed's minimax path), ties at one level to the nearest front;
3. mask components without a seed: one instance each, numbered after the seeds (as the reference);
4. holes (unless ``holes``): background pieces (4-connected) that touch no frame edge and border one
   instance only join it, then instances that touch no frame edge and border one instance only;
5. instances under ``min_size`` pixels join the instance of at least ``min_size`` they share the most
   8-adjacent pixel pairs with (ties: the lower id; the CPU's ``absorb_small``), or are dropped if they
   border none; the rest are renumbered 1..N in the same order.

The result agrees with the CPU labels as far as quantising the flood into levels and breaking ties by
distance allow: ``tests/test_device_labels.py`` asks object F1 >= 0.98 on real frames (measured: see
``benchmarks/postprocess.py --device-labels``). Nested holes (an instance in a hole of another with
background around it) are filled by the CPU version only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DeviceLabeller", "connected_components", "label_instances_torch"]

_CHECK_EVERY = 4   # pooling steps between two convergence checks (a check waits for the device)


def label_instances_torch(
    foreground: torch.Tensor,
    interior: torch.Tensor,
    *,
    threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size: int = 0,
    min_seed_size: int = 16,
    holes: bool = False,
    levels: int = 8,
    split_clumps: bool = False,
) -> torch.Tensor:
    """(Y, X) cell and interior probabilities (any float dtype, on any device) -> (Y, X) int32 labels 1..N
    on the same device, 0 background.

    ``threshold``, ``seed_threshold``, ``min_size``, ``min_seed_size``, ``holes`` and ``split_clumps`` mean what
    they mean in :func:`cellsegcli.instances.label_instances`; ``levels`` is the number of interior levels the flood is
    quantised into (evenly spaced over [0, 1]).
    """
    if foreground.ndim != 2 or interior.shape != foreground.shape:
        raise ValueError(f"foreground and interior must be (Y, X) arrays of one shape, got "
                         f"{tuple(foreground.shape)} and {tuple(interior.shape)}")
    if levels < 1:
        raise ValueError("levels must be at least 1")
    h, w = foreground.shape
    n = h * w
    kind = _index_dtype(2 * (n + 1))
    interior = interior.float()
    mask = foreground >= threshold
    seeds = connected_components((interior >= seed_threshold) & mask, dtype=kind)
    if min_seed_size > 1:
        size = torch.bincount(seeds.flatten().long(), minlength=n + 1)
        small = size < min_seed_size
        small[0] = False
        seeds = torch.where(small[seeds.long()], 0, seeds)
    if split_clumps:
        seeds = _split_clumps(seeds, interior, mask, seed_threshold, min_size, min_seed_size, kind)
    labels = _flood(seeds, interior, mask, levels)
    # what no seed reached is the mask's seedless components: instances after every seed (ids above n + 1)
    orphans = connected_components(mask & (labels == 0), dtype=kind)
    labels = torch.where(orphans > 0, orphans + (n + 1), labels)
    if not holes:
        labels = _fill_holes(labels, kind)
    labels = _absorb_small(labels.long(), min_size, 2 * (n + 1))
    return _sequential(labels, min_size, 2 * (n + 1))


def _split_clumps(seeds: torch.Tensor, interior: torch.Tensor, mask: torch.Tensor, seed_threshold: float,
                  min_size: int, min_seed_size: int, kind: torch.dtype) -> torch.Tensor:
    """:func:`cellsegcli.declump.split_seeds` for a whole frame of seeds (named after their first pixels,
    those under ``min_seed_size`` already dropped): level by level, every clump seed whose part above the
    level falls into two or more pieces of at least ``max(min_size, min_seed_size)`` pixels is replaced by
    those pieces (smaller pieces drop out). Pieces of different seeds never touch (seeds are components), so
    one labelling of all of them above a level gives each seed's pieces."""
    from . import declump

    n = seeds.numel()
    components = connected_components(mask, dtype=kind).long()
    areas = torch.bincount(components.flatten(), minlength=n + 1)
    clumps = torch.from_numpy(declump.clump_mask(areas.cpu().numpy(), min_size)).to(seeds.device)
    in_clumps = clumps[components] & (seeds > 0)
    state = torch.where(in_clumps, seeds, 0).long()
    if not bool(state.any()):
        return seeds
    min_part = max(min_size, min_seed_size)
    for level in declump.ladder(seed_threshold):
        pieces = connected_components((state > 0) & (interior >= level), dtype=kind).long()
        if not bool(pieces.any()):
            break
        parent = torch.zeros(n + 1, dtype=torch.long, device=seeds.device)
        parent[pieces.flatten()] = state.flatten()   # every pixel of a piece has its seed's id
        parent[0] = 0
        big = torch.bincount(pieces.flatten(), minlength=n + 1) >= min_part
        big[0] = False
        splits = torch.bincount(parent[big], minlength=n + 1) >= 2
        splits[0] = False
        where = splits[state]
        state = torch.where(where, torch.where(big[pieces], pieces, 0), state)
    return torch.where(in_clumps, state.to(seeds.dtype), seeds)


def _absorb_small(labels: torch.Tensor, min_size: int, size: int) -> torch.Tensor:
    """:func:`cellsegcli.instances.absorb_small` over the whole frame: every 8-adjacent pixel pair of a small
    instance and a big one is counted (one unique over their id pairs), each small one takes its top
    neighbour (most pairs, then the lower id)."""
    if min_size <= 1:
        return labels
    count = torch.bincount(labels.flatten(), minlength=size)
    small = (count > 0) & (count < min_size)
    small[0] = False
    if not bool(small.any()):
        return labels
    big = count >= min_size
    big[0] = False
    h, w = labels.shape
    padded = torch.nn.functional.pad(labels, (1, 1, 1, 1))
    inside = small[labels]
    keys = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                near = padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                pick = inside & big[near]
                keys.append(labels[pick] * size + near[pick])
    keys = torch.cat(keys)
    if not len(keys):
        return labels
    pairs, pair_count = torch.unique(keys, return_counts=True)
    own, near = pairs // size, pairs % size
    score = pair_count * size + (size - 1 - near)   # most pairs first, then the lower id
    top = torch.full((size,), -1, dtype=score.dtype, device=labels.device)
    top = top.scatter_reduce(0, own, score, reduce="amax")
    lookup = torch.arange(size, device=labels.device)
    joined = torch.nonzero(top >= 0).squeeze(1)
    lookup[joined] = size - 1 - top[joined] % size
    return lookup[labels]


@dataclass
class DeviceLabeller:
    """(K, Y, X) probabilities on a device (K >= 2: cell, interior) -> (Y, X) uint32 labels on the host, with
    a frame's thresholds; ``seconds`` adds up the time spent (the copy to the host included)."""

    threshold: float
    seed_threshold: float
    min_size: int
    holes: bool = False
    keep_probabilities: bool = True   # False: the probabilities need not come back to the host (not saved)
    split_clumps: bool = False
    seconds: float = 0.0

    def __call__(self, prob: torch.Tensor) -> np.ndarray:
        started = time.perf_counter()
        with torch.inference_mode():
            labels = label_instances_torch(prob[0], prob[1], threshold=self.threshold,
                                           seed_threshold=self.seed_threshold, min_size=self.min_size,
                                           holes=self.holes, split_clumps=self.split_clumps)
            out = labels.cpu().numpy().view(np.uint32)   # 0..N, never negative
        self.seconds += time.perf_counter() - started
        return out


def connected_components(mask: torch.Tensor, *, connectivity: int = 8, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Connected components of a (Y, X) bool tensor: each pixel carries 1 + the raster index of its
    component's first pixel (0 outside the mask), as a float tensor of ``dtype`` (exact integers; default:
    float32 where the frame has fewer than 2**24 pixels, else float64). ``connectivity`` 8 or 4.

    Label equivalence with hooking: every pixel takes the smallest label around it and hands it to the pixel
    its label names (the root of its chain), then labels jump along the chains twice. A label is always the
    index of a pixel of the same component and only decreases, so the fixed point is the component's first
    pixel; it is reached in a handful of rounds (6-8 on a 1912x1912 phase-contrast frame's mask and background)
    where plain minimum propagation needs as many as the longest path through a component."""
    h, w = mask.shape
    n = h * w
    kind = dtype or _index_dtype(n + 1)
    big = float(n + 1)
    inside = mask.flatten()
    labels = torch.where(mask, torch.arange(1, n + 1, device=mask.device, dtype=kind).view(h, w), big)
    for _ in range(n):   # never this many: each round leaves at least one label smaller, or ends
        smallest = torch.where(mask, _neighbourhood(labels, connectivity, torch.minimum, big), big).flatten()
        flat = labels.flatten().clone()
        hook = inside & (smallest < flat)
        flat.scatter_reduce_(0, flat[hook].long() - 1, smallest[hook], reduce="amin")
        new = torch.minimum(flat, smallest)
        for _ in range(2):
            new = torch.where(inside, new[(new.long() - 1).clamp_(0, n - 1)], big)
        new = new.view(h, w)
        if torch.equal(new, labels):
            break
        labels = new
    return torch.where(mask, labels, 0.0)


def _neighbourhood(x: torch.Tensor, connectivity: int, reduce, fill: float) -> torch.Tensor:
    """``reduce`` (torch.minimum / torch.maximum) over each pixel's 3x3 (8-connected) or plus-shaped
    (4-connected) neighbourhood, itself included; ``fill`` beyond the frame's edge."""
    p = F.pad(x[None, None], (1, 1, 1, 1), value=fill)[0, 0]
    column = reduce(reduce(p[:-2], p[2:]), p[1:-1])   # (Y, X + 2): up, down and the row itself
    if connectivity == 8:
        return reduce(reduce(column[:, :-2], column[:, 2:]), column[:, 1:-1])
    return reduce(reduce(column[:, 1:-1], p[1:-1, :-2]), p[1:-1, 2:])


def _flood(seeds: torch.Tensor, interior: torch.Tensor, mask: torch.Tensor, levels: int) -> torch.Tensor:
    """Grow ``seeds`` into ``mask`` level by level of ``interior``, highest first (see the module's step 2):
    rounds of masked 3x3 max-pooling at each level until the last step of a round adds nothing."""
    labels = seeds.clone()
    for level in torch.linspace(1.0, 0.0, levels + 1).tolist()[1:]:
        allowed = mask & (interior >= level) if level > 0 else mask
        while True:
            for _ in range(_CHECK_EVERY):
                free = allowed & (labels == 0)
                before = labels
                labels = torch.where(free, _neighbourhood(labels, 8, torch.maximum, 0.0), labels)
            if torch.equal(labels, before):
                break
    return labels


def _fill_holes(labels: torch.Tensor, kind: torch.dtype) -> torch.Tensor:
    """Background pieces, then instances, that touch no frame edge and border a single instance join it."""
    background = labels == 0
    labels = _join_enclosed(labels, connected_components(background, connectivity=4, dtype=kind), background)
    return _join_enclosed(labels, labels, labels > 0)


def _join_enclosed(labels: torch.Tensor, pieces: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """The pixels of ``inside`` take the instance that alone borders (4-adjacent) their piece of ``pieces``
    (background pieces, or the instances themselves), when the piece touches neither the frame's edge nor
    background other than its own pixels."""
    h, w = labels.shape
    size = 2 * h * w + 2
    lab = labels.long()
    piece = pieces.long().flatten()[inside.flatten()]
    own = lab.flatten()[inside.flatten()]
    low = torch.full((size,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=labels.device)
    high = torch.full((size,), -2, dtype=torch.int64, device=labels.device)
    padded = F.pad(lab[None, None], (1, 1, 1, 1), value=-1)[0, 0]   # -1: beyond the frame's edge
    for side in (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]):
        other = side.flatten()[inside.flatten()]
        counts = other != own                        # a pixel of the piece itself does not count
        value = torch.where(other > 0, other, -1)    # the edge or background: not enclosed (-1)
        low.scatter_reduce_(0, piece[counts], value[counts], reduce="amin")
        high.scatter_reduce_(0, piece[counts], value[counts], reduce="amax")
    single = (low == high) & (low > 0)
    joins = single[piece]
    out = lab.flatten().clone()
    where = torch.nonzero(inside.flatten()).squeeze(1)[joins]
    out[where] = low[piece[joins]]
    return out.view(h, w).to(labels.dtype)


def _sequential(labels: torch.Tensor, min_size: int, size: int) -> torch.Tensor:
    """Ids of fewer than ``min_size`` pixels removed, the rest renumbered 1..N in their order, int32."""
    count = torch.bincount(labels.flatten(), minlength=size)
    present = count >= max(min_size, 1)
    present[0] = False
    lookup = torch.cumsum(present, 0) * present
    return lookup[labels].to(torch.int32)


def _index_dtype(largest: int) -> torch.dtype:
    """float32 holds integers exactly up to 2**24; beyond that float64 (pooling needs a float dtype)."""
    return torch.float32 if largest < 2**24 else torch.float64
