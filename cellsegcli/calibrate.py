"""Post-processing chosen on annotated frames: the cell and seed thresholds of a model.

A network's probabilities are only half of a segmentation; the cell threshold decides how far each
outline reaches and the seed (interior) threshold how touching cells are split. Like nnU-Net's
post-processing step, :func:`calibrate` runs the model once over annotated frames, then tries every
pair of thresholds on a small grid through :func:`~cellsegcli.instances.label_instances`, for a two-channel
model each with and without clump splitting (:mod:`cellsegcli.declump`), and keeps the setting with the best
mean of pixel Jaccard and object F1 at IoU 0.5 (the two figures a lab reads first). With ``sizes``, the smallest
cell kept (``min_size``) is then chosen the same way at that setting, among shares of the typical cell's area
(:data:`SIZE_FRACTIONS`) and the model's current size; when the size changes, the thresholds are chosen again
at it (and the size again at those, up to :data:`ROUNDS` times), so calibrating twice changes nothing. Ties go
to the setting nearest the model's current one, which stays unless the best beats it by ``MARGIN`` (a few
frames must not talk a good model out of its thresholds). ``cellseg train`` calibrates on its validation frames, where nothing current was chosen (the
thresholds are the defaults or the ``--init`` model's, the size the annotations' rule of thumb), so nothing has a
margin (``margin=0, size_margin=0``; held out on the nuclei folds, docs/measurements.md "Clumps": F1 0.808 ->
0.815); ``cellseg calibrate MODEL FOLDER`` does it on any annotated folder and keeps the margin for the model's
thresholds and size.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
# a model's thresholds change only when the frames gain this much in the objective: on the phase model's 8
# validation frames, re-choosing on 1-4 of them lost 0.007-0.018 on the others without a margin, 0.000-0.008
# with it, while an uncalibrated model still gained 0.05-0.09 from a single frame (README, Training)
MARGIN = 0.01
SEED_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# candidate smallest cells, as shares of the area of a disk of the model's cell diameter: fragments of cells
# and debris are most of a phase model's false positives (on fold 3 of the 4-fold phase cross-validation, the
# objects under 600 px were 122 of its 238 false positives and 21 of its 564 true cells; the annotations'
# own minimum there was 120 px, 0.05 of the typical cell). Held out, the phase folds' best shares were 0.2-0.35
# and the nuclei folds' 0.1 (docs/measurements.md, "The smallest cell"): steps of 0.05 up to 0.4
SIZE_FRACTIONS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
# thresholds are chosen at a size and the size at those thresholds; a new size sweeps the thresholds again, at
# most this many times: chosen at the model's size alone, a phase fold moved its seed (0.9 -> 0.8) when
# calibrated a second time, at the size the first time had chosen
ROUNDS = 3


@dataclass(frozen=True)
class Setting:
    """One (threshold, seed threshold) pair and its mean scores over the frames."""

    threshold: float
    seed_threshold: float
    jaccard: float
    f1: float
    mean_ap: float
    min_size: int | None = None   # the smallest cell kept, in the frames' pixels (None: not swept)
    split_clumps: bool = False    # seeds in clumps split at higher interior levels (declump.py)

    @property
    def objective(self) -> float:
        return (self.jaccard + self.f1) / 2

    def as_dict(self) -> dict[str, float]:
        size = {} if self.min_size is None else {"min_size": self.min_size}
        return {"threshold": self.threshold, "seed_threshold": self.seed_threshold, **size,
                "split_clumps": self.split_clumps, "jaccard": round(self.jaccard, 5), "f1": round(self.f1, 5),
                "mean_ap": round(self.mean_ap, 5), "objective": round(self.objective, 5)}


def sweep(maps: Sequence[np.ndarray], truths: Sequence[np.ndarray], *, min_size: int = 0, holes: bool = False,
          thresholds: Iterable[float] = THRESHOLDS, seed_thresholds: Iterable[float] = SEED_THRESHOLDS,
          splits: Iterable[bool] = (False,), progress: Callable[..., None] | None = None) -> list[Setting]:
    """Mean scores of every threshold pair (and clump-splitting choice) over annotated frames.

    Parameters
    ----------
    maps : sequence of (K, Y, X) float arrays
        Probabilities per frame; channel 0 the cell, channel 1 (when present) the interior.
    truths : sequence of (Y, X) integer arrays
        Ground-truth instance labels (or binary masks) of the same frames.
    splits : iterable of bool
        ``split_clumps`` values to try with each pair (only False for a one-channel model).
    """
    from .instances import label_instances
    from .metrics import frame_scores

    if len(maps) != len(truths) or not maps:
        raise ValueError(f"need as many probability maps as ground truths, and at least one "
                         f"({len(maps)} vs {len(truths)})")
    thresholds = list(thresholds)
    two = any(m.shape[0] > 1 for m in maps)
    seeds = list(seed_thresholds) if two else [0.5]
    splits = list(splits) if two else [False]
    settings = []
    total = len(thresholds) * len(seeds) * len(splits)
    for t in thresholds:
        for s in seeds:
            for split in splits:
                rows = []
                for prob, gt in zip(maps, truths, strict=True):
                    labels = label_instances(prob[0], prob[1] if prob.shape[0] > 1 else None, threshold=t,
                                             seed_threshold=s, min_size=min_size, holes=holes, split_clumps=split)
                    rows.append(frame_scores(labels, gt))
                settings.append(Setting(t, s, *(float(np.mean([r[k] for r in rows]))
                                                for k in ("jaccard", "f1", "mean_ap")), split_clumps=split))
                if progress is not None:
                    progress(len(settings), total)
    return settings


def sweep_sizes(maps: Sequence[np.ndarray], truths: Sequence[np.ndarray], sizes: Iterable[int], *,
                threshold: float, seed_threshold: float, holes: bool = False, split_clumps: bool = False,
                progress: Callable[..., None] | None = None) -> list[Setting]:
    """Mean scores of each smallest-cell size over annotated frames, at one threshold pair (see :func:`sweep`)."""
    from .instances import label_instances
    from .metrics import frame_scores

    if len(maps) != len(truths) or not maps:
        raise ValueError(f"need as many probability maps as ground truths, and at least one "
                         f"({len(maps)} vs {len(truths)})")
    sizes = list(sizes)
    settings = []
    for size in sizes:
        rows = [frame_scores(label_instances(prob[0], prob[1] if prob.shape[0] > 1 else None, threshold=threshold,
                                             seed_threshold=seed_threshold, min_size=size, holes=holes,
                                             split_clumps=split_clumps), gt)
                for prob, gt in zip(maps, truths, strict=True)]
        settings.append(Setting(threshold, seed_threshold, *(float(np.mean([r[k] for r in rows]))
                                                             for k in ("jaccard", "f1", "mean_ap")), min_size=size,
                                split_clumps=split_clumps))
        if progress is not None:
            progress(len(settings), len(sizes))
    return settings


def best_size(settings: Sequence[Setting], current: int, *, margin: float = 0.0) -> Setting:
    """The size with the highest objective; ties go to the one nearest ``current`` (by ratio), which stays
    unless the best beats it by at least ``margin``."""
    def distance(s: Setting) -> float:
        return abs(math.log(max(s.min_size, 1) / max(current, 1)))

    top = max(settings, key=lambda s: (round(s.objective, 9), -distance(s)))
    kept = [s for s in settings if s.min_size == current]
    if kept and top.objective - kept[0].objective < margin:
        return kept[0]
    return top


def best(settings: Sequence[Setting], default: tuple = (0.5, 0.5), *, margin: float = 0.0) -> Setting:
    """The setting with the highest objective; ties (to 1e-9) go to the one nearest ``default`` (threshold,
    seed threshold and optionally split_clumps, which counts 1 when it differs), and the ``default`` setting
    itself (when swept) stays unless the best beats it by at least ``margin``."""
    def distance(s: Setting) -> float:
        split = float(s.split_clumps != default[2]) if len(default) > 2 else 0.0
        return math.hypot(s.threshold - default[0], s.seed_threshold - default[1]) + split

    top = max(settings, key=lambda s: (round(s.objective, 9), -distance(s)))
    current = [s for s in settings if distance(s) < 1e-9]
    if current and top.objective - current[0].objective < margin:
        return current[0]
    return top


@dataclass
class Calibration:
    chosen: Setting
    current: Setting
    settings: list[Setting]
    n_frames: int
    tta: str
    diameter: float | None = None   # the --diameter the frames were segmented with (None: as given)
    size_settings: list[Setting] = dataclasses.field(default_factory=list)   # with sizes: the sizes tried
    model_min_size: int | None = None   # the chosen smallest cell in the model's own pixels (None: not chosen)
    size_margin: float = MARGIN         # what the best size had to gain over the model's current one
    margin: float = MARGIN              # what the best thresholds had to gain over the model's current ones

    def record(self) -> dict:
        """What a model's provenance keeps of the calibration."""
        sizes = {} if self.model_min_size is None else {"sizes": {
            "fractions_of_cell_area": list(SIZE_FRACTIONS), "tried": [s.min_size for s in self.size_settings],
            "margin": self.size_margin, "model_min_size": self.model_min_size}}
        return {"frames": self.n_frames, "tta": self.tta, "diameter": self.diameter,
                "objective": "mean of pixel Jaccard and F1@0.5", "margin": self.margin,
                "before": self.current.as_dict(), "after": self.chosen.as_dict(), **sizes}


def calibrate_samples(model, samples, device, *, tta: str = "none", diameter: float | None = None,
                      sizes: bool = False, margin: float = MARGIN, size_margin: float = MARGIN,
                      progress: Callable[..., None] | None = None) -> Calibration:
    """Choose ``model``'s thresholds on annotated samples (``training.data.Sample``), with its
    probabilities computed as ``cellseg segment [--diameter D]`` computes them on ``device``; they replace the
    model's current ones when they gain at least ``margin``. With ``sizes`` (and a model that records its cell
    diameter) then its smallest cell kept, which replaces the model's current one when it gains at least
    ``size_margin``. (Both 0 where the current setting was never chosen.)"""
    from .pipeline import SegmentConfig, frame_settings, input_scale, make_predictor

    config = model.config
    segment = SegmentConfig(tta=tta, diameter=diameter)
    predictor, _ = make_predictor(model, device, segment)
    maps = list(predictor.predict_stream(s.image for s in samples))
    truths = [s.labels for s in samples]
    binary = len(config.outputs) == 1   # sweep() then tries the cell threshold only
    min_size = frame_settings(config, segment).min_size
    candidates: list[int] = []
    if sizes and config.diameter:
        scale = input_scale(config, diameter)
        area = math.pi / 4 * (config.diameter / scale) ** 2   # a typical cell, in the frames' pixels
        candidates = sorted({min_size, *(max(1, round(f * area)) for f in SIZE_FRACTIONS)})
    thresholds = sorted({*THRESHOLDS, config.threshold})
    seeds = sorted({*SEED_THRESHOLDS, config.seed_threshold})
    splits = (False,) if binary else (False, True)
    total = len(thresholds) * (1 if binary else len(seeds) * len(splits)) + len(candidates)
    done = 0   # settings tried so far, for ``progress``
    hook = None if progress is None else (lambda d, _: progress(done + d, total))

    def thresholds_at(size: int) -> list[Setting]:
        nonlocal done
        tried = sweep(maps, truths, min_size=size, holes=config.holes, thresholds=thresholds, seed_thresholds=seeds,
                      splits=splits, progress=hook)
        done += len(tried)
        return tried

    def sizes_at(at: Setting) -> list[Setting]:
        nonlocal done
        tried = sweep_sizes(maps, truths, candidates, threshold=at.threshold, seed_threshold=at.seed_threshold,
                            holes=config.holes, split_clumps=at.split_clumps, progress=hook)
        done += len(tried)
        return tried

    settings = thresholds_at(min_size)
    current = next(s for s in settings if s.threshold == config.threshold
                   and (binary or s.seed_threshold == config.seed_threshold)
                   and s.split_clumps == (config.split_clumps and not binary))
    default = (current.threshold, current.seed_threshold, current.split_clumps)
    chosen = best(settings, default, margin=margin)
    if not candidates:
        return Calibration(chosen, current, settings, len(samples), tta, diameter, margin=margin)
    size_at = min_size
    for _ in range(ROUNDS):   # thresholds and size in turn, until neither moves the other
        size_settings = sizes_at(chosen)
        sized = best_size(size_settings, min_size, margin=size_margin)
        if sized.min_size == size_at:
            break
        size_at, total = sized.min_size, total + len(settings) + len(candidates)
        settings = thresholds_at(size_at)
        again = best(settings, default, margin=margin)
        if (again.threshold, again.seed_threshold, again.split_clumps) == (
                chosen.threshold, chosen.seed_threshold, chosen.split_clumps):
            break
        chosen = again
    chosen = sized
    current = dataclasses.replace(current, min_size=min_size)
    model_min_size = config.min_size if chosen.min_size == min_size else round(chosen.min_size * scale**2)
    return Calibration(chosen, current, settings, len(samples), tta, diameter, size_settings, model_min_size,
                       size_margin, margin)


def apply(folder, calibration: Calibration):
    """Write the chosen thresholds, and the calibration record, into a model folder's config.json."""
    from .models import read_config, write_config

    config = read_config(folder)
    training = {**config.training, "calibration": calibration.record()}
    size = {} if calibration.model_min_size is None else {"min_size": calibration.model_min_size}
    new = dataclasses.replace(config, threshold=calibration.chosen.threshold,
                              seed_threshold=calibration.chosen.seed_threshold,
                              split_clumps=calibration.chosen.split_clumps, training=training, **size)
    write_config(folder, new)
    return new


def calibrate_folder(model_spec, annotations, device, *, tta: str = "none", diameter: float | None = None,
                     out=None, write: bool = True, sizes: bool = True, margin: float = MARGIN,
                     size_margin: float = MARGIN, progress: Callable[..., None] | None = None) -> Calibration:
    """Calibrate a model on every annotated pair in ``annotations`` (images/ + masks/, or name_masks).

    Writes the thresholds into ``out`` (a copy of the model folder) or, without ``out``, into the model
    folder itself; a shipped model is never changed in place. ``margin``, ``size_margin``: see
    :func:`calibrate_samples`.
    """
    import shutil
    from pathlib import Path

    from .errors import CellsegError
    from .io.atomic import os_error_message, remove_path, replace_path, temp_path_for
    from .models import find_model, load_model
    from .models.folder import weights_dir
    from .training.data import find_pairs, load_sample

    folder = find_model(model_spec)
    if write and out is None and folder.resolve().parent == weights_dir().resolve():
        raise CellsegError(f"{model_spec}: a shipped model is not changed in place; pass -o FOLDER to write a "
                           f"calibrated copy (or --dry-run)")
    pairs = find_pairs(Path(annotations))
    if not pairs:
        raise CellsegError(f"{annotations}: no annotated images; give a folder with images/ and masks/")
    model = load_model(folder)
    samples = [load_sample(p, percentiles=model.config.percentiles) for p in pairs]
    result = calibrate_samples(model, samples, device, tta=tta, diameter=diameter, sizes=sizes, margin=margin,
                               size_margin=size_margin, progress=progress)
    if write:
        target = Path(out) if out is not None else folder
        if out is not None and target.exists() and any(target.iterdir()):
            raise CellsegError(f"{target}: exists and is not empty; choose a new -o folder")
        copy = temp_path_for(target) if out is not None else None   # the copy appears whole, or not at all
        try:
            if copy is None:
                apply(target, result)   # config.json is replaced atomically
            else:
                remove_path(copy)
                shutil.copytree(folder, copy)
                apply(copy, result)
                replace_path(copy, target, overwrite=True)   # target is absent or an empty folder
        except OSError as exc:
            if copy is not None:
                remove_path(copy)
            raise CellsegError(os_error_message(target, exc)) from None
    return result
