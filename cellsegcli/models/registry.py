"""Architectures by name. ``build(name, in_channels=, classes=)`` returns an untrained ``nn.Module``.

Besides the papers' three architectures, any smp architecture/encoder pair is available as
``smp:<Arch>/<encoder>`` (for example ``smp:Unet/resnet34``), built with ``encoder_weights=None``.
"""

from __future__ import annotations

from collections.abc import Callable

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


def build(name: str, *, in_channels: int = 1, classes: int = 2) -> nn.Module:
    """Build architecture ``name`` with random weights; unknown names fail listing the valid ones."""
    if name.startswith("smp:"):
        return _smp(name[4:], in_channels, classes)
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        valid = ", ".join(ARCHITECTURES)
        raise CellsegError(f"unknown architecture '{name}'; choose one of {valid} (or smp:<Arch>/<encoder>)") from None
    return factory(in_channels, classes)
