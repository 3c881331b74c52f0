"""Segment an array with the library, for the napari widget (and any caller holding frames in memory):
the frames are normalised with the model's percentiles, run through the tiled predictor (tiles x TTA)
and labelled with the model's thresholds, as ``cellseg segment`` does, without files or napari.

Progress comes through a generator (:func:`iter_segment`, one labelled frame at a time, so a worker
thread can stop between frames) or a callback (:func:`segment_array`). :func:`iter_segment_in_process`
does the same in a spawned child process, which is what the napari widget uses: the network (torch with
torchvision, which loads triton and its own LLVM) then never loads into a GUI process whose OpenGL driver
(Mesa: llvmpipe, radeonsi) already mapped the system's libLLVM, a combination that ends in a segmentation
fault.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import CellsegError

TTA_MODES = ("auto", "none", "flip", "d4")   # auto: d4 on a GPU, none on a CPU (as cellseg segment)


@dataclass(frozen=True)
class SegmentOptions:
    """How :func:`iter_segment` runs; ``None`` means the model's (or the device's) default."""

    model: str = "phase"          # a shipped model's name or a model folder (several: an ensemble)
    tta: str = "auto"             # auto | none | flip | d4
    diameter: float | None = None   # typical cell diameter in the image, px (frames resized to the model's)
    device: str = "auto"          # auto | cpu | cuda[:n] | mps
    tile: int | None = None
    threshold: float | None = None
    seed_threshold: float | None = None
    min_size: int | None = None


def model_names() -> list[str]:
    """The shipped models (``weights/`` or ``$CELLSEG_WEIGHTS``, as ``cellseg models`` lists them) by the
    name ``--model`` takes: their folder's."""
    from ..models import shipped_models

    return [folder.name for folder in shipped_models()]


def iter_segment_in_process(image: np.ndarray, options: SegmentOptions = SegmentOptions(), *,
                            ahead: int = 2) -> Iterator[np.ndarray]:
    """:func:`iter_segment` in a spawned child process (the model loads there once); at most ``ahead``
    frames are on their way to it. The child's errors (a ``CellsegError`` too) are raised here; closing the
    generator stops the child."""
    import multiprocessing

    frames = as_frames(image)
    if options.tta not in TTA_MODES:
        raise CellsegError(f"tta {options.tta!r}: choose one of {', '.join(TTA_MODES)}")
    pool = multiprocessing.get_context("spawn").Pool(1, initializer=_child_start, initargs=(options,))
    try:
        pending: deque = deque()
        for t in range(len(frames)):
            pending.append(pool.apply_async(_child_label, (t, np.asarray(frames[t]))))
            if len(pending) >= ahead:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    finally:
        pool.terminate()
        pool.join()


_CHILD: dict = {}


def _child_start(options: SegmentOptions) -> None:
    """In the child: load the model and its predictor once."""
    _CHILD["run"] = _frame_labeller(options)


def _child_label(t: int, frame: np.ndarray) -> np.ndarray:
    return _CHILD["run"](t, frame)


def _frame_labeller(options: SegmentOptions) -> Callable[[int, np.ndarray], np.ndarray]:
    """``(t, frame) -> labels`` with ``options``' model, TTA, tiling and thresholds."""
    from ..device import resolve_device
    from ..models import load_models
    from ..normalize import BadFrameError, normalize
    from ..pipeline import SegmentConfig, check_options, frame_settings, label_frame, make_predictor

    config = SegmentConfig(model=options.model, tta=options.tta, tile=options.tile, diameter=options.diameter,
                           device=options.device, threshold=options.threshold,
                           seed_threshold=options.seed_threshold, min_size=options.min_size)
    check_options(config)
    model = load_models(options.model)
    predictor, _ = make_predictor(model, resolve_device(options.device), config)
    if predictor is None:   # pragma: no cover - load_models only loads networks
        raise CellsegError(f"model {options.model!r} has no network")
    settings = frame_settings(model.config, config)

    def run(t: int, frame: np.ndarray) -> np.ndarray:
        try:
            norm = normalize(np.asarray(frame), model.config.percentiles)
        except BadFrameError as exc:
            raise CellsegError(f"frame {t}: {exc}") from None
        return label_frame(predictor.predict(norm), settings)

    return run


def iter_segment(image: np.ndarray, options: SegmentOptions = SegmentOptions()) -> Iterator[np.ndarray]:
    """Yield the (Y, X) uint32 instance labels of each frame of ``image``, in order.

    Parameters
    ----------
    image : (T, Y, X) or (Y, X) array
        Any array-like with those shapes (a dask array is read one frame at a time).
    options : SegmentOptions
        Model, TTA, diameter, device, tiling and thresholds.

    Raises
    ------
    CellsegError
        For an unknown model, device or TTA, an image of another shape, or a frame that cannot be
        normalised (NaN values, a constant frame); raised before the first frame is labelled where it can be.
    """
    frames = as_frames(image)
    if options.tta not in TTA_MODES:
        raise CellsegError(f"tta {options.tta!r}: choose one of {', '.join(TTA_MODES)}")
    run = _frame_labeller(options)   # the model loads before the first frame is read
    for t in range(len(frames)):
        yield run(t, np.asarray(frames[t]))


def segment_array(image: np.ndarray, options: SegmentOptions = SegmentOptions(), *,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Instance labels of ``image``: (T, Y, X) or (Y, X) uint32, the shape of ``image``; ids count from 1 in
    each frame (0 is background). ``progress(done, total)`` is called after each frame."""
    frames = as_frames(image)
    out = np.zeros(frames.shape, np.uint32)
    for t, labels in enumerate(iter_segment(frames, options)):
        out[t] = labels
        if progress is not None:
            progress(t + 1, len(frames))
    return out[0] if _ndim(image) == 2 else out


def _ndim(image) -> int:
    return len(image.shape) if hasattr(image, "shape") else np.ndim(image)


def as_frames(image):
    """``image`` as (T, Y, X) (a (Y, X) image is one frame), without reading an array that is not in memory."""
    if not (hasattr(image, "shape") and hasattr(image, "__getitem__")):
        image = np.asarray(image)
    shape = tuple(image.shape)
    if len(shape) not in (2, 3):
        raise CellsegError(f"an image of shape {shape}: give a (Y, X) image or a (T, Y, X) movie (one channel; "
                           f"pick a channel first)")
    if min(shape) < 1:
        raise CellsegError(f"an image of shape {shape} holds no pixels")
    return image[None] if len(shape) == 2 else image
