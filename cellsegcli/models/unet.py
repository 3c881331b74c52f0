"""ResNet18-UNet and ResNet18-UNet+RP (residual skip pathway).

Encoder: smp's ResNet-18 (features at strides 2, 4, 8, 16, 32 with 64, 64, 128, 256, 512 channels).
Decoder: five stages, each a 2x upsampling, concatenation with the skip at that resolution and a residual
block (two 3x3 conv + BN + ReLU with shortcut); the last stage returns to full resolution. The bottleneck
is a 1x1 conv reducing the 512 deepest channels to 256. We upsample by nearest neighbour followed by the
block's convolutions instead of the paper's 4x4 transposed convolution: same receptive field, fewer
parameters, no checkerboard artefacts.

The RP variant replaces each plain skip by a chain of residual units (3x3 conv + BN + ReLU with identity
shortcut): 4 units at the highest resolution, then 3, 2, 1 towards the lowest, with 32, 64, 128, 256 filters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNReLU, ResBlock, ResidualUnit, init_decoder
from .encoder import resnet18_encoder

DECODER_CHANNELS = (256, 128, 64, 32, 16)
RP_UNITS = (4, 3, 2, 1)          # residual units per skip, highest resolution first
RP_FILTERS = (32, 64, 128, 256)


class SkipPathway(nn.Sequential):
    """Residual pathway on one skip connection: optional 1x1 width change, then ``n`` residual units."""

    def __init__(self, cin: int, filters: int, n: int) -> None:
        layers: list[nn.Module] = [] if cin == filters else [ConvBNReLU(cin, filters, kernel=1)]
        layers += [ResidualUnit(filters) for _ in range(n)]
        super().__init__(*layers)


class ResNet18UNet(nn.Module):
    """U-Net with a ResNet-18 encoder and residual decoder blocks; ``residual_path`` adds the RP skips.

    Input ``(B, in_channels, H, W)`` with H, W multiples of 32; output logits ``(B, classes, H, W)``.
    """

    def __init__(self, in_channels: int = 1, classes: int = 2, *, residual_path: bool = False) -> None:
        super().__init__()
        self.encoder = resnet18_encoder(in_channels)
        enc = self.encoder.out_channels[1:]  # 64, 64, 128, 256, 512 at strides 2..32
        skips = list(enc[:4])
        if residual_path:
            self.skips = nn.ModuleList(
                SkipPathway(c, f, n) for c, f, n in zip(skips, RP_FILTERS, RP_UNITS, strict=True)
            )
            skips = list(RP_FILTERS)
        else:
            self.skips = nn.ModuleList(nn.Identity() for _ in skips)
        self.center = ConvBNReLU(enc[4], DECODER_CHANNELS[0], kernel=1)
        blocks = []
        cin = DECODER_CHANNELS[0]
        skip_widths = skips[::-1] + [0]  # 256/128/64/64 (or RP widths), none at full resolution
        for skip, cout in zip(skip_widths, DECODER_CHANNELS, strict=True):
            blocks.append(ResBlock(cin + skip, cout))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(DECODER_CHANNELS[-1], classes, 1)
        init_decoder(self.skips)
        init_decoder(self.center)
        init_decoder(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)[1:]
        skips = [path(f) for path, f in zip(self.skips, feats[:4], strict=True)][::-1] + [None]
        y = self.center(feats[4])
        for block, skip in zip(self.blocks, skips, strict=True):
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            if skip is not None:
                y = torch.cat([y, skip], dim=1)
            y = block(y)
        return self.head(y)
