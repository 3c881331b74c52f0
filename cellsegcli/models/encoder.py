"""The ResNet-18 encoder shared by every architecture (smp's, built without downloading weights)."""

from __future__ import annotations

from torch import nn


def resnet18_encoder(in_channels: int) -> nn.Module:
    """smp ResNet-18 encoder, depth 5, random init; ImageNet weights are loaded separately (see imagenet.py)."""
    import segmentation_models_pytorch as smp

    return smp.encoders.get_encoder("resnet18", in_channels=in_channels, depth=5, weights=None)
