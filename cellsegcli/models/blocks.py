"""Building blocks shared by the decoders: conv-BN-ReLU and residual blocks."""

from __future__ import annotations

import torch
from torch import nn


class ConvBNReLU(nn.Sequential):
    """3x3 (or ``kernel``) convolution, batch norm, ReLU; keeps the spatial size."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class ResBlock(nn.Module):
    """Two 3x3 conv + BN (+ ReLU) with a shortcut (1x1 projection when the width changes).

    The decoder block of ResNet18-UNet: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(cin, cout)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (
            nn.Identity()
            if cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResidualUnit(nn.Module):
    """One 3x3 conv + BN + ReLU with an identity shortcut: the unit of the residual skip pathway (RP)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def init_decoder(module: nn.Module) -> None:
    """He-normal (Gaussian, as in the second paper) weights for convolutions, unit BN."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
