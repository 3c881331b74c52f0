"""Probabilities -> instance labels: exact synthetic cases, and 'perfect' probabilities from real labels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from cellsegcli.instances import clean_instances, fill_holes, interior_target, label_instances


def _disk(shape: tuple[int, int], cy: int, cx: int, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _matched(truth: np.ndarray, pred: np.ndarray, *, iou: float = 0.5) -> int:
    """Number of one-to-one matches with IoU >= iou (overlap matrix + linear-sum assignment)."""
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    t, p = t.reshape(truth.shape), p.reshape(pred.shape)  # 0 stays 0: both contain background
    nt, np_ = t.max() + 1, p.max() + 1
    overlap = np.bincount(t.ravel() * np_ + p.ravel(), minlength=nt * np_).reshape(nt, np_)[1:, 1:]
    union = overlap.sum(1, keepdims=True) + overlap.sum(0, keepdims=True) - overlap
    scores = overlap / union
    rows, cols = linear_sum_assignment(-scores)
    return int((scores[rows, cols] >= iou).sum())


def _f1(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int, int]:
    return _matched(truth, pred), len(np.unique(truth)) - 1, len(np.unique(pred)) - 1


def _perfect(truth: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and interior maps a flawless network would give, softened by a Gaussian."""
    fg = ndi.gaussian_filter((truth > 0).astype(np.float32), sigma)
    interior = ndi.gaussian_filter(interior_target(truth).astype(np.float32), sigma)
    return fg, interior


def _touching(interior: np.ndarray, labels: np.ndarray) -> bool:
    """Whether an interior pixel has an 8-neighbour interior pixel of another instance."""
    ids = np.where(interior, labels.astype(np.int64), -1)
    padded = np.pad(ids, 1, constant_values=-1)
    h, w = ids.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            other = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            if np.any((ids >= 0) & (other >= 0) & (other != ids)):
                return True
    return False


# --- label_instances -------------------------------------------------------------------------------


@pytest.mark.parametrize("seeded", [True, False], ids=["interior", "distance"])
def test_two_touching_disks_separate(disks: np.ndarray, seeded: bool) -> None:
    fg = (disks > 0).astype(np.float32)
    interior = interior_target(disks).astype(np.float32) if seeded else None
    out = label_instances(fg, interior)
    assert out.dtype == np.uint32
    assert out.max() == 3
    assert np.array_equal(out > 0, disks > 0)
    for i in (1, 2, 3):  # each predicted instance lies on one disk, area within 2 px of the truth
        owner = np.bincount(disks[out == i]).argmax()
        assert abs(int((out == i).sum()) - int((disks == owner).sum())) <= 2
        assert np.mean(disks[out == i] == owner) > 0.99


@pytest.mark.parametrize("seeded", [True, False], ids=["interior", "distance"])
def test_single_disk_stays_one(seeded: bool) -> None:
    disk = _disk((48, 48), 24, 24, 15)
    interior = interior_target(disk.astype(np.uint8)).astype(np.float32) if seeded else None
    out = label_instances(disk.astype(np.float32), interior)
    assert np.array_equal(out, disk.astype(np.uint32))


@pytest.mark.parametrize("seeded", [True, False], ids=["interior", "distance"])
def test_empty_foreground_gives_zeros(seeded: bool) -> None:
    fg = np.full((32, 40), 0.2, np.float16)
    out = label_instances(fg, np.ones_like(fg) if seeded else None)
    assert out.dtype == np.uint32 and out.shape == (32, 40) and not out.any()


def test_threshold_is_inclusive_and_float16_accepted() -> None:
    fg = np.zeros((10, 10), np.float16)
    fg[2:5, 2:5] = 0.5
    fg[6:9, 6:9] = 0.49
    out = label_instances(fg)
    assert out.max() == 1 and (out == 1).sum() == 9


def test_min_size_removes_small_objects_and_relabels() -> None:
    fg = np.zeros((40, 40), np.float32)
    fg[1:4, 1:4] = 1  # 9 px
    fg[10:20, 10:20] = 1  # 100 px
    fg[30:32, 30:35] = 1  # 10 px
    out = label_instances(fg, min_size=10)
    assert out.dtype == np.uint32
    assert np.array_equal(np.unique(out), [0, 1, 2])
    assert sorted(np.bincount(out.ravel())[1:]) == [10, 100]
    assert not out[1:4, 1:4].any()


def test_labels_are_consecutive(disks: np.ndarray) -> None:
    fg = (disks > 0).astype(np.float32)
    fg[60:63, 2:5] = 1  # a seedless speck becomes its own instance
    out = label_instances(fg, interior_target(disks).astype(np.float32))
    assert np.array_equal(np.unique(out), np.arange(5))
    assert (out[60:63, 2:5] == out[61, 3]).all() and out[61, 3] > 0


def test_mask_component_without_seed_is_one_instance() -> None:
    fg = (_disk((40, 60), 20, 15, 8) | _disk((40, 60), 20, 45, 8)).astype(np.float32)
    interior = _disk((40, 60), 20, 15, 4).astype(np.float32)  # only the left disk has a seed
    out = label_instances(fg, interior)
    assert out.max() == 2
    assert len(np.unique(out[:, 30:])) == 2  # background + one instance on the right


def test_min_seed_size_ignores_specks() -> None:
    fg = _disk((40, 40), 20, 20, 15).astype(np.float32)
    interior = _disk((40, 40), 20, 20, 6).astype(np.float32)
    interior[20, 32:34] = 1  # a 2-px speck of interior away from the main seed
    assert label_instances(fg, interior).max() == 1
    assert label_instances(fg, interior, min_seed_size=1).max() == 2


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(Y, X\)"):
        label_instances(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="interior shape"):
        label_instances(np.zeros((8, 8)), np.zeros((8, 9)))


# --- interior_target -------------------------------------------------------------------------------


def test_interior_target_keeps_every_instance_apart(disks: np.ndarray) -> None:
    labels = disks.copy()
    labels[40:43, 5:8] = 4  # a 3x3 cell
    labels[10:30, 0] = 5  # a 1-px wide line, all rim: kept whole
    labels[20:23, 30:33] = 6  # a 3x3 cell inside the contact of disks 1 and 2
    interior = interior_target(labels)
    assert interior.dtype == bool
    counts = np.bincount(labels[interior].ravel(), minlength=7)
    assert (counts[1:] > 0).all()
    assert not interior[labels == 0].any()
    assert not _touching(interior, labels)
    # a large disk loses its rim and the pixels closer than `width` (2) to it: radius 8 -> 5 to 6
    assert np.pi * 5**2 < counts[3] < np.pi * 6**2


def test_interior_target_width_and_small_cells() -> None:
    labels = np.zeros((30, 34), np.uint16)
    labels[2:27, 2:27] = 1  # 25 x 25 square
    labels[10:12, 30:32] = 2  # 2 x 2 square: all rim
    labels[0:3, 31:34] = 3  # 3 x 3 square in the corner: the image border is no rim
    interior = interior_target(labels, width=3)
    # rim = distance 0, then keep distance >= 3: the square shrinks by 3 rows/cols on each side
    square = np.argwhere(interior & (labels == 1))
    assert len(square) == 19 * 19
    assert np.array_equal(square.min(0), [5, 5]) and np.array_equal(square.max(0), [23, 23])
    assert interior[labels == 2].sum() == 4  # all-rim cell kept whole
    # d_max = 2 (pixel (0, 33)), so the depth is min(3, 0.5 * 2) = 1: only the rim goes
    assert np.array_equal(interior[0:3, 31:34], [[0, 1, 1], [0, 1, 1], [0, 0, 0]])
    assert not interior_target(np.zeros((5, 5), np.int32)).any()


def test_interior_target_keeps_one_piece_per_cell() -> None:
    labels = np.zeros((20, 40), np.uint8)
    labels[2:18, 2:16] = 1
    labels[2:18, 24:38] = 1
    labels[9:11, 16:24] = 1  # a 2-px neck: erosion cuts the interior in two
    interior = interior_target(labels)
    assert ndi.label(interior, np.ones((3, 3)))[1] == 1


def test_clean_instances_drops_stray_fragments() -> None:
    labels = np.zeros((20, 20), np.uint8)
    labels[2:8, 2:8] = 3
    labels[15:17, 15] = 3  # stray fragment of id 3
    labels[10:14, 2:6] = 7
    labels[14, 6] = 7  # diagonal: same 8-connected piece
    out = clean_instances(labels)
    assert out.dtype == np.uint8
    expected = labels.copy()
    expected[15:17, 15] = 0
    assert np.array_equal(out, expected)
    assert not clean_instances(np.zeros((4, 4), np.uint16)).any()


# --- real data ---------------------------------------------------------------------------------------


def _usiigaci(shared_data, names: list[str]) -> list[np.ndarray]:
    from skimage.io import imread

    return [clean_instances(imread(shared_data / "usiigaci-phase" / "masks" / f"{n}.png")) for n in names]


@pytest.mark.data
def test_perfect_probabilities_recover_usiigaci_cells(shared_data) -> None:
    tp = n_true = n_pred = 0
    for truth in _usiigaci(shared_data, ["set03", "set17"]):
        fg, interior = _perfect(truth, sigma=1.0)
        m, t, p = _f1(truth, label_instances(fg, interior))
        tp, n_true, n_pred = tp + m, n_true + t, n_pred + p
    assert 2 * tp / (n_true + n_pred) >= 0.97  # 0.985 over all 40 frames (1.000 unblurred)


@pytest.mark.data
def test_distance_fallback_on_usiigaci_union(shared_data) -> None:
    truth = _usiigaci(shared_data, ["set03"])[0]
    fg = (truth > 0).astype(np.float32)
    m, t, p = _f1(truth, label_instances(fg))
    merged = _matched(truth, ndi.label(truth > 0, np.ones((3, 3)))[0])
    assert 2 * m / (t + p) >= 0.9  # measured 0.95 over all 40 frames
    assert m > merged  # touching cells: better than the connected components of the union


@pytest.mark.data
def test_perfect_probabilities_recover_stardist_nuclei(shared_data) -> None:
    import tifffile

    truth = clean_instances(tifffile.imread(shared_data / "stardist-sample" / "mask2d.tif"))
    interior = interior_target(truth)
    assert not _touching(interior, truth)
    assert len(np.unique(truth[interior])) == len(np.unique(truth)) - 1
    m, t, p = _f1(truth, label_instances(*_perfect(truth, sigma=1.0)))
    assert 2 * m / (t + p) >= 0.99


def test_instances_take_what_they_enclose_unless_holes_are_asked_for():
    # a ring of foreground (a nucleus whose nucleolus reads as background) around a small seeded island
    shape = (60, 60)
    ring = _disk(shape, 30, 30, 20) & ~_disk(shape, 30, 30, 6)
    island = _disk(shape, 30, 30, 3)
    fg = (ring | island).astype(np.float32)
    interior = (_disk(shape, 30, 30, 20) & ~_disk(shape, 30, 30, 9) | island).astype(np.float32)
    filled = label_instances(fg, interior, min_seed_size=1)
    assert filled.max() == 1                                            # island swallowed, hole filled
    assert (filled > 0).sum() == _disk(shape, 30, 30, 20).sum()
    kept = label_instances(fg, interior, min_seed_size=1, holes=True)
    assert kept.max() == 2 and (kept > 0).sum() == (ring | island).sum()


def test_fill_holes_is_exact_and_leaves_open_shapes_alone():
    from cellsegcli.instances import count_holed, fill_holes

    labels = np.zeros((20, 30), np.uint16)
    labels[2:10, 2:10] = 1
    labels[4:6, 4:6] = 0           # a 4 px hole
    labels[7, 7] = 3               # an instance inside 1
    labels[2:10, 15:25] = 2
    labels[5, 15:20] = 0           # a notch open to the outside: not a hole
    out = fill_holes(labels)
    expected = labels.copy()
    expected[2:10, 2:10] = 1
    assert np.array_equal(out, expected) and out.dtype == labels.dtype
    assert np.array_equal(fill_holes(out), out)
    assert count_holed(labels) == (1, 3)                          # 1 encloses 4 + 1 px of its 64
    assert count_holed(labels, min_fraction=0.1) == (0, 3)


@pytest.mark.data
def test_annotated_cells_of_the_shipped_data_have_no_holes_to_keep(shared_data):
    from cellsegcli.training.data import annotations_have_holes, find_pairs, load_sample

    pairs = find_pairs(shared_data / "usiigaci-phase")[:10]
    samples = [load_sample(p, percentiles=(1.0, 99.8)) for p in pairs]
    assert not annotations_have_holes(samples)
    ring = np.zeros((40, 40), np.uint32)
    ring[5:35, 5:35] = 1
    ring[12:28, 12:28] = 0
    samples[0].labels = ring
    assert annotations_have_holes(samples[:1])


# --- the fast labelling against the reference (the whole-frame watershed) ---------------------------------


def _random_probabilities(seed: int, shape=(160, 200), cells: int = 40):
    """Blurred random disks, many touching, some with a weak interior (orphans), specks of interior."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int32)
    for i in range(1, cells + 1):
        truth[_disk(shape, rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.uniform(4, 14))] = i
    fg, interior = _perfect(truth, sigma=rng.uniform(0.5, 2.0))
    interior *= rng.uniform(0.6, 1.0, shape).astype(np.float32)
    return fg, interior


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("holes", [False, True])
def test_fast_labelling_equals_the_reference(seed: int, holes: bool) -> None:
    from cellsegcli.instances import label_instances_reference

    fg, interior = _random_probabilities(seed)
    for kw in (dict(), dict(threshold=0.3, seed_threshold=0.7, min_size=30, min_seed_size=4)):
        fast = label_instances(fg, interior, holes=holes, **kw)
        ref = label_instances_reference(fg, interior, holes=holes, **kw)
        assert fast.dtype == ref.dtype == np.uint32
        np.testing.assert_array_equal(fast, ref)


@pytest.mark.data
def test_fast_labelling_equals_the_reference_on_real_frames(shared_data) -> None:
    from cellsegcli.instances import label_instances_reference

    for truth in _usiigaci(shared_data, ["set03", "set17"]):
        fg, interior = _perfect(truth, sigma=1.5)
        fast, ref = label_instances(fg, interior, seed_threshold=0.9), label_instances_reference(fg, interior,
                                                                                                 seed_threshold=0.9)
        m, t, p = _f1(ref, fast)
        assert 2 * m / (t + p) >= 0.99 and np.mean(fast == ref) >= 0.999


def test_enclosed_pixels_are_binary_fill_holes() -> None:
    from cellsegcli.instances import _enclosed

    rng = np.random.default_rng(3)
    for _ in range(30):
        own = ndi.binary_opening(rng.random((25, 31)) < 0.6)
        expected = ndi.binary_fill_holes(own) & ~own
        got = _enclosed(own)
        np.testing.assert_array_equal(np.zeros_like(own) if got is None else got, expected)


def test_flood_equals_scikit_image_watershed() -> None:
    """Same labels pixel for pixel, ties included (values on a coarse grid, -0.0 next to 0.0)."""
    from skimage.segmentation import watershed as skimage_watershed

    from cellsegcli.flood import watershed

    rng = np.random.default_rng(11)
    for trial in range(300):
        shape = tuple(int(v) for v in rng.integers(1, 45, 2))
        image = rng.random(shape).astype(np.float32)
        if trial % 3 == 0:
            image = np.round(image * 3).astype(np.float32) / 3 * rng.choice([-1, 1])   # ties, and -0.0
        mask = rng.random(shape) < 0.8
        markers = np.zeros(shape, np.int32)
        k = int(rng.integers(1, 7))
        markers[rng.integers(0, shape[0], k), rng.integers(0, shape[1], k)] = np.arange(1, k + 1)
        if trial % 5 == 0:
            markers = ndi.label(rng.random(shape) < 0.1)[0].astype(np.int32)   # seeds of several pixels
        expected = skimage_watershed(image, markers, mask=mask, connectivity=2)
        np.testing.assert_array_equal(watershed(image, markers, mask), expected)


def test_flood_equals_scikit_image_watershed_on_large_fronts() -> None:
    """Fronts of thousands of pixels, after the markers are out (the radix heap's part, and its growth)."""
    from skimage.segmentation import watershed as skimage_watershed

    from cellsegcli.flood import watershed

    rng = np.random.default_rng(5)
    for trial in range(3):
        image = ndi.gaussian_filter(rng.random((420, 380)), 6).astype(np.float32)
        if trial == 1:
            image = np.round(image * 40).astype(np.float32)   # plateaus
        markers = np.zeros(image.shape, np.int32)
        markers[rng.integers(0, 420, 3), rng.integers(0, 380, 3)] = [1, 2, 3]
        mask = rng.random(image.shape) < (1.0 if trial < 2 else 0.9)
        np.testing.assert_array_equal(watershed(image, markers, mask),
                                      skimage_watershed(image, markers, mask=mask, connectivity=2))


def test_label8_equals_scipy_label_with_8_connectivity() -> None:
    from cellsegcli import regions
    from cellsegcli.regions import label8, label8_regions

    rng = np.random.default_rng(12)
    for trial in range(400):
        shape = tuple(int(v) for v in rng.integers(1, 40, 2))
        mask = rng.random(shape) < rng.uniform(0.05, 0.95)
        if trial % 2:
            mask = ndi.binary_opening(mask) | (rng.random(shape) < 0.05)   # blobs, and specks beside them
        labels, n = label8(mask)
        expected, n_expected = ndi.label(mask, np.ones((3, 3), bool))
        assert labels.dtype == np.int32 and n == n_expected
        np.testing.assert_array_equal(labels, expected)
        _, _, areas, boxes, first = label8_regions(mask)
        assert areas.tolist() == [0] + np.bincount(expected.ravel(), minlength=n + 1)[1:].tolist()
        np.testing.assert_array_equal(boxes, regions.boxes(expected, n))
        assert first.tolist() == [int(np.flatnonzero(expected.ravel() == i)[0]) for i in range(1, n + 1)]
    assert label8(np.zeros((0, 5), bool))[1] == 0


def test_areas_boxes_and_euler_numbers_of_one_pass_equal_skimage() -> None:
    from skimage.measure import regionprops

    from cellsegcli import regions

    rng = np.random.default_rng(9)
    for trial in range(20):
        fg, interior = _random_probabilities(int(rng.integers(0, 1000)), shape=(70, 90), cells=20)
        labels = label_instances(fg, interior, holes=True)
        labels[rng.random(labels.shape) < 0.03] = 0   # holes in many instances, some split into pieces
        n = int(labels.max()) + 2                      # ids past the last are absent
        areas, boxes, euler = regions.areas_boxes_euler(labels, n)
        assert areas.tolist() == np.bincount(labels.ravel(), minlength=n + 1).tolist()
        np.testing.assert_array_equal(boxes, regions.boxes(labels, n))
        for r in regionprops(labels):
            assert euler[r.label - 1] == r.euler_number
            assert tuple(boxes[r.label - 1]) == r.bbox


def test_fill_holes_of_connected_instances_uses_the_euler_number() -> None:
    """``connected=True`` looks only at instances with a hole; same result as looking at all of them."""
    rng = np.random.default_rng(4)
    for _ in range(20):
        fg, interior = _random_probabilities(int(rng.integers(0, 1000)), shape=(90, 110), cells=25)
        labels = label_instances(fg, interior, holes=True)
        labels[rng.random(labels.shape) < 0.02] = 0   # pinholes: one-pixel holes in many instances
        labels = clean_instances(labels)   # one 8-connected piece per instance, as fill_holes assumes
        np.testing.assert_array_equal(fill_holes(labels, connected=True), fill_holes(labels))
    ring = np.zeros((9, 9), np.uint16)
    ring[1:8, 1:8] = 1
    ring[3:6, 3:6] = 0
    ring[4, 4] = 2   # an instance inside the hole of another: swallowed
    np.testing.assert_array_equal(fill_holes(ring, connected=True), np.pad(np.ones((7, 7), np.uint16), 1))


def _fragments() -> np.ndarray:
    labels = np.zeros((20, 30), np.int64)
    labels[2:12, 2:12] = 1        # 100 px
    labels[2:12, 12:14] = 2       # 20 px, borders 1 only
    labels[15:17, 20:22] = 3      # 4 px, borders nothing
    labels[2:12, 16:26] = 4       # 100 px
    labels[5:7, 14:16] = 5        # 4 px, borders 2 (small) on its left and 4 (big) on its right
    return labels


def test_small_instances_join_the_big_neighbour_they_border_or_go():
    from cellsegcli.instances import absorb_small

    labels = _fragments()
    out = absorb_small(labels, 30)
    assert (out[labels == 2] == 1).all()          # a fragment goes back to its cell
    assert (out[labels == 5] == 4).all()          # small neighbours do not count, the big one does
    assert (out[labels == 3] == 3).all()          # isolated: kept for removal
    assert (out[(labels == 1) | (labels == 4)] == labels[(labels == 1) | (labels == 4)]).all()
    assert absorb_small(labels, 0) is labels and absorb_small(labels, 4) is labels   # nothing under 4 px


def test_a_small_instance_between_two_cells_joins_the_longer_border_then_the_lower_id():
    from cellsegcli.instances import absorb_small

    labels = np.zeros((12, 20), np.int64)
    labels[:, :8] = 1
    labels[:, 11:] = 2
    labels[3:9, 8:11] = 3            # 18 px: borders 1 and 2 over 6 rows each
    assert (absorb_small(labels, 20)[labels == 3] == 1).all()
    labels[2, 10] = 3                # one more pixel pair with 2 only (its right neighbours)
    assert (absorb_small(labels, 20)[labels == 3] == 2).all()


def test_label_instances_gives_a_cell_back_its_split_off_piece():
    # one cell whose interior map holds a big seed and a stray small one: the piece the small seed grows
    # is under min_size and joins the cell instead of being erased from it
    labels = np.zeros((40, 40), np.uint16)
    labels[5:35, 5:35] = 1
    fg = (labels > 0).astype(np.float32)
    interior = np.zeros_like(fg)
    interior[8:30, 8:30] = 0.95
    interior[31:34, 31:34] = 0.95     # 9 px seed at the corner...
    interior[30:35, 30:35] = np.maximum(interior[30:35, 30:35], 0.0)
    out = label_instances(fg, interior, seed_threshold=0.9, min_seed_size=4, min_size=100)
    assert out.max() == 1 and (out > 0).sum() == 900
    from cellsegcli.instances import label_instances_reference

    ref = label_instances_reference(fg, interior, seed_threshold=0.9, min_seed_size=4, min_size=100)
    assert (ref == out).all()
    kept = label_instances(fg, interior, seed_threshold=0.9, min_seed_size=4, min_size=0)
    assert kept.max() == 2                                    # without min_size the piece is its own instance
