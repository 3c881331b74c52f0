"""ResNet18-FPN: feature pyramid on a ResNet-18 encoder.

Bottom-up ResNet-18; lateral 1x1 convs to 256 channels; top-down path with nearest 2x upsampling and
addition (pyramid maps M at strides 4, 8, 16, 32, 256 channels); each map passes two 3x3 conv + BN + ReLU
to 128 channels, is upsampled to stride 4 and concatenated (512 channels); spatial dropout 0.5, a 1x1 conv
to the classes, bilinear upsampling to full resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNReLU, init_decoder
from .encoder import resnet18_encoder

PYRAMID = 256
SEGMENTATION = 128


class ResNet18FPN(nn.Module):
    """Input ``(B, in_channels, H, W)`` with H, W multiples of 32; output logits ``(B, classes, H, W)``."""

    def __init__(self, in_channels: int = 1, classes: int = 2, *, dropout: float = 0.5) -> None:
        super().__init__()
        self.encoder = resnet18_encoder(in_channels)
        enc = self.encoder.out_channels[2:]  # strides 4, 8, 16, 32
        self.laterals = nn.ModuleList(nn.Conv2d(c, PYRAMID, 1) for c in enc)
        self.smooth = nn.ModuleList(
            nn.Sequential(ConvBNReLU(PYRAMID, SEGMENTATION), ConvBNReLU(SEGMENTATION, SEGMENTATION))
            for _ in enc
        )
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(SEGMENTATION * len(enc), classes, 1)
        for m in (self.laterals, self.smooth):
            init_decoder(m)
        # the head keeps PyTorch's default init, as in the U-Nets: He init with its fan-out of 2 classes would
        # give weights of std 1 over 512 inputs, logits of std ~17 and a first loss of ~4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)[2:]
        top = self.laterals[-1](feats[-1])
        pyramid = [top]
        for lateral, f in zip(self.laterals[-2::-1], feats[-2::-1], strict=True):
            top = lateral(f) + F.interpolate(top, size=f.shape[-2:], mode="nearest")
            pyramid.insert(0, top)
        size = pyramid[0].shape[-2:]
        maps = [
            F.interpolate(s(m), size=size, mode="bilinear", align_corners=False) if i else s(m)
            for i, (s, m) in enumerate(zip(self.smooth, pyramid, strict=True))
        ]
        y = self.head(self.dropout(torch.cat(maps, dim=1)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
