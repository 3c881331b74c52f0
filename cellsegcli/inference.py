"""Tiled, test-time-augmented inference over a stream of frames.

The predictor is a plain callable ``model(x) -> y`` on ``(B, C, t, t)`` tensors already on ``device``
(returning ``(B, K, t, t)``), so it can be tested with ``lambda x: x``. Jobs (frame, tile, TTA transform)
from consecutive frames share batches; each output is activated (sigmoid by default), its transform undone
and accumulated with Gaussian weights on the device, and a frame is yielded, in order, once all its jobs
are done. With ``scale`` != 1 a frame is first resized (so its cells have the size the model was trained
on) and its blended output resized back to the frame's own shape. At most about ``batch_size`` jobs plus
one frame beyond are in flight, so memory does not depend on the stack's length.

A tile's transforms are summed in a fixed order once all of them are done, so the output does not depend on
how jobs fell into batches. That is what makes the out-of-memory back-off exact: when the device runs out of
memory, the batch is halved (then the tile, then blending moves to the CPU), the frames in flight start
again with the new setting, and every frame from then on is what a run started with it gives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from . import tta as _tta
from .errors import CellsegError
from .tiling import Grid, gaussian_weights, make_grid, pad_frame

Model = Callable[[torch.Tensor], torch.Tensor]
MIN_TILE = 128   # the out-of-memory back-off does not go below this tile


class OutOfMemory(CellsegError):
    """The device ran out of memory at the smallest setting the back-off tries."""


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's ``OutOfMemoryError``, MPS's and the CPU allocator's out-of-memory ``RuntimeError``."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


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
    source: np.ndarray                 # (C, Y, X) float32 after resizing: kept to start again after a back-off
    shape: tuple[int, int]             # the frame's (Y, X) before resizing by options.scale
    grid: Grid | None = None
    data: torch.Tensor | None = None   # (C, Yp, Xp) padded input on the device
    acc: torch.Tensor | None = None    # (K, Yp, Xp) weighted sum of finished tiles, on the blending device
    parts: dict[int, torch.Tensor] = field(default_factory=dict)   # tile index -> (n_transforms, K, t, t)
    filled: dict[int, int] = field(default_factory=dict)           # tile index -> transforms done
    remaining: int = 0                 # tiles not yet added to acc


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
    notify : callable or None
        Receives one line per out-of-memory back-off.
    """

    model: Model
    device: torch.device
    options: InferenceOptions = field(default_factory=InferenceOptions)
    activation: Callable[[torch.Tensor], torch.Tensor] | None = torch.sigmoid
    autocast: torch.dtype | None = None
    notify: Callable[[str], None] | None = None
    forward_seconds: float = 0.0       # time spent inside model calls (synchronised), for benchmarks
    tiles_run: int = 0
    blend_device: torch.device | None = None   # where outputs are accumulated (default: ``device``)
    backoffs: list[str] = field(default_factory=list)

    def predict(self, frame: np.ndarray) -> np.ndarray:
        """One frame (Y, X) or (C, Y, X) -> (K, Y, X) float32."""
        return next(iter(self.predict_stream([frame])))

    def predict_stream(self, frames: Iterable[np.ndarray], *, tensors: bool = False) -> Iterator[np.ndarray]:
        """Frames (Y, X) or (C, Y, X) in, blended outputs (K, Y, X) float32 out, in the same order: numpy
        arrays, or with ``tensors`` float32 tensors where they were blended (the device), for work that stays
        there (:mod:`cellsegcli.device_labels`)."""
        pending: deque[tuple[_Frame, int, int]] = deque()
        active: deque[_Frame] = deque()

        def run_one_batch() -> None:
            try:
                self._run_batch(pending)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                self._back_off(exc)
                pending.clear()
                for state in active:   # the frames in flight start again with the new setting
                    pending.extend(self._start(state))

        for frame in frames:
            state = self._prepare(frame)
            active.append(state)
            pending.extend(self._start(state))
            while len(pending) >= self.options.batch_size:
                run_one_batch()
            while active and active[0].remaining == 0:
                yield self._finish(active.popleft(), tensors)
        while pending:
            run_one_batch()
        while active:
            yield self._finish(active.popleft(), tensors)

    def warm_up(self, shape: tuple[int, int], channels: int = 1) -> None:
        """Run the network once on zeros shaped as the first batch of ``(Y, X)`` frames (not counted in
        ``forward_seconds``): the first call builds the device's kernels (about 0.5 s more than a later call
        for 1024 px tiles on a CPU), so a caller can have it overlap other start-up work."""
        if self.options.scale != 1:
            shape = scaled_shape(shape, self.options.scale)
        grid = make_grid(tuple(shape), tile=self.options.tile, overlap=self.options.overlap)
        n = min(self.options.batch_size, len(grid.tiles) * len(_tta.transforms(self.options.tta)))
        try:
            x = torch.zeros((n, channels, grid.tile, grid.tile), device=self.device)
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.autocast,
                                                        enabled=self.autocast is not None):
                self.model(x)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except Exception as exc:   # the first real batch then backs off (predict_stream)
            if not is_out_of_memory(exc):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    @property
    def _blend(self) -> torch.device:
        return self.blend_device or self.device

    def _prepare(self, frame: np.ndarray) -> _Frame:
        if frame.ndim == 2:
            frame = frame[None]
        shape = frame.shape[-2:]
        if self.options.scale != 1:   # on the CPU, before padding: a few ms per megapixel
            frame = resize(torch.from_numpy(np.asarray(frame, dtype=np.float32)),
                           scaled_shape(shape, self.options.scale)).numpy()
        return _Frame(source=np.asarray(frame, dtype=np.float32), shape=shape)

    def _start(self, state: _Frame) -> list[tuple[_Frame, int, int]]:
        """(Re)start ``state`` with the current options; its jobs, in order."""
        grid = make_grid(state.source.shape[-2:], tile=self.options.tile, overlap=self.options.overlap)
        data = torch.from_numpy(np.ascontiguousarray(pad_frame(state.source, grid.padded)))
        if self.device.type == "cuda":   # pinned: the copy overlaps the device's work on earlier tiles
            data = data.pin_memory()
        state.grid, state.data = grid, data.to(self.device, non_blocking=True)
        state.acc, state.parts, state.filled = None, {}, {}
        state.remaining = len(grid.tiles)
        transforms = _tta.transforms(self.options.tta)
        return [(state, i, k) for i in range(len(grid.tiles)) for k in transforms]

    def _back_off(self, exc: BaseException) -> None:
        """Halve the batch, else the tile, else blend on the CPU; else give up with one line."""
        opts = self.options
        if opts.batch_size > 1:
            self.options = replace(opts, batch_size=opts.batch_size // 2)
            change = f"batch size {opts.batch_size} -> {self.options.batch_size}"
        elif opts.tile // 2 >= MIN_TILE:
            self.options = replace(opts, tile=opts.tile // 2 // 32 * 32)
            change = f"tile {opts.tile} -> {self.options.tile}"
        elif self._blend.type != "cpu":
            self.blend_device = torch.device("cpu")
            change = "blending moved to the CPU"
        else:
            raise OutOfMemory(f"out of memory on {self.device} even at --batch-size 1 --tile {opts.tile}: free "
                              f"memory (other processes on the device?) or run with --device cpu") from None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.backoffs.append(change)
        if self.notify is not None:
            self.notify(f"out of memory on {self.device}: {change}; the frames in flight start again "
                        f"(results as a run started with this setting)")

    def _run_batch(self, pending: deque[tuple[_Frame, int, int]]) -> None:
        """One batch of (frame, tile, transform) jobs: the tiles are cut once each, transformed all at once by
        one gather, run and undone by one gather; each tile's outputs are kept until all its transforms are
        done, then summed in transform order and added to its frame. Nothing is changed if this raises
        before the outputs exist (the jobs are put back)."""
        size = pending[0][0].grid.tile
        jobs = []
        while pending and len(jobs) < self.options.batch_size and pending[0][0].grid.tile == size:
            jobs.append(pending.popleft())
        try:
            y = self._outputs(jobs, size)
        except BaseException:
            pending.extendleft(reversed(jobs))
            raise
        transforms = _tta.transforms(self.options.tta)
        if len(transforms) == 1:   # each job a whole tile: straight into its frame
            for (state, i, _), out in zip(jobs, y):
                self._add_tile(state, i, out)
            return
        position = {k: j for j, k in enumerate(transforms)}
        start = 0
        for end in range(1, len(jobs) + 1):   # runs of one tile's transforms
            if end < len(jobs) and jobs[end][0] is jobs[start][0] and jobs[end][1] == jobs[start][1]:
                continue
            state, i, _ = jobs[start]
            if i not in state.parts:
                state.parts[i] = torch.empty((len(transforms), *y.shape[1:]), dtype=y.dtype, device=y.device)
                state.filled[i] = 0
            idx = torch.tensor([position[k] for _, _, k in jobs[start:end]], device=y.device)
            state.parts[i].index_copy_(0, idx, y[start:end])
            state.filled[i] += end - start
            if state.filled[i] == len(transforms):
                self._add_tile(state, i)
            start = end

    def _outputs(self, jobs: list[tuple[_Frame, int, int]], size: int) -> torch.Tensor:
        """The jobs' (J, K, t, t) outputs, activated, their transforms undone, on the blending device."""
        tiles: list[tuple[_Frame, int]] = []
        slot: list[int] = []
        for state, i, _ in jobs:   # the distinct tiles, in order (a tile's transforms are consecutive)
            if not tiles or tiles[-1][0] is not state or tiles[-1][1] != i:
                tiles.append((state, i))
            slot.append(len(tiles) - 1)
        crops = torch.stack([state.data[:, state.grid.tiles[i].rows, state.grid.tiles[i].cols]
                             for state, i in tiles])   # (U, C, T, T)
        if len(tiles) == len(jobs) and all(k == 0 for _, _, k in jobs):   # identities only (no TTA): no gathers
            y = self._forward(crops)
            if self.activation is not None:
                y = self.activation(y)
            return y.to(self._blend)
        crops = crops.flatten(2)   # (U, C, T*T)
        forward, inverse = self._permutations(size)
        ks = torch.tensor([k for _, _, k in jobs], device=self.device)
        which = torch.tensor(slot, device=self.device)
        channels = torch.arange(crops.shape[1], device=self.device)
        x = crops[which[:, None, None], channels[None, :, None], forward[ks][:, None, :]]
        y = self._forward(x.view(len(jobs), crops.shape[1], size, size))
        if self.activation is not None:
            y = self.activation(y)
        y = torch.gather(y.flatten(2), 2, inverse[ks][:, None, :].expand(-1, y.shape[1], -1))   # undone
        return y.view(len(jobs), y.shape[1], size, size).to(self._blend)

    def _add_tile(self, state: _Frame, i: int, out: torch.Tensor | None = None) -> None:
        """Add tile ``i``'s outputs (``out``, else the sum of its transforms' parts) to its frame, weighted."""
        if out is None:
            out = state.parts.pop(i).sum(dim=0)
        if state.acc is None:
            state.acc = torch.zeros((out.shape[0], *state.grid.padded), dtype=torch.float32, device=self._blend)
        tile = state.grid.tiles[i]
        state.acc[:, tile.rows, tile.cols].addcmul_(out, self._weights(state.grid.tile))
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
        key = (size, str(self._blend))
        if key not in cache:
            cache[key] = torch.from_numpy(np.array(gaussian_weights(size))).to(self._blend)
        return cache[key]

    def _norm(self, grid: Grid) -> torch.Tensor:
        cache = self.__dict__.setdefault("_norm_cache", {})
        key = (grid.shape, grid.tile, str(self._blend))  # the overlap is fixed per predictor
        if key not in cache:
            norm = torch.zeros(grid.padded, dtype=torch.float32, device=self._blend)
            w = self._weights(grid.tile)
            for tile in grid.tiles:
                norm[tile.rows, tile.cols] += w
            cache.clear()
            cache[key] = norm
        return cache[key]

    def _finish(self, state: _Frame, tensor: bool = False) -> np.ndarray | torch.Tensor:
        h, w = state.grid.shape
        n_transforms = len(_tta.transforms(self.options.tta))
        out = (state.acc / (self._norm(state.grid) * n_transforms))[:, :h, :w]
        if (h, w) != state.shape:
            out = resize(out, state.shape)
        return out.contiguous() if tensor else out.to("cpu").numpy()


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
