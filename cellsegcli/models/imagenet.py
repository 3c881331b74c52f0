"""ImageNet initialisation of the ResNet-18 encoder from a local torchvision-format file.

The official torchvision file ``resnet18-f37072fd.pth`` has sha256
f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec. Without a file, smp can download the
weights when online; offline that fails fast with one clear error (no retries, no hang).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import CellsegError

RESNET18_SHA256 = "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec"


def adapt_state_dict(state: dict[str, torch.Tensor], in_channels: int) -> dict[str, torch.Tensor]:
    """torchvision ResNet-18 keys -> smp encoder keys: drop ``fc``; fit ``conv1`` to ``in_channels``
    (grey: the RGB filters summed, as smp does; more channels: RGB filters cycled and rescaled)."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    w = state["conv1.weight"]
    if in_channels == 1:
        state["conv1.weight"] = w.sum(dim=1, keepdim=True)
    elif in_channels != 3:
        reps = [w[:, i % 3] for i in range(in_channels)]
        state["conv1.weight"] = torch.stack(reps, dim=1) * (3.0 / in_channels)
    return state


def load_imagenet_encoder(network: nn.Module, path: Path | None, *, check_sha256: bool = True) -> None:
    """Load ImageNet ResNet-18 weights into ``network.encoder`` from ``path`` (torchvision format)."""
    encoder = network.encoder
    in_channels = encoder.conv1.in_channels
    if path is None:
        state = _download(in_channels)
    else:
        path = Path(path)
        if not path.is_file():
            raise CellsegError(f"{path}: no such file; give the torchvision resnet18 .pth file")
        if check_sha256:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != RESNET18_SHA256:
                raise CellsegError(f"{path}: sha256 {digest[:12]}... is not the official ResNet-18 "
                                   f"({RESNET18_SHA256[:12]}...); use torchvision's resnet18-f37072fd.pth")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CellsegError(f"{path}: cannot read as a torch state_dict ({exc})") from None
    if not isinstance(state, dict) or "conv1.weight" not in state:
        raise CellsegError(f"{path}: not a torchvision ResNet-18 state_dict (no conv1.weight)")
    try:
        encoder.load_state_dict(adapt_state_dict(state, in_channels), strict=True)
    except RuntimeError as exc:
        raise CellsegError(f"{path}: does not fit ResNet-18 ({str(exc).splitlines()[0]})") from None


def _download(in_channels: int) -> dict[str, torch.Tensor]:
    """ImageNet weights through smp's hub download; one clear error when offline."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise CellsegError("--init imagenet: offline (HF_HUB_OFFLINE=1) and no weights file given; "
                           "pass --imagenet-weights resnet18-f37072fd.pth")
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        raise CellsegError("--init imagenet: cannot reach huggingface.co to download ResNet-18 weights; "
                           "pass --imagenet-weights resnet18-f37072fd.pth (torchvision's file)") from None
    import segmentation_models_pytorch as smp

    encoder = smp.encoders.get_encoder("resnet18", in_channels=3, depth=5, weights="imagenet")
    return dict(encoder.state_dict())
