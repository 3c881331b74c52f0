"""Resumable training checkpoints: ``checkpoints/last.pt`` of a model folder holds the weights, the
optimizer, the scheduler, the RNGs, early stopping and the history, and the recipe options that a resumed
run must share (`RECIPE`); writes are atomic, and a full disk is one line saying what is left.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import CellsegError
from ..io.atomic import os_error_message

LAST = "last.pt"
CHECKPOINTS = "checkpoints"


def checkpoint_path(out: Path) -> Path:
    """Where the model folder ``out`` keeps its resumable checkpoint: ``checkpoints/last.pt``, or the
    ``last.pt`` beside the weights that folders trained by earlier versions have."""
    out = Path(out)
    new, old = out / CHECKPOINTS / LAST, out / LAST
    return old if old.is_file() and not new.exists() else new


# what a checkpoint must have been trained with to be resumed: option -> (its value in checkpoints written
# before the option existed, the command-line flag)
RECIPE = {"loss": ("bce-dice", "--loss"), "interior_width": (2, "--interior-width"),
          "border_weight": (0.0, "--border-weight"), "asinh": (0.0, "--asinh")}


def restore(path: Path, network, optimizer, scheduler, stopper, gen, ema=None,
            recipe: dict | None = None) -> tuple[list[dict], int]:
    """Load a ``last.pt`` checkpoint into the training state; returns (history, last epoch run). The
    ``recipe`` (see :data:`RECIPE`) must be the one the checkpoint was trained with."""
    if not path.is_file():
        raise CellsegError(f"{path}: no checkpoint to resume from; run without --resume to start training")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not {"network", "optimizer", "epoch", "history"} <= set(state):
            raise ValueError("not a cellseg training checkpoint")
    except Exception as exc:  # truncated, random bytes, a pickle that weights_only refuses: all one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:100]
        raise CellsegError(f"{path}: cannot resume from this checkpoint ({first}); it is damaged or not cellseg's: "
                           f"delete it and train without --resume") from None
    if (ema is None) != ("ema" not in state):
        was = f"with --ema {state['ema']['decay']:g}" if "ema" in state else "without --ema"
        raise CellsegError(f"{path}: this run was trained {was}; resume it with the same --ema option")
    for key, value in (recipe or {}).items():
        before, flag = RECIPE[key]
        trained_with = state.get(key, before)
        if trained_with != value:
            raise CellsegError(f"{path}: this run was trained with {flag} {trained_with}; resume it with the same "
                               f"{flag}")
    try:
        if ema is not None:
            ema.load_state_dict(state["ema"])
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["stopper"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        return json.loads(state["history"]), int(state["epoch"])
    except Exception as exc:  # another architecture, a damaged state
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:100]
        raise CellsegError(f"{path}: the checkpoint does not fit this run ({first}); resume with the options it "
                           f"was trained with, or train without --resume into another -o") from None


def save_last(path: Path, network, optimizer, scheduler, stopper, gen, epoch, history, ema=None,
              recipe: dict | None = None) -> None:
    state = {
        "epoch": epoch,
        "network": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "stopper": stopper.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": json.dumps(history),
        **(recipe or {}),
    }
    if ema is not None:
        state["ema"] = ema.state_dict()
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as f:  # a Python file, so a full disk raises OSError (not torch's RuntimeError)
        torch.save(state, f)
    os.replace(tmp, path)


@contextmanager
def checkpoint_errors(out: Path, saved_epoch: int) -> Iterator[None]:
    """A failed checkpoint write (full disk, permissions) becomes one line that says what is left, and no
    partial file stays in the model folder."""
    try:
        yield
    except OSError as exc:
        for tmp in [*out.glob("*.partial"), *(out / CHECKPOINTS).glob("*.partial")]:   # hidden ones too
            tmp.unlink(missing_ok=True)
        path = Path(exc.filename) if exc.filename else out
        left = (f"the checkpoint of epoch {saved_epoch} in {out} is intact: rerun with --resume once there is "
                f"space" if saved_epoch else "no epoch was saved")
        raise CellsegError(f"{os_error_message(path, exc)}; {left}") from None
