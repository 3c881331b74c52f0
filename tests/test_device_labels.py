"""The torch labeller (cellsegcli.device_labels) against the CPU labelling: exact where the algorithms are the
same (connected components, orphans, holes, sizes), object F1 >= 0.98 where the flood is quantised, on
synthetic, 'perfect' real and real network probabilities. Runs on CPU torch; tests/test_gpu.py checks CUDA
gives the same labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from cellsegcli.device_labels import connected_components, label_instances_torch
from cellsegcli.instances import clean_instances, interior_target, label_instances
from cellsegcli.metrics import object_scores


def _torch_labels(fg: np.ndarray, interior: np.ndarray, **kw) -> np.ndarray:
    out = label_instances_torch(torch.from_numpy(np.asarray(fg, np.float32)),
                                torch.from_numpy(np.asarray(interior, np.float32)), **kw)
    assert out.dtype == torch.int32
    return out.numpy().astype(np.uint32)


def _perfect(truth: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    fg = ndi.gaussian_filter((truth > 0).astype(np.float32), sigma)
    return fg, ndi.gaussian_filter(interior_target(truth).astype(np.float32), sigma)


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("connectivity", [8, 4])
def test_connected_components_are_ndimage_label(seed: int, connectivity: int) -> None:
    rng = np.random.default_rng(seed)
    mask = ndi.binary_opening(rng.random((90, 130)) < 0.55) | (rng.random((90, 130)) < 0.05)
    mask[40:44, :] = True   # a long component that crosses the frame
    mask[:, 7] = True
    structure = np.ones((3, 3)) if connectivity == 8 else None
    ref, n = ndi.label(mask, structure)
    got = connected_components(torch.from_numpy(mask), connectivity=connectivity).numpy()
    assert len(np.unique(got)) - 1 == n
    # named after the first pixel in raster order: ranks of the names are ndimage's numbers
    ranks = np.searchsorted(np.unique(got), got)
    np.testing.assert_array_equal(ranks, ref)
    first = np.flatnonzero(mask.ravel() & (got.ravel() > 0))[0]
    assert got.ravel()[first] == first + 1


def test_spiral_converges_to_one_component() -> None:
    """A path that winds back (plain minimum propagation needs one step per pixel of it)."""
    mask = np.zeros((61, 61), bool)
    y0, x0, y1, x1 = 0, 0, 60, 60
    while y0 <= y1 and x0 <= x1:
        mask[y0, x0:x1 + 1] = mask[y0:y1 + 1, x1] = mask[y1, x0:x1 + 1] = True
        mask[y0 + 2:y1 + 1, x0] = True
        y0, x0, y1, x1 = y0 + 2, x0 + 2, y1 - 2, x1 - 2
        if y0 <= y1:
            mask[y0, x0 - 2:x0 + 1] = True
    ref, n = ndi.label(mask, np.ones((3, 3)))
    got = connected_components(torch.from_numpy(mask)).numpy()
    assert len(np.unique(got)) - 1 == n
    np.testing.assert_array_equal(np.searchsorted(np.unique(got), got), ref)


def test_two_touching_disks_and_an_orphan() -> None:
    shape = (64, 90)
    truth = np.zeros(shape, np.int32)
    truth[_disk(shape, 20, 20, 10)] = 1
    truth[_disk(shape, 20, 39, 10)] = 2
    truth[_disk(shape, 48, 70, 8)] = 3
    fg = (truth > 0).astype(np.float32)
    interior = interior_target(truth).astype(np.float32)
    interior[truth == 3] = 0.0   # no seed: one instance all the same, numbered after the seeded ones
    got = _torch_labels(fg, interior)
    np.testing.assert_array_equal(got, label_instances(fg, interior))
    assert got.max() == 3 and np.all(got[truth == 3] == 3)


@pytest.mark.parametrize("inner", [0, 6], ids=["background-hole", "instance-in-hole"])
def test_holes_are_filled_unless_asked_to_keep_them(inner: int) -> None:
    shape = (70, 70)
    ring = _disk(shape, 35, 35, 20) & ~_disk(shape, 35, 35, 6)
    core = _disk(shape, 35, 35, inner) if inner else np.zeros(shape, bool)
    fg = (ring | core).astype(np.float32)
    interior = interior_target(np.where(ring, 1, np.where(core, 2, 0))).astype(np.float32)
    filled = _torch_labels(fg, interior)
    np.testing.assert_array_equal(filled, label_instances(fg, interior))
    assert filled.max() == 1 and np.all(filled[_disk(shape, 35, 35, 6)] == 1)
    kept = _torch_labels(fg, interior, holes=True)
    # two fronts meet on flat (binary) interior values: the watershed breaks the tie by arrival, the level
    # flood by distance; the instances match
    assert object_scores(kept, label_instances(fg, interior, holes=True))["f1"] == 1.0
    assert kept.max() == (2 if inner else 1)


def test_an_instance_in_a_hole_with_background_around_it_is_left_alone() -> None:
    """The documented difference: the CPU labelling fills nested holes, the torch one does not."""
    shape = (70, 70)
    ring = _disk(shape, 35, 35, 20) & ~_disk(shape, 35, 35, 8)
    core = _disk(shape, 35, 35, 4)
    fg = (ring | core).astype(np.float32)
    interior = interior_target(np.where(ring, 1, np.where(core, 2, 0))).astype(np.float32)
    got = _torch_labels(fg, interior)
    assert label_instances(fg, interior).max() == 1
    assert got.max() == 2 and np.all(got[core] == 2) and np.all(got[_disk(shape, 35, 35, 8) & ~core] == 0)


def test_open_shapes_and_edge_pieces_are_not_holes() -> None:
    shape = (50, 60)
    c = np.zeros(shape, bool)
    c[10:40, 10:40] = True
    c[18:32, 18:45] = False                   # a bay open to the right
    edge = np.zeros(shape, bool)
    edge[0:12, 45:60] = True
    edge[0:5, 50:55] = False                  # a notch at the frame's edge
    fg = (c | edge).astype(np.float32)
    got = _torch_labels(fg, np.zeros(shape, np.float32))
    np.testing.assert_array_equal(got, label_instances(fg, np.zeros(shape, np.float32)))
    assert (got == 0)[18:32, 18:40].all() and (got == 0)[0:5, 50:55].all()


def test_small_seeds_and_small_instances_go() -> None:
    shape = (60, 80)
    fg = np.zeros(shape, np.float32)
    interior = np.zeros(shape, np.float32)
    fg[_disk(shape, 30, 25, 14)] = 1.0
    interior[_disk(shape, 30, 25, 9)] = 1.0
    interior[30:32, 36:38] = 1.0              # a 4-pixel speck of interior: not a seed of its own
    fg[5:8, 70:73] = 1.0                      # a 9-pixel instance under min_size 20
    for kw in (dict(), dict(min_size=20), dict(min_size=5, threshold=0.3, seed_threshold=0.7)):
        np.testing.assert_array_equal(_torch_labels(fg, interior, **kw), label_instances(fg, interior, **kw))
    # the speck as a seed: two fronts meet on flat interior values (ties broken otherwise, see above)
    got, ref = _torch_labels(fg, interior, min_seed_size=2), label_instances(fg, interior, min_seed_size=2)
    assert got.max() == ref.max() == 3 and object_scores(got, ref)["f1"] == 1.0


def test_empty_and_full_frames() -> None:
    zeros = np.zeros((40, 50), np.float32)
    assert _torch_labels(zeros, zeros).max() == 0
    ones = np.ones((40, 50), np.float32)
    np.testing.assert_array_equal(_torch_labels(ones, ones), label_instances(ones, ones))


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        label_instances_torch(torch.zeros(4, 5), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="levels"):
        label_instances_torch(torch.zeros(4, 5), torch.zeros(4, 5), levels=0)


@pytest.mark.parametrize("seed", range(6))
def test_random_touching_cells_agree_with_the_cpu_labels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (160, 200)
    truth = np.zeros(shape, np.int32)
    for i in range(1, 41):
        truth[_disk(shape, rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.uniform(4, 14))] = i
    fg, interior = _perfect(truth, sigma=rng.uniform(0.5, 2.0))
    interior *= rng.uniform(0.6, 1.0, shape).astype(np.float32)
    ref = label_instances(fg, interior)
    got = _torch_labels(fg, interior)
    assert object_scores(got, ref)["f1"] >= 0.98
    assert np.mean(got == ref) >= 0.995


# --- real frames ---------------------------------------------------------------------------------------


@pytest.mark.data
def test_perfect_probabilities_of_real_cells_agree(shared_data) -> None:
    from skimage.io import imread

    for name in ("set03", "set17", "set31"):
        truth = clean_instances(imread(shared_data / "usiigaci-phase" / "masks" / f"{name}.png"))
        fg, interior = _perfect(truth, sigma=1.5)
        ref, got = label_instances(fg, interior), _torch_labels(fg, interior)
        assert object_scores(got, ref)["f1"] >= 0.99, name
        assert np.mean(got == ref) >= 0.999, name


def _network_probabilities(model_name: str, image: np.ndarray) -> tuple[np.ndarray, dict]:
    from cellsegcli.models import load_models
    from cellsegcli.normalize import normalize
    from cellsegcli.pipeline import SegmentConfig, frame_settings, make_predictor

    model = load_models(model_name)
    config = SegmentConfig(model=model_name)
    predictor, _ = make_predictor(model, torch.device("cpu"), config)
    prob = predictor.predict(normalize(image, model.config.percentiles))
    s = frame_settings(model.config, config)
    return prob, dict(threshold=s.threshold, seed_threshold=s.seed_threshold, min_size=s.min_size, holes=s.holes)


@pytest.mark.data
@pytest.mark.parametrize("model_name", ["phase", "nuclei"])
def test_shipped_models_outputs_agree(shared_data, model_name: str) -> None:
    """The shipped models' probabilities on real frames (a 512x512 Usiigaci crop; the StarDist sample)."""
    import tifffile

    if model_name == "phase":
        from skimage.io import imread

        folder = shared_data / "usiigaci-phase" / "images"
        image = imread(sorted(folder.iterdir())[0])[:512, :512]
    else:
        image = tifffile.imread(shared_data / "stardist-sample" / "img2d.tif")
    prob, kw = _network_probabilities(model_name, image)
    ref = label_instances(prob[0], prob[1], **kw)
    got = _torch_labels(prob[0], prob[1], **kw)
    assert ref.max() > 10
    assert object_scores(got, ref)["f1"] >= 0.98
    assert np.mean(got == ref) >= 0.995


def test_small_instances_are_absorbed_on_the_device_as_on_the_cpu():
    from cellsegcli.device_labels import _absorb_small
    from cellsegcli.instances import absorb_small

    rng = np.random.default_rng(3)
    for trial in range(40):
        labels = ndi.median_filter(rng.integers(0, 12, (40, 48)), 3)
        min_size = int(rng.integers(2, 60))
        cpu = absorb_small(labels, min_size)
        dev = _absorb_small(torch.from_numpy(labels), min_size, 13).numpy()
        assert (cpu == dev).all(), trial
