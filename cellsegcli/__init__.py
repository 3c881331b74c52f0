"""cellseg: segment cells in time-lapse microscopy with ResNet-18 U-Net/FPN models."""

__version__ = "0.1.0"
