"""Streaming OME-Zarr (NGFF 0.5, Zarr v3) writer for a segmented time-lapse.

Layout of ``NAME.zarr`` (T frames of Y x X pixels)::

    NAME.zarr/                 group: NGFF image "image" (multiscales) + attrs["cellseg"]
      0                        (T, Y, X) image_dtype   the input frames (absent with --no-image)
      labels/                  group: attrs["ome"] = {"version": "0.5", "labels": ["cells"]}
        cells/                 group: NGFF image "cells" + "image-label"
          0                    (T, Y, X) uint32        instance labels, 0 = background
      probabilities/           group: NGFF image "probabilities" (only with save_probabilities)
        0                      (T, Y, X) uint8         cell probability x 255, rounded
      tracks/                  group (only for tracked results: cellseg segment --track, cellseg track)
        lineage                (M, 4) int64            track_id, first_frame, last_frame, parent_id

Every array has one chunk per frame, ``(1, Y, X)``, stored also where it holds only zeros, Zarr
v3's default codecs (``bytes`` little endian + ``zstd`` level 0), fill value 0 and
``dimension_names`` ``("t", "y", "x")``; no sharding, so frames can be written in any order without
rewriting a shard. The NGFF metadata is the one ome-zarr-py 0.18 writes (``write_image`` /
``write_labels``) for a single resolution level, with the dataset path ``"0"`` (ome-zarr-py names it
``"s0"``) and ``"version"`` in the ``labels`` group as the NGFF 0.5 specification requires.

Without an image (``image_dtype=None``) the root group is a plain Zarr group whose ``"ome"``
attributes hold only ``{"version": "0.5"}``: it is not an NGFF image, so ome-zarr-py and napari open
``NAME.zarr/labels`` (or ``NAME.zarr/labels/cells``) instead of ``NAME.zarr``, and ``cells`` carries
no ``source`` image. An array of zeros is deliberately not stored in place of the image: code that
measures intensities should fail, not read zeros.

Everything is written under a hidden sibling ``.NAME.zarr.partial-<pid>`` and renamed to
``NAME.zarr`` by :meth:`OmeZarrWriter.commit`, so an interrupted run never leaves a result that
looks finished; ``attrs["cellseg"]["complete"]`` is ``True`` only in a committed store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import LocalStore

from ..errors import OutputExistsError
from .atomic import AtomicOutput, remove_path, remove_stale_partials, temp_path_for

NGFF_VERSION = "0.5"
LABEL_NAME = "cells"
PROBABILITY_SCALE = 255  # stored uint8 value = round(probability * 255)
IMAGE_PATH, LABELS_PATH, PROBABILITIES_PATH = "0", f"labels/{LABEL_NAME}/0", "probabilities/0"
LINEAGE_PATH, LINEAGE_COLUMNS = "tracks/lineage", ("track_id", "first_frame", "last_frame", "parent_id")
# every frame is stored, a frame without cells too: zarr's test whether a chunk is all fill value costs
# ~30 ms per 2568 x 1912 labels frame, ~3x the rest of its write (benchmarks/segment.py)
WRITE_CONFIG = {"write_empty_chunks": True}


def multiscales(name: str, pixel_size_um: float | None, time: TimeAxis | None = None) -> list[dict]:
    """NGFF 0.5 ``multiscales`` metadata for one (T, Y, X) resolution level stored at path ``"0"``.

    Parameters
    ----------
    name : str
        Name of the image (``"image"``, ``"cells"``, ``"probabilities"``).
    pixel_size_um : float or None
        Micrometres per pixel; ``None`` gives scale 1.0 and no unit.
    time : TimeAxis or None
        The ``t`` axis' scale, translation and unit (default: frame index, no unit).
    """
    known = pixel_size_um is not None
    space = {"type": "space", "unit": "micrometer"} if known else {"type": "space"}
    px = float(pixel_size_um) if known else 1.0
    time = time or TimeAxis()
    t_axis = {"name": "t", "type": "time", **({"unit": time.unit} if time.unit else {})}
    return [
        {
            "axes": [t_axis, {"name": "y", **space}, {"name": "x", **space}],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [float(time.scale), px, px]},
                        {"type": "translation", "translation": [float(time.translation), 0.0, 0.0]},
                    ],
                }
            ],
            "name": name,
        }
    ]


@dataclass(frozen=True)
class TimeAxis:
    """Where zarr frame ``i`` lies in time: ``translation + i * scale``, in ``unit`` (``"second"``), or in
    the movie's frame numbers when the interval is unknown (``unit`` None)."""

    scale: float = 1.0
    translation: float = 0.0
    unit: str | None = None

    @classmethod
    def of(cls, numbers: range, interval_s: float | None) -> TimeAxis:
        """The axis of frames ``numbers`` of a movie with ``interval_s`` seconds between frames."""
        if interval_s:
            return cls(numbers.step * interval_s, numbers.start * interval_s, "second")
        return cls(float(numbers.step), float(numbers.start))


def as_json(attributes: dict) -> dict:
    """Return ``attributes`` in plain JSON types, so that storing provenance never fails a run.

    numpy scalars and arrays become numbers and lists, dates ISO strings, and anything else that JSON
    does not know (paths, devices) its ``str``.
    """

    def default(value: object) -> object:
        if isinstance(value, (np.generic, np.ndarray)):
            return value.tolist()
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return str(value)

    return json.loads(json.dumps(attributes, default=default))


class OmeZarrWriter(AtomicOutput):
    """Write labels (and optionally the image and probabilities) of a (T, Y, X) stack frame by frame.

    Parameters
    ----------
    path : Path
        The ``.zarr`` folder to create. Its parent folder is created if missing.
    n_frames : int
        Number of frames T; every frame must be written exactly once before :meth:`commit`.
    shape : (int, int)
        Frame shape (Y, X).
    image_dtype : numpy dtype or None
        dtype of the stored input frames, or ``None`` to store no image (``--no-image``).
    pixel_size_um : float or None
        Micrometres per pixel, written as the NGFF scale of y and x.
    save_probabilities : bool
        Also store the cell probability of each frame as uint8 (``probabilities/0``).
    attributes : dict or None
        Provenance stored under the root attribute ``"cellseg"`` (JSON-serialisable values).
    overwrite : bool
        Replace an existing ``path`` at :meth:`commit`; without it an existing ``path`` raises
        :class:`~cellsegcli.errors.OutputExistsError` here.
    time : TimeAxis or None
        The NGFF ``t`` axis: seconds per frame and the first frame's time when the interval is known,
        else the movie's frame numbers (``--frames 100:200`` starts at 100).

    Examples
    --------
    >>> with OmeZarrWriter(out, n_frames=len(stack), shape=(Y, X), image_dtype=np.uint16) as writer:
    ...     for t, frame in enumerate(stack):
    ...         writer.write_frame(t, segment(frame), image=frame)
    ...     writer.commit({"seconds": elapsed})
    """

    def __init__(
        self,
        path: Path,
        *,
        n_frames: int,
        shape: tuple[int, int],
        image_dtype: np.dtype | None,
        pixel_size_um: float | None = None,
        save_probabilities: bool = False,
        attributes: dict | None = None,
        overwrite: bool = False,
        temp_path: Path | None = None,
        resume: bool = False,
        time: TimeAxis | None = None,
    ) -> None:
        self.path = Path(path)
        self.n_frames = int(n_frames)
        self.shape = (int(shape[0]), int(shape[1]))
        self.image_dtype = None if image_dtype is None else np.dtype(image_dtype)
        self.save_probabilities = save_probabilities
        self.overwrite = overwrite
        self._attributes = as_json(attributes or {})
        self._time = time
        self._written = np.zeros(self.n_frames, dtype=bool)
        self._state = "open"  # -> "committed" | "aborted"
        if self.n_frames < 1 or min(self.shape) < 1:
            raise ValueError(f"need at least one frame of at least 1x1 pixels, got {n_frames} x {shape}")
        if pixel_size_um is not None and not pixel_size_um > 0:
            raise ValueError(f"pixel_size_um must be positive or None, got {pixel_size_um}")
        if (self.path.exists() or self.path.is_symlink()) and not overwrite:
            raise OutputExistsError(f"{self.path} exists; pass --overwrite to replace it")
        self._keep = temp_path is not None   # built in a run folder: kept for --resume when not committed
        self.temp_path = Path(temp_path) if self._keep else temp_path_for(self.path)
        with self._on_os_error():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._keep:
                remove_stale_partials(self.path)
            if resume and (self.temp_path / "zarr.json").is_file():
                self._open_existing()
            else:
                remove_path(self.temp_path)
                self._create(pixel_size_um)

    def _open_existing(self) -> None:
        """Reopen the store an interrupted run left (``resume``), after checking its arrays."""
        from ..errors import CellsegError

        root = zarr.open_group(LocalStore(self.temp_path), mode="r+", zarr_format=3)
        want = {LABELS_PATH: np.uint32, IMAGE_PATH: self.image_dtype,
                PROBABILITIES_PATH: np.uint8 if self.save_probabilities else None}
        found = {}
        for key, dtype in want.items():
            if dtype is None:
                continue
            array = root.get(key)
            if not isinstance(array, zarr.Array) or array.shape != (self.n_frames, *self.shape) \
                    or array.dtype != np.dtype(dtype):
                raise CellsegError(f"{self.temp_path}: the interrupted run's store has no valid {key}; rerun "
                                   f"without --resume to start over")
            found[key] = array.with_config(WRITE_CONFIG)
        self._root = root
        self._labels, self._image = found[LABELS_PATH], found.get(IMAGE_PATH)
        self._probabilities = found.get(PROBABILITIES_PATH)

    def _create(self, pixel_size_um: float | None) -> None:
        store = LocalStore(self.temp_path)
        ome: dict = {"version": NGFF_VERSION}
        if self.image_dtype is not None:
            ome["multiscales"] = multiscales("image", pixel_size_um, self._time)
        root_attrs = {"ome": ome, "cellseg": {**self._attributes, "complete": False}}
        self._root = zarr.open_group(store, mode="w-", zarr_format=3, attributes=root_attrs)
        self._image = None if self.image_dtype is None else self._create_array(self._root, self.image_dtype)

        labels_ome = {"version": NGFF_VERSION, "labels": [LABEL_NAME]}
        labels = self._root.create_group("labels", attributes={"ome": labels_ome})
        image_label: dict = {"version": NGFF_VERSION}
        if self.image_dtype is not None:
            image_label["source"] = {"image": "../../"}
        cells_ome = {
            "version": NGFF_VERSION,
            "multiscales": multiscales(LABEL_NAME, pixel_size_um, self._time),
            "image-label": image_label,
        }
        cells = labels.create_group(LABEL_NAME, attributes={"ome": cells_ome})
        self._labels = self._create_array(cells, np.dtype(np.uint32))

        self._probabilities = None
        if self.save_probabilities:
            probs_attrs = {
                "ome": {"version": NGFF_VERSION, "multiscales": multiscales("probabilities", pixel_size_um,
                                                                                 self._time)},
                "cellseg": {"content": "cell (foreground) probability", "value_scale": 1 / PROBABILITY_SCALE},
            }
            probs = self._root.create_group("probabilities", attributes=probs_attrs)
            self._probabilities = self._create_array(probs, np.dtype(np.uint8))

    def _create_array(self, group: zarr.Group, dtype: np.dtype) -> zarr.Array:
        return group.create_array(
            "0",
            shape=(self.n_frames, *self.shape),
            chunks=(1, *self.shape),
            dtype=dtype,
            fill_value=0,
            dimension_names=("t", "y", "x"),
            config=WRITE_CONFIG,
        )

    def write_frame(
        self,
        t: int,
        labels: np.ndarray,
        *,
        image: np.ndarray | None = None,
        probabilities: np.ndarray | None = None,
    ) -> None:
        """Write frame ``t``; frames may come in any order, each exactly once.

        Parameters
        ----------
        t : int
            Frame index, ``0 <= t < n_frames``.
        labels : (Y, X) non-negative integer array
            Instance labels, 0 = background; stored as uint32.
        image : (Y, X) array, required iff ``image_dtype`` was given
            The input frame; must cast safely to ``image_dtype``.
        probabilities : (Y, X) float array in [0, 1], required iff ``save_probabilities``
            Cell (foreground) probability; stored as ``round(p * 255)`` in uint8.
        """
        self._check_open("write_frame")
        if not 0 <= t < self.n_frames:
            raise IndexError(f"frame {t} out of range for {self.n_frames} frames")
        if self._written[t]:
            raise RuntimeError(f"frame {t} written twice")
        if (image is None) != (self._image is None):
            raise ValueError("pass image= exactly when the writer was created with an image_dtype")
        if (probabilities is None) != (self._probabilities is None):
            raise ValueError("pass probabilities= exactly when the writer has save_probabilities=True")
        frames = encode_frame(self.shape, labels, image=image, image_dtype=self.image_dtype,
                              probabilities=probabilities)
        arrays = {LABELS_PATH: self._labels, IMAGE_PATH: self._image, PROBABILITIES_PATH: self._probabilities}
        with self._on_os_error():
            for path, frame in frames.items():
                arrays[path][t] = frame
        self._written[t] = True

    def frame_store(self) -> FrameStore:
        """A handle other processes write frames through (then :meth:`mark_written` them here)."""
        self._check_open("frame_store")
        return FrameStore(self.temp_path, self.shape, self.image_dtype, self.save_probabilities)

    def mark_written(self, t: int) -> None:
        """Record that frame ``t`` was written through a :class:`FrameStore`."""
        self._check_open("mark_written")
        if self._written[t]:
            raise RuntimeError(f"frame {t} written twice")
        self._written[t] = True

    def map_labels(self, t: int, table: np.ndarray) -> None:
        """Replace frame ``t``'s labels by ``table[labels]`` (e.g. per-frame ids -> track ids); the frame
        must have been written."""
        self._check_open("map_labels")
        if not self._written[t]:
            raise RuntimeError(f"frame {t} relabelled before it was written")
        with self._on_os_error():
            self._labels[t] = np.asarray(table)[np.asarray(self._labels[t])].astype(np.uint32)

    def write_tracks(self, lineage: np.ndarray, attributes: dict | None = None) -> None:
        """Store the tracks' lineage, ``(M, 4)`` rows of ``track_id, first_frame, last_frame, parent_id``,
        as ``tracks/lineage`` (``attributes`` go to the ``tracks`` group)."""
        self._check_open("write_tracks")
        lineage = np.asarray(lineage, np.int64).reshape(-1, 4)
        with self._on_os_error():
            group = self._root.create_group("tracks", attributes=as_json(
                {"columns": list(LINEAGE_COLUMNS), **(attributes or {})}))
            array = group.create_array("lineage", shape=lineage.shape, chunks=(max(len(lineage), 1), 4),
                                       dtype=np.int64, fill_value=0, dimension_names=("track", "field"))
            if len(lineage):
                array[:] = lineage

    def commit(self, extra_attributes: dict | None = None, *, publish: bool = True) -> Path:
        """Finish the store: check its arrays, record ``extra_attributes`` and ``"complete": True``, then
        rename it to ``path`` (with ``publish=False`` leave it where it was built, for the caller to move).

        Returns
        -------
        Path
            The final path.

        Raises
        ------
        RuntimeError
            If a frame was never written (a bug in the caller).
        OutputExistsError
            If ``path`` appeared meanwhile and ``overwrite`` is False.
        CellsegError
            If the disk is full or the folder is not writable.
        """
        if self._state == "committed":
            return self.path
        self._check_open("commit")
        missing = np.flatnonzero(~self._written)
        if missing.size:
            raise RuntimeError(f"{self.path}: {missing.size} frame(s) never written, first {int(missing[0])}")
        attrs = {**self._attributes, **as_json(extra_attributes or {}), "complete": True}
        with self._on_os_error():
            self._verify()
            self._root.attrs.update({"cellseg": attrs})
            if not publish:
                self._state = "committed"
                return self.temp_path
            self._publish(self.temp_path, overwrite=self.overwrite)
        self._state = "committed"
        return self.path

    def _verify(self) -> None:
        """Every array the store should hold is there, with its shape and dtype (read back from disk)."""
        root = zarr.open_group(LocalStore(self.temp_path), mode="r", zarr_format=3)
        for key, array in ((LABELS_PATH, self._labels), (IMAGE_PATH, self._image),
                           (PROBABILITIES_PATH, self._probabilities)):
            if array is None:
                continue
            found = root.get(key)
            if not isinstance(found, zarr.Array) or found.shape != array.shape or found.dtype != array.dtype:
                raise RuntimeError(f"{self.temp_path}: {key} is missing or damaged; not marking the store complete")

    def abort(self) -> None:
        """Remove everything written so far (a store built in a run folder stays, for ``--resume``); ``path``
        is left as it was. Safe to call twice."""
        if self._state != "committed":
            self._state = "aborted"
            if not self._keep:
                remove_path(self.temp_path)


def read_lineage(path: Path) -> np.ndarray | None:
    """The ``(M, 4)`` lineage of a tracked cellseg result, or None when it holds no tracks."""
    root = zarr.open_group(Path(path), mode="r")
    if LINEAGE_PATH not in root:
        return None
    return np.asarray(root[LINEAGE_PATH][:], np.int64).reshape(-1, 4)


def encode_frame(shape: tuple[int, int], labels: np.ndarray, *, image: np.ndarray | None,
                 image_dtype: np.dtype | None, probabilities: np.ndarray | None) -> dict[str, np.ndarray]:
    """The arrays of one frame as stored, keyed by their path in the store; checks shapes and dtypes."""
    def check(array: np.ndarray, what: str) -> np.ndarray:
        array = np.asarray(array)
        if array.shape != shape:
            raise ValueError(f"{what} frame has shape {array.shape}, expected {shape}")
        return array

    out = {LABELS_PATH: _as_uint32_labels(check(labels, "labels"))}
    if image is not None:
        out[IMAGE_PATH] = check(image, "image").astype(image_dtype, casting="safe")
    if probabilities is not None:
        probs = np.clip(check(probabilities, "probabilities"), 0, 1)
        out[PROBABILITIES_PATH] = np.rint(probs * PROBABILITY_SCALE).astype(np.uint8)
    return out


@dataclass(frozen=True)
class FrameStore:
    """A picklable handle on an open :class:`OmeZarrWriter`'s temporary store, for writing frames from
    other processes or machines (Dask workers) that see the same file system. Each frame is one chunk,
    so writers of different frames never touch the same file. The writer that handed it out still
    commits: it must be told which frames were written (:meth:`OmeZarrWriter.mark_written`)."""

    temp_path: Path
    shape: tuple[int, int]
    image_dtype: np.dtype | None
    save_probabilities: bool

    def write_frame(self, t: int, labels: np.ndarray, *, image: np.ndarray | None = None,
                    probabilities: np.ndarray | None = None) -> None:
        """Write frame ``t`` (see :meth:`OmeZarrWriter.write_frame`)."""
        if (image is None) != (self.image_dtype is None):
            raise ValueError("pass image= exactly when the store holds the image")
        if (probabilities is None) == self.save_probabilities:
            raise ValueError("pass probabilities= exactly when the store holds probabilities")
        store = LocalStore(self.temp_path)
        for path, frame in encode_frame(self.shape, labels, image=image, image_dtype=self.image_dtype,
                                        probabilities=probabilities).items():
            zarr.open_array(store, path=path, mode="r+", zarr_format=3).with_config(WRITE_CONFIG)[t] = frame


def _as_uint32_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` as uint32, refusing non-integer dtypes and values outside [0, 2**32)."""
    if labels.dtype.kind not in "ui":
        raise TypeError(f"labels must be an integer array, got {labels.dtype}")
    if labels.dtype.itemsize > 4 or labels.dtype.kind == "i":
        if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint32).max):
            raise ValueError("labels must lie in [0, 2**32 - 1]")
    return labels.astype(np.uint32, copy=False)
