"""Per-cell and per-frame statistics from instance labels, as plain dicts of columns.

Lengths and areas are in pixels; the ``*_um`` / ``area_um2`` columns give them in micrometres when the
pixel size is known and are NaN otherwise, so a table's columns never depend on the file's metadata.
Orientation follows scikit-image: the angle (radians, -pi/2..pi/2) between the row axis and the major
axis, counter-clockwise.
"""

from __future__ import annotations

import numpy as np

CELL_COLUMNS: tuple[str, ...] = (
    "frame", "label", "area", "perimeter", "centroid_y", "centroid_x", "bbox_y0", "bbox_x0", "bbox_y1",
    "bbox_x1", "eccentricity", "solidity", "major_axis_length", "minor_axis_length", "orientation",
    "mean_intensity", "area_um2", "perimeter_um", "centroid_y_um", "centroid_x_um", "major_axis_um",
    "minor_axis_um",
)
FRAME_COLUMNS: tuple[str, ...] = (
    "frame", "cell_count", "confluence_percent", "mean_area", "median_area", "mean_area_um2", "median_area_um2",
)

_PROPS = ("label", "area", "perimeter", "centroid", "bbox", "eccentricity", "solidity", "axis_major_length",
          "axis_minor_length", "orientation")


def cell_table(labels: np.ndarray, image: np.ndarray | None = None, *, frame: int = 0,
               pixel_size_um: float | None = None) -> dict[str, np.ndarray]:
    """One row per cell of ``labels`` (Y, X) integer array, 0 = background; ``image`` (Y, X) gives the mean
    intensity. Returns the columns of :data:`CELL_COLUMNS` (length 0 when there are no cells)."""
    from skimage.measure import regionprops_table

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (Y, X), got shape {labels.shape}")
    if labels.max(initial=0) == 0:
        cols = {c: np.zeros(0, np.float64) for c in CELL_COLUMNS}
        for c in ("frame", "label", "area", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"):
            cols[c] = np.zeros(0, np.int64)
        return cols
    props = regionprops_table(labels, properties=_PROPS)
    n = len(props["label"])
    px = float(pixel_size_um) if pixel_size_um else np.nan
    if image is not None:
        ids = labels.ravel()
        sums = np.bincount(ids, weights=np.asarray(image, dtype=np.float64).ravel())
        mean_intensity = sums[props["label"]] / props["area"]
    else:
        mean_intensity = np.full(n, np.nan)
    cols = {
        "frame": np.full(n, frame, np.int64),
        "label": props["label"].astype(np.int64),
        "area": props["area"].astype(np.int64),
        "perimeter": props["perimeter"],
        "centroid_y": props["centroid-0"],
        "centroid_x": props["centroid-1"],
        "bbox_y0": props["bbox-0"].astype(np.int64),
        "bbox_x0": props["bbox-1"].astype(np.int64),
        "bbox_y1": props["bbox-2"].astype(np.int64),
        "bbox_x1": props["bbox-3"].astype(np.int64),
        "eccentricity": props["eccentricity"],
        "solidity": props["solidity"],
        "major_axis_length": props["axis_major_length"],
        "minor_axis_length": props["axis_minor_length"],
        "orientation": props["orientation"],
        "mean_intensity": mean_intensity,
    }
    cols["area_um2"] = cols["area"] * px * px
    cols["perimeter_um"] = cols["perimeter"] * px
    cols["centroid_y_um"] = cols["centroid_y"] * px
    cols["centroid_x_um"] = cols["centroid_x"] * px
    cols["major_axis_um"] = cols["major_axis_length"] * px
    cols["minor_axis_um"] = cols["minor_axis_length"] * px
    return {c: cols[c] for c in CELL_COLUMNS}


def frame_table_row(labels: np.ndarray, *, frame: int = 0, pixel_size_um: float | None = None) -> dict[str, float]:
    """Per-frame summary of ``labels`` (Y, X): cell count, confluence %, mean and median cell area."""
    labels = np.asarray(labels)
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    px2 = float(pixel_size_um) ** 2 if pixel_size_um else np.nan
    mean = float(areas.mean()) if len(areas) else np.nan
    median = float(np.median(areas)) if len(areas) else np.nan
    return {
        "frame": int(frame),
        "cell_count": int(len(areas)),
        "confluence_percent": 100.0 * float((labels > 0).sum()) / labels.size,
        "mean_area": mean,
        "median_area": median,
        "mean_area_um2": mean * px2,
        "median_area_um2": median * px2,
    }
