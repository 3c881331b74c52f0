"""Opening a finished cellseg result for export: the checks every export makes first, and the frames read
lazily, one at a time (a 600-frame 2048 x 2048 result is never loaded at once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CellsegError

DENSE_IDS = 1 << 22   # ids up to this are counted with a lookup table, larger ones by sorting


@dataclass(frozen=True)
class Result:
    """A complete cellseg result ``NAME.zarr``, opened for reading.

    ``lineage`` is the ``(M, 4)`` table of a tracked result (its label ids are track ids), else None;
    ``frame_interval_min`` the time between the result's frames (the movie's interval x ``--frames``' STEP);
    ``image`` the stored input frames, None for a result segmented with ``--no-image``.
    """

    path: Path
    name: str
    n_frames: int
    shape: tuple[int, int]
    pixel_size_um: float | None
    frame_interval_min: float | None
    lineage: np.ndarray | None
    labels: Any           # evaluation.LabelSource
    image: Any = None     # zarr.Array (T, Y, X) or None
    numbers: range | None = None   # the movie's frame numbers of the result's frames (``segment --frames``)

    @property
    def tracked(self) -> bool:
        return self.lineage is not None

    def frame_labels(self, t: int) -> np.ndarray:
        """(Y, X) labels of frame ``t``, 0 = background."""
        return self.labels.frame(t)

    def frame_image(self, t: int) -> np.ndarray | None:
        """(Y, X) input frame ``t``, or None when the result holds no image."""
        return None if self.image is None else np.asarray(self.image[t])

    def frame_file(self, t: int, suffix: str) -> str:
        """``NAME_tNNNN.suffix`` for the result's frame ``t``: the movie's frame number (as in the tables;
        ``segment --frames 100:200`` gives t0100-t0199), four digits (more past 10,000 frames)."""
        numbers = self.numbers or range(self.n_frames)
        return f"{self.name}_t{numbers[t]:0{max(4, len(str(numbers[-1])))}d}{suffix}"

    def close(self) -> None:
        self.labels.close()


def result_name(path: Path) -> str:
    """The prefix of exported file names: the result's folder name without ``.zarr``."""
    path = Path(path)
    return path.name[: -len(".zarr")] if path.name.endswith(".zarr") and len(path.name) > 5 else path.name


def open_result(path: Path, *, need_tracks: bool = False) -> Result:
    """Open ``path`` as a complete cellseg result, or raise a one-line :class:`CellsegError` saying why not:
    it is missing, not a cellseg result (no ``labels/cells/0``), not finished (``complete`` is not True),
    or, with ``need_tracks``, holds no tracks."""
    import zarr

    from ..evaluation import open_labels
    from ..io.frames import provenance_numbers
    from ..io.omezarr import LABELS_PATH, read_lineage

    path = Path(path)
    if not path.exists():
        raise CellsegError(f"{path}: no such result; give a .zarr written by cellseg segment (or cellseg track)")
    try:
        root = zarr.open_group(path, mode="r")
        labels = root.get(LABELS_PATH)
    except Exception:   # not a zarr group at all (a file, a plain folder, a bare array)
        root, labels = None, None
    if not isinstance(labels, zarr.Array) or labels.ndim != 3:
        raise CellsegError(f"{path}: not a cellseg result (no (T, Y, X) label array at {LABELS_PATH}); give a .zarr "
                           f"written by cellseg segment")
    if not isinstance(root.attrs.get("cellseg"), dict):
        raise CellsegError(f"{path}: not a cellseg result (its attributes hold no cellseg provenance); give a .zarr "
                           f"written by cellseg segment")
    attrs = dict(root.attrs["cellseg"])
    if attrs.get("complete") is not True:
        raise CellsegError(f"{path}: an incomplete result (its run did not finish); segment it again")
    lineage = read_lineage(path)
    if need_tracks and lineage is None:
        raise CellsegError(f"{path}: holds no tracks, which --ctc needs; run `cellseg track {path}` (or segment "
                           f"with --track) first")
    image = root.get("0")
    if not isinstance(image, zarr.Array) or image.shape != labels.shape:
        image = None
    n_frames, height, width = (int(s) for s in labels.shape)
    numbers = provenance_numbers(attrs, n_frames)
    interval = _positive(attrs.get("frame_interval_min"))
    return Result(path=path, name=result_name(path), n_frames=n_frames, shape=(height, width),
                  pixel_size_um=_positive(attrs.get("pixel_size_um")) or _ngff_pixel_size(root),
                  frame_interval_min=interval * numbers.step if interval else interval,
                  lineage=lineage, labels=open_labels(path), image=image, numbers=numbers)


def _positive(value: object) -> float | None:
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def _ngff_pixel_size(root) -> float | None:
    """The y/x scale of ``labels/cells`` when its axes are in micrometres (results whose provenance lacks
    ``pixel_size_um``)."""
    try:
        ms = root["labels/cells"].attrs["ome"]["multiscales"][0]
        if ms["axes"][-1].get("unit") != "micrometer":
            return None
        scale = next(t["scale"] for t in ms["datasets"][0]["coordinateTransformations"] if t["type"] == "scale")
        return _positive(scale[-1])
    except (KeyError, IndexError, TypeError, StopIteration):
        return None


def cell_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted ids of the cells present in ``labels`` (0, the background, left out), as int64."""
    top = int(labels.max(initial=0))
    if top < DENSE_IDS:
        return np.flatnonzero(np.bincount(labels.ravel(), minlength=top + 1)[1:]).astype(np.int64) + 1
    ids = np.unique(labels).astype(np.int64)
    return ids[ids > 0]


def dense_labels(labels: np.ndarray, ids: np.ndarray, dtype: np.dtype = np.int32) -> np.ndarray:
    """``labels`` with its sorted cell ``ids`` replaced by 1..n in the same order (0 stays 0), as ``dtype``."""
    if not len(ids):
        return np.zeros(labels.shape, dtype)
    if int(ids[-1]) < DENSE_IDS:
        lookup = np.zeros(int(ids[-1]) + 1, dtype)
        lookup[ids] = np.arange(1, len(ids) + 1)
        return lookup[labels]
    return np.searchsorted(np.concatenate([[0], ids]), labels).astype(dtype)
