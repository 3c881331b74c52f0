"""What the linker sees of a frame: one row per labelled object (id, centroid, area, bounding box).

This is all that is kept of a frame between the two passes of tracking, so memory grows with the
number of cells in the movie, never with its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class Detections:
    """The objects of frame ``frame``, in increasing ``label`` order.

    Attributes
    ----------
    frame : int
    label : (N,) int64, the object's id in the frame's label image (> 0)
    y, x : (N,) float64, centroid in pixels (row, column)
    area : (N,) int64, pixels
    bbox : (N, 4) int64, ``y0, x0, y1, x1`` (half-open)
    """

    frame: int
    label: np.ndarray
    y: np.ndarray
    x: np.ndarray
    area: np.ndarray
    bbox: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    @property
    def coords(self) -> np.ndarray:
        """(N, 2) centroids ``(y, x)``."""
        return np.stack([self.y, self.x], axis=1) if len(self) else np.zeros((0, 2))

    @classmethod
    def empty(cls, frame: int) -> Detections:
        z = np.zeros(0, np.int64)
        return cls(frame, z, z.astype(float), z.astype(float), z, np.zeros((0, 4), np.int64))


def detect(labels: np.ndarray, frame: int = 0) -> Detections:
    """The objects of a (Y, X) label image (0 = background); an id in several pieces is one object."""
    from ..morphology import check_labels, dense_labels

    labels = check_labels(labels)
    ids, dense = dense_labels(labels)
    if not len(ids):
        return Detections.empty(frame)
    n = len(ids)
    dense = dense.astype(np.intp, copy=False)
    area = np.bincount(dense.ravel(), minlength=n + 1)[1:]
    rows, cols = np.indices(labels.shape, sparse=True)
    y = np.bincount(dense.ravel(), np.broadcast_to(rows, labels.shape).ravel(), minlength=n + 1)[1:] / area
    x = np.bincount(dense.ravel(), np.broadcast_to(cols, labels.shape).ravel(), minlength=n + 1)[1:] / area
    bbox = np.array([[s[0].start, s[1].start, s[0].stop, s[1].stop] for s in ndi.find_objects(dense)], np.int64)
    return Detections(int(frame), ids.astype(np.int64), y, x, area.astype(np.int64), bbox)


def from_cell_table(cells: dict, frame: int) -> Detections:
    """The detections of one frame's per-cell table (:func:`cellsegcli.morphology.cell_table`)."""
    n = len(cells["label"])
    if not n:
        return Detections.empty(frame)
    bbox = np.stack([np.asarray(cells[k], np.int64) for k in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")], axis=1)
    return Detections(int(frame), np.asarray(cells["label"], np.int64), np.asarray(cells["centroid_y"], float),
                      np.asarray(cells["centroid_x"], float), np.asarray(cells["area"], np.int64), bbox)
