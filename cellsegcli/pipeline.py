"""Use cases shared by the CLI and the Python API. Nothing here prints or exits: progress goes through a
callback, results come back as dataclasses, problems the user can fix raise :class:`CellsegError`.

``segment`` streams a stack through three stages that overlap in time:

    reader thread  --(raw, normalised frame)-->  device (tiles x TTA)  --probabilities-->  post thread
    (lazy TIFF/folder reads, percentiles)                                   (instances, tables, zarr write)

Queues between the stages hold at most two frames, so memory does not grow with the stack's length.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from . import tta as _tta
from .errors import CellsegError, WriteError

Progress = Callable[..., None]
CPU_TILE = 1024   # on CPU one large tile beats several overlapping small ones (no batching gain there)
GPU_BATCH = 8


@dataclass(frozen=True)
class SegmentConfig:
    """Options of ``cellseg segment``; ``None`` means "the model's (or the device's) default"."""

    model: str | tuple[str, ...] = "phase"   # a model, or several whose probabilities are averaged
    tta: str = "auto"                  # auto (d4 on GPU, none on CPU) | none | flip | d4
    tile: int | None = None
    overlap: float = 0.25
    batch_size: int | None = None
    threshold: float | None = None
    seed_threshold: float | None = None
    min_size: int | None = None
    split_clumps: bool | None = None   # None: the model's
    device: str = "auto"
    axes: str | None = None
    channel: int | None = None
    pixel_size: float | None = None
    diameter: float | None = None      # typical cell diameter in the input, px: frames are resized to the model's
    save_image: bool = True
    save_probabilities: bool = False
    table_format: str = "csv"
    overwrite: bool = False
    gt: Path | None = None             # ground truth labels to score against (evaluation.open_labels)
    track: bool = False                # link cells over time: labels hold track ids (see cellsegcli.tracking)
    link: Any = None                   # tracking.LinkOptions (None: the defaults)
    frame_interval_min: float | None = None   # minutes between frames (default: from the file's metadata)
    series: int | None = None          # which image series of a TIFF holding several
    resume: bool = False               # continue an interrupted run of the same input, model and options
    post_workers: int | None = None    # processes labelling frames (None: 1 on CPU, the spare cores on a GPU)
    frames: str | None = None          # START:STOP[:STEP] of the movie's frames (None: all)
    z: str | None = None               # a Z axis: "slices" (each its own image) or "max" (projection)
    label_on: str = "cpu"              # where instances are labelled: "cpu" (post workers) or "device" (torch)


@dataclass(frozen=True)
class Outputs:
    zarr: Path
    cells: Path
    frames: Path
    scores: Path

    @classmethod
    def for_input(cls, source: Path, out: Path | None, *, several: bool, table_format: str) -> Outputs:
        """Output paths: next to the input by default; ``out`` is a folder, or the .zarr path for one input."""
        stem = source.stem if source.is_file() or source.suffix else source.name
        if stem.endswith(".ome"):
            stem = stem[:-4]
        if out is not None and out.suffix == ".zarr" and not several:
            zarr_path = out
        else:
            folder = out if out is not None else source.parent
            zarr_path = folder / f"{stem}.zarr"
        from .io.tables import table_path

        return cls(zarr_path, *(table_path(zarr_path, kind, table_format) for kind in ("cells", "frames", "scores")))

    def refuse_existing(self, overwrite: bool) -> None:
        """An OutputExistsError for the first of the zarr and the tables already there, unless ``overwrite``."""
        from .errors import OutputExistsError

        for path in (self.zarr, self.cells, self.frames):
            if (path.exists() or path.is_symlink()) and not overwrite:
                raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")


@dataclass
class SegmentResult:
    input: Path
    outputs: Outputs
    n_frames: int
    shape: tuple[int, int]
    model: str
    model_sha256: str | None
    device: str
    tta: str
    tile: int
    seconds: float
    forward_seconds: float
    cells_per_frame: list[int] = field(default_factory=list)
    pixel_size_um: float | None = None
    scores: dict[str, Any] | None = None   # evaluation summary when ground truth was given
    scale: float = 1.0                     # frames resized by this for the model (--diameter)
    tracking: dict[str, Any] | None = None  # with --track: counts and the track tables' paths
    stage_seconds: dict[str, float] | None = None   # read, label, write, tables summed over frames (None: Dask)
    frames_resumed: int = 0                          # frames an interrupted run had finished (--resume)
    backoffs: list[str] = field(default_factory=list)  # out-of-memory back-offs, in order
    label_on: str = "cpu"                            # where the instances were labelled (--label-on)

    @property
    def post_seconds(self) -> float | None:
        """Labelling + chunk writes + tables, summed over frames (None with a Dask scheduler)."""
        stages = self.stage_seconds
        return None if stages is None else stages["label"] + stages["write"] + stages["tables"]

    @property
    def frames_per_second(self) -> float:
        return self.n_frames / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        counts = self.cells_per_frame
        return {
            "input": str(self.input), "zarr": str(self.outputs.zarr), "cells_table": str(self.outputs.cells),
            "frames_table": str(self.outputs.frames), "frames": self.n_frames, "shape": list(self.shape),
            "pixel_size_um": self.pixel_size_um, "model": self.model, "model_sha256": self.model_sha256,
            "device": self.device, "tta": self.tta, "tile": self.tile, "scale": round(self.scale, 4),
            "label_on": self.label_on, "seconds": round(self.seconds, 3),
            "forward_seconds": round(self.forward_seconds, 3),
            "post_seconds": None if self.post_seconds is None else round(self.post_seconds, 3),
            "stage_seconds": None if self.stage_seconds is None else {k: round(v, 3) for k, v in
                                                                      self.stage_seconds.items()},
            "frames_per_second": round(self.frames_per_second, 4), "frames_resumed": self.frames_resumed,
            "out_of_memory_backoffs": self.backoffs,
            "cells_total": int(sum(counts)), "cells_per_frame_mean": float(np.mean(counts)) if counts else 0.0,
            **({"scores_table": str(self.outputs.scores), "scores": self.scores} if self.scores else {}),
            **({"tracks": self.tracking} if self.tracking else {}),
        }


BASELINES = ("phantast", "egt")   # classical methods usable as --model, no network


def _baseline_model(name: str):
    from .models import Model, ModelConfig

    config = ModelConfig(name=name, architecture=name, outputs=("cell",),
                         description=f"classical baseline ({name}), cellsegcli/baselines.py")
    return Model(config=config, network=None)


def resolve_tta(tta: str, device: torch.device) -> str:
    if tta == "auto":
        return "d4" if device.type == "cuda" else "none"
    return tta


@dataclass(frozen=True)
class FrameSettings:
    """What turns one frame's probabilities into outputs (resolved from the model and the options)."""

    threshold: float
    seed_threshold: float
    min_size: int
    pixel_size_um: float | None
    save_image: bool
    save_probabilities: bool
    holes: bool = False
    numbers: range | None = None        # the movie's frame number of each result frame (None: 0, 1, ...)
    split_clumps: bool = False          # split seeds that part at higher interior levels inside clumps
    frame_interval_s: float | None = None   # seconds between the movie's frames (time_s column)

    def frame_number(self, t: int) -> int:
        return self.numbers[t] if self.numbers is not None else t


def frame_settings(model_config, config: SegmentConfig, pixel_size_um: float | None = None,
                   numbers: range | None = None, interval_s: float | None = None) -> FrameSettings:
    """The options, else the model's thresholds; the model's ``min_size`` is in its own pixels, and a frame
    resized by ``scale`` for it (``--diameter``) has 1 / scale^2 times as many pixels per cell."""
    mc = model_config
    scale = input_scale(mc, config.diameter)
    return FrameSettings(
        threshold=mc.threshold if config.threshold is None else config.threshold,
        seed_threshold=mc.seed_threshold if config.seed_threshold is None else config.seed_threshold,
        min_size=round(mc.min_size / scale**2) if config.min_size is None else config.min_size,
        pixel_size_um=pixel_size_um, save_image=config.save_image, save_probabilities=config.save_probabilities,
        holes=mc.holes, numbers=numbers, frame_interval_s=interval_s,
        split_clumps=mc.split_clumps if config.split_clumps is None else config.split_clumps)


def label_frame(prob: np.ndarray, settings: FrameSettings) -> np.ndarray:
    """(Y, X) uint32 instance labels of one frame's (K, Y, X) probabilities, with the settings' thresholds."""
    from .instances import label_instances

    return label_instances(prob[0], prob[1] if prob.shape[0] > 1 else None, threshold=settings.threshold,
                           seed_threshold=settings.seed_threshold, min_size=settings.min_size,
                           holes=settings.holes, split_clumps=settings.split_clumps)


def segment_frame(t: int, prob: np.ndarray | None, raw: np.ndarray, settings: FrameSettings, sink,
                  timings: dict[str, float] | None = None, labels: np.ndarray | None = None) -> tuple[dict, dict, int]:
    """Frame ``t``'s instance labels (``labels`` when they were computed on the device already; ``prob`` is
    then None unless the probabilities are saved), written
    (with the image and probabilities the settings keep) to ``sink`` (an ``OmeZarrWriter`` or a
    ``FrameStore``); returns its per-cell table (dict of columns), per-frame row and cell count.
    ``timings``, when given, receives the seconds of its ``label``, ``write`` and ``tables`` stages."""
    from .morphology import cell_table, frame_table_row, with_time

    clock = [time.perf_counter()]

    def lap(stage: str) -> None:
        now = time.perf_counter()
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + now - clock[0]
        clock[0] = now

    if labels is None:
        labels = label_frame(prob, settings)
    lap("label")
    sink.write_frame(t, labels, image=raw if settings.save_image else None,
                     probabilities=prob[0] if settings.save_probabilities else None)
    lap("write")
    px, number = settings.pixel_size_um, settings.frame_number(t)
    seconds = number * settings.frame_interval_s if settings.frame_interval_s else None
    cells = with_time(cell_table(labels, raw, frame=number, pixel_size_um=px), number, seconds)
    row = with_time(frame_table_row(labels, frame=number, pixel_size_um=px), number, seconds)
    out = (cells, row, int(labels.max()))
    lap("tables")
    return out


def normalised_frames(stack, percentiles, path: Path, frames) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(raw, normalised) frames of ``stack``; a NaN or constant frame is a CellsegError naming it."""
    from .normalize import BadFrameError, normalize

    numbers = getattr(stack, "numbers", None)   # a FrameView (--frames): say the movie's frame number
    for t in frames:
        raw = stack.frame(t)
        try:
            norm = normalize(raw, percentiles)
        except BadFrameError as exc:
            number = numbers[t] if numbers is not None else t
            raise CellsegError(f"{path}: frame {number}: {exc}; remove or replace that frame, or leave it out "
                               f"with --frames") from None
        yield raw, norm


def _reader(stack, percentiles, path: Path, which: list[int], out: queue.Queue, stop: threading.Event,
            seconds: list[float] | None = None) -> None:
    """Read and normalise the frames ``which`` ahead of the device (adding the seconds that takes to
    ``seconds[0]``); errors travel down the queue."""
    try:
        frames = normalised_frames(stack, percentiles, path, which)
        while True:
            started = time.perf_counter()
            item = next(frames, None)
            if seconds is not None:
                seconds[0] += time.perf_counter() - started
            if item is None:
                break
            if stop.is_set():
                return
            out.put(item)
        out.put(None)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        out.put(exc)


def _items(q: queue.Queue) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(raw, normalised) frames from the reader thread; re-raises the reader's errors."""
    while True:
        item = q.get()
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def network_stream(predictor, items, labeller=None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(raw frame, (K, Y, X) probabilities, labels) through the tiled predictor; the labels are those of
    ``labeller`` (a :class:`~cellsegcli.device_labels.DeviceLabeller`, run where the probabilities were
    blended), else None (labelled later, on the CPU)."""
    from collections import deque

    raws: deque = deque()

    def normalised():
        for raw, norm in items:
            raws.append(raw)
            yield norm

    for prob in predictor.predict_stream(normalised(), tensors=labeller is not None):
        if labeller is None:
            yield raws.popleft(), prob, None
        else:
            labels = labeller(prob)   # the probabilities come back only to be saved
            yield raws.popleft(), prob.cpu().numpy() if labeller.keep_probabilities else None, labels


def frame_stream(model, predictor, items, labeller=None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(raw frame, (K, Y, X) probabilities, labels or None): through the tiled predictor (see
    :func:`network_stream`), or, for a classical baseline (``predictor`` None), its binary mask of the raw
    frame as (1, Y, X) probabilities."""
    if predictor is not None:
        yield from network_stream(predictor, items, labeller)
        return
    from . import baselines

    method = getattr(baselines, model.config.name)
    for raw, _ in items:
        yield raw, method(raw).astype(np.float32)[None], None


def device_labeller(model, settings: FrameSettings, config: SegmentConfig):
    """The :class:`~cellsegcli.device_labels.DeviceLabeller` for ``--label-on device`` and a two-channel
    network (cell + interior), else None (labels from the CPU)."""
    if config.label_on != "device" or model.network is None or len(model.config.outputs) < 2:
        return None
    from .device_labels import DeviceLabeller

    return DeviceLabeller(settings.threshold, settings.seed_threshold, settings.min_size, settings.holes,
                          keep_probabilities=settings.save_probabilities, split_clumps=settings.split_clumps)


def open_input(source: Path, config: SegmentConfig):
    """The stack ``source`` as ``config`` reads it (axes, channel, series, Z handling), restricted to
    ``config.frames``: a ``Stack``, or a ``FrameView`` of one; its ``numbers`` are the movie's frame
    numbers of its frames."""
    from .io.frames import FrameView, parse_frames
    from .io.readers import open_stack

    stack = open_stack(source, axes=config.axes, channel=config.channel, pixel_size=config.pixel_size,
                       series=config.series, z=config.z)
    numbers = range(stack.info.n_frames)
    if config.frames is not None:
        try:
            numbers = parse_frames(config.frames, stack.info.n_frames, where=str(source))
        except BaseException:
            stack.close()
            raise
    return FrameView(stack, numbers)


def check_inputs(sources: list[Path], config: SegmentConfig, out: Path | None = None) -> None:
    """Everything about a ``segment`` call that can be checked before the first frame is segmented: the
    options, every input (opened: format, axes, channel, Z, frame range), where each result goes (one
    ``.zarr`` path names one input's result; two inputs may not share one) and outputs already there."""

    check_options(config)
    sources = [Path(s) for s in sources]
    several = len(sources) > 1
    if several and out is not None and out.suffix == ".zarr":
        raise CellsegError(f"-o {out}: a .zarr path names the result of one input, and {len(sources)} inputs were "
                           f"given; give a folder (-o results/) to get one result per input")
    seen: dict[Path, Path] = {}
    for source in sources:
        with open_input(source, config):
            pass
        outputs = Outputs.for_input(source, out, several=several, table_format=config.table_format)
        if outputs.zarr in seen:
            raise CellsegError(f"{seen[outputs.zarr]} and {source} would both be written to {outputs.zarr}; "
                               f"rename one, or segment them in separate calls with different -o")
        seen[outputs.zarr] = source
        outputs.refuse_existing(config.overwrite)


def input_scale(model_config, diameter: float | None) -> float:
    """How much frames are resized for the model: its training cell diameter over ``diameter`` (1 when
    ``diameter`` is None)."""
    if diameter is None:
        return 1.0
    if diameter <= 0:
        raise CellsegError(f"--diameter {diameter:g}: give the typical cell diameter in pixels (a positive number)")
    if model_config.architecture in BASELINES:
        raise CellsegError(f"--diameter applies to network models, not the classical baseline {model_config.name}")
    if not model_config.diameter:
        raise CellsegError(f"model '{model_config.name}' records no training cell diameter; retrain it with this "
                           f"cellseg, or add \"diameter\" (pixels) to its config.json")
    scale = model_config.diameter / diameter
    if not 0.1 <= scale <= 10:
        raise CellsegError(f"--diameter {diameter:g}: model '{model_config.name}' was trained on cells "
                           f"{model_config.diameter:g} px across; a factor over 10 from that is out of its reach")
    return scale


def make_predictor(model, device: torch.device, config: SegmentConfig, *, call=None, notify=None):
    """The tiled predictor for ``model`` on ``device`` with ``config``'s tiling, TTA and batch size;
    ``call`` is the network as a callable already on ``device`` (default: prepared here); ``notify``
    receives the out-of-memory back-off's lines."""
    from .device import autocast_dtype
    from .inference import InferenceOptions, TiledPredictor, network_callable

    tta = resolve_tta(config.tta, device)
    tile = config.tile or (CPU_TILE if device.type == "cpu" else model.config.tile)
    batch = config.batch_size or (1 if device.type == "cpu" else GPU_BATCH)
    try:
        options = InferenceOptions(tile=tile, overlap=config.overlap, tta=tta, batch_size=batch,
                                   scale=input_scale(model.config, config.diameter))
    except ValueError as exc:
        raise CellsegError(f"--tile/--overlap/--tta: {exc}") from None
    if model.network is None:
        return None, options
    return TiledPredictor(call or network_callable(model.network, device), device, options,
                          autocast=autocast_dtype(device), notify=notify), options


def segment(source: Path, config: SegmentConfig, *, out: Path | None = None, several: bool = False,
            progress: Progress | None = None, notify: Callable[[str], None] | None = None,
            scheduler=None, frames_per_task: int = 8, warn: Callable[[str], None] | None = None) -> SegmentResult:
    """Segment every frame of ``source`` into an OME-Zarr of labels plus per-cell and per-frame tables.

    With ``scheduler`` (a ``dask.distributed.Client``, or an address, scheduler file or ``local[:N]`` to
    connect to), frame ranges of ``frames_per_task`` frames are segmented by the cluster's workers (see
    :mod:`cellsegcli.distributed`). ``notify`` receives progress notes, ``warn`` (default ``notify``) what
    changed the run (an out-of-memory back-off).
    """
    from .device import resolve_device
    from .io.omezarr import OmeZarrWriter, TimeAxis
    from .io.rundir import RunFolder
    from .models import load_models

    if isinstance(scheduler, str):
        from .distributed import connect

        with connect(scheduler) as client:
            return segment(source, config, out=out, several=several, progress=progress, notify=notify,
                           scheduler=client, frames_per_task=frames_per_task, warn=warn)
    started = time.monotonic()
    source = Path(source)
    check_options(config)
    baseline = config.model in BASELINES
    model = _baseline_model(config.model) if baseline else load_models(config.model)
    mc = model.config
    if scheduler is None:
        device = resolve_device(config.device)
        predictor, options = make_predictor(model, device, config, notify=warn or notify)
        device_name, tta, tile = str(device), options.tta, options.tile
    else:
        client = scheduler
        predictor, device = None, None
        device_name, tta, tile = f"dask {client.scheduler.address} ({config.device})", config.tta, config.tile or 0
    outputs = Outputs.for_input(source, out, several=several, table_format=config.table_format)
    stack = open_input(source, config)
    info, numbers = stack.info, stack.numbers
    if config.gt is not None:
        try:
            truth_frames = _check_ground_truth(config.gt, info.n_frames, outputs.scores, config.overwrite,
                                               info.shape, numbers, stack.movie_frames)
        except BaseException:
            stack.close()
            raise
    px = info.pixel_size_um
    interval = config.frame_interval_min
    if interval is None and info.frame_interval_s:
        interval = info.frame_interval_s / 60
    track_outputs = None
    if config.track:
        from .tracking.pipeline import TrackOutputs

        track_outputs = TrackOutputs.for_zarr(outputs.zarr, config.table_format)
        try:
            track_outputs.check(config.overwrite)
        except BaseException:
            stack.close()
            raise
    scale = input_scale(mc, config.diameter)
    interval_s = interval * 60 if interval else None
    settings = frame_settings(mc, config, px, numbers, interval_s)
    attributes = {
        "version": __version__, "input": str(source), "model": mc.name, "model_sha256": model.sha256,
        "architecture": mc.architecture, "tta": tta, "tile": tile, "overlap": config.overlap,
        "threshold": settings.threshold, "seed_threshold": settings.seed_threshold, "min_size": settings.min_size,
        "split_clumps": settings.split_clumps,
        "diameter": config.diameter, "scale": round(scale, 4),
        "device": device_name, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "axes": info.axes, "channel": info.channel, "pixel_size_um": px, "frame_interval_min": interval,
        "frames": {"start": numbers.start, "stop": numbers.stop, "step": numbers.step,
                   "of": stack.movie_frames}, "z": config.z,
        "label_on": "device" if device_labeller(model, settings, config) else "cpu",
    }
    if model.members:
        attributes["ensemble"] = mc.training["ensemble"]
    if notify is not None and device is not None and device.type == "cpu" and attributes["label_on"] == "device":
        notify("--label-on device on the CPU: the torch labelling is ~50x slower there than the compiled CPU "
               "labelling (--label-on cpu, the default); it is meant for a GPU")
    if notify is not None and device is not None and device.type == "cpu" and tta != "none" and not baseline:
        from .device import autocast_dtype

        n = len(_tta.transforms(tta))
        per_pass = 0.8 if autocast_dtype(device) is not None else 1.4   # s per megapixel, 2 cores (benchmarks)
        notify(f"--tta {tta} runs {n} forward passes per tile: about {n}x the time of --tta none "
               f"(roughly {n * per_pass * info.shape[0] * info.shape[1] / 1024**2:.0f} s per frame on 2 CPU cores); "
               f"press Ctrl-C and pass --tta none for speed")
    counts: list[int] = []
    recorder = None
    try:
        outputs.refuse_existing(config.overwrite)
        run = RunFolder(outputs.zarr, _fingerprint(source, info, attributes, config), info.n_frames)
        with _os_errors(outputs.zarr):
            done = set(run.acquire(resume=config.resume, notify=notify))
        if config.track:
            from .tracking import LinkOptions
            from .tracking.pipeline import TrackRecorder

            recorder = TrackRecorder(info.n_frames, config.link or LinkOptions(), run.path, numbers)
    except BaseException:
        stack.close()
        raise
    todo = [t for t in range(info.n_frames) if t not in done]
    try:
        with stack, OmeZarrWriter(outputs.zarr, n_frames=info.n_frames, shape=info.shape,
                                  image_dtype=info.dtype if config.save_image else None, pixel_size_um=px,
                                  save_probabilities=config.save_probabilities, attributes=attributes,
                                  overwrite=config.overwrite, temp_path=run.store_path,
                                  resume=bool(done), time=TimeAxis.of(numbers, interval_s)) as zarr_out:
            for t in sorted(done):
                zarr_out.mark_written(t)
            finished = [len(done)]

            def frame_done(t: int, cells: dict, row: dict, n_cells: int) -> None:
                with _os_errors(outputs.zarr):
                    run.write_part(t, cells, row, n_cells)
                finished[0] += 1
                if progress is not None:
                    progress(finished[0], info.n_frames)

            stages = None
            if scheduler is not None:
                from .distributed import run_jobs

                run_jobs(client, source, config, model, settings, zarr_out, todo, frames_per_task, frame_done)
            elif todo:
                stages = _segment_here(stack, model, predictor, settings, source, zarr_out, frame_done, notify,
                                       started, device, todo, post_workers(config.post_workers, device), config)
            tracking = _finish_run(run, zarr_out, outputs, track_outputs, recorder, counts, config, started,
                                   info, px, interval, notify, settings)
    except BaseException as exc:
        # kept for --resume after an interruption (Ctrl-C, SIGTERM) or a write error (full disk); a bad frame
        # or option would fail the same way again: nothing is kept
        keep = isinstance(exc, (KeyboardInterrupt, SystemExit, WriteError))
        run.release(remove=not keep)
        raise
    else:
        run.release(remove=True)
    finally:
        if recorder is not None:
            recorder.close()
    seconds = time.monotonic() - started
    result = SegmentResult(source, outputs, info.n_frames, info.shape, mc.name, model.sha256, device_name, tta,
                           predictor.options.tile if predictor else tile, seconds,
                           predictor.forward_seconds if predictor else 0.0, counts, px,
                           scale=scale, tracking=tracking, stage_seconds=stages, frames_resumed=len(done),
                           backoffs=list(predictor.backoffs) if predictor else [], label_on=attributes["label_on"])
    if config.gt is not None:
        result.scores = _score(outputs, config.gt, config.table_format, truth_frames)
    return result


def check_options(config: SegmentConfig) -> None:
    """Refuse options that cannot mean anything, before anything is read or written: one line naming the
    option and what it takes (0 and NaN are never a silent "default")."""
    import math

    def fraction(name: str, value: float | None, *, low_open: bool = False) -> None:
        if value is None:
            return
        ok = math.isfinite(value) and (0 < value if low_open else 0 <= value) and value <= 1
        if not ok:
            raise CellsegError(f"{name} {value}: give a probability between 0 and 1")

    fraction("--threshold", config.threshold, low_open=True)
    fraction("--seed-threshold", config.seed_threshold, low_open=True)
    positive = {"--tile": config.tile, "--batch-size": config.batch_size, "--post-workers": config.post_workers}
    for name, value in positive.items():
        if value is not None and value < 1:
            raise CellsegError(f"{name} {value}: give 1 or more (leave it out for the default)")
    if config.min_size is not None and config.min_size < 0:
        raise CellsegError(f"--min-size {config.min_size}: give 0 or more pixels")
    if not (math.isfinite(config.overlap) and 0 <= config.overlap < 1):
        raise CellsegError(f"--overlap {config.overlap}: give a fraction of the tile in [0, 1)")
    if config.diameter is not None and not (math.isfinite(config.diameter) and config.diameter > 0):
        raise CellsegError(f"--diameter {config.diameter}: give a positive number of pixels (the cells' typical diameter)")
    if config.series is not None and config.series < 0:
        raise CellsegError(f"--series {config.series}: give 0 or more")
    if config.label_on not in ("cpu", "device"):
        raise CellsegError(f"--label-on {config.label_on}: give cpu or device")


def _fingerprint(source: Path, info, attributes: dict, config: SegmentConfig) -> dict:
    """What a run segments, for ``--resume`` to check: the input file, the model and every option that
    changes labels or outputs."""
    try:
        size = sum(p.stat().st_size for p in ([source] if source.is_file() else sorted(source.rglob("*"))))
    except OSError:
        size = None
    keep = ("model_sha256", "architecture", "tta", "tile", "overlap", "threshold", "seed_threshold", "min_size",
            "split_clumps", "scale", "axes", "channel", "pixel_size_um", "version", "frames", "z", "frame_interval_min",
            "label_on")
    return {"input": str(source.resolve()), "input_bytes": size, "frames": info.n_frames, "shape": list(info.shape),
            **{k: attributes.get(k) for k in keep}, "save_image": config.save_image,
            "save_probabilities": config.save_probabilities, "track": bool(config.track),
            "table_format": config.table_format, "series": config.series}


@contextlib.contextmanager
def _os_errors(path: Path) -> Iterator[None]:
    """A full disk or a read-only folder while writing the run folder of ``path``: one line."""
    from .io.atomic import os_error_message

    try:
        yield
    except OSError as exc:
        raise WriteError(os_error_message(path, exc)) from None


def _finish_run(run, zarr_out, outputs: Outputs, track_outputs, recorder, counts: list[int], config: SegmentConfig,
                started: float, info, px, interval, notify, settings: FrameSettings) -> dict | None:
    """Every frame is done: build the tables from the frames' parts in frame order (the same bytes whether
    or not the run was interrupted), link tracks, then publish zarr and tables together. Returns the
    tracking summary with ``--track``, else None."""
    from .io.tables import TableWriter

    tracking = tracking_attrs = None
    staged = Outputs(run.path / outputs.zarr.name, run.path / outputs.cells.name, run.path / outputs.frames.name,
                     outputs.scores)
    with _os_errors(outputs.zarr), \
            TableWriter(staged.cells, format=config.table_format, overwrite=True) as cells_out, \
            TableWriter(staged.frames, format=config.table_format, overwrite=True) as frames_out:
        for t in range(info.n_frames):
            cells, row, n_cells = run.read_part(t)
            if recorder is not None:
                recorder.record(t, cells)
            else:
                cells_out.append(cells)
            frames_out.append({k: [v] for k, v in row.items()})
            counts.append(n_cells)
        moves = []
        if recorder is not None:
            from .tracking.pipeline import TrackOutputs, tracking_attributes, write_track_tables

            if (run.path / "relabelling").exists():
                raise CellsegError(f"{outputs.zarr}: the interrupted run stopped while relabelling frames with "
                                   f"track ids; rerun without --resume to start over")
            (run.path / "relabelling").touch()
            if notify is not None:
                notify(f"linking {int(sum(counts))} cells over {info.n_frames} frames into tracks, then "
                       f"relabelling the frames")
            tracks = recorder.finish(zarr_out, cells_out)
            zarr_out.write_tracks(tracks.lineage)
            staged_tracks = TrackOutputs.for_zarr(staged.zarr, config.table_format)
            write_track_tables(staged_tracks, recorder.detections, tracks, pixel_size_um=px,
                               frame_interval_min=interval, table_format=config.table_format, overwrite=True,
                               numbers=settings.numbers)
            tracking_attrs = tracking_attributes(tracks, recorder.options, recorder.link_seconds)
            tracking = {**tracking_attrs, "tracks_table": str(track_outputs.tracks),
                        "napari_tracks": str(track_outputs.napari), "lineage": str(track_outputs.lineage)}
            moves += list(zip((staged_tracks.tracks, staged_tracks.napari, staged_tracks.lineage),
                              (track_outputs.tracks, track_outputs.napari, track_outputs.lineage), strict=True))
        cells_out.commit()
        frames_out.commit()
        zarr_out.commit({"seconds": round(time.monotonic() - started, 3), "cells_total": int(sum(counts)),
                         **({"tracking": tracking_attrs} if tracking_attrs else {})}, publish=False)
        moves += [(staged.cells, outputs.cells), (staged.frames, outputs.frames), (staged.zarr, outputs.zarr)]
        run.publish(moves, overwrite=config.overwrite)
    return tracking


def post_workers(requested: int | None, device: torch.device) -> int:
    """How many processes label frames: ``requested``, else 1 on a CPU (the network has the cores) and
    the cores left after the device's feeder and the reader on a GPU."""
    import os

    if requested is not None:   # segment() refuses < 1 before writing anything
        return requested
    return 1 if device.type == "cpu" else max(1, (os.cpu_count() or 1) - 2)


def _post_job(t: int, prob: np.ndarray, raw: np.ndarray, settings: FrameSettings,
              sink, labels: np.ndarray | None = None) -> tuple[dict, dict, int, dict[str, float]]:
    """:func:`segment_frame` and the seconds of its stages (in the post thread, or in a worker process with
    ``sink`` a ``FrameStore``)."""
    timings: dict[str, float] = {}
    return (*segment_frame(t, prob, raw, settings, sink, timings, labels), timings)


def _warm_post(settings: FrameSettings, tables: bool) -> None:
    """Load what post-processing runs (its modules, their compiled code) on a small made-up frame, and with
    ``tables`` pandas for the tables written at the end, while the network warms up: left to the first frames
    this work competes with their forward pass for the cores (~1.5 s on 2 cores at 2568 x 1912)."""
    from .morphology import cell_table, frame_table_row

    prob = np.zeros((2, 64, 64), np.float32)
    prob[:, 12:52, 12:52] = 1
    labels = label_frame(prob, settings)
    cell_table(labels, prob[0], frame=0, pixel_size_um=settings.pixel_size_um)
    frame_table_row(labels, frame=0, pixel_size_um=settings.pixel_size_um)
    if tables:
        import pandas  # noqa: F401


def _segment_here(stack, model, predictor, settings: FrameSettings, source: Path, zarr_out, frame_done, notify,
                  started: float, device, frames: list[int], workers: int = 1,
                  config: SegmentConfig | None = None) -> dict[str, float]:
    """Reader thread -> device -> post-processing (a thread, or ``workers`` processes), in this process.
    Frames are recorded in order; at most ``workers + 1`` wait for post-processing. Returns the seconds
    spent per stage (``read`` with normalisation, ``label``, ``write``, ``tables``), summed over frames."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from . import allocator

    frames_q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    read_seconds = [0.0]
    reader = threading.Thread(target=_reader, args=(stack, model.config.percentiles, source, frames, frames_q,
                                                    stop, read_seconds), daemon=True)
    reader.start()
    pending: list[tuple[int, Future]] = []
    stages: dict[str, float] = {"read": 0.0, "label": 0.0, "write": 0.0, "tables": 0.0}
    labeller = device_labeller(model, settings, config) if config is not None else None
    stream = frame_stream(model, predictor, _items(frames_q), labeller)
    if workers > 1:   # spawn: no fork of a process holding torch's threads; they write through a FrameStore
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=allocator.follow, initargs=(allocator.kept(),))
        sink = zarr_out.frame_store()
    else:
        pool, sink = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cellseg-post"), zarr_out

    warming = [pool.submit(_warm_post, settings, workers == 1) for _ in range(workers)] if len(frames) > 1 else []
    if predictor is not None and len(frames) > 1:
        predictor.warm_up(stack.info.shape, model.config.in_channels)
    if workers == 1:   # a thread in this process: done before the first frame's forward pass
        for future in warming:
            future.result()

    def finish(t: int, future: Future) -> None:
        cells, row, n_cells, timings = future.result()
        if sink is not zarr_out:
            zarr_out.mark_written(t)
        for stage, seconds in timings.items():
            stages[stage] += seconds
        frame_done(t, cells, row, n_cells)

    try:
        for i, (raw, prob, labels) in enumerate(stream):
            t = frames[i]
            pending.append((t, pool.submit(_post_job, t, prob, raw, settings, sink, labels)))
            while len(pending) > workers or (pending and pending[0][1].done()):
                finish(*pending.pop(0))
            if i == 0 and notify is not None and len(frames) > 1:
                per = time.monotonic() - started
                tta = predictor.options.tta if predictor else "none"
                notify(f"first frame took {per:.1f} s on {device} with tta {tta}; "
                       f"~{per * len(frames) / 60:.1f} min for {len(frames)} frames")
        while pending:
            finish(*pending.pop(0))
        for future in warming:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        stop.set()
        while reader.is_alive():
            try:
                frames_q.get_nowait()
            except queue.Empty:
                reader.join(timeout=0.1)
    stages["read"] = read_seconds[0]
    if labeller is not None:
        stages["label"] += labeller.seconds
    return stages


def _check_ground_truth(gt: Path, n_frames: int, scores: Path, overwrite: bool,
                        shape: tuple[int, int] | None = None, numbers: range | None = None,
                        movie_frames: int | None = None) -> range | None:
    """Fail before segmenting when the ground truth cannot be scored against the stack: its frame count,
    and every frame's shape and values (integers >= 0) are checked. Returns which of its frames score the
    result: ``numbers`` when a frame range of a ``movie_frames``-frame movie was segmented and ``gt`` holds
    the whole movie, else None (all of them, in order)."""
    from .errors import OutputExistsError
    from .evaluation import open_labels, select_frames

    labels = open_labels(gt)
    frames = None
    if numbers is not None and len(numbers) != movie_frames and len(labels) == movie_frames:
        frames = numbers
        labels = select_frames(labels, numbers)
    try:
        if len(labels) != n_frames:
            raise CellsegError(f"{gt}: {len(labels)} ground-truth frames for a stack of {n_frames}; give one label "
                               f"image per frame (of the movie, or of the --frames segmented)")
        for t in range(len(labels)):
            frame = labels.frame(t)
            if shape is not None and frame.shape != tuple(shape):
                raise CellsegError(f"{gt}: {labels.names[t]} is {frame.shape[0]}x{frame.shape[1]}, the stack's frames "
                                   f"{shape[0]}x{shape[1]}; give ground truth of the same size")
    finally:
        labels.close()
    if scores.exists() and not overwrite:
        raise OutputExistsError(f"{scores} exists; pass --overwrite to replace it")
    return frames


def _score(outputs: Outputs, gt: Path, table_format: str, frames: range | None = None) -> dict[str, Any]:
    from .evaluation import evaluate
    from .io.tables import write_table

    evaluation = evaluate(outputs.zarr, gt, gt_frames=frames)
    rows = evaluation.rows
    write_table({k: [r[k] for r in rows] for k in rows[0]}, outputs.scores, format=table_format, overwrite=True)
    return {**evaluation.summary, "pooled": evaluation.pooled, "errors": evaluation.errors,
            "unannotated_frames": evaluation.unannotated}
