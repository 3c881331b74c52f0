"""A model is a folder: ``config.json`` (what it is and how to use it) + ``model.safetensors`` (weights).

Weights load without pickle. The config refuses unknown keys, so a typo never passes silently.
Shipped models live in the project's ``weights/`` folder (or ``$CELLSEG_WEIGHTS``) and are found by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CellsegError
from .registry import build

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
FORMAT = "cellseg-model/1"


@dataclass(frozen=True)
class ModelConfig:
    """What a model folder's ``config.json`` holds."""

    name: str
    architecture: str
    in_channels: int = 1
    outputs: tuple[str, ...] = ("cell", "interior")   # channel 0: cell probability; 1: interior seeds
    percentiles: tuple[float, float] = (1.0, 99.8)    # input normalisation: these percentiles -> 0, 1
    asinh: float = 0.0                                # > 0: then asinh(x / asinh) / asinh(1 / asinh) (registry.py)
    threshold: float = 0.5                            # cell probability threshold
    seed_threshold: float = 0.5                       # interior probability threshold (seeds)
    min_size: int = 0                                 # smallest cell kept, in pixels
    diameter: float = 0.0                             # median cell diameter of the training annotations, px (0: unknown)
    holes: bool = False                               # keep holes in instances (annotations had them); else filled
    split_clumps: bool = False                        # split seeds that part at higher levels inside clumps (declump.py)
    tile: int = 512                                   # tile size the model runs best at
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)  # provenance: data, command, scores, version
    format: str = FORMAT

    def __post_init__(self) -> None:
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise CellsegError(f"model '{self.name}': percentiles must satisfy 0 <= low < high <= 100")
        if self.outputs[:1] != ("cell",):
            raise CellsegError(f"model '{self.name}': the first output must be 'cell'")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> ModelConfig:
        if not isinstance(data, dict):
            raise CellsegError(f"{source}: a model config is a JSON object, got {type(data).__name__}; re-export "
                               f"the model")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CellsegError(f"{source}: unknown keys {unknown}; valid keys are {sorted(known)}")
        if data.get("format", FORMAT) != FORMAT:
            raise CellsegError(f"{source}: format {data['format']!r} is not {FORMAT!r}; upgrade cellseg")
        _check_types(data, source)
        data = dict(data)
        for key in ("outputs", "percentiles"):
            if key in data:
                data[key] = tuple(data[key])
        try:
            return cls(**data)
        except TypeError as exc:
            raise CellsegError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["outputs"] = list(self.outputs)
        data["percentiles"] = list(self.percentiles)
        if not self.asinh:
            del data["asinh"]   # no input curve: the config reads as before (and in older versions)
        return data


def _check_types(data: dict[str, Any], source: str) -> None:
    """Every key of a config.json has the type (and range) its field needs: one line naming the first that
    does not."""
    import math

    from .registry import ARCHITECTURES

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    rules = {
        "name": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
        "architecture": (lambda v: v in ARCHITECTURES, f"one of {', '.join(ARCHITECTURES)}"),
        "in_channels": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
        "outputs": (lambda v: isinstance(v, list) and v and all(isinstance(x, str) for x in v), "a list of names"),
        "percentiles": (lambda v: isinstance(v, list) and len(v) == 2 and all(number(x) for x in v),
                        "two numbers, e.g. [1, 99.8]"),
        "asinh": (lambda v: number(v) and v >= 0, "0 (no input curve) or a positive scale, e.g. 0.05"),
        "threshold": (lambda v: number(v) and 0 < v <= 1, "a probability in (0, 1]"),
        "seed_threshold": (lambda v: number(v) and 0 < v <= 1, "a probability in (0, 1]"),
        "min_size": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
        "diameter": (lambda v: number(v) and v >= 0, "a number of pixels >= 0"),
        "holes": (lambda v: isinstance(v, bool), "true or false"),
        "split_clumps": (lambda v: isinstance(v, bool), "true or false"),
        "tile": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 32 and v % 32 == 0,
                 "a multiple of 32"),
        "description": (lambda v: isinstance(v, str), "a string"),
        "training": (lambda v: isinstance(v, dict), "an object"),
        "format": (lambda v: isinstance(v, str), "a string"),
    }
    for key, (ok, what) in rules.items():
        if key in data and not ok(data[key]):
            raise CellsegError(f"{source}: {key} is {json.dumps(data[key])[:40]}, it must be {what}; fix the "
                               f"config.json or re-export the model")
    for key in ("name", "architecture"):
        if key not in data:
            raise CellsegError(f"{source}: {key} is missing; fix the config.json or re-export the model")


@dataclass
class Model:
    """A loaded model: its config, the network (eval mode, on CPU) and where it came from."""

    config: ModelConfig
    network: nn.Module
    path: Path | None = None
    sha256: str | None = None
    members: tuple[Path, ...] = ()     # the model folders of an ensemble (models.ensemble)

    @property
    def name(self) -> str:
        return self.config.name


def weights_dir() -> Path:
    """Where shipped models live: ``$CELLSEG_WEIGHTS`` or the project's ``weights/``."""
    env = os.environ.get("CELLSEG_WEIGHTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "weights"


def shipped_models() -> list[Path]:
    """Model folders in :func:`weights_dir`, sorted by name."""
    root = weights_dir()
    return sorted(p for p in root.iterdir() if (p / CONFIG).is_file()) if root.is_dir() else []


def find_model(spec: str | Path) -> Path:
    """A model folder from a path or the name of a shipped model."""
    path = Path(spec)
    if (path / CONFIG).is_file():
        return path
    shipped = weights_dir() / str(spec)
    if (shipped / CONFIG).is_file():
        return shipped
    names = ", ".join(p.name for p in shipped_models()) or "none"
    if path.exists():
        raise CellsegError(f"{path}: not a model folder (no {CONFIG}); a model folder holds {CONFIG} and {WEIGHTS}")
    raise CellsegError(f"model '{spec}' not found: give a model folder or a shipped model name ({names})")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_config(folder: Path) -> ModelConfig:
    path = folder / CONFIG
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:   # ValueError: bad JSON, or bytes that are not UTF-8
        raise CellsegError(f"{path}: cannot read model config ({str(exc)[:80]}); re-export the model") from None
    return ModelConfig.from_dict(data, source=str(path))


def load_model(spec: str | Path) -> Model:
    """Load a model folder (or shipped model by name) onto the CPU in eval mode, without pickle."""
    from safetensors.torch import load_file

    folder = find_model(spec)
    config = read_config(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CellsegError(f"{weights}: missing; a model folder needs {CONFIG} and {WEIGHTS}")
    network = build(config.architecture, in_channels=config.in_channels, classes=len(config.outputs),
                    asinh=config.asinh)
    try:
        state = load_file(weights)
    except Exception as exc:  # safetensors raises its own error types
        raise CellsegError(f"{weights}: cannot read weights ({exc}); re-export the model") from None
    reference = network.state_dict()
    state = {k: v.to(reference[k].dtype) if k in reference else v for k, v in state.items()}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CellsegError(f"{weights}: weights do not fit {config.architecture} ({first})") from None
    network.eval()
    return Model(config=config, network=network, path=folder, sha256=file_sha256(weights))


def save_model(network: nn.Module, config: ModelConfig, folder: Path, *, half: bool = False) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``folder`` (atomically replacing each file).

    ``half`` stores floating tensors as float16 (shipped models); they load back as float32.
    """
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, value in network.state_dict().items():
        value = value.detach().to("cpu")
        if half and value.is_floating_point():
            value = value.half()
        state[key] = value.contiguous()
    tmp_w = folder / f".{WEIGHTS}.partial"
    tmp_c = folder / f".{CONFIG}.partial"
    try:  # written by Python, so a full disk is an OSError (ENOSPC) and nothing partial stays behind
        tmp_w.write_bytes(save(state, metadata={"format": FORMAT, "architecture": config.architecture}))
        tmp_c.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    except OSError:
        for tmp in (tmp_w, tmp_c):
            tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp_w, folder / WEIGHTS)
    os.replace(tmp_c, folder / CONFIG)
    return folder


def write_config(folder: Path, config: ModelConfig) -> Path:
    """Replace ``folder/config.json`` atomically (the weights are left as they are)."""
    path = Path(folder) / CONFIG
    tmp = path.with_name(f".{CONFIG}.partial")
    tmp.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)
    return path
