"""Lazy reading of microscopy stacks, one ``(Y, X)`` frame at a time.

:func:`open_stack` reads

- a multi-page TIFF, OME-TIFF or ImageJ hyperstack, through a zarr view of tifffile's first series
  (``series.aszarr()``), so that reading a frame decodes that frame's strips and nothing else;
- a folder of single-frame images (TIFF, PNG, JPEG) in natural sort order, or a single PNG/JPEG;
- ``.nd2``, ``.czi`` and ``.lif`` files through bioio's dask data, when bioio and its plugin are installed.

Axes use tifffile's letters: T time, Z depth, C channel, Y, X, S samples (RGB), I and Q generic image
sequence. The frame axis is whichever of T, Z, I, Q is longer than 1 (only one may be); ``channel`` picks
from C; RGB samples become grey (mean of R, G and B) unless ``channel`` picks one of them.
"""

from __future__ import annotations

import logging
import operator
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CellsegError

AXES_LETTERS = "TZCYXSIQ"
FRAME_AXES = "TZIQ"
TIFF_SUFFIXES = (".tif", ".tiff", ".lsm", ".btf")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
BIOIO_PLUGINS = {".nd2": "bioio-nd2", ".czi": "bioio-czi", ".lif": "bioio-lif"}

_UM_PER_UNIT = {"um": 1.0, "µm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
                "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}
_PIL_CONVERT = {"1": "L", "P": "RGBA", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB"}
_EXAMPLE_AXES = {2: "YX", 3: "TYX", 4: "TCYX", 5: "TZCYX"}


@dataclass(frozen=True)
class StackInfo:
    """What :func:`open_stack` found.

    Attributes
    ----------
    path : the file or folder opened.
    axes : axes of the data as understood (after an ``axes=`` override), e.g. ``"TCYX"``.
    n_frames : number of ``(Y, X)`` frames.
    shape : ``(Y, X)`` of every frame.
    dtype : dtype of the frames as returned (native byte order).
    channel : channel picked; None when the data have no C axis and none was picked.
    pixel_size_um : micrometres per pixel; None when unknown.
    frame_interval_s : seconds between frames (OME ``TimeIncrement``, ImageJ ``finterval``); None when unknown.
    """

    path: Path
    axes: str
    n_frames: int
    shape: tuple[int, int]
    dtype: np.dtype
    channel: int | None
    pixel_size_um: float | None
    frame_interval_s: float | None = None


@dataclass(frozen=True)
class _Selection:
    """Where frame ``t`` lies in an array with ``axes``."""

    axes: str
    frame_axis: str | None  # None: the data hold a single frame
    channel: int | None  # index into C, or into S when there is no C axis
    project: str | None = None  # an axis read whole and reduced by its maximum (``--z max``)

    def index(self, t: int) -> tuple[int | slice, ...]:
        """Index of frame ``t`` in the N-d array: ``(Y, X)``, or ``(Y, X, S)`` / ``(S, Y, X)`` for RGB,
        with the projected axis (if any) kept whole."""
        index: list[int | slice] = []
        for axis in self.axes:
            if axis == self.frame_axis:
                index.append(t)
            elif axis == "C" or (axis == "S" and "C" not in self.axes and self.channel is not None):
                index.append(self.channel)
            elif axis in "YXS" or axis == self.project:
                index.append(slice(None))
            else:  # a frame axis of length 1
                index.append(0)
        return tuple(index)

    @property
    def _kept(self) -> list[str]:
        return [axis for axis, i in zip(self.axes, self.index(0)) if isinstance(i, slice)]

    @property
    def project_axis(self) -> int | None:
        """Position of the projected axis in an indexed frame."""
        return self._kept.index(self.project) if self.project else None

    @property
    def samples_axis(self) -> int | None:
        """Position of the RGB samples axis in an indexed frame after the projection; None when none is left."""
        kept = [axis for axis in self._kept if axis != self.project]
        return kept.index("S") if "S" in kept else None


@dataclass(frozen=True)
class _Source:
    """What a format opener returns: an N-d array read lazily by numpy-style indexing."""

    array: Any  # zarr.Array, dask array or _ImageList: ``array[index]`` reads only that part
    axes: str
    pixel_size_um: float | None
    close: Callable[[], None]
    frame_interval_s: float | None = None


class Stack:
    """``(Y, X)`` frames read lazily, one at a time; a context manager that closes the file.

    Get one with :func:`open_stack`. ``len(stack)`` is the number of frames, ``stack.frame(t)`` reads
    frame ``t`` and iterating yields all frames in order.
    """

    def __init__(self, info: StackInfo, array: Any, selection: _Selection, close: Callable[[], None]):
        self.info = info
        self._array = array
        self._selection = selection
        self._samples_axis = selection.samples_axis
        self._close = close
        self._closed = False

    def __len__(self) -> int:
        return self.info.n_frames

    def frame(self, t: int) -> np.ndarray:
        """Read frame ``t``.

        Returns
        -------
        (Y, X) array of ``info.dtype`` (uint8, uint16, float32, ...), a fresh array.

        Raises
        ------
        CellsegError when the file cannot be decoded there (truncated or damaged), naming the frame.
        """
        t = operator.index(t)
        if self._closed:
            raise ValueError(f"{self.info.path}: the stack is closed")
        if not 0 <= t < len(self):
            raise IndexError(f"frame {t} out of range for a stack of {len(self)} frames")
        try:
            data = np.asarray(self._array[self._selection.index(t)])
        except CellsegError:
            raise
        except Exception as exc:  # tifffile, zarr, imagecodecs and bioio each raise their own types
            raise CellsegError(
                f"{self.info.path}: cannot read frame {t} ({_one_line(exc)}); "
                "the file looks truncated or damaged, copy or export it again"
            ) from exc
        if self._selection.project is not None:
            data = data.max(axis=self._selection.project_axis)
        if self._samples_axis is not None:
            data = _to_grey(data, self._samples_axis)
        return data.astype(self.info.dtype, copy=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        for t in range(len(self)):
            yield self.frame(t)

    def close(self) -> None:
        """Close the file; further reads raise ValueError. Closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        info = self.info
        return f"Stack({str(info.path)!r}, axes={info.axes!r}, n_frames={info.n_frames}, shape={info.shape})"


def open_stack(
    path: str | Path,
    *,
    axes: str | None = None,
    channel: int | None = None,
    pixel_size: float | None = None,
    series: int | None = None,
    z: str | None = None,
) -> Stack:
    """Open a stack of frames for lazy reading.

    Parameters
    ----------
    path : a TIFF / OME-TIFF / ImageJ file, a folder of single-frame images, a PNG/JPEG, or an
        ``.nd2`` / ``.czi`` / ``.lif`` file (needs bioio and its plugin).
    axes : override of the axes read from the file's metadata, one letter of ``TZCYXSIQ`` per
        dimension, ending in ``YX`` (or ``YXS``), e.g. ``"TCYX"``.
    channel : channel to segment; required when the C axis is longer than 1. Picks one RGB sample
        when there is no C axis (RGB becomes grey otherwise).
    pixel_size : micrometres per pixel, overriding the file's metadata.
    series : which image series of a TIFF holding several (required then: a TIFF is never read as its
        first series without a word).
    z : what a Z axis longer than 1 means (required then: a Z stack is never read as time): ``"slices"``
        segments each slice as its own image (the frames are the slices), ``"max"`` a maximum projection
        of each time point.

    Returns
    -------
    Stack of ``(Y, X)`` frames; use it as a context manager.

    Raises
    ------
    CellsegError with a one-line message starting with the path and ending with what to do.
    """
    path = Path(path)
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        raise CellsegError(f"{path}: pixel size {pixel_size} is not a positive number; "
                           "pass micrometres per pixel, e.g. --pixel-size 0.65")
    source = _open_source(path, series)
    try:
        kind = np.dtype(source.array.dtype).kind
        if kind in "bc":
            raise CellsegError(f"{path}: holds {'boolean (a mask?)' if kind == 'b' else 'complex'} pixels "
                               f"({source.array.dtype}); cellseg segments intensity images: give the microscope's "
                               f"image, or convert it to an integer or float TIFF")
        shape = tuple(source.array.shape)
        axes = _check_axes(axes or source.axes, shape, path)
        selection = _select(axes, shape, channel, path, z)
    except CellsegError:
        source.close()
        raise
    sizes = dict(zip(axes, shape))
    info = StackInfo(
        path=path,
        axes=axes,
        n_frames=sizes[selection.frame_axis] if selection.frame_axis else 1,
        shape=(sizes["Y"], sizes["X"]),
        dtype=np.dtype(source.array.dtype).newbyteorder("="),
        channel=selection.channel,
        pixel_size_um=pixel_size if pixel_size is not None else source.pixel_size_um,
        frame_interval_s=source.frame_interval_s,
    )
    return Stack(info, source.array, selection, source.close)


def list_images(folder: Path) -> list[Path]:
    """Image files (.tif, .tiff, .png, .jpg, .jpeg) in ``folder``, in natural sort order.

    Hidden files are skipped; ``frame2.png`` comes before ``frame10.png``.
    """
    files = [p for p in Path(folder).iterdir()
             if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    return sorted(files, key=_natural_key)


def _natural_key(path: Path) -> tuple[list[int | str], str]:
    parts = re.split(r"([0-9]+)", path.name.lower())  # odd positions hold the digit runs
    return [int(part) if i % 2 else part for i, part in enumerate(parts)], path.name


def _open_source(path: Path, series: int | None = None) -> _Source:
    suffix = path.suffix.lower()
    if series is not None and suffix not in TIFF_SUFFIXES:
        raise CellsegError(f"{path}: --series picks one image series of a TIFF; this is not a TIFF")
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise CellsegError(f"{path}: no images found in this folder; expected .tif/.tiff/.png/.jpg files")
        return _image_list_source(files, path)
    if not path.exists():
        raise CellsegError(f"{path}: no such file; check the path")
    if suffix in TIFF_SUFFIXES:
        return _open_tiff(path, series)
    if suffix in IMAGE_SUFFIXES:
        return _image_list_source([path], path)
    if suffix in BIOIO_PLUGINS:
        return _open_bioio(path, BIOIO_PLUGINS[suffix])
    raise CellsegError(f"{path}: unsupported file type {suffix or '(no extension)'!r}; use a TIFF/OME-TIFF, "
                       "a folder of .tif/.png/.jpg frames, or .nd2/.czi/.lif with bioio installed")


def _check_axes(axes: str, shape: tuple[int, ...], path: Path) -> str:
    """Return ``axes`` upper-cased if it names each dimension of ``shape`` once and ends in YX or YXS.

    Raises
    ------
    CellsegError naming the number of letters expected and the shape of the data.
    """
    axes = axes.upper()
    valid = (
        len(axes) == len(shape)
        and set(axes) <= set(AXES_LETTERS)
        and len(set(axes)) == len(axes)
        and (axes.endswith("YX") or axes.endswith("YXS"))
    )
    if not valid:
        example = f" (e.g. {_EXAMPLE_AXES[len(shape)]})" if len(shape) in _EXAMPLE_AXES else ""
        raise CellsegError(
            f"{path}: axes {axes!r} do not fit data of shape {shape}: expected {len(shape)} letters from "
            f"{AXES_LETTERS}, each at most once, ending in YX; pass a matching --axes{example}"
        )
    return axes


Z_MODES = ("slices", "max")


def _select(axes: str, shape: tuple[int, ...], channel: int | None, path: Path, z: str | None = None) -> _Selection:
    """Choose the frame axis, the channel and the Z handling of validated ``axes``."""
    sizes = dict(zip(axes, shape))
    if z is not None and z not in Z_MODES:
        raise CellsegError(f"--z {z}: give one of {', '.join(Z_MODES)}")
    project = None
    if sizes.get("Z", 1) > 1:
        if z is None:
            raise CellsegError(f"{path}: holds a Z stack (Z={sizes['Z']}; axes {axes}, shape {shape}) and cellseg "
                               f"segments 2-D frames over time: pass --z slices (each slice as its own image) or "
                               f"--z max (a maximum projection), or --axes if Z is really time")
        if z == "max":
            project = "Z"
        elif sizes.get("T", 1) > 1:
            raise CellsegError(f"{path}: --z slices makes the slices the frames, but the file also has T={sizes['T']} "
                               f"time points; use --z max, or split the file")
    frame_axes = [axis for axis in axes if axis in FRAME_AXES and sizes[axis] > 1 and axis != project]
    if len(frame_axes) > 1:
        found = ", ".join(f"{axis}={sizes[axis]}" for axis in frame_axes)
        raise CellsegError(
            f"{path}: more than one frame axis ({found}; axes {axes}, shape {shape}); cellseg reads one "
            "series of 2-D frames: pass --axes calling all but one of them C and pick one with --channel N"
        )
    pick = "C" if "C" in axes else "S" if "S" in axes else None  # the axis that `channel` indexes
    if channel is None and pick == "C":
        if sizes["C"] > 1:
            raise CellsegError(f"{path}: the image has {sizes['C']} channels (axes {axes}, shape {shape}); "
                               f"pick one with --channel N (0..{sizes['C'] - 1})")
        channel = 0
    elif channel is not None:
        if pick is None:
            raise CellsegError(f"{path}: --channel {channel} given but the image has no channel axis "
                               f"(axes {axes}, shape {shape}); leave out --channel")
        if not 0 <= channel < sizes[pick]:
            raise CellsegError(f"{path}: channel {channel} is out of range for {sizes[pick]} channels; "
                               f"pick one with --channel N (0..{sizes[pick] - 1})")
    return _Selection(axes, frame_axes[0] if frame_axes else None, channel, project)


def _to_grey(frame: np.ndarray, axis: int) -> np.ndarray:
    """``(Y, X, S)`` or ``(S, Y, X)`` -> ``(Y, X)`` of the same dtype: the mean of R, G and B (alpha is
    dropped), or sample 0 when there are fewer than 3 samples (grey + alpha)."""
    samples = np.moveaxis(frame, axis, -1)
    if samples.shape[-1] < 3:
        return np.array(samples[..., 0])
    grey = samples[..., :3].mean(axis=-1)
    if np.issubdtype(frame.dtype, np.integer):
        grey = np.rint(grey)
    return grey.astype(frame.dtype)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- TIFF -----------------------------------------------------------------------------------------


class _ErrorList(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _logged_errors(name: str) -> Iterator[list[str]]:
    """Collect the errors that logger ``name`` logs meanwhile.

    tifffile logs, rather than raises, when a file's page chain is cut short, and then falls back to
    fewer frames or a single page; a truncated TIFF is only caught this way when it is opened.
    """
    handler = _ErrorList()
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _open_tiff(path: Path, which: int | None = None) -> _Source:
    import tifffile
    import zarr

    with _logged_errors("tifffile") as errors:
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise CellsegError(f"{path}: not a readable TIFF ({_one_line(exc)}); "
                               "check that the file is a complete TIFF, or convert it to one") from exc
        try:
            series = tif.series[_pick_series(path, tif, which)]
            store = series.aszarr(level=0)  # one zarr chunk per strip or tile of each page
            array = zarr.open(store, mode="r")
        except CellsegError:
            tif.close()
            raise
        except Exception as exc:
            tif.close()
            raise CellsegError(f"{path}: cannot read the TIFF's images ({_one_line(exc)}); "
                               "the file looks damaged, copy or export it again") from exc
    if errors:
        tif.close()
        raise CellsegError(f"{path}: damaged TIFF ({' '.join(errors[0].split())}); "
                           "the file looks truncated or corrupt, copy or export it again")

    def close() -> None:
        store.close()
        tif.close()

    return _Source(array, series.axes, _tiff_pixel_size(tif), close, _tiff_frame_interval(tif))


def _pick_series(path: Path, tif, which: int | None) -> int:
    """The series to read: the only one, or ``which``; a TIFF of several series without ``which`` is refused
    (its pages differ in shape or type, or its OME metadata is damaged so tifffile splits it)."""
    n = len(tif.series)
    if which is None:
        if n > 1:
            shapes = ", ".join(f"{i}: {s.axes} {'x'.join(map(str, s.shape))} {s.dtype}"
                               for i, s in enumerate(tif.series[:4]))
            raise CellsegError(f"{path}: holds {n} image series ({shapes}{', ...' if n > 4 else ''}); pick one "
                               f"with --series N (a stack whose pages differ in size or type, or whose OME "
                               f"metadata is damaged, reads this way)")
        return 0
    if not 0 <= which < n:
        raise CellsegError(f"{path}: --series {which}: the file holds {n} series (0 to {n - 1})")
    return which


_S_PER_UNIT = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "min": 60.0, "minute": 60.0,
               "minutes": 60.0, "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0}


def _tiff_frame_interval(tif: Any) -> float | None:
    """Seconds between frames from OME (``TimeIncrement`` + unit) or ImageJ (``finterval`` in ``tunit``)."""
    try:
        if tif.is_ome:
            pixels = ET.fromstring(tif.ome_metadata).find(".//{*}Pixels")
            if pixels is None or pixels.get("TimeIncrement") is None:
                return None
            value, unit = float(pixels.get("TimeIncrement")), pixels.get("TimeIncrementUnit", "s")
        elif tif.is_imagej:
            meta = tif.imagej_metadata or {}
            if meta.get("finterval") is None:
                return None
            value, unit = float(meta["finterval"]), meta.get("tunit", "sec")
        else:
            return None
    except (ET.ParseError, ValueError, TypeError):
        return None
    factor = _S_PER_UNIT.get(str(unit).strip().lower())
    return value * factor if factor is not None and np.isfinite(value) and value > 0 else None


def _tiff_pixel_size(tif: Any) -> float | None:
    """Micrometres per pixel from OME (PhysicalSizeX) or ImageJ (XResolution + unit) metadata."""
    try:
        if tif.is_ome:
            pixels = ET.fromstring(tif.ome_metadata).find(".//{*}Pixels")
            if pixels is None or pixels.get("PhysicalSizeX") is None:
                return None
            return _to_um(float(pixels.get("PhysicalSizeX")), pixels.get("PhysicalSizeXUnit", "µm"))
        if tif.is_imagej:  # XResolution is pixels per `unit`; `spacing` is Z and not wanted here
            unit = (tif.imagej_metadata or {}).get("unit")
            tag = tif.pages.first.tags.get("XResolution")
            if unit is None or tag is None:
                return None
            pixels_per_unit = tag.value[0] / tag.value[1]
            return _to_um(1 / pixels_per_unit, unit)
    except (ET.ParseError, ValueError, TypeError, ZeroDivisionError):
        return None
    return None


def _to_um(value: float, unit: str) -> float | None:
    unit = str(unit).strip().lower().replace("\\u00b5", "µ").replace("\u03bc", "µ")  # escaped, Greek mu
    factor = _UM_PER_UNIT.get(unit)
    if factor is None or not np.isfinite(value) or value <= 0:
        return None
    return value * factor


# --- folders of single-frame images ---------------------------------------------------------------


class _ImageList:
    """Single-frame image files as one lazy ``(T, Y, X)`` array (``(T, Y, X, S)`` for RGB).

    Only headers are read at construction, to check that all files have the same shape and dtype.
    """

    def __init__(self, files: list[Path], where: Path):
        self.files = files
        axes, shape, self.dtype = _image_header(files[0])
        for file in files[1:]:
            _, other_shape, other_dtype = _image_header(file)
            if (other_shape, other_dtype) != (shape, self.dtype):
                raise CellsegError(
                    f"{file}: shape {other_shape} {other_dtype} differs from {shape} {self.dtype} of "
                    f"{files[0].name}; all images in {where} must have the same size and type, "
                    "resize or remove it")
        self.axes = "T" + axes
        self.shape = (len(files), *shape)

    def __getitem__(self, index: tuple[int | slice, ...]) -> np.ndarray:
        file = self.files[index[0]]
        try:
            return _read_image(file)[index[1:]]
        except Exception as exc:
            raise CellsegError(f"{file}: cannot read it ({_one_line(exc)}); "
                               "the file looks damaged, replace or remove it") from exc


def _image_list_source(files: list[Path], where: Path) -> _Source:
    images = _ImageList(files, where)
    return _Source(images, images.axes, None, lambda: None)


def _image_header(path: Path) -> tuple[str, tuple[int, ...], np.dtype]:
    """Axes, shape and dtype of a single-frame image, read from its header."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes, shape, dtype = series.axes, tuple(series.shape), np.dtype(series.dtype)
        except Exception as exc:
            raise CellsegError(f"{path}: not a readable TIFF ({_one_line(exc)}); "
                               "replace or remove it") from exc
        if set(axes) & set(FRAME_AXES):
            raise CellsegError(f"{path}: holds several frames (axes {axes}, shape {shape}); a folder stack "
                               "takes one frame per file, open multi-frame files on their own")
        return axes, shape, dtype
    from PIL import Image

    try:
        with Image.open(path) as image:  # lazy: decodes the header only
            mode, size = _PIL_CONVERT.get(image.mode, image.mode), image.size
    except Exception as exc:
        raise CellsegError(f"{path}: not a readable image ({_one_line(exc)}); replace or remove it") from exc
    probe = np.asarray(Image.new(mode, (1, 1)))  # the dtype and samples numpy gets for this mode
    return ("YXS" if probe.ndim == 3 else "YX"), (size[1], size[0], *probe.shape[2:]), probe.dtype


def _read_image(path: Path) -> np.ndarray:
    """All pixels of a single-frame image: ``(Y, X)``, ``(Y, X, S)`` or as its TIFF axes say."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    with Image.open(path) as image:
        if image.mode in _PIL_CONVERT:
            image = image.convert(_PIL_CONVERT[image.mode])
        return np.array(image)


# --- other formats through bioio ------------------------------------------------------------------


def _open_bioio(path: Path, plugin: str) -> _Source:
    if find_spec("bioio") is None or find_spec(plugin.replace("-", "_")) is None:
        raise CellsegError(f"{path}: reading {path.suffix} files needs bioio and its reader plugin; "
                           f"pip install bioio {plugin}")
    from bioio import BioImage

    try:
        image = BioImage(path)
        array, axes = image.dask_data, image.dims.order  # dask: indexing reads nothing until computed
        pixel_size = image.physical_pixel_sizes.X  # bioio gives micrometres
    except Exception as exc:
        raise CellsegError(f"{path}: bioio cannot read it ({_one_line(exc)}); "
                           "check the file, or export it as OME-TIFF") from exc
    return _Source(array, axes, pixel_size, getattr(image, "close", lambda: None))
