"""Augmented training batches: crops drawn from the annotated images, made in the training process
(`crop_batches`, one generator for all) or by worker processes from a seed per batch (`CropBatches`,
`batch_loader`: the same batches whatever the number of workers). A batch is ``(x, y, w)``: images
(B, 1, Y, X), targets (B, K, Y, X) and the pixel weights (B, 1, Y, X) of ``--border-weight``, or None.
"""

from __future__ import annotations

import numpy as np
import torch

from .augment import Augmentation, random_crop
from .data import Sample


def sampling_weights(samples: list[Sample], sampling: str) -> torch.Tensor:
    """How often each image is drawn for a crop: in proportion to its area (``area``: every pixel equally
    likely), or equally (``image``: every image equally likely, as a per-image mean score weighs them)."""
    if sampling == "image":
        return torch.ones(len(samples), dtype=torch.float64)
    return torch.tensor([s.image.size for s in samples], dtype=torch.float64)


def split_batch(crops: torch.Tensor, n_targets: int, weighted: bool):
    """(x, y, w) of a batch of stacked crops: image, targets, pixel weights (None when unweighted)."""
    return crops[:, :1], crops[:, 1:1 + n_targets], (crops[:, 1 + n_targets:] if weighted else None)


class CropBatches(torch.utils.data.Dataset):
    """Batches of augmented crops of ``samples``: `draw` makes one from a generator; ``dataset[seed]``
    makes one from a seed of its own, so that worker processes make the same batches in the same order
    whatever their number (what ``--loader-workers`` uses). That stream differs from the in-process one of
    `crop_batches` (one generator for all)."""

    def __init__(self, samples: list[Sample], crop: int, batch: int, aug: Augmentation, sampling: str = "area"):
        self.stacks = [torch.from_numpy(s.stack()) for s in samples]
        self.labels = ([torch.from_numpy(s.labels.astype(np.float32)) for s in samples] if aug.object_p > 0
                       else None)
        self.odds = sampling_weights(samples, sampling)
        self.n_targets, self.weighted = samples[0].targets.shape[0], samples[0].weights is not None
        self.crop, self.batch, self.aug = crop, batch, aug

    def draw(self, gen: torch.Generator):
        """One (x, y, w) batch: images drawn per the sampling odds, each cropped and augmented."""
        idx = torch.multinomial(self.odds, self.batch, replacement=True, generator=gen)
        crops = torch.stack([random_crop(self.stacks[i], self.crop, self.aug, gen,
                                         self.labels[i] if self.labels else None, continuous=int(self.weighted))
                             for i in idx.tolist()])
        return split_batch(crops, self.n_targets, self.weighted)

    def __getitem__(self, seed: int):
        return self.draw(torch.Generator().manual_seed(int(seed)))


def crop_batches(samples: list[Sample], crop: int, batch: int, steps: int, aug: Augmentation,
                 gen: torch.Generator, sampling: str = "area"):
    """``steps`` (x, y, w) batches of augmented crops from one generator, images drawn per ``sampling``
    (see `sampling_weights`); w, the pixel weights, is None unless the samples carry weights."""
    dataset = CropBatches(samples, crop, batch, aug, sampling)
    for _ in range(steps):
        yield dataset.draw(gen)


class _Seeds(torch.utils.data.Sampler):
    """The seeds of the current epoch's batches (replaced every epoch; the loader's workers persist)."""

    def __init__(self) -> None:
        self.values: list[int] = []

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)   # a loader worker: the parallelism is the workers


def batch_loader(dataset: CropBatches, workers: int, device: torch.device):
    """(loader, seeds) for ``workers`` worker processes making the batches of ``dataset`` (forked: the images
    are shared, not copied); set ``seeds.values`` to an epoch's seeds, then iterate the loader for them."""
    seeds = _Seeds()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=seeds, num_workers=workers, persistent_workers=True, prefetch_factor=4,
        pin_memory=device.type == "cuda", worker_init_fn=_one_thread, multiprocessing_context="fork",
        generator=torch.Generator().manual_seed(0))   # the workers' seeds: not drawn from the global generator,
    # which dropout uses and a checkpoint restores (a loader made on --resume would draw from it otherwise)
    return loader, seeds
