"""Tiled, test-time-augmented inference over a stream of frames.

The predictor is a plain callable ``model(x) -> y`` on ``(B, C, t, t)`` tensors already on ``device``
(returning ``(B, K, t, t)``), so it can be tested with ``lambda x: x``. Jobs (frame, tile, TTA transform)
from consecutive frames share batches; each output is activated (sigmoid by default), its transform undone
and accumulated with Gaussian weights on the device, and a frame is yielded, in order, once all its jobs
are done. With ``scale`` != 1 a frame is first resized (so its cells have the size the model was trained
on) and its blended output resized back to the frame's own shape. At most about ``batch_size`` jobs plus
one frame beyond are in flight, so memory does not depend on the stack's length.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from . import tta as _tta
from .tiling import Grid, Tile, gaussian_weights, make_grid, pad_frame

Model = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class InferenceOptions:
    tile: int = 512            # tile side (multiple of 32); frames smaller than a tile use a smaller one
    overlap: float = 0.25      # overlap between neighbouring tiles, as a fraction of the tile
    tta: str = "none"          # none | flip | d4
    batch_size: int = 4        # tiles per forward pass (tiles x TTA transforms x frames)
    scale: float = 1.0         # frames are resized by this factor for the model, outputs resized back

    def __post_init__(self) -> None:
        _tta.transforms(self.tta)
        if not 0.1 <= self.scale <= 10:
            raise ValueError(f"scale {self.scale:g} is outside 0.1-10")
        make_grid((self.tile, self.tile), tile=self.tile, overlap=self.overlap)  # validates tile and overlap
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


@dataclass
class _Frame:
    grid: Grid
    data: torch.Tensor                 # (C, Yp, Xp) padded input on the device
    shape: tuple[int, int]             # the frame's (Y, X) before resizing by options.scale
    acc: torch.Tensor | None = None    # (K, Yp, Xp) weighted sum of outputs
    remaining: int = 0


@dataclass
class TiledPredictor:
    """Run ``model`` over frames of any size with tiling, Gaussian blending and TTA.

    Parameters
    ----------
    model : callable
        ``(B, C, t, t)`` float tensor on ``device`` -> ``(B, K, t, t)`` (logits for cellseg models).
    device : torch.device
        Where tiles run and where outputs are blended.
    options : InferenceOptions
    activation : callable or None
        Applied to model outputs before undoing TTA and blending (``torch.sigmoid``; ``None`` for identity).
    autocast : torch.dtype or None
        Mixed precision for the forward pass (bf16/fp16 on GPU; None on CPU).
    """

    model: Model
    device: torch.device
    options: InferenceOptions = field(default_factory=InferenceOptions)
    activation: Callable[[torch.Tensor], torch.Tensor] | None = torch.sigmoid
    autocast: torch.dtype | None = None
    forward_seconds: float = 0.0       # time spent inside model calls (synchronised), for benchmarks
    tiles_run: int = 0

    def predict(self, frame: np.ndarray) -> np.ndarray:
        """One frame (Y, X) or (C, Y, X) -> (K, Y, X) float32."""
        return next(iter(self.predict_stream([frame])))

    def predict_stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Frames (Y, X) or (C, Y, X) in, blended outputs (K, Y, X) float32 out, in the same order."""
        transforms = _tta.transforms(self.options.tta)
        pending: deque[tuple[_Frame, Tile, int]] = deque()
        active: deque[_Frame] = deque()
        for frame in frames:
            state = self._start(frame, len(transforms))
            active.append(state)
            pending.extend((state, tile, k) for tile in state.grid.tiles for k in transforms)
            while len(pending) >= self.options.batch_size:
                self._run_batch(pending)
            while active and active[0].remaining == 0:
                yield self._finish(active.popleft(), len(transforms))
        while pending:
            self._run_batch(pending)
        while active:
            yield self._finish(active.popleft(), len(transforms))

    def _start(self, frame: np.ndarray, n_transforms: int) -> _Frame:
        if frame.ndim == 2:
            frame = frame[None]
        shape = frame.shape[-2:]
        if self.options.scale != 1:   # on the CPU, before padding: a few ms per megapixel
            frame = resize(torch.from_numpy(np.asarray(frame, dtype=np.float32)),
                           scaled_shape(shape, self.options.scale)).numpy()
        grid = make_grid(frame.shape[-2:], tile=self.options.tile, overlap=self.options.overlap)
        padded = np.ascontiguousarray(pad_frame(frame, grid.padded), dtype=np.float32)
        data = torch.from_numpy(padded)
        if self.device.type == "cuda":   # pinned: the copy overlaps the device's work on earlier tiles
            data = data.pin_memory()
        data = data.to(self.device, non_blocking=True)
        return _Frame(grid=grid, data=data, shape=shape, remaining=len(grid.tiles) * n_transforms)

    def _run_batch(self, pending: deque[tuple[_Frame, Tile, int]]) -> None:
        """One batch of (frame, tile, transform) jobs: the tiles are cut once each, transformed all at once by
        one gather, run, undone by one gather, summed per tile and added to their frames' accumulators."""
        size = pending[0][0].grid.tile
        jobs = []
        while pending and len(jobs) < self.options.batch_size and pending[0][0].grid.tile == size:
            jobs.append(pending.popleft())
        tiles: list[tuple[_Frame, Tile]] = []
        slot: list[int] = []
        for state, tile, _ in jobs:   # the distinct tiles, in order (a tile's transforms are consecutive)
            if not tiles or tiles[-1][0] is not state or tiles[-1][1] != tile:
                tiles.append((state, tile))
            slot.append(len(tiles) - 1)
        forward, inverse = self._permutations(size)
        ks = torch.tensor([k for _, _, k in jobs], device=self.device)
        which = torch.tensor(slot, device=self.device)
        crops = torch.stack([state.data[:, tile.rows, tile.cols] for state, tile in tiles]).flatten(2)   # (U, C, T*T)
        channels = torch.arange(crops.shape[1], device=self.device)
        x = crops[which[:, None, None], channels[None, :, None], forward[ks][:, None, :]]
        y = self._forward(x.view(len(jobs), crops.shape[1], size, size))
        if self.activation is not None:
            y = self.activation(y)
        y = torch.gather(y.flatten(2), 2, inverse[ks][:, None, :].expand(-1, y.shape[1], -1))   # undone
        summed = torch.zeros((len(tiles), *y.shape[1:]), dtype=y.dtype, device=self.device).index_add_(0, which, y)
        summed = summed.view(len(tiles), y.shape[1], size, size) * self._weights(size)
        for (state, tile), out in zip(tiles, summed, strict=True):
            if state.acc is None:
                state.acc = torch.zeros((out.shape[0], *state.grid.padded), dtype=torch.float32, device=self.device)
            state.acc[:, tile.rows, tile.cols] += out
        for state, _, _ in jobs:
            state.remaining -= 1

    def _permutations(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        cache = self.__dict__.setdefault("_permutation_cache", {})
        if size not in cache:
            cache[size] = _tta.permutations(size, self.device)
        return cache[size]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.autocast,
                                                    enabled=self.autocast is not None):
            y = self.model(x)
        y = y.float()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.forward_seconds += time.perf_counter() - t0
        self.tiles_run += x.shape[0]
        return y

    def _weights(self, size: int) -> torch.Tensor:
        cache = self.__dict__.setdefault("_weight_cache", {})
        if size not in cache:
            cache[size] = torch.from_numpy(np.array(gaussian_weights(size))).to(self.device)
        return cache[size]

    def _norm(self, grid: Grid) -> torch.Tensor:
        cache = self.__dict__.setdefault("_norm_cache", {})
        key = (grid.shape, grid.tile)  # the overlap is fixed per predictor
        if key not in cache:
            norm = torch.zeros(grid.padded, dtype=torch.float32, device=self.device)
            w = self._weights(grid.tile)
            for tile in grid.tiles:
                norm[tile.rows, tile.cols] += w
            cache.clear()
            cache[key] = norm
        return cache[key]

    def _finish(self, state: _Frame, n_transforms: int) -> np.ndarray:
        h, w = state.grid.shape
        out = (state.acc / (self._norm(state.grid) * n_transforms))[:, :h, :w]
        if (h, w) != state.shape:
            out = resize(out, state.shape)
        return out.to("cpu").numpy()


def scaled_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """``shape`` times ``scale``, rounded, at least 1 pixel per side."""
    return tuple(max(1, round(n * scale)) for n in shape)


def resize(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(C, Y, X) -> (C, *shape), bilinear; antialiased when shrinking, so small objects are averaged,
    not skipped."""
    shrink = shape[0] < x.shape[-2] or shape[1] < x.shape[-1]
    return torch.nn.functional.interpolate(x[None], size=tuple(shape), mode="bilinear", align_corners=False,
                                           antialias=shrink)[0]


def network_callable(network: torch.nn.Module, device: torch.device) -> Model:
    """Wrap a network (moved to ``device``, eval mode, channels_last) as a plain callable."""
    network = network.to(device=device, memory_format=torch.channels_last).eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        return network(x.contiguous(memory_format=torch.channels_last))

    return run
