"""Architectures by name. ``build(name, in_channels=, classes=)`` returns an untrained ``nn.Module``.

``build(..., asinh=S)`` gives the network an input curve: its input (normalised so that the frame's low and
high percentiles are 0 and 1) passes through ``asinh(x / S) / asinh(1 / S)`` before the first layer. The
curve is part of the network (a forward pre-hook reading its ``input_asinh``, no weights; copies keep it), so training, inference, calibration and
ensembles all apply it; a model folder records ``S`` in its config.

Besides the papers' three architectures, any smp architecture/encoder pair is available as
``smp:<Arch>/<encoder>`` (for example ``smp:Unet/resnet34``), built with ``encoder_weights=None``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import CellsegError


def _unet(in_channels: int, classes: int) -> nn.Module:
    from .unet import ResNet18UNet

    return ResNet18UNet(in_channels, classes)


def _unet_rp(in_channels: int, classes: int) -> nn.Module:
    from .unet import ResNet18UNet

    return ResNet18UNet(in_channels, classes, residual_path=True)


def _fpn(in_channels: int, classes: int) -> nn.Module:
    from .fpn import ResNet18FPN

    return ResNet18FPN(in_channels, classes)


ARCHITECTURES: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet18-unet": _unet,
    "resnet18-fpn": _fpn,
    "resnet18-unet-rp": _unet_rp,
}


def _smp(spec: str, in_channels: int, classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    arch, _, encoder = spec.partition("/")
    if not encoder:
        raise CellsegError(f"architecture 'smp:{spec}': give it as smp:<Arch>/<encoder>, e.g. smp:Unet/resnet34")
    try:
        return smp.create_model(arch, encoder_name=encoder, encoder_weights=None, in_channels=in_channels,
                                classes=classes)
    except (KeyError, ValueError) as exc:
        raise CellsegError(f"architecture 'smp:{spec}': {exc}") from None


def asinh_curve(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``asinh(x / scale) / asinh(1 / scale)``: 0 -> 0 and 1 -> 1, linear below ``scale``, logarithmic above
    it, so an object at 10 % of the range comes out at ~39 % for ``scale`` 0.05."""
    return torch.asinh(x / scale) * (1.0 / math.asinh(1.0 / scale))


def _input_curve_hook(module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook: the input through :func:`asinh_curve` of the module's ``input_asinh`` (0: as it is)."""
    scale = module.input_asinh
    return (asinh_curve(args[0], scale), *args[1:]) if scale > 0 else None


def set_input_curve(network: nn.Module, scale: float) -> nn.Module:
    """Give ``network`` the input curve of ``scale`` in place of the one it had (0: none); returns it."""
    if scale > 0 and not hasattr(network, "input_asinh"):
        network.register_forward_pre_hook(_input_curve_hook)
    if scale > 0 or hasattr(network, "input_asinh"):
        network.input_asinh = float(scale)
    return network


def input_curve(network: nn.Module) -> float:
    """The asinh scale of ``network``'s input curve (0: none, the input goes in as it is)."""
    return float(getattr(network, "input_asinh", 0.0))


def build(name: str, *, in_channels: int = 1, classes: int = 2, asinh: float = 0.0) -> nn.Module:
    """Build architecture ``name`` with random weights; unknown names fail listing the valid ones.

    ``asinh`` > 0 gives it the input curve of that scale (module docstring).
    """
    if name.startswith("smp:"):
        network = _smp(name[4:], in_channels, classes)
    else:
        try:
            factory = ARCHITECTURES[name]
        except KeyError:
            valid = ", ".join(ARCHITECTURES)
            raise CellsegError(f"unknown architecture '{name}'; choose one of {valid} (or "
                               f"smp:<Arch>/<encoder>)") from None
        network = factory(in_channels, classes)
    return set_input_curve(network, asinh)
