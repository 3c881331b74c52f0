"""Clump splitting (cellsegcli.declump): seeds that run together in a clump part at higher interior levels;
textured objects of a typical size are left whole."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cellsegcli import declump
from cellsegcli.instances import label_instances, label_instances_reference

SHAPE = (96, 160)


def _bump(centre: tuple[float, float], radius: float) -> np.ndarray:
    """0.99 (1 - (d / r)^2) inside the disk, 0 outside: an interior map that peaks at the centre."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    d2 = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / radius**2
    return np.clip(0.99 * (1 - d2), 0, None).astype(np.float32)


def _scene():
    """Four isolated nuclei of radius 8 (the typical object), a pair of radius-10 nuclei pressed together
    (centres 16 px apart: their interior dips to 0.36 between them, above a seed threshold of 0.3), and one
    isolated radius-10 nucleus whose interior has two bright spots 8 px apart (it dips to 0.66 between them).
    Returns the cell map, the interior map and the truth."""
    truth = np.zeros(SHAPE, np.int32)
    interior = np.zeros(SHAPE, np.float32)
    cells = [((20, 20), 8), ((20, 60), 8), ((75, 20), 8), ((75, 60), 8), ((48, 100), 10), ((48, 116), 10)]
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    for i, (c, r) in enumerate(cells, start=1):   # where two disks overlap, the nearer centre's
        bump = _bump(c, r)
        truth[bump > interior] = i
        interior = np.maximum(interior, bump)
    textured = (yy - 20) ** 2 + (xx - 140) ** 2 <= 100
    truth[textured] = len(cells) + 1
    interior = np.maximum(interior, np.maximum(_bump((20, 136), 8), _bump((20, 144), 8)) * textured)
    return (truth > 0).astype(np.float32), interior, truth


def _best_iou(labels: np.ndarray, truth: np.ndarray, truth_id: int) -> float:
    cell = truth == truth_id
    own = labels == np.bincount(labels[cell]).argmax()
    return (own & cell).sum() / (own | cell).sum()


def test_ladder_is_logit_steps_above_the_seed_threshold():
    levels = declump.ladder(0.5, top=1.0)
    assert len(levels) == round(declump.SPAN / declump.STEP)
    assert levels == pytest.approx([1 / (1 + math.exp(-declump.STEP * k)) for k in range(1, len(levels) + 1)])
    assert declump.ladder(0.3)[0] == pytest.approx(1 / (1 + math.exp(-(math.log(0.3 / 0.7) + 0.5))))
    assert declump.ladder(1.0) == [] and declump.ladder(0.5, span=1.0, step=0.5) == pytest.approx(levels[:2])


def test_ladder_stops_at_the_top_level():
    # seed 0.3 climbs 4 logits to 0.959, under the top: all 8 levels; seed 0.5 would reach 0.982: 7 levels;
    # seed 0.9 reaches 0.9994 uncapped: only 0.937, 0.961 and 0.976 stay; a seed at the top has no ladder
    assert len(declump.ladder(0.3)) == 8 and max(declump.ladder(0.3)) == pytest.approx(0.9590, abs=1e-4)
    assert declump.ladder(0.5) == pytest.approx(declump.ladder(0.5, top=1.0)[:7])
    assert declump.ladder(0.9) == pytest.approx([0.9369, 0.9607, 0.9758], abs=1e-4)
    assert all(level <= declump.TOP for level in declump.ladder(0.9)) and declump.TOP == 0.98
    assert declump.ladder(0.98) == [] and declump.ladder(0.99) == []


def test_clumps_are_twice_the_median_of_the_objects_at_least_min_size():
    areas = np.array([0, 100, 100, 100, 250, 199, 200, 10, 12])
    # typical object: median of 100, 100, 100, 250, 199, 200 (the specks under 20 px do not count) = 149.5
    assert declump.clump_mask(areas, 20).tolist() == [False, False, False, False, False, False, False, False, False]
    assert declump.clump_mask(areas, 20, ratio=1.3).tolist() == [False] * 4 + [True, True, True, False, False]
    assert not declump.clump_mask(np.array([0, 5, 5]), 20).any()   # no object of the smallest size: no clump
    assert not declump.clump_mask(np.array([0]), 0).any()


def test_pressed_nuclei_part_and_a_textured_nucleus_stays_whole():
    fg, interior, truth = _scene()
    kw = dict(threshold=0.5, seed_threshold=0.3, min_size=32)
    plain = label_instances(fg, interior, **kw)
    split = label_instances(fg, interior, split_clumps=True, **kw)
    assert plain.max() == 6 and len(np.unique(plain[(truth == 5) | (truth == 6)])) == 1   # the pair merged
    assert split.max() == 7 and min(_best_iou(split, truth, i) for i in range(1, 8)) > 0.95   # every nucleus back
    assert len(np.unique(split[truth == 7])) == 1   # the textured nucleus is no clump: it stays one
    assert ((split > 0) == (plain > 0)).all()   # splitting never changes the foreground


def test_without_the_clump_gate_the_textured_nucleus_would_break():
    _, interior, truth = _scene()
    blob = (interior >= 0.3) & (truth == 7)
    parts = declump.split_blob(interior, blob, declump.ladder(0.3), 32)
    assert len(parts) == 2   # the gate, not the ladder, keeps it whole
    assert all(p.sum() >= 32 and not (p & ~blob).any() for p in parts)


def test_split_blob_recurses_and_ignores_small_pieces():
    yy, xx = np.mgrid[:40, :120]
    interior = np.zeros((40, 120), np.float32)
    for cx in (20, 60, 100):   # three peaks; the middle one parts from its neighbours at a higher level
        interior = np.maximum(interior, 0.99 * np.clip(1 - ((yy - 20) ** 2 + (xx - cx) ** 2) / 24**2, 0, None))
    blob = interior >= 0.3
    parts = declump.split_blob(interior, blob, declump.ladder(0.3), 16)
    assert len(parts) == 3 and [int(np.argwhere(p)[:, 1].mean()) for p in parts] == [20, 60, 100]
    assert len(declump.split_blob(interior, blob, declump.ladder(0.3), 10_000)) == 1   # pieces too small


def test_fast_labelling_equals_the_reference_with_clumps_split():
    fg, interior, _ = _scene()
    rng = np.random.default_rng(0)
    noisy = interior * rng.uniform(0.7, 1.0, interior.shape).astype(np.float32)
    for kw in (dict(seed_threshold=0.3, min_size=32), dict(seed_threshold=0.4, min_size=0, min_seed_size=4)):
        for m in (interior, noisy):
            fast = label_instances(fg, m, split_clumps=True, **kw)
            ref = label_instances_reference(fg, m, split_clumps=True, **kw)
            # the same instances in the same order; on a flood's tie (equal interior on both sides of this
            # symmetric scene's parting line) the two may give a pixel to either side
            assert fast.max() == ref.max() and np.mean(fast == ref) >= 0.999
            assert all(np.bincount(fast[ref == i]).argmax() == i for i in range(1, int(ref.max()) + 1))


def test_models_carry_the_choice_and_the_option_overrides_it(tmp_path):
    import dataclasses

    from cellsegcli.errors import CellsegError
    from cellsegcli.models import ModelConfig
    from cellsegcli.pipeline import SegmentConfig, frame_settings, label_frame

    mc = ModelConfig(name="m", architecture="resnet18-unet", seed_threshold=0.3, min_size=32, split_clumps=True)
    assert ModelConfig.from_dict(mc.to_dict()).split_clumps is True
    with pytest.raises(CellsegError, match="split_clumps"):
        ModelConfig.from_dict({**mc.to_dict(), "split_clumps": "yes"})
    fg, interior, truth = _scene()
    prob = np.stack([fg, interior])
    on = frame_settings(mc, SegmentConfig())
    off = frame_settings(mc, SegmentConfig(split_clumps=False))
    assert on.split_clumps and not off.split_clumps
    assert label_frame(prob, on).max() == 7 and label_frame(prob, off).max() == 6
    assert not frame_settings(dataclasses.replace(mc, split_clumps=False), SegmentConfig()).split_clumps


def test_calibration_chooses_clump_splitting_where_it_scores():
    from cellsegcli.calibrate import best, sweep

    fg, interior, truth = _scene()
    maps, truths = [np.stack([fg, interior])], [truth]
    settings = sweep(maps, truths, min_size=32, thresholds=[0.5], seed_thresholds=[0.3], splits=(False, True))
    assert [s.split_clumps for s in settings] == [False, True]
    assert settings[1].f1 == 1.0 and settings[0].f1 < 1.0
    assert best(settings, (0.5, 0.3, False), margin=0.01).split_clumps
    # a one-channel model has nothing to split: only False is tried
    assert [s.split_clumps for s in sweep([fg[None]], truths, thresholds=[0.5], splits=(False, True))] == [False]
    # where both score the same, the current choice stays
    same = sweep([np.stack([fg, interior])], [np.where(truth == 6, 5, truth)], min_size=32, thresholds=[0.5],
                 seed_thresholds=[0.9], splits=(False, True))
    assert same[0].objective == same[1].objective
    assert best(same, (0.5, 0.9, False)).split_clumps is False and best(same, (0.5, 0.9, True)).split_clumps


def test_the_device_labelling_splits_clumps_as_the_cpu_does():
    import torch

    from cellsegcli.device_labels import label_instances_torch
    from cellsegcli.metrics import object_scores

    fg, interior, truth = _scene()
    rng = np.random.default_rng(1)
    noisy = interior * rng.uniform(0.7, 1.0, interior.shape).astype(np.float32)
    for m in (interior, noisy):
        for split in (False, True):
            cpu = label_instances(fg, m, seed_threshold=0.3, min_size=32, split_clumps=split)
            dev = label_instances_torch(torch.from_numpy(fg), torch.from_numpy(m), seed_threshold=0.3, min_size=32,
                                        split_clumps=split).numpy()
            assert dev.max() == cpu.max() == (7 if split else 6)
            assert object_scores(dev, cpu)["f1"] == 1.0
    assert label_instances_torch(torch.from_numpy(fg), torch.zeros_like(torch.from_numpy(fg)),
                                 split_clumps=True).max() == 6   # no seeds: each component is one instance
