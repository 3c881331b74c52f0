"""Scale-out over a Dask cluster: a stack's frames, in ranges, segmented by the cluster's workers.

The client (``cellseg segment --scheduler ADDRESS``) creates the output store and the tables as usual;
each task opens the stack itself, runs frames ``start..stop`` through the model on its worker's device
and writes their labels straight into the store's temporary folder (one chunk per frame, so tasks never
touch the same file), returning only the per-cell and per-frame tables. The client appends those in
frame order and commits, so a run that fails anywhere leaves no output that looks complete. Workers
must see the input, the model folder and the output folder at the same paths (a shared file system).

Start a cluster with ``dask scheduler`` on one machine and ``dask worker tcp://HOST:8786`` on each GPU
machine (one worker per GPU: ``CUDA_VISIBLE_DEVICES=i dask worker ... --nthreads 1``). ``local[:N]``
runs N in-process workers on this machine, to try the distributed path without a cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import CellsegError

_MODELS: dict[tuple, tuple] = {}   # per worker process: (folder, sha256, device) -> (Model, callable)
_MODELS_LOCK = threading.Lock()


def connect(scheduler: str, *, timeout: float = 15):
    """A ``dask.distributed.Client`` for an address (``tcp://host:8786``), a scheduler file (``.json``)
    or ``local[:N]`` (N in-process workers, one thread each)."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise CellsegError("--scheduler needs dask.distributed; install it with "
                           "pip install 'cellseg[distributed]'") from None
    if scheduler == "local" or scheduler.startswith("local:"):
        n = int(scheduler.partition(":")[2] or 2)
        return Client(n_workers=n, threads_per_worker=1, processes=False, dashboard_address=":0")
    try:
        if scheduler.endswith(".json"):
            return Client(scheduler_file=scheduler, timeout=timeout)
        return Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise CellsegError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc}); start one with "
                           f"'dask scheduler' and workers with 'dask worker ADDRESS'") from None


@dataclass(frozen=True)
class Job:
    """Frames ``start``..``stop`` of one stack, as a task a worker can run on its own."""

    source: Path
    config: object          # pipeline.SegmentConfig
    model: str | tuple[str, ...]   # model folder(s) (resolved by the client) or a baseline's name
    sha256: str | None
    settings: object        # pipeline.FrameSettings
    store: object           # io.omezarr.FrameStore
    start: int
    stop: int
    abort: Path | None = None   # a flag file the client creates when the run fails: stop writing


def _model(folder: str | tuple[str, ...], sha256: str | None, device):
    """This worker process's copy of the model on ``device`` and its callable, loaded once.

    Workers that are threads of one process share it: the network is moved to the device and to
    channels_last here, under a lock, and never again; doing that while another thread runs the network
    swaps its weights' storage under a running kernel (seen as garbage outputs)."""
    from .inference import network_callable
    from .models import load_models

    with _MODELS_LOCK:
        key = (folder, sha256, str(device))
        if key not in _MODELS:
            model = load_models(folder)
            if sha256 is not None and model.sha256 != sha256:
                raise CellsegError(f"{folder}: the weights on this worker differ from the client's "
                                   f"(sha256 {model.sha256[:12]} vs {sha256[:12]}); give every machine the "
                                   f"same model folder")
            _MODELS[key] = (model, network_callable(model.network, device))
        return _MODELS[key]


def run_job(job: Job) -> list[tuple[int, dict, dict, int]]:
    """Segment ``job``'s frames on this worker; write labels into the store, return the tables."""
    from . import pipeline
    from .device import resolve_device

    config = job.config
    results = []
    with pipeline.open_input(job.source, config) as stack:   # frame t of the result, as in the client
        if job.model in pipeline.BASELINES:
            model, predictor = pipeline._baseline_model(job.model), None
        else:
            device = resolve_device(config.device)
            model, call = _model(job.model, job.sha256, device)
            predictor, _ = pipeline.make_predictor(model, device, config, call=call)
        frames = range(job.start, job.stop)
        items = pipeline.normalised_frames(stack, model.config.percentiles, job.source, frames)
        labeller = pipeline.device_labeller(model, job.settings, config)
        stream = pipeline.frame_stream(model, predictor, items, labeller)
        for t, (raw, prob, labels) in zip(frames, stream, strict=True):
            if job.abort is not None and job.abort.exists():
                break   # the run failed elsewhere and its output is being removed: write nothing more
            results.append((t, *pipeline.segment_frame(t, prob, raw, job.settings, job.store, labels=labels)))
    return results


def _ranges(frames: list[int], size: int) -> list[tuple[int, int]]:
    """``frames`` (sorted) as half-open ranges of consecutive frames, each at most ``size`` long."""
    out: list[tuple[int, int]] = []
    for t in frames:
        if out and out[-1][1] == t and t - out[-1][0] < size:
            out[-1] = (out[-1][0], t + 1)
        else:
            out.append((t, t + 1))
    return out


def run_jobs(client, source: Path, config, model, settings, zarr_out, frames: list[int], frames_per_task: int,
             record: Callable[[int, dict, dict, int], None]) -> None:
    """Submit ranges of ``frames`` (consecutive frames, at most ``frames_per_task`` each) to the cluster and
    record each frame's tables, ``record(t, cells, row, n_cells)``, in frame order."""
    from dask.distributed import as_completed, wait

    if frames_per_task < 1:
        raise CellsegError(f"--frames-per-task {frames_per_task}: must be at least 1")
    name = (tuple(str(p.resolve()) for p in model.members) if model.members
            else model.config.name if model.path is None else str(model.path.resolve()))
    store = zarr_out.frame_store()
    abort = store.temp_path / ".abort"
    jobs = [Job(source.resolve(), config, name, model.sha256, settings, store, a, b, abort)
            for a, b in _ranges(frames, frames_per_task)]
    futures = [client.submit(run_job, job, pure=False) for job in jobs]
    order = {f.key: i for i, f in enumerate(futures)}
    done: dict[int, list] = {}
    next_job = 0
    try:
        for future in as_completed(futures):
            done[order[future.key]] = future.result()   # re-raises a worker's error here
            while next_job in done:
                for t, cells, row, n_cells in done.pop(next_job):
                    zarr_out.mark_written(t)
                    record(t, cells, row, n_cells)
                next_job += 1
    except BaseException:
        # Cancelling does not stop a task already running in a worker thread, which would go on writing
        # into the temporary store after the caller removes it: tell the tasks to stop, wait until they have.
        abort.touch()
        try:
            wait(futures, timeout=300)
        except Exception:  # noqa: BLE001 - a timeout or a lost cluster: cancel what is left and go on failing
            pass
        client.cancel(futures)
        raise
