"""Cells as ImageJ polygon ROIs (one ``.zip`` per frame, for Fiji's ROI Manager), through roifile.

Each cell becomes one polygon: the outer boundary of its pixels traced along pixel edges. ImageJ puts
pixel (x, y) in the square between the corners (x, y) and (x + 1, y + 1) and counts a pixel inside a
polygon when its centre (x + 0.5, y + 0.5) is, so a polygon through pixel corners fills back to exactly
the pixels it was traced from. What cannot be one polygon is simplified:

- a cell in several pieces keeps its largest piece (8-connected), the stray fragments are left out;
- holes are filled: the ROI is the outer contour only.

Diagonal neighbours count as connected (8-connectivity), so a piece joined only at a corner is traced as
one polygon that touches itself at that corner, which ImageJ fills correctly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .result import dense_labels

# directions of a boundary step in (row, col), y pointing down: east, south, west, north. Boundaries are
# walked clockwise on screen, with the cell on the right-hand side.
STEPS = np.array([(0, 1), (1, 0), (0, -1), (-1, 0)], np.int64)


def outer_boundary(mask: np.ndarray) -> np.ndarray:
    """The outer boundary of the pixels of ``mask`` as polygon vertices on pixel corners.

    Parameters
    ----------
    mask : (Y, X) bool array
        One 8-connected piece without holes (see :func:`cell_piece`); other pieces are ignored.

    Returns
    -------
    (N, 2) int64 array
        ``(row, col)`` of the corners where the boundary turns, walked clockwise on screen starting at
        the top-left corner of the first pixel in raster order; the corner (r, c) is the top-left corner
        of pixel (r, c). Empty for an empty mask.
    """
    m = np.pad(np.asarray(mask, bool), 1)
    height, width = m.shape
    core = m[1:-1, 1:-1]
    # boundary edges of each pixel (r, c) of the padded grid, as (start corner, direction)
    sides = (
        (core & ~m[:-2, 1:-1], (0, 0), 0),   # top: (r, c) -> (r, c + 1), east
        (core & ~m[1:-1, 2:], (0, 1), 1),    # right: (r, c + 1) -> (r + 1, c + 1), south
        (core & ~m[2:, 1:-1], (1, 1), 2),    # bottom: (r + 1, c + 1) -> (r + 1, c), west
        (core & ~m[1:-1, :-2], (1, 0), 3),   # left: (r + 1, c) -> (r, c), north
    )
    starts, directions = [], []
    for side, (dr, dc), direction in sides:
        rows, cols = np.nonzero(side)
        starts.append(np.stack([rows + 1 + dr, cols + 1 + dc], axis=1))
        directions.append(np.full(len(rows), direction, np.int64))
    start = np.concatenate(starts)
    direction = np.concatenate(directions)
    if not len(start):
        return np.empty((0, 2), np.int64)
    end = start + STEPS[direction]
    corners = width + 1
    outgoing = np.full(((height + 1) * corners, 4), -1, np.int64)
    outgoing[start[:, 0] * corners + start[:, 1], direction] = np.arange(len(start))
    at = end[:, 0] * corners + end[:, 1]
    # the next edge: turn left where two boundaries meet at a corner (joins diagonal neighbours), else the
    # only edge leaving the corner (straight on or right)
    successor = outgoing[at, (direction + 3) % 4]
    for turn in (0, 1):
        missing = successor < 0
        successor[missing] = outgoing[at[missing], (direction[missing] + turn) % 4]
    order = _cycle(successor.tolist())
    walked = direction[order]
    turns = walked != np.roll(walked, 1)
    return start[order][turns] - 1


def _cycle(successor: list[int]) -> list[int]:
    """Edge indices of the boundary loop through edge 0, in walking order."""
    order, edge = [0], successor[0]
    while edge != 0 and len(order) <= len(successor):
        order.append(edge)
        edge = successor[edge]
    return order


def cell_piece(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected piece of ``mask`` with its holes filled: what a cell's ROI outlines."""
    from scipy import ndimage

    pieces, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n > 1:
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0
        mask = pieces == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def roi_name(cell_id: int, *, tracked: bool) -> str:
    """``cell-0042``, or ``track-0042`` in a tracked result (whose ids are track ids)."""
    return f"{'track' if tracked else 'cell'}-{int(cell_id):04d}"


def frame_rois(labels: np.ndarray, ids: np.ndarray, t: int, *, tracked: bool = False) -> list:
    """One ImageJ polygon ROI per cell of a frame.

    Parameters
    ----------
    labels : (Y, X) integer array, 0 is background
    ids : sorted ids of the cells in ``labels`` (see :func:`~cellsegcli.export.result.cell_ids`)
    t : frame index from 0; stored as the ROIs' (1-based) ``t_position``
    tracked : name the ROIs ``track-NNNN`` instead of ``cell-NNNN``

    Returns
    -------
    list of roifile.ImagejRoi, in the order of ``ids``, with integer coordinates (x, y) on pixel corners.
    """
    from roifile import ROI_TYPE, ImagejRoi
    from scipy import ndimage

    rois = []
    if not len(ids):
        return rois
    dense = dense_labels(labels, ids)
    for i, box in enumerate(ndimage.find_objects(dense, max_label=len(ids))):
        if box is None:
            continue
        corners = outer_boundary(cell_piece(dense[box] == i + 1))
        corners += (box[0].start, box[1].start)
        roi = ImagejRoi.frompoints(corners[:, ::-1].astype(np.int32), name=roi_name(ids[i], tracked=tracked), t=t)
        roi.roitype = ROI_TYPE.POLYGON
        rois.append(roi)
    return rois


def write_roi_zip(path: Path, rois: list) -> Path:
    """Write ``rois`` to a new ImageJ ROI set ``path`` (``.zip``; an empty zip for a frame without cells)."""
    import zipfile

    from roifile import roiwrite

    if rois:
        roiwrite(path, rois, mode="w")
    else:
        zipfile.ZipFile(path, "w").close()
    return path
