"""Linking detections into tracks with laptrack's LAP linker (Jaqaman et al. 2008): frame-to-frame
assignment, then gap closing and divisions in one global assignment.

Costs are squared centroid distances; every distance limit is a multiple of the movie's median cell
diameter, so one default serves nuclei and whole cells at any magnification. A track is one cell's
life: it keeps its id across gaps (the cell missed for up to ``gap_frames`` frames), ends where the cell
divides or leaves, and its daughters start new tracks whose parent it is (the Cell Tracking Challenge
convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detections import Detections


@dataclass(frozen=True)
class LinkOptions:
    """How far cells may move, in median cell diameters (``max_distance`` in pixels overrides it).

    Attributes
    ----------
    distance : float
        Largest frame-to-frame move of a centroid, in diameters.
    max_distance : float or None
        The same in pixels (takes precedence).
    gap_frames : int
        Frames a cell may be missed and still keep its track (0: no gap closing).
    gap_distance : float
        Largest move across a gap, in diameters.
    divisions : bool
        Detect divisions (a track ending where two start next to it).
    division_distance : float
        Largest distance from the parent's last centroid to a daughter's first, in diameters.
    min_daughter_frames : int
        A division is kept only when both daughters are seen on at least this many frames, or divide
        again; a shorter "daughter" is usually a fragment cut off the cell for a frame or two, and then
        the other one continues the parent's track.
    divisions_first : bool
        Find divisions in a first pass without gap closing, then close gaps around them (see :func:`link`).
    """

    distance: float = 1.0
    max_distance: float | None = None
    gap_frames: int = 2
    gap_distance: float = 1.0
    divisions: bool = True
    division_distance: float = 1.0
    min_daughter_frames: int = 3
    divisions_first: bool = False

    def __post_init__(self) -> None:
        for name in ("distance", "gap_distance", "division_distance"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of cell diameters, got {value}")
        if self.max_distance is not None and not (np.isfinite(self.max_distance) and self.max_distance > 0):
            raise ValueError(f"max_distance must be a positive number of pixels, got {self.max_distance}")
        if self.gap_frames < 0 or self.min_daughter_frames < 1:
            raise ValueError("gap_frames must be >= 0 and min_daughter_frames >= 1")


@dataclass
class Tracks:
    """The result of :func:`link`.

    Attributes
    ----------
    ids : list of (N_t,) int64 arrays
        The track id of every detection, frame by frame, in the detections' order.
    lineage : (M, 4) int64 array
        One row per track: ``track_id, first_frame, last_frame, parent_id`` (0: no parent); ids are
        1..M in order of first appearance.
    diameter : float
        The median cell diameter (pixels) the distance limits were scaled by.
    max_distance : float
        The frame-to-frame limit used, in pixels.
    """

    ids: list[np.ndarray]
    lineage: np.ndarray
    diameter: float
    max_distance: float

    @property
    def n_tracks(self) -> int:
        return len(self.lineage)

    @property
    def n_divisions(self) -> int:
        parents = self.lineage[:, 3]
        return len(np.unique(parents[parents > 0]))

    def lookup(self, detections: Detections) -> np.ndarray:
        """An array mapping the frame's label ids to track ids (0 stays 0), for relabelling."""
        table = np.zeros(int(detections.label.max(initial=0)) + 1, np.uint32)
        table[detections.label] = self.ids[detections.frame]
        return table


def median_diameter(detections: list[Detections]) -> float:
    """Median equivalent-circle diameter of all detections (1.0 when there are none)."""
    areas = np.concatenate([d.area for d in detections]) if detections else np.zeros(0)
    return float(2 * np.sqrt(np.median(areas) / np.pi)) if areas.size else 1.0


def link(detections: list[Detections], options: LinkOptions = LinkOptions()) -> Tracks:
    """Tracks of the detections of consecutive frames (``detections[t].frame == t``)."""
    import networkx as nx
    from laptrack import LapTrack

    for t, d in enumerate(detections):
        if d.frame != t:
            raise ValueError(f"detections[{t}] is of frame {d.frame}; pass one Detections per frame, in order")
    diameter = median_diameter(detections)
    step = options.max_distance or options.distance * diameter
    scale = step / options.distance   # pixels per "diameter" (the override rescales every limit)
    coords = [d.coords for d in detections]
    n_nodes = sum(len(d) for d in detections)
    graph = nx.DiGraph()
    if n_nodes and len(detections) > 1:
        link2 = step**2
        gap = (options.gap_distance * scale) ** 2
        split = (options.division_distance * scale) ** 2
        # Alternative costs (Jaqaman's b, d, d') set from the limits rather than estimated from the costs
        # found (laptrack's default, which with few candidates rejects moves well inside the limits): a
        # link, a one-frame gap or a division is then accepted exactly when it lies within its limit and
        # wins the assignment.
        common = dict(metric="sqeuclidean", cutoff=link2, track_start_cost=link2 / 2, track_end_cost=link2 / 2,
                      segment_start_cost=gap / 2, segment_end_cost=gap / 2,
                      no_splitting_cost=max(split - gap / 2, 1e-6), no_merging_cost=1e-6,
                      gap_closing_metric="sqeuclidean", gap_closing_max_frame_count=options.gap_frames + 1,
                      splitting_metric="sqeuclidean", merging_cutoff=False)
        if options.divisions and options.gap_frames and options.divisions_first:
            # Two passes: divisions first, without gap closing, then gaps closed around the divisions found
            # (laptrack keeps given division edges out of gap closing). In one pass a gap closing competes
            # with the division for the same daughter and, where the mother is missed for a frame or two
            # before she divides (as a model often misses mitotic nuclei), wins: the division is lost.
            first = LapTrack(**common, gap_closing_cutoff=False, splitting_cutoff=split).predict(coords)
            divisions = [(m, c) for m in first.nodes if first.out_degree(m) > 1 for c in first.successors(m)]
            graph = LapTrack(**common, gap_closing_cutoff=gap, splitting_cutoff=False).predict(
                coords, connected_edges=divisions or None)
        else:
            graph = LapTrack(**common, gap_closing_cutoff=gap if options.gap_frames else False,
                             splitting_cutoff=split if options.divisions else False).predict(coords)
    else:
        graph.add_nodes_from((t, i) for t, c in enumerate(coords) for i in range(len(c)))
    _drop_fragment_divisions(graph, options.min_daughter_frames, len(detections) - 1)
    return _tracks_of(graph, detections, diameter, step)


def _chain(graph, start) -> list:
    """The nodes of the track that starts at ``start``: followed while there is exactly one successor."""
    nodes = [start]
    while True:
        nxt = list(graph.successors(nodes[-1]))
        if len(nxt) != 1:
            return nodes
        nodes.append(nxt[0])


def _life(graph, start, last_frame: int) -> tuple[int, bool]:
    """(frames seen, whether the track divides or is cut short by the movie's end) of the track that
    starts at ``start``."""
    nodes = _chain(graph, start)
    end = nodes[-1]
    return len(nodes), graph.out_degree(end) > 1 or end[0] >= last_frame


def _drop_fragment_divisions(graph, min_frames: int, last_frame: int) -> None:
    """Undo divisions with a daughter seen on fewer than ``min_frames`` frames that neither divides
    itself nor runs into the movie's last frame (which cuts every track short): the longer-lived daughter
    continues the parent, the other becomes a track of its own."""
    if min_frames <= 1:
        return
    for node in sorted(n for n in graph.nodes if graph.out_degree(n) > 1):
        children = sorted(graph.successors(node))
        lives = [_life(graph, c, last_frame) for c in children]
        if all(n >= min_frames or vouched for n, vouched in lives):
            continue
        keep = max(range(len(children)), key=lambda i: (lives[i][1], lives[i][0], -i))
        for i, child in enumerate(children):
            if i != keep:
                graph.remove_edge(node, child)


def _tracks_of(graph, detections: list[Detections], diameter: float, step: float) -> Tracks:
    for node in graph.nodes:   # laptrack does not merge; a second predecessor would be a bug there
        preds = sorted(graph.predecessors(node))
        for extra in preds[1:]:
            graph.remove_edge(extra, node)
    starts = sorted(n for n in graph.nodes
                    if graph.in_degree(n) == 0 or graph.out_degree(next(graph.predecessors(n))) > 1)
    ids = [np.zeros(len(d), np.int64) for d in detections]
    track_of_start = {s: k + 1 for k, s in enumerate(starts)}
    lineage = np.zeros((len(starts), 4), np.int64)
    for s, k in track_of_start.items():
        nodes = _chain(graph, s)
        for t, i in nodes:
            ids[t][i] = k
        parent = 0
        if graph.in_degree(s):
            p = next(graph.predecessors(s))
            parent = int(ids[p[0]][p[1]])   # numbered already: the mother's track starts earlier
        lineage[k - 1] = (k, nodes[0][0], nodes[-1][0], parent)
    return Tracks(ids, lineage, diameter, step)
