"""Per-cell and per-frame statistics: analytic shapes, units, empty frames, and scikit-image agreement."""

from __future__ import annotations

import numpy as np
import pytest

from cellsegcli.morphology import CELL_COLUMNS, FRAME_COLUMNS, cell_table, frame_table_row

INT_COLUMNS = {"frame", "label", "area", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"}


def _disk(shape: tuple[int, int], cy: int, cx: int, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _row(table: dict[str, np.ndarray], i: int = 0) -> dict[str, float]:
    return {name: table[name][i] for name in CELL_COLUMNS}


def _brute_convex_count(mask: np.ndarray) -> int:
    """Pixel centres inside or on the hull of the mask's centres: exact integer half-plane tests."""
    from scipy.spatial import ConvexHull

    points = np.argwhere(mask)
    corners = points[ConvexHull(points).vertices]  # counter-clockwise in (row, col) axes
    grid = np.argwhere(np.ones(mask.shape, bool))
    inside = np.ones(len(grid), bool)
    for a, b in zip(corners, np.roll(corners, -1, axis=0)):
        cross = (b[0] - a[0]) * (grid[:, 1] - a[1]) - (b[1] - a[1]) * (grid[:, 0] - a[0])
        inside &= cross >= 0
    if not inside[np.flatnonzero(mask.ravel())].all():  # the other orientation
        inside = np.ones(len(grid), bool)
        for a, b in zip(corners, np.roll(corners, -1, axis=0)):
            cross = (b[0] - a[0]) * (grid[:, 1] - a[1]) - (b[1] - a[1]) * (grid[:, 0] - a[0])
            inside &= cross <= 0
    return int(inside.sum())


@pytest.mark.parametrize("r", [10, 20])
def test_disk(r: int) -> None:
    labels = _disk((2 * r + 11, 2 * r + 13), r + 5, r + 6, r).astype(np.uint16) * 7
    cell = _row(cell_table(labels))
    # the unit squares of its pixels cover the disk of radius r - 1/sqrt(2) and lie in radius r + 1/sqrt(2)
    assert np.pi * (r - 0.5**0.5) ** 2 <= cell["area"] <= np.pi * (r + 0.5**0.5) ** 2
    assert cell["label"] == 7 and cell["frame"] == 0
    assert (cell["centroid_y"], cell["centroid_x"]) == (r + 5, r + 6)
    assert (cell["bbox_y0"], cell["bbox_x0"], cell["bbox_y1"], cell["bbox_x1"]) == (5, 6, 2 * r + 6, 2 * r + 7)
    assert abs(cell["perimeter"] / (2 * np.pi * r) - 1) < 0.04  # Crofton: +3.8 % at r = 10, +1.6 % at 20
    assert cell["eccentricity"] < 1e-6
    assert cell["solidity"] == 1.0  # a digital disk is digitally convex
    assert cell["major_axis_length"] == pytest.approx(cell["minor_axis_length"])
    # equivalent ellipse of a disk: both axes 2 r (4 sqrt(r^2 / 4)), up to the discretisation
    assert cell["major_axis_length"] == pytest.approx(2 * r, rel=0.02)


@pytest.mark.parametrize(("h", "w", "orientation"), [(30, 8, 0.0), (8, 30, np.pi / 2)])
def test_rectangle(h: int, w: int, orientation: float) -> None:
    labels = np.zeros((50, 50), np.int32)
    labels[3 : 3 + h, 5 : 5 + w] = 2
    cell = _row(cell_table(labels))
    assert cell["area"] == h * w
    assert (cell["centroid_y"], cell["centroid_x"]) == (3 + (h - 1) / 2, 5 + (w - 1) / 2)
    assert (cell["bbox_y0"], cell["bbox_x0"], cell["bbox_y1"], cell["bbox_x1"]) == (3, 5, 3 + h, 5 + w)
    # the variance of n consecutive pixel centres is (n^2 - 1) / 12; axis length = 4 sqrt(variance)
    long, short = max(h, w), min(h, w)
    assert cell["major_axis_length"] == pytest.approx(4 * np.sqrt((long**2 - 1) / 12), rel=1e-12)
    assert cell["minor_axis_length"] == pytest.approx(4 * np.sqrt((short**2 - 1) / 12), rel=1e-12)
    assert cell["eccentricity"] == pytest.approx(np.sqrt(1 - (short**2 - 1) / (long**2 - 1)), rel=1e-12)
    assert cell["orientation"] == orientation  # exactly: 0 along rows, +pi/2 (never -pi/2) along columns
    assert cell["solidity"] == 1.0
    assert cell["perimeter"] == pytest.approx(2 * (h + w) - 4, rel=0.03)  # through pixel centres


def test_orientation_convention_diagonals() -> None:
    labels = np.zeros((12, 12), np.uint8)
    idx = np.arange(10)
    labels[idx, idx] = 1  # down-right: from the row axis towards the column axis, +pi/4
    labels[idx, 11 - idx] = 2  # down-left: -pi/4 (the two lines do not cross on a pixel)
    table = cell_table(labels)
    assert table["orientation"] == pytest.approx([np.pi / 4, -np.pi / 4])
    assert table["eccentricity"] == pytest.approx([1.0, 1.0])


def test_pixel_size_scales_areas_and_lengths() -> None:
    labels = np.zeros((40, 40), np.uint32)
    labels[_disk((40, 40), 15, 20, 9)] = 1
    labels[30:36, 2:30] = 3
    plain = cell_table(labels)
    scaled = cell_table(labels, pixel_size_um=0.5)
    for name in CELL_COLUMNS:
        if not name.endswith(("_um", "_um2")):
            assert np.array_equal(plain[name], scaled[name], equal_nan=True), name
    assert np.array_equal(scaled["area_um2"], plain["area"] * 0.25)
    for um, px in [("perimeter_um", "perimeter"), ("centroid_y_um", "centroid_y"), ("centroid_x_um", "centroid_x"),
                   ("major_axis_um", "major_axis_length"), ("minor_axis_um", "minor_axis_length")]:  # fmt: skip
        assert np.array_equal(scaled[um], plain[px] * 0.5), um
        assert np.isnan(plain[um]).all()  # always present, NaN when the pixel size is unknown
    assert np.isnan(plain["area_um2"]).all()


def test_mean_intensity_is_the_analytic_mean() -> None:
    yy, xx = np.mgrid[:30, :40]
    image = (yy + 2 * xx).astype(np.uint16)
    labels = np.zeros((30, 40), np.uint8)
    labels[4:10, 6:20] = 1  # linear image: the mean is the value at the centroid
    labels[_disk((30, 40), 20, 25, 6)] = 2
    table = cell_table(labels, image)
    assert np.array_equal(table["mean_intensity"], table["centroid_y"] + 2 * table["centroid_x"])
    assert table["mean_intensity"][0] == 6.5 + 2 * 12.5
    assert np.isnan(cell_table(labels)["mean_intensity"]).all()


def test_solidity_matches_a_brute_force_hull_count() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = np.zeros((40, 40), bool)
        for cy, cx, r in rng.integers([8, 8, 3], [32, 32, 9], size=(3, 3)):
            mask |= _disk((40, 40), cy, cx, r)
        from skimage.measure import label

        labels = label(mask)  # a few blobs, each non-convex in general
        table = cell_table(labels)
        for i, lab in enumerate(table["label"]):
            assert table["solidity"][i] == table["area"][i] / _brute_convex_count(labels == lab)


def test_degenerate_cells() -> None:
    labels = np.zeros((10, 12), np.uint8)
    labels[1, 1] = 1  # one pixel
    labels[3, 2:9] = 2  # a row
    labels[np.arange(4, 9), np.arange(4, 9)] = 3  # a diagonal line
    table = cell_table(labels)
    assert np.array_equal(table["solidity"], [1.0, 1.0, 1.0])
    assert table["major_axis_length"][0] == 0 and table["eccentricity"][0] == 0 and table["orientation"][0] == 0
    assert table["minor_axis_length"][1] == 0 and table["eccentricity"][1] == 1
    assert table["orientation"][1] == np.pi / 2


def test_ids_need_not_be_consecutive_and_fragments_count() -> None:
    labels = np.zeros((20, 20), np.uint64)
    labels[2:6, 2:6] = 10**12  # huge id
    labels[10:12, 10:15] = 5
    labels[18, 18] = 5  # a stray piece of id 5 counts towards it
    table = cell_table(labels, frame=3)
    assert np.array_equal(table["label"], [5, 10**12])
    assert np.array_equal(table["area"], [11, 16])
    assert np.array_equal(table["frame"], [3, 3])
    assert (table["bbox_y1"][0], table["bbox_x1"][0]) == (19, 19)
    assert table["solidity"][0] < 1


def test_empty_labels_give_typed_empty_columns() -> None:
    table = cell_table(np.zeros((16, 16), np.uint32), np.ones((16, 16)), pixel_size_um=1.0)
    assert tuple(table) == CELL_COLUMNS
    for name, column in table.items():
        assert column.shape == (0,)
        assert column.dtype == (np.int64 if name in INT_COLUMNS else np.float64), name


def test_columns_order_and_dtypes(disks: np.ndarray) -> None:
    table = cell_table(disks, disks.astype(np.float32), frame=2, pixel_size_um=0.3)
    assert tuple(table) == CELL_COLUMNS
    assert all(len(c) == 3 for c in table.values())
    assert all(table[name].dtype == (np.int64 if name in INT_COLUMNS else np.float64) for name in CELL_COLUMNS)
    assert np.array_equal(table["mean_intensity"], [1.0, 2.0, 3.0])


def test_frame_table_row() -> None:
    labels = np.zeros((10, 20), np.uint16)
    labels[0:2, 0:5] = 1  # 10 px
    labels[5:9, 5:10] = 4  # 20 px
    labels[9, 19] = 9  # 1 px
    row = frame_table_row(labels, frame=7, pixel_size_um=2.0)
    assert tuple(row) == FRAME_COLUMNS
    assert row["frame"] == 7 and row["cell_count"] == 3
    assert row["confluence_percent"] == 100.0 * 31 / 200
    assert row["mean_area"] == 31 / 3 and row["median_area"] == 10.0
    assert row["mean_area_um2"] == 4 * 31 / 3 and row["median_area_um2"] == 40.0
    assert np.isnan(frame_table_row(labels)["median_area_um2"])


def test_frame_table_row_without_cells() -> None:
    row = frame_table_row(np.zeros((8, 8), np.uint32), frame=1)
    assert row["cell_count"] == 0 and row["confluence_percent"] == 0.0
    assert all(np.isnan(row[k]) for k in ("mean_area", "median_area", "mean_area_um2", "median_area_um2"))


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="integer"):
        cell_table(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(Y, X\)"):
        frame_table_row(np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=">= 0"):
        cell_table(-np.ones((4, 4), np.int32))
    with pytest.raises(ValueError, match="image shape"):
        cell_table(np.zeros((4, 4), np.uint8), np.zeros((4, 5)))


@pytest.mark.data
def test_agrees_with_scikit_image_on_real_cells(shared_data) -> None:
    import tifffile
    from skimage.io import imread
    from skimage.measure import regionprops_table

    labels = imread(shared_data / "usiigaci-phase" / "masks" / "set07.png")
    image = tifffile.imread(shared_data / "usiigaci-phase" / "images" / "set07.tif")
    ours = cell_table(labels, image)
    props = ("label", "area", "centroid", "bbox", "perimeter_crofton", "axis_major_length", "axis_minor_length",
             "eccentricity", "orientation", "solidity", "intensity_mean")  # fmt: skip
    ref = regionprops_table(labels, image, properties=props)
    pairs = {"label": "label", "area": "area", "centroid_y": "centroid-0", "centroid_x": "centroid-1",
             "bbox_y0": "bbox-0", "bbox_x0": "bbox-1", "bbox_y1": "bbox-2", "bbox_x1": "bbox-3",
             "perimeter": "perimeter_crofton", "major_axis_length": "axis_major_length",
             "minor_axis_length": "axis_minor_length", "eccentricity": "eccentricity",
             "mean_intensity": "intensity_mean"}  # fmt: skip
    for name, key in pairs.items():
        np.testing.assert_allclose(ours[name], ref[key], rtol=1e-9, atol=1e-9, err_msg=name)
    # same angle up to the pi period (the two ends of the range name the same axis)
    turn = np.angle(np.exp(2j * (ours["orientation"] - ref["orientation"])))
    np.testing.assert_allclose(turn, 0, atol=1e-9)
    # our hull passes through pixel centres, scikit-image's through pixel corners: never smaller
    assert (ours["solidity"] >= ref["solidity"] - 1e-12).all() and (ours["solidity"] <= 1).all()


# --- the compiled passes against the per-cell reference ------------------------------------------------------


def _compare_tables(labels: np.ndarray, image: np.ndarray | None) -> None:
    from cellsegcli.morphology import cell_table_reference

    ours, ref = cell_table(labels, image), cell_table_reference(labels, image)
    for name in CELL_COLUMNS:
        assert ours[name].dtype == ref[name].dtype, name
        if name in ("orientation",):   # the same axis may read -pi/2 + e or pi/2 - e: compare as angles mod pi
            turn = np.angle(np.exp(2j * (ours[name] - ref[name])))
            np.testing.assert_allclose(turn, 0, atol=1e-9, err_msg=name)
        else:
            np.testing.assert_allclose(ours[name], ref[name], rtol=1e-9, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint32, np.int64, np.uint64])
def test_compiled_table_equals_the_per_cell_reference(dtype) -> None:
    """Noise labels: cells in pieces, with holes, one pixel, one row, touching the frame edge, every dtype."""
    rng = np.random.default_rng(int(np.dtype(dtype).itemsize))
    for _ in range(60):
        shape = tuple(int(v) for v in rng.integers(1, 40, 2))
        labels = rng.integers(0, rng.integers(2, 9), shape).astype(dtype)
        _compare_tables(labels, rng.random(shape) if rng.random() < 0.7 else None)


def test_compiled_table_on_sparse_huge_ids_and_blobs() -> None:
    from scipy import ndimage as ndi

    rng = np.random.default_rng(5)
    blobs, _ = ndi.label(ndi.gaussian_filter(rng.random((300, 260)), 4) > 0.5)
    _compare_tables(blobs, rng.random(blobs.shape).astype(np.float32))
    huge = np.where(blobs > 0, blobs.astype(np.uint64) * 10**12, 0).astype(np.uint64)   # the np.unique path
    _compare_tables(huge, None)
    big = np.zeros((2100, 1500), np.uint16)
    big[3:2099, 2:1499] = 7   # one cell of 3.1 M pixels: the float branch of the moments
    _compare_tables(big, None)


@pytest.mark.data
def test_compiled_table_equals_the_reference_on_real_cells(shared_data) -> None:
    import tifffile
    from skimage.io import imread

    for name in ("set07", "set31"):
        labels = imread(shared_data / "usiigaci-phase" / "masks" / f"{name}.png")
        _compare_tables(labels, tifffile.imread(shared_data / "usiigaci-phase" / "images" / f"{name}.tif"))
