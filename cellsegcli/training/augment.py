"""Random crops with the papers' augmentation: rotation, flips, translation, elastic deformation (+ scale
and intensity jitter), done in one ``grid_sample`` per crop so that image and targets move together.

On top of the papers' geometric set, the image (never the targets) gets what differs between microscopes
and labs, each with a probability as nnU-Net applies its intensity transforms: a gamma curve (camera
response, display-adjusted 8-bit exports), a Gaussian blur (focus, lower-NA optics) and a smooth
multiplicative illumination field (uneven lamps, vignetting). Trained without them, the phase and nuclei
models lost 0.07 Jaccard to a 2 px blur of their validation images and the nuclei model 0.06-0.07 to a gamma
of 0.6 or 1.6 (``benchmarks/robustness.py``); a warm restart with them took the phase model's F1 at that
blur from 0.68 to 0.87 at no cost on the unperturbed images (README, "Robustness").

Per-object gain: in a fluorescence frame some nuclei are 10-20x dimmer than their brightest neighbours,
and a per-frame percentile normalisation leaves them at a few percent of the range. With ``object_p`` a
crop's annotated objects are each, with probability one half, dimmed towards the crop's background
by a factor drawn log-uniformly from ``object_gain`` (a smooth gain map, so an object's halo dims
with it); the targets stay, so the network learns that a faint object is still an object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    rotate: bool = True
    flip: bool = True
    scale: tuple[float, float] = (0.8, 1.25)   # zoom range (log-uniform)
    elastic_alpha: float = 6.0                 # std of the elastic displacement, pixels
    elastic_grid: int = 5                      # control points per side of the crop
    contrast: tuple[float, float] = (0.75, 1.33)
    brightness: float = 0.1
    noise: float = 0.03
    gamma: tuple[float, float] = (0.7, 1.5)    # exponent range (log-uniform) on the crop's own [min, max]
    gamma_p: float = 0.3
    blur: tuple[float, float] = (0.5, 2.0)     # Gaussian sigma range, pixels
    blur_p: float = 0.2
    illumination: float = 0.15                 # std of the log gain at 3 x 3 control points over the crop
    illumination_p: float = 0.3
    object_gain: tuple[float, float] = (0.05, 1.0)   # per-object contrast factor range (log-uniform)
    object_p: float = 0.3                      # chance that a crop's objects get their own gains

    @classmethod
    def off(cls) -> Augmentation:
        return cls(rotate=False, flip=False, scale=(1.0, 1.0), elastic_alpha=0.0, contrast=(1.0, 1.0),
                   brightness=0.0, noise=0.0, gamma_p=0.0, blur_p=0.0, illumination_p=0.0, object_p=0.0)

    def geometric(self) -> Augmentation:
        """The same geometry with every intensity transform off."""
        return replace(self, contrast=(1.0, 1.0), brightness=0.0, noise=0.0, gamma_p=0.0, blur_p=0.0,
                       illumination_p=0.0, object_p=0.0)


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def sample_grid(height: int, width: int, crop: int, aug: Augmentation, gen: torch.Generator) -> torch.Tensor:
    """A (1, crop, crop, 2) sampling grid (normalised x, y in [-1, 1], align_corners=True) into an
    image of ``height x width``: a random centre, rotation, flip, zoom and elastic displacement."""
    cy = _uniform(gen, 0, height - 1)
    cx = _uniform(gen, 0, width - 1)
    angle = _uniform(gen, 0, 2 * math.pi) if aug.rotate else 0.0
    lo, hi = aug.scale
    zoom = math.exp(_uniform(gen, math.log(lo), math.log(hi)))
    flip = -1.0 if aug.flip and float(torch.rand((), generator=gen)) < 0.5 else 1.0
    r = torch.arange(crop, dtype=torch.float32) - (crop - 1) / 2
    v, u = torch.meshgrid(r, r * flip, indexing="ij")
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    x = cx + cos * u - sin * v
    y = cy + sin * u + cos * v
    if aug.elastic_alpha > 0:
        coarse = torch.randn((1, 2, aug.elastic_grid, aug.elastic_grid), generator=gen) * aug.elastic_alpha
        disp = F.interpolate(coarse, size=(crop, crop), mode="bicubic", align_corners=True)[0]
        x = x + disp[0]
        y = y + disp[1]
    grid = torch.stack([2 * x / max(width - 1, 1) - 1, 2 * y / max(height - 1, 1) - 1], dim=-1)
    return grid[None]


def _chance(gen: torch.Generator, p: float) -> bool:
    return p > 0 and float(torch.rand((), generator=gen)) < p


def gamma_curve(image: torch.Tensor, gamma: float) -> torch.Tensor:
    """``image`` mapped through ``x ** gamma`` on its own [min, max] (both ends stay where they are)."""
    lo, hi = image.min(), image.max()
    if hi <= lo:
        return image
    return ((image - lo) / (hi - lo)) ** gamma * (hi - lo) + lo


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """A (C, Y, X) image blurred by a separable Gaussian of ``sigma`` px (borders reflected)."""
    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=image.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    out = F.pad(image[None], (r, r, r, r), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(image.shape[0], 1, 1, -1), groups=image.shape[0])
    out = F.conv2d(out, k.view(1, 1, -1, 1).expand(image.shape[0], 1, -1, 1), groups=image.shape[0])
    return out[0]


def illumination_field(shape: tuple[int, int], std: float, gen: torch.Generator) -> torch.Tensor:
    """A smooth (Y, X) gain field: exp of a bicubic interpolation of 3 x 3 Gaussian values of ``std``."""
    coarse = torch.randn((1, 1, 3, 3), generator=gen) * std
    return torch.exp(F.interpolate(coarse, size=shape, mode="bicubic", align_corners=True)[0, 0])


def object_gains(image: torch.Tensor, labels: torch.Tensor, gains: torch.Tensor, *,
                 soften: float = 1.5) -> torch.Tensor:
    """A (1, Y, X) image with each object's contrast to the background scaled by its own gain.

    ``labels`` (Y, X) holds integer ids (0 background), ``gains`` one factor per id (``gains[0]`` is
    ignored: the background keeps its level). The background level is the median of the background
    pixels (of the whole image when there are none); the gain map is blurred by ``soften`` px so that
    the objects' rims and halos follow them. Pixels ``b + (x - b) * g``.
    """
    ids = labels.long()
    g = gains.to(image.dtype).clone()
    g[0] = 1.0
    gain_map = g[ids][None]
    if soften > 0:
        gain_map = gaussian_blur(gain_map, soften)
    back = image[0][ids == 0]
    level = (back if back.numel() else image.flatten()).median()
    return level + (image - level) * gain_map


def jitter_intensity(image: torch.Tensor, aug: Augmentation, gen: torch.Generator,
                     labels: torch.Tensor | None = None) -> torch.Tensor:
    """On a (1, Y, X) normalised image: per-object gains (with ``labels``), gamma, blur and illumination
    field (each with its probability), then contrast around 0.5, brightness shift and Gaussian noise."""
    if labels is not None and _chance(gen, aug.object_p):
        n = int(labels.max()) + 1
        lo, hi = math.log(aug.object_gain[0]), math.log(aug.object_gain[1])
        gains = torch.exp(lo + (hi - lo) * torch.rand(n, generator=gen))
        gains = torch.where(torch.rand(n, generator=gen) < 0.5, gains, torch.ones(n))
        image = object_gains(image, labels, gains)
    if _chance(gen, aug.gamma_p):
        image = gamma_curve(image, math.exp(_uniform(gen, math.log(aug.gamma[0]), math.log(aug.gamma[1]))))
    if _chance(gen, aug.blur_p):
        image = gaussian_blur(image, _uniform(gen, *aug.blur))
    if _chance(gen, aug.illumination_p):
        image = image * illumination_field(tuple(image.shape[-2:]), aug.illumination, gen)
    contrast = math.exp(_uniform(gen, math.log(aug.contrast[0]), math.log(aug.contrast[1])))
    shift = _uniform(gen, -aug.brightness, aug.brightness)
    out = (image - 0.5) * contrast + 0.5 + shift
    if aug.noise > 0:
        out = out + torch.randn(out.shape, generator=gen) * _uniform(gen, 0, aug.noise)
    return out


def random_crop(stack: torch.Tensor, crop: int, aug: Augmentation, gen: torch.Generator,
                labels: torch.Tensor | None = None, *, continuous: int = 0) -> torch.Tensor:
    """One augmented crop of ``stack`` (1 + K + C, Y, X): channel 0 the image (bilinear), then K binary
    targets (bilinear, then thresholded at 0.5), then the last ``continuous`` C channels (pixel weights:
    bilinear, kept as they are). ``labels`` (Y, X), the instance ids, follow the same grid (nearest) for
    the per-object gains. Returns (1 + K + C, crop, crop)."""
    _, h, w = stack.shape
    grid = sample_grid(h, w, crop, aug, gen)
    out = F.grid_sample(stack[None], grid, mode="bilinear", padding_mode="reflection", align_corners=True)[0]
    ids = None
    if labels is not None and aug.object_p > 0:
        ids = F.grid_sample(labels[None, None].float(), grid, mode="nearest", padding_mode="reflection",
                            align_corners=True)[0, 0]
    image = jitter_intensity(out[:1], aug, gen, ids)
    end = out.shape[0] - continuous
    targets = (out[1:end] > 0.5).float()
    return torch.cat([image, targets, out[end:]])
