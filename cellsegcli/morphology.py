"""Per-cell and per-frame statistics of instance labels, as plain dicts of columns.

Conventions, shared by every column:

- Lengths and areas are in pixels; the ``*_um``/``*_um2`` columns hold the same values in micrometres.
  They are always present and NaN when the pixel size is unknown, so a table's columns never depend on
  metadata.
- ``centroid_y``/``centroid_x`` are row/column coordinates of pixel centres (pixel ``(0, 0)`` is at
  ``(0.0, 0.0)``); ``bbox_y0, bbox_x0, bbox_y1, bbox_x1`` is the half-open box ``labels[y0:y1, x0:x1]``.
- The ellipse columns come from the second central moments of the pixel centres (as in
  scikit-image): ``major/minor_axis_length`` = 4 sqrt(eigenvalue), ``eccentricity`` = sqrt(1 - minor^2 /
  major^2), ``orientation`` = angle in radians from the row axis to the major axis, counter-clockwise
  as displayed (rows down, columns right), in (-pi/2, pi/2]; 0 for a cell elongated along the rows,
  pi/2 for one elongated along the columns, 0 when the moments are isotropic.
- ``perimeter`` is the 4-direction Crofton estimate (isotropic; a disk of radius r reads 2 pi r
  within +4 % at r = 10 px and +1.6 % at r = 20 px; straight edges are measured through pixel centres,
  so an h x w rectangle reads about 2 (h + w) - 4).
- ``solidity`` = area / number of pixel centres inside the convex hull of the cell's pixel centres,
  so it is exactly 1 for every digitally convex cell (a digital disk, a rectangle). scikit-image's
  solidity uses the hull of the pixel *corners* instead and reads 0.93 for a disk of radius 10.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import perimeter_crofton

from .regions import CROFTON4, label_areas, region_sums

__all__ = ["CELL_COLUMNS", "FRAME_COLUMNS", "cell_table", "cell_table_reference", "frame_table_row"]

_INT_COLUMNS = ("frame", "label", "area", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")
CELL_COLUMNS: tuple[str, ...] = (
    "frame", "label", "area", "perimeter", "centroid_y", "centroid_x",
    "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1",
    "eccentricity", "solidity", "major_axis_length", "minor_axis_length", "orientation", "mean_intensity",
    "area_um2", "perimeter_um", "centroid_y_um", "centroid_x_um", "major_axis_um", "minor_axis_um",
)  # fmt: skip
"""Column names of :func:`cell_table`, in order; ``_INT_COLUMNS`` are int64, the others float64."""

FRAME_COLUMNS: tuple[str, ...] = (
    "frame", "cell_count", "confluence_percent", "mean_area", "median_area", "mean_area_um2", "median_area_um2",
)  # fmt: skip
"""Keys of :func:`frame_table_row`, in order."""


def cell_table(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    frame: int = 0,
    pixel_size_um: float | None = None,
) -> dict[str, np.ndarray]:
    """One row per cell: size, position, shape and mean intensity (see the module docstring).

    Parameters
    ----------
    labels : (Y, X) integer array
        Instance labels, 0 is background; ids need not be consecutive.
    image : (Y, X) array, optional
        Intensities for ``mean_intensity`` (NaN without it).
    frame : int
        Value of the ``frame`` column.
    pixel_size_um : float, optional
        Micrometres per pixel; the ``*_um`` columns are NaN without it.

    Returns
    -------
    dict of str to (N,) array
        Keys :data:`CELL_COLUMNS` in order, rows sorted by label; N = 0 gives empty arrays of the
        right dtypes.
    """
    labels = check_labels(labels)
    if image is not None and np.shape(image) != labels.shape:
        raise ValueError(f"image shape {np.shape(image)} differs from labels shape {labels.shape}")
    ids, dense = dense_labels(labels)
    n = len(ids)
    sums = region_sums(dense, n, None if image is None else np.asarray(image))
    area = sums["area"]
    table = {name: np.zeros(n, np.int64 if name in _INT_COLUMNS else np.float64) for name in CELL_COLUMNS}
    table["frame"][:] = frame
    table["label"][:] = ids
    table["area"][:] = area
    table["centroid_y"][:] = sums["sum_y"] / np.maximum(area, 1)
    table["centroid_x"][:] = sums["sum_x"] / np.maximum(area, 1)
    table["mean_intensity"][:] = sums["sum_intensity"] / np.maximum(area, 1)
    for j, name in enumerate(("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")):
        table[name][:] = sums["bbox"][:, j]
    table["perimeter"][:] = sums["crofton"] @ CROFTON4
    table["solidity"][:] = area / np.maximum(sums["hull_count"], 1)
    major, minor, orientation = _ellipses(sums["var_y"], sums["var_x"], sums["cov"])
    table["major_axis_length"][:], table["minor_axis_length"][:], table["orientation"][:] = major, minor, orientation
    table["eccentricity"][:] = np.sqrt(1 - (minor / np.where(major > 0, major, 1)) ** 2) * (major > 0)
    _micrometre_columns(table, pixel_size_um)
    return table


def _micrometre_columns(table: dict[str, np.ndarray], pixel_size_um: float | None) -> None:
    px = np.nan if pixel_size_um is None else float(pixel_size_um)
    table["area_um2"][:] = table["area"] * px**2
    for name, source in [("perimeter_um", "perimeter"), ("centroid_y_um", "centroid_y"),
                         ("centroid_x_um", "centroid_x"), ("major_axis_um", "major_axis_length"),
                         ("minor_axis_um", "minor_axis_length")]:  # fmt: skip
        table[name][:] = table[source] * px


def _ellipses(var_y: np.ndarray, var_x: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Major and minor axis lengths and orientations of the ellipses with these second moments."""
    half_gap = np.hypot((var_y - var_x) / 2, cov)
    l1, l2 = (var_y + var_x) / 2 + half_gap, np.maximum((var_y + var_x) / 2 - half_gap, 0.0)
    orientation = 0.5 * np.arctan2(2 * cov, var_y - var_x)
    orientation[orientation <= -np.pi / 2] += np.pi
    return 4 * np.sqrt(l1), 4 * np.sqrt(l2), orientation


def cell_table_reference(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    frame: int = 0,
    pixel_size_um: float | None = None,
) -> dict[str, np.ndarray]:
    """:func:`cell_table` the straightforward way: whole-frame bincounts for sizes, centroids and intensities,
    then one cell at a time in its box for the shape columns (``perimeter_crofton``, a qhull convex hull, the
    moments of its pixels). Same result up to float rounding; kept as the reference the compiled passes are
    tested and timed against (``benchmarks/postprocess.py``)."""
    labels = check_labels(labels)
    if image is not None and np.shape(image) != labels.shape:
        raise ValueError(f"image shape {np.shape(image)} differs from labels shape {labels.shape}")
    ids, dense = dense_labels(labels)
    n = len(ids)
    inside = dense > 0
    index = dense[inside].astype(np.intp, copy=False)
    ys, xs = np.nonzero(inside)
    area = np.bincount(index, minlength=n + 1)[1:]
    table = {name: np.zeros(n, np.int64 if name in _INT_COLUMNS else np.float64) for name in CELL_COLUMNS}
    table["frame"][:] = frame
    table["label"][:] = ids
    table["area"][:] = area
    table["centroid_y"][:] = np.bincount(index, ys, minlength=n + 1)[1:] / np.maximum(area, 1)
    table["centroid_x"][:] = np.bincount(index, xs, minlength=n + 1)[1:] / np.maximum(area, 1)
    table["mean_intensity"][:] = np.nan
    if image is not None:
        values = np.asarray(image)[inside].astype(np.float64)
        table["mean_intensity"][:] = np.bincount(index, values, minlength=n + 1)[1:] / np.maximum(area, 1)
    for name, values in _shape_columns(dense, n).items():   # one cell at a time, in its box
        table[name][:] = values
    _micrometre_columns(table, pixel_size_um)
    return table


SHAPE_COLUMNS = ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "perimeter", "solidity", "major_axis_length",
                 "minor_axis_length", "orientation", "eccentricity")


def _shape_columns(dense: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Boxes, perimeters, solidities and ellipses, one cell at a time in its box (scikit-image's
    ``perimeter_crofton``; :func:`_convex_pixel_count`; :func:`_ellipse`)."""
    out = {name: np.zeros(n, np.int64 if name.startswith("bbox") else np.float64) for name in SHAPE_COLUMNS}
    for i, box in enumerate(ndi.find_objects(dense)):
        rows, cols = box
        out["bbox_y0"][i], out["bbox_x0"][i], out["bbox_y1"][i], out["bbox_x1"][i] = (rows.start, cols.start,
                                                                                        rows.stop, cols.stop)
        mask = dense[box] == i + 1
        out["perimeter"][i] = perimeter_crofton(mask, directions=4)
        out["solidity"][i] = mask.sum() / _convex_pixel_count(mask)
        major, minor, out["orientation"][i] = _ellipse(mask)
        out["major_axis_length"][i], out["minor_axis_length"][i] = major, minor
        out["eccentricity"][i] = np.sqrt(1 - (minor / major) ** 2) if major > 0 else 0.0
    return out


def with_time(table: dict, frame: int, time_s: float | None) -> dict:
    """``table`` (a per-cell table of columns, or a per-frame row) with ``frame`` and ``time_s`` (seconds
    from the movie's first frame; NaN when the interval is unknown) as its first two keys."""
    seconds = float("nan") if time_s is None else float(time_s)
    rest = {k: v for k, v in table.items() if k not in ("frame", "time_s")}
    if isinstance(table.get("frame"), np.ndarray):
        n = len(table["frame"])
        return {"frame": np.full(n, frame, dtype=table["frame"].dtype), "time_s": np.full(n, seconds), **rest}
    return {"frame": frame, "time_s": seconds, **rest}


def frame_table_row(labels: np.ndarray, *, frame: int = 0, pixel_size_um: float | None = None) -> dict[str, float]:
    """Summary of one frame: cell count, confluence and cell areas.

    Parameters
    ----------
    labels : (Y, X) integer array
        Instance labels, 0 is background.
    frame : int
        Value of the ``frame`` key.
    pixel_size_um : float, optional
        Micrometres per pixel; the ``*_um2`` values are NaN without it.

    Returns
    -------
    dict
        Keys :data:`FRAME_COLUMNS`: ``frame`` and ``cell_count`` (int), ``confluence_percent`` = cell
        pixels / frame pixels * 100, ``mean_area`` and ``median_area`` in pixels (NaN with no cells),
        and the areas in um^2.
    """
    labels = check_labels(labels)
    counts = label_areas(labels) if int(labels.max(initial=0)) <= 4 * labels.size else None
    area = (counts[1:][counts[1:] > 0] if counts is not None
            else np.unique(labels[labels > 0], return_counts=True)[1]).astype(np.float64)
    mean, median = (float(area.mean()), float(np.median(area))) if len(area) else (np.nan, np.nan)
    px2 = np.nan if pixel_size_um is None else float(pixel_size_um) ** 2
    return {
        "frame": int(frame),
        "cell_count": len(area),
        "confluence_percent": 100.0 * float(area.sum()) / labels.size if labels.size else 0.0,
        "mean_area": mean,
        "median_area": median,
        "mean_area_um2": mean * px2,
        "median_area_um2": median * px2,
    }


def check_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` as an array, after checking it is a (Y, X) array of non-negative integers."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a (Y, X) integer array, got {labels.dtype} of shape {labels.shape}")
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise ValueError("labels must be >= 0 (0 is background)")
    return labels


def dense_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted nonzero ids, and the labels renumbered 1..N in that order (``labels`` itself if it is)."""
    top = int(labels.max(initial=0))
    if top > 4 * labels.size:  # sparse huge ids: sort instead of a lookup table of size ``top``
        ids, dense = np.unique(labels, return_inverse=True)
        dense = dense.reshape(labels.shape) + (ids[0] != 0 if len(ids) else 0)
        return ids[ids > 0], dense
    ids = np.flatnonzero(label_areas(labels)[1:]) + 1
    if len(ids) == top:
        return ids, labels
    lookup = np.zeros(top + 1, np.intp)
    lookup[ids] = np.arange(1, len(ids) + 1)
    return ids, lookup[labels]


def _ellipse(mask: np.ndarray) -> tuple[float, float, float]:
    """Major and minor axis lengths and orientation of the ellipse with the mask's second moments."""
    ys, xs = np.nonzero(mask)
    dy, dx = ys - ys.mean(), xs - xs.mean()
    var_y, var_x, cov = (dy * dy).mean(), (dx * dx).mean(), (dy * dx).mean() + 0.0  # + 0.0: no -0.0
    half_gap = np.hypot((var_y - var_x) / 2, cov)
    l1, l2 = (var_y + var_x) / 2 + half_gap, max((var_y + var_x) / 2 - half_gap, 0.0)
    orientation = 0.5 * np.arctan2(2 * cov, var_y - var_x)
    if orientation <= -np.pi / 2:
        orientation += np.pi
    return 4 * np.sqrt(l1), 4 * np.sqrt(l2), orientation


def _convex_pixel_count(mask: np.ndarray) -> int:
    """Number of pixel centres inside or on the convex hull of the mask's pixel centres (Pick's theorem)."""
    rows = np.flatnonzero(mask.any(axis=1))
    left = mask[rows].argmax(axis=1)
    right = mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)
    return _hull_pixel_count(rows, left, right)


def _hull_pixel_count(rows: np.ndarray, left: np.ndarray, right: np.ndarray) -> int:
    """Pixel centres inside or on the convex hull of the points ``(rows, left)`` and ``(rows, right)``."""
    points = np.empty((2 * len(rows), 2), np.int64)
    points[: len(rows), 0] = points[len(rows):, 0] = rows
    points[: len(rows), 1], points[len(rows):, 1] = left, right
    try:
        corners = points[ConvexHull(points).vertices]
    except QhullError:  # all centres on one line: the hull is the segment between the extremes
        order = np.lexsort((points[:, 1], points[:, 0]))
        corners = points[order[[0, -1]]]
    after = np.concatenate((corners[1:], corners[:1]))
    steps = after - corners
    boundary = int(np.gcd(steps[:, 0], steps[:, 1]).sum())  # lattice points on the hull's edges
    twice_area = abs(int((corners[:, 0] * after[:, 1] - corners[:, 1] * after[:, 0]).sum()))   # exact, integers
    return (twice_area + boundary) // 2 + 1  # Pick: interior + boundary = A + B/2 + 1
