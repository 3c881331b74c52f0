"""Per-track tables: lifetime, lineage and motility of every track, and the napari Tracks layer data.

Distances are in pixels and speeds in pixels per frame; the ``*_um`` / ``*_um_per_min`` / ``*_min``
columns hold the same in micrometres and minutes, NaN when the pixel size or the frame interval is
unknown (so a table's columns never depend on the metadata). A track's path joins its centroids in
frame order, across gaps too; speeds divide by the frames elapsed, gaps included.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import CellsegError
from .detections import Detections
from .link import Tracks

TRACK_COLUMNS = (
    "track_id", "parent_id", "first_frame", "last_frame", "n_frames", "n_missing", "divides", "n_children",
    "start_y", "start_x", "end_y", "end_x", "displacement", "path_length", "mean_speed", "max_speed",
    "straightness", "displacement_um", "path_length_um", "mean_speed_um_per_min", "duration_min",
)

_UNITS_MIN = {"ms": 1 / 60000, "s": 1 / 60, "sec": 1 / 60, "second": 1 / 60, "seconds": 1 / 60, "m": 1.0,
              "min": 1.0, "minute": 1.0, "minutes": 1.0, "h": 60.0, "hr": 60.0, "hour": 60.0, "hours": 60.0}


def parse_interval(text: str) -> float:
    """Minutes in a frame interval written as ``5``, ``5min``, ``30s``, ``0.5h`` (a bare number is minutes)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if not match or match.group(2) not in ("", *_UNITS_MIN) or not float(match.group(1)) > 0:
        raise CellsegError(f"--frame-interval {text!r}: give the time between frames, e.g. 5min, 30s or 0.5h "
                           f"(a bare number is minutes)")
    return float(match.group(1)) * _UNITS_MIN.get(match.group(2) or "min")


def _points(detections: list[Detections], tracks: Tracks) -> tuple[np.ndarray, ...]:
    """(track id, frame, y, x) of every detection, sorted by track then frame."""
    ids = np.concatenate([tracks.ids[d.frame] for d in detections] or [np.zeros(0, np.int64)])
    frame = np.concatenate([np.full(len(d), d.frame) for d in detections] or [np.zeros(0, np.int64)])
    y = np.concatenate([d.y for d in detections] or [np.zeros(0)])
    x = np.concatenate([d.x for d in detections] or [np.zeros(0)])
    order = np.lexsort((frame, ids))
    return ids[order], frame[order], y[order], x[order]


def track_table(detections: list[Detections], tracks: Tracks, *, pixel_size_um: float | None = None,
                frame_interval_min: float | None = None) -> dict[str, np.ndarray]:
    """One row per track, in track id order (see the module docstring for the units)."""
    ids, frame, y, x = _points(detections, tracks)
    lineage = tracks.lineage
    m = len(lineage)
    first = np.searchsorted(ids, lineage[:, 0])           # each track's first point (ids sorted)
    last = np.searchsorted(ids, lineage[:, 0], side="right") - 1
    same = ids[1:] == ids[:-1]
    step = np.where(same, np.hypot(np.diff(y), np.diff(x)), 0.0)
    dt = np.where(same, np.diff(frame), 1)
    cum = np.concatenate([[0.0], np.cumsum(step)])
    path = cum[last] - cum[first] if m else np.zeros(0)
    speed = np.where(same, step / np.maximum(dt, 1), -np.inf)
    max_speed = np.array([speed[a:b].max(initial=0.0) if b > a else 0.0 for a, b in zip(first, last)])
    elapsed = (lineage[:, 2] - lineage[:, 1]).astype(float)
    displacement = np.hypot(y[last] - y[first], x[last] - x[first]) if m else np.zeros(0)
    children = np.bincount(lineage[:, 3], minlength=int(lineage[:, 0].max(initial=0)) + 1)
    n_children = children[lineage[:, 0]] if m else np.zeros(0, np.int64)
    px = np.nan if pixel_size_um is None else float(pixel_size_um)
    minutes = np.nan if frame_interval_min is None else float(frame_interval_min)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_speed = np.where(elapsed > 0, path / elapsed, np.nan)
        straightness = np.where(path > 0, displacement / path, np.nan)
    n_frames = last - first + 1
    return {
        "track_id": lineage[:, 0], "parent_id": lineage[:, 3], "first_frame": lineage[:, 1],
        "last_frame": lineage[:, 2], "n_frames": n_frames, "n_missing": lineage[:, 2] - lineage[:, 1] + 1 - n_frames,
        "divides": n_children > 1, "n_children": n_children,
        "start_y": y[first], "start_x": x[first], "end_y": y[last], "end_x": x[last],
        "displacement": displacement, "path_length": path, "mean_speed": mean_speed, "max_speed": max_speed,
        "straightness": straightness, "displacement_um": displacement * px, "path_length_um": path * px,
        "mean_speed_um_per_min": mean_speed * px / minutes, "duration_min": elapsed * minutes,
    }


def napari_tracks(detections: list[Detections], tracks: Tracks) -> tuple[dict[str, np.ndarray], dict[int, list[int]]]:
    """The data of a napari Tracks layer: columns ``track_id, t, y, x`` (sorted by track, then time)
    and its ``graph`` (``{track_id: [parent_id]}`` for tracks with a parent)."""
    ids, frame, y, x = _points(detections, tracks)
    graph = {int(r[0]): [int(r[3])] for r in tracks.lineage if r[3]}
    return {"track_id": ids, "t": frame, "y": y, "x": x}, graph
