"""U-Net separation weights: the map against its definition, the weighted loss, and crops that carry it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from cellsegcli.training.augment import Augmentation, random_crop
from cellsegcli.training.border import border_weights
from cellsegcli.training.data import find_pairs, load_sample
from cellsegcli.training.loss import bce_dice_loss, bce_lovasz_loss, weighted_bce


def _brute_force(labels: np.ndarray, w0: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The definition over the whole image: every instance's distance map, the two smallest per pixel."""
    ids = [i for i in np.unique(labels) if i]
    d = np.sort(np.stack([ndi.distance_transform_edt(labels != i) for i in ids]), axis=0)
    total = d[0] + d[1]
    return 1 + w0 * np.exp(-total**2 / (2 * sigma**2)), total


def test_two_cells_a_gap_apart_weigh_the_gap_by_its_width():
    labels = np.zeros((40, 60), np.int32)
    labels[10:30, 5:20], labels[10:30, 26:41] = 1, 2   # columns 20..25 between them (6 px)
    w = border_weights(labels, w0=10, sigma=5)
    # the pixel at x = 22 is 3 px from cell 1 (x = 19) and 4 px from cell 2 (x = 26)
    assert w[20, 22] == pytest.approx(1 + 10 * math.exp(-49 / 50), rel=1e-6)
    # on cell 1's rim facing cell 2: d1 = 0, d2 = 7
    assert w[20, 19] == pytest.approx(1 + 10 * math.exp(-49 / 50), rel=1e-6)
    assert w[20, 5] == 1.0   # the far side, 21 px > 3 sigma from cell 2: cut off (the definition: 1.0015)
    assert np.all(w >= 1) and w.dtype == np.float32
    assert np.argmax(w[20]) in range(19, 27)   # heaviest between the cells


def test_weights_match_the_definition_within_the_cut_off():
    rng = np.random.default_rng(3)
    labels = np.zeros((120, 140), np.int32)
    for i in range(1, 16):
        y, x = rng.integers(0, 110), rng.integers(0, 130)
        labels[y:y + rng.integers(4, 14), x:x + rng.integers(4, 14)] = i
    w0, sigma = 10.0, 4.0
    fast = border_weights(labels, w0=w0, sigma=sigma)
    exact, total = _brute_force(labels, w0, sigma)
    near = total <= 3 * sigma
    assert near.sum() > 500
    np.testing.assert_allclose(fast[near], exact[near], rtol=1e-5)
    assert np.abs(fast - exact).max() <= w0 * math.exp(-4.5) + 1e-5   # what the cut-off may drop


def test_isolated_cells_and_no_weight_give_ones():
    labels = np.zeros((50, 50), np.int32)
    labels[10:20, 10:20] = 1
    assert np.all(border_weights(labels, w0=10) == 1)          # one cell: no second-nearest
    labels[30:40, 30:40] = 2
    assert np.all(border_weights(labels, w0=0) == 1)
    assert np.all(border_weights(np.zeros((8, 8), np.int32)) == 1)
    with pytest.raises(ValueError, match="sigma"):
        border_weights(labels, sigma=0)


def test_weighted_bce_is_the_weighted_mean_and_ones_change_nothing():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn((2, 2, 16, 16), generator=gen)
    targets = (torch.rand((2, 2, 16, 16), generator=gen) > 0.5).float()
    ones = torch.ones((2, 1, 16, 16))
    for loss in (bce_dice_loss, bce_lovasz_loss):
        assert torch.allclose(loss(logits, targets, ones), loss(logits, targets))
    weight = torch.ones((2, 1, 16, 16))
    weight[:, :, :8] = 3.0
    per_pixel = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    expected = (per_pixel[:, :, :8].sum() * 3 + per_pixel[:, :, 8:].sum()) / per_pixel.numel()
    assert torch.allclose(weighted_bce(logits, targets, weight), expected)


def test_crops_carry_the_weights_with_the_geometry(annotate):
    labels = np.zeros((64, 96), np.uint16)
    labels[8:56, 8:46], labels[8:56, 50:88] = 1, 2
    pair = find_pairs(annotate(labels))[0]
    assert load_sample(pair, percentiles=(1.0, 99.8)).weights is None
    sample = load_sample(pair, percentiles=(1.0, 99.8), border_weight=10)
    np.testing.assert_array_equal(sample.weights, border_weights(sample.labels, w0=10))
    stack = torch.from_numpy(sample.stack())
    assert stack.shape == (4, 64, 96)
    assert torch.equal(stack[3], torch.from_numpy(sample.weights))
    # a continuous channel follows the image's geometry and is not thresholded: with the image copied
    # into it (intensity jitter off) the two crops agree
    probe = torch.cat([stack[:3], stack[:1]])
    aug = Augmentation().geometric()
    for seed in range(5):
        crop = random_crop(probe, 32, aug, torch.Generator().manual_seed(seed), continuous=1)
        plain = random_crop(stack[:3], 32, aug, torch.Generator().manual_seed(seed))
        assert torch.equal(crop[:3], plain)                       # image and targets as without the channel
        torch.testing.assert_close(crop[3], crop[0])
        assert torch.equal(torch.unique(crop[1:3]), torch.tensor([0.0, 1.0])) or crop[1:3].max() == 0
