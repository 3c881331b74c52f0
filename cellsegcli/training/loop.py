"""The training loop: plain functions receiving everything as arguments, checkpoints that hold what
resuming needs, the best model (by validation loss) kept as a model folder.

Model folder after training::

    config.json, model.safetensors   the best epoch (fp16 weights), loadable by `cellseg segment`
    history.csv, curves.png          per-epoch losses and validation Jaccard
    checkpoints/last.pt              the last epoch: weights, optimizer, scheduler, RNG, early stopping
                                     (for --resume; ~170 MB, removed at the end by --no-checkpoint)

A model folder without ``checkpoints/`` is what users copy around (~30 MB).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..device import autocast_dtype
from ..errors import CellsegError
from ..models import ModelConfig, build, load_model, save_model
from ..models.imagenet import load_imagenet_encoder
from ..models.registry import input_curve, set_input_curve
from .augment import Augmentation
from .batches import CropBatches, batch_loader, crop_batches
from .checkpoint import CHECKPOINTS, LAST, checkpoint_errors, checkpoint_path, restore, save_last
from .data import (Sample, annotations_have_holes, cell_diameter, find_pairs, fingerprint, load_sample,
                   suggest_min_size)
from .early_stopping import EarlyStopping
from .ema import WeightAverage
from .loss import LOSSES, loss_function

HISTORY = "history.csv"
LOW_JACCARD = 0.5   # a final validation Jaccard below this ends training with a warning


def default_description(architecture: str, annotations: Path, n_train: int, n_val: int, init: str,
                        started_from: str | None) -> str:
    """What a model was trained on, when the user gave no ``--description``."""
    how = f"fine-tuned from '{started_from}'" if started_from else (
        "from ImageNet weights" if init == "imagenet" else "from scratch")
    return (f"{architecture} {how} on {annotations.resolve().name} ({n_train} training / {n_val} validation "
            f"images, {_dt.date.today().isoformat()})")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; defaults are the papers' recipe (BCE + Dice, Adam, batch 8, early stopping)."""

    architecture: str = "resnet18-unet"
    init: str = "none"                  # none | imagenet | default | <model folder or shipped name>
    imagenet_weights: Path | None = None
    epochs: int = 100
    patience: int = 10
    lr: float = 1e-3
    batch_size: int = 8
    crop: int = 256
    val_fraction: float = 0.2
    seed: int = 0
    steps_per_epoch: int | None = None  # default: about one pass over the training pixels
    name: str | None = None             # model name in config.json (default: the folder's name)
    percentiles: tuple[float, float] = (1.0, 99.8)
    asinh: float | None = None          # input curve's scale (models/registry.py; 0: none; None: the --init model's)
    augment: Augmentation = field(default_factory=Augmentation)
    command: str = ""                   # the command line, recorded as provenance
    max_minutes: float | None = None    # stop cleanly (checkpointed) after this long
    schedule: str = "plateau"           # plateau: halve the lr when val loss stalls; cosine: decay to 0 at --epochs
    sampling: str = "area"              # area: crops drawn from images in proportion to size; image: equally
    calibrate: bool = True              # choose the post-processing thresholds and min_size on the validation frames
    ema: float | None = None            # decay of an average of the weights, validated and saved instead
    loss: str = "bce-dice"              # bce-dice (the papers') | bce-lovasz (BCE + Lovász hinge, IoU-aware)
    description: str | None = None      # for config.json (default: what it was trained on, and how)
    keep_checkpoint: bool = True        # False: remove checkpoints/ once training has finished
    loader_workers: int = 0             # processes making the augmented batches (0: in the training process)
    interior_width: int | None = None   # erosion of the interior target in px (None: the --init model's, else 2)
    border_weight: float = 0.0          # U-Net's w0: extra BCE weight between close cells (0: unweighted)

    def __post_init__(self) -> None:
        if self.crop % 32 or self.crop < 32:
            raise CellsegError(f"--crop {self.crop}: must be a multiple of 32 (32 or more)")
        if not (math.isfinite(self.lr) and 0 < self.lr < 1):
            raise CellsegError(f"--lr {self.lr}: give a learning rate between 0 and 1 (e.g. 1e-3)")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise CellsegError(f"--steps-per-epoch {self.steps_per_epoch}: must be at least 1 (leave it out for "
                               f"about one pass over the training pixels)")
        if self.interior_width is not None and not 1 <= self.interior_width <= 64:
            raise CellsegError(f"--interior-width {self.interior_width}: give the interior's erosion in pixels, "
                               f"1 to 64 (2 is the default)")
        if not (math.isfinite(self.border_weight) and 0 <= self.border_weight <= 100):
            raise CellsegError(f"--border-weight {self.border_weight:g}: give the extra weight of the pixels between "
                               f"close cells, 0 (off) to 100 (the U-Net paper used 10)")
        if self.asinh is not None and not (math.isfinite(self.asinh) and 0 <= self.asinh <= 1):
            raise CellsegError(f"--asinh {self.asinh:g}: give the input curve's scale, 0 (none) to 1 (e.g. 0.05: "
                               f"an object at 10 % of the range goes in at 39 %)")
        if self.loader_workers < 0:
            raise CellsegError(f"--loader-workers {self.loader_workers}: give 0 (batches made in the training "
                               f"process) or more")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise CellsegError(f"--max-minutes {self.max_minutes}: give a positive number of minutes")
        if self.schedule not in ("plateau", "cosine"):
            raise CellsegError(f"--schedule {self.schedule}: expected plateau or cosine")
        if self.loss not in LOSSES:
            raise CellsegError(f"--loss {self.loss}: expected one of {', '.join(LOSSES)}")
        if self.sampling not in ("area", "image"):
            raise CellsegError(f"--sampling {self.sampling}: expected area or image")
        if self.ema is not None and not (math.isfinite(self.ema) and 0 < self.ema < 1):
            raise CellsegError(f"--ema {self.ema:g}: the decay must be between 0 and 1 (e.g. 0.999)")
        if not 0 < self.val_fraction < 1:
            raise CellsegError(f"--val-fraction {self.val_fraction}: must be between 0 and 1")
        for opt, value in (("--epochs", self.epochs), ("--patience", self.patience), ("--batch-size", self.batch_size)):
            if value < 1:
                raise CellsegError(f"{opt} {value}: must be at least 1")


@dataclass
class EpochReport:
    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    val_jaccard: float
    lr: float
    seconds: float
    improved: bool


@dataclass
class TrainResult:
    model_dir: Path
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    best_val_jaccard: float
    stopped: str
    n_train: int
    n_val: int
    calibration: dict | None = None     # thresholds chosen on the validation frames (see calibrate.py)
    n_val_from_init: int = 0            # validation images kept from the --init model's validation set
    warning: str | None = None          # a model that validates poorly says so (and what to try)


def split_pairs(folder: Path, val_fraction: float, seed: int, keep_in_val: tuple[str, ...] | list[str] = ()):
    """Training and validation pairs: ``folder/val`` when present, else a seeded random split.

    Images named in ``keep_in_val`` (found in the folder) go to validation first, the seeded order tops the
    set up to ``val_fraction``: fine-tuning a model on the folder it was trained on keeps that model's
    validation images out of training, so its validation scores stay honest. The annotated frames of one
    stack are split as one unit (neighbouring frames look alike), unless the folder holds a single stack.
    """
    pairs = find_pairs(folder)
    if (folder / "val").is_dir():
        return pairs, find_pairs(folder / "val")
    units: dict[Path, list] = {}
    for p in pairs:
        units.setdefault(p.image, []).append(p)
    groups = list(units.values()) if len(units) > 1 else [[p] for p in pairs]
    if len(groups) < 2:
        raise CellsegError(f"{folder}: {len(pairs)} annotated image(s); need at least 2 for a validation split "
                           f"(or add a val/ folder)")
    order = np.random.default_rng(seed).permutation(len(groups))
    keep = set(keep_in_val)
    kept = [i for i in order if any(p.name in keep for p in groups[i])]
    if len(kept) < len(groups):
        order = np.array(kept + [i for i in order if i not in set(kept)], dtype=np.int64)
    else:
        kept = []
    n_val = min(len(groups) - 1, max(1, len(kept), round(len(groups) * val_fraction)))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [p for i in train for p in groups[i]], [p for i in val for p in groups[i]]


def build_network(config: TrainConfig, *, in_channels: int = 1) -> tuple[nn.Module, ModelConfig | None]:
    """The network to start from, per ``config.init``; returns (network, config of the model started from)."""
    if config.init in ("none", "imagenet"):
        network = build(config.architecture, in_channels=in_channels, classes=2, asinh=config.asinh or 0.0)
        if config.init == "imagenet":
            if not hasattr(network, "encoder"):
                raise CellsegError(f"--init imagenet: architecture {config.architecture} has no ResNet-18 encoder")
            load_imagenet_encoder(network, config.imagenet_weights)
        return network, None
    source = "phase" if config.init == "default" else config.init
    model = load_model(source)
    network = model.network
    if len(model.config.outputs) != 2:
        raise CellsegError(f"--init {source}: model has outputs {model.config.outputs}; "
                           f"fine-tuning needs a (cell, interior) model")
    if config.asinh is not None:   # the same weights, maybe another input curve
        set_input_curve(network, config.asinh)
    return network, model.config


def interior_width(config: TrainConfig, started_from: ModelConfig | None) -> int:
    """The interior target's erosion (px): ``--interior-width``, else the one the ``--init`` model was trained
    with (so fine-tuning keeps the target its interior channel learnt), else 2."""
    if config.interior_width is not None:
        return config.interior_width
    inherited = (started_from.training or {}).get("interior_width") if started_from is not None else None
    return int(inherited) if isinstance(inherited, int) else 2


def train_one_epoch(network: nn.Module, optimizer: torch.optim.Optimizer, batches, *, device: torch.device,
                    progress: Callable[..., None] | None = None, total: int = 0,
                    ema: WeightAverage | None = None, loss_name: str = "bce-dice") -> float:
    network.train()
    criterion = loss_function(loss_name)
    amp = autocast_dtype(device)
    losses = []
    for step, (x, y, w) in enumerate(batches, start=1):
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        w = w.to(device, non_blocking=True) if w is not None else None
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = network(x)
        loss = criterion(logits, y, w)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update(network)
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, total, loss=losses[-1])
    return float(np.mean(losses))


def _pad32(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % 32, (-w) % 32
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    return x, (h, w)


@torch.no_grad()
def evaluate(network: nn.Module, samples: list[Sample], *, device: torch.device,
             max_tile: int = 1024, loss_name: str = "bce-dice") -> tuple[float, float]:
    """Mean validation loss and mean pixel Jaccard (cell channel, threshold 0.5) over whole images."""
    network.eval()
    criterion = loss_function(loss_name)
    amp = autocast_dtype(device)
    losses, jaccards = [], []
    for s in samples:
        x, (h, w) = _pad32(torch.from_numpy(s.image)[None, None])
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = network(x.to(device).contiguous(memory_format=torch.channels_last))
        logits = logits.float()[..., :h, :w]
        y = torch.from_numpy(s.targets)[None].to(device)
        losses.append(float(criterion(logits, y)))
        pred = logits[0, 0] > 0
        gt = y[0, 0] > 0.5
        union = float((pred | gt).sum())
        jaccards.append(float((pred & gt).sum()) / union if union else 1.0)
    return float(np.mean(losses)), float(np.mean(jaccards))


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """Cosine from --lr to --lr/100 over --epochs, or halving when the validation loss stalls."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=config.lr / 100)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=max(1, config.patience // 3))


def _recipe(config: TrainConfig, interior_width: int, asinh: float) -> dict:
    """The values of :data:`RECIPE` for this run."""
    return {"loss": config.loss, "interior_width": interior_width, "border_weight": config.border_weight,
            "asinh": asinh}


def write_history(folder: Path, history: list[dict]) -> None:
    """history.csv and curves.png (loss and validation Jaccard per epoch)."""
    if not history:
        return
    keys = list(history[0])
    lines = [",".join(keys)] + [",".join(f"{row[k]:.6g}" if isinstance(row[k], float) else str(row[k])
                                         for k in keys) for row in history]
    tmp = folder / f".{HISTORY}.partial"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, folder / HISTORY)
    from ..plots import plot_training_curves

    plot_training_curves(history, folder / "curves.png")


def train(annotations: Path, out: Path, config: TrainConfig, *, device: torch.device, resume: bool = False,
          overwrite: bool = False,
          progress: Callable[..., None] | None = None, on_epoch: Callable[[EpochReport], None] | None = None,
          notify: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None) -> TrainResult:
    """Train a model on the annotated folder ``annotations`` into the model folder ``out``; ``warn``
    receives the line about a model that validates poorly (also in ``TrainResult.warning``)."""
    annotations, out = Path(annotations), Path(out)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    network, started_from = build_network(config)
    validated = (started_from.training or {}).get("val_names") if started_from else None
    validated = validated if isinstance(validated, list) else []   # older chains record only a count
    train_pairs, val_pairs = split_pairs(annotations, config.val_fraction, config.seed, keep_in_val=validated)
    held = set(validated)
    inherited = [] if (annotations / "val").is_dir() else [p.name for p in val_pairs if p.name in held]
    if inherited and notify is not None:
        notify(f"validation keeps the {len(inherited)} image(s) that validated --init {config.init} "
               f"({len(val_pairs)} in all), so none of them is trained on")
    width = interior_width(config, started_from)
    recipe = _recipe(config, width, input_curve(network))
    train_samples = [load_sample(p, percentiles=config.percentiles, interior_width=width,
                                 border_weight=config.border_weight) for p in train_pairs]
    # validated unweighted, so that validation losses compare across --border-weight
    val_samples = [load_sample(p, percentiles=config.percentiles, interior_width=width) for p in val_pairs]
    if not any(s.targets[0].any() for s in train_samples):
        raise CellsegError(f"{annotations}: the {len(train_samples)} training masks hold no cells (every pixel 0); "
                           f"check that masks/ holds the annotations, with cells > 0")
    # the smallest cell to keep is a property of these annotations, not of the network: a model
    # fine-tuned from one made for large cells must not erase the small cells it was taught
    min_size = suggest_min_size(train_samples)
    diameter = cell_diameter(train_samples)
    holes = annotations_have_holes(train_samples)
    architecture = started_from.architecture if started_from else config.architecture
    network = network.to(device=device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    scheduler = _scheduler(optimizer, config)
    stopper = EarlyStopping(config.patience)
    ema = WeightAverage(network, config.ema) if config.ema is not None else None
    validated_network = ema.module if ema is not None else network   # what is validated and saved
    history: list[dict] = []
    start = 0
    last = checkpoint_path(out)
    if resume:
        history, start = restore(last, network, optimizer, scheduler, stopper, gen, ema, recipe)
        if last.parent == out:   # an earlier version's layout: continue in checkpoints/
            (out / CHECKPOINTS).mkdir(exist_ok=True)
            os.replace(last, out / CHECKPOINTS / LAST)
            last = out / CHECKPOINTS / LAST
    elif last.exists():
        raise CellsegError(f"{out}: holds a training checkpoint; pass --resume to continue it, or choose another -o")
    elif (out / "model.safetensors").exists() and not overwrite:
        raise CellsegError(f"{out}: holds a trained model; choose another -o, or pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    last.parent.mkdir(exist_ok=True)
    description = config.description or default_description(
        architecture, annotations, len(train_pairs), len(val_pairs), config.init,
        started_from.name if started_from else None)
    area = sum(max(1, round(s.image.size / config.crop**2)) for s in train_samples)
    steps = config.steps_per_epoch or max(1, math.ceil(area / config.batch_size))
    data_id = fingerprint(train_pairs + val_pairs)
    loader = seeds = None
    if config.loader_workers > 0:
        loader, seeds = batch_loader(CropBatches(train_samples, config.crop, config.batch_size, config.augment,
                                                 config.sampling), config.loader_workers, device)
    began = time.monotonic()
    stopped = f"reached --epochs {config.epochs}"
    epoch = saved_epoch = start
    for epoch in range(start + 1, config.epochs + 1):
        t0 = time.monotonic()
        if loader is not None:   # one seed per batch from the run's generator: resumable, worker-count free
            seeds.values = torch.randint(0, 2**62, (steps,), generator=gen).tolist()
            batches = iter(loader)
        else:
            batches = crop_batches(train_samples, config.crop, config.batch_size, steps, config.augment, gen,
                                   config.sampling)
        train_loss = train_one_epoch(network, optimizer, batches, device=device, progress=progress, total=steps,
                                     ema=ema, loss_name=config.loss)
        val_loss, val_jaccard = evaluate(validated_network, val_samples, device=device, loss_name=config.loss)
        scheduler.step(val_loss) if config.schedule == "plateau" else scheduler.step()
        improved, stop, reason = stopper.update(val_loss, epoch)
        lr = optimizer.param_groups[0]["lr"]
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                        "val_jaccard": val_jaccard, "lr": lr, "seconds": time.monotonic() - t0})
        with checkpoint_errors(out, saved_epoch):
            if improved:
                provenance = {
                    "command": config.command, "data": str(annotations), "data_fingerprint": data_id,
                    "n_train": len(train_pairs), "n_val": len(val_pairs),
                    "val_names": [p.name for p in val_pairs],
                    "val_fraction": None if (annotations / "val").is_dir() else config.val_fraction,
                    "epoch": epoch, "seed": config.seed, "init": config.init, "crop": config.crop,
                    "batch_size": config.batch_size, "lr": config.lr, "schedule": config.schedule,
                    "sampling": config.sampling, "ema": config.ema, "loss": config.loss, "steps_per_epoch": steps,
                    "loader_workers": config.loader_workers, "interior_width": width,
                    "border_weight": config.border_weight,
                    "augment": dataclasses.asdict(config.augment),
                    "val_loss": round(val_loss, 5), "val_jaccard": round(val_jaccard, 5),
                    "cellseg_version": __version__, "torch_version": torch.__version__, "device": str(device),
                    "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                }
                if started_from is not None and started_from.training:
                    provenance["init_training"] = started_from.training  # the chain of commands that made it
                model_config = ModelConfig(
                    name=config.name or out.name, architecture=architecture, percentiles=config.percentiles,
                    asinh=input_curve(validated_network),
                    threshold=started_from.threshold if started_from else 0.5,
                    seed_threshold=started_from.seed_threshold if started_from else 0.5,
                    split_clumps=started_from.split_clumps if started_from else False,
                    min_size=min_size, diameter=diameter, holes=holes,
                    training=provenance,
                    description=description,
                )
                save_model(validated_network, model_config, out, half=True)
            save_last(last, network, optimizer, scheduler, stopper, gen, epoch, history, ema, recipe)
            write_history(out, history)
        saved_epoch = epoch
        if on_epoch is not None:
            on_epoch(EpochReport(epoch, config.epochs, train_loss, val_loss, val_jaccard, lr,
                                 history[-1]["seconds"], improved))
        if stop:
            stopped = reason
            break
        if config.max_minutes is not None and time.monotonic() - began > 60 * config.max_minutes:
            stopped = f"reached --max-minutes {config.max_minutes:g} (continue with --resume)"
            break
    del loader   # ends its worker processes
    best = next((h for h in history if h["epoch"] == stopper.best_epoch), None)
    calibration = None
    if config.calibrate and (out / "config.json").is_file():
        from ..calibrate import apply, calibrate_samples

        model = load_model(out)
        # nothing current was chosen on these frames (the thresholds are the defaults or the --init model's, the
        # smallest cell the annotations' rule of thumb): no margin protects any of it
        result = calibrate_samples(model, val_samples, device, sizes=True, margin=0.0, size_margin=0.0)
        with checkpoint_errors(out, saved_epoch):
            apply(out, result)
        calibration = result.record()
    finished = not stopped.startswith("reached --max-minutes")
    if not config.keep_checkpoint and finished:
        from ..io.atomic import remove_path

        remove_path(out / CHECKPOINTS)
    best_jaccard = best["val_jaccard"] if best else math.nan
    warning = None
    if finished and not best_jaccard >= LOW_JACCARD:
        warning = (f"{out}: best validation Jaccard {best_jaccard:.2f} is below {LOW_JACCARD}: this model segments "
                   f"its validation images poorly; check that masks/ match images/, train longer (--epochs, "
                   f"--resume), start from a trained model (--init default, or --init imagenet), or annotate more "
                   f"images")
        if warn is not None:
            warn(warning)
    return TrainResult(out, epoch, stopper.best_epoch, stopper.best, best_jaccard, stopped, len(train_pairs),
                       len(val_pairs), calibration, len(inherited), warning)


