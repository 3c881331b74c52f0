"""Annotated folders: pairing images with masks, loading them as training samples.

Two layouts are recognised:

- ``images/`` + ``masks/`` paired by file stem (``images/a.tif`` <-> ``masks/a.png``);
- Cellpose's: ``name_masks.tif`` (or ``.png``) beside ``name.tif``.

Masks may be binary (0/1, 0/255) or instance labels. Instance labels are cleaned (the largest piece of each
id is kept); binary masks become instances by connected components (touching cells then stay merged).

A time-lapse annotated in place (a (T, Y, X) TIFF label stack beside its (T, Y, X) image stack, as napari
saves a labels layer) gives one pair per frame whose mask is not empty, named ``NAME_tNNN``: a lab can
annotate every tenth frame of a movie and train on those.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CellsegError
from ..instances import clean_instances, count_holed, interior_target
from ..normalize import BadFrameError, normalize, to_grey
from .border import border_weights

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
MASK_SUFFIX = "_masks"


@dataclass(frozen=True)
class Pair:
    """An annotated image: two files, or frame ``frame`` of an image stack and of its label stack."""

    image: Path
    mask: Path
    frame: int | None = None

    @property
    def name(self) -> str:
        return self.image.stem if self.frame is None else f"{self.image.stem}_t{self.frame:03d}"

    def read_image(self) -> np.ndarray:
        """The 2-D grey or RGB image."""
        return read_image(self.image) if self.frame is None else _read_frame(self.image, self.frame)

    def read_mask(self) -> np.ndarray:
        """The mask as it is stored (binary or labels; reduce with :func:`mask_to_labels`)."""
        return read_image(self.mask) if self.frame is None else _read_frame(self.mask, self.frame)


@dataclass
class Sample:
    """One annotated image ready for cropping: image (Y, X) float32 normalised, targets (K, Y, X) float32,
    and, when the loss weighs pixels, their weights (Y, X) float32 (:mod:`~cellsegcli.training.border`)."""

    name: str
    image: np.ndarray
    targets: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None = None

    def stack(self) -> np.ndarray:
        """(1 + K [+ 1], Y, X): the image, the targets and the weights if any, for cropping together."""
        layers = [self.image[None], self.targets] + ([self.weights[None]] if self.weights is not None else [])
        return np.concatenate(layers)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def find_pairs(folder: Path) -> list[Pair]:
    """Image/mask pairs of an annotated folder; unpaired files are refused by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CellsegError(f"{folder}: no such folder; give a folder with images/ and masks/ (or name_masks.tif files)")
    if (folder / "images").is_dir() or (folder / "masks").is_dir():
        images = {p.stem: p for p in _images_in(folder / "images")} if (folder / "images").is_dir() else {}
        masks = {p.stem: p for p in _images_in(folder / "masks")} if (folder / "masks").is_dir() else {}
        where = f"{folder}/images and {folder}/masks"
    else:
        files = _images_in(folder)
        masks = {p.stem[: -len(MASK_SUFFIX)]: p for p in files if p.stem.endswith(MASK_SUFFIX)}
        images = {p.stem: p for p in files if not p.stem.endswith(MASK_SUFFIX)}
        where = str(folder)
    if not images and not masks:
        raise CellsegError(f"{folder}: no annotated images found; expected images/ + masks/ paired by name, "
                           f"or name.tif beside name_masks.tif")
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_images or lonely_masks:
        parts = []
        if lonely_images:
            parts.append(f"images without a mask: {', '.join(images[s].name for s in lonely_images[:5])}")
        if lonely_masks:
            parts.append(f"masks without an image: {', '.join(masks[s].name for s in lonely_masks[:5])}")
        raise CellsegError(f"{where}: {'; '.join(parts)}; add the missing files or remove these")
    pairs = []
    for stem in sorted(images):
        pairs += _frames(images[stem], masks[stem])
    return pairs


def _tiff_layout(path: Path) -> tuple[tuple[int, ...], str] | None:
    """Shape and axes (tifffile's letters, ``S`` for RGB samples) of a TIFF's first series, without its
    singleton axes and without reading pixels; None for other formats."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            kept = [(n, a) for n, a in zip(series.shape, series.axes) if n != 1]
    except Exception as exc:
        raise CellsegError(f"{path}: cannot read image ({type(exc).__name__}: {exc}); check the file") from None
    return tuple(n for n, _ in kept), "".join(a for _, a in kept)


def _frames(image: Path, mask: Path) -> list[Pair]:
    """One pair, or one per annotated frame when the mask is a (T, Y, X) label stack."""
    layout = _tiff_layout(mask)
    if layout is None or len(layout[0]) != 3 or "S" in layout[1]:
        return [Pair(image, mask)]
    n, ny, nx = layout[0]
    shape, axes = _tiff_layout(image) or ((), "")
    grey = shape == (n, ny, nx) and "S" not in axes
    rgb = len(shape) == 4 and shape[:3] == (n, ny, nx) and axes.endswith("S")
    if not (grey or rgb):
        got = f"shape {shape}" if shape else "not a TIFF stack"
        raise CellsegError(f"{image}: its mask {mask.name} is a stack of {n} frames of {ny} x {nx}; the image "
                           f"must be a TIFF stack of the same frames (T, Y, X), got {got}")
    annotated = [t for t, frame in enumerate(_iter_frames(mask)) if frame.any()]
    if not annotated:
        raise CellsegError(f"{mask}: every one of its {n} frames is empty; annotate at least one frame or "
                           f"remove the pair")
    return [Pair(image, mask, t) for t in annotated]


def _iter_frames(path: Path, frames: list[int] | None = None) -> Iterator[np.ndarray]:
    """Frames of a TIFF stack (all, or those listed), one page at a time when the stack is one page per
    frame; the file is opened once."""
    import tifffile

    t = -1
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape = tuple(n for n in series.shape if n != 1)
            per_page = len(series.pages) == shape[0]
            whole = None if per_page else np.squeeze(series.asarray()).reshape(shape)
            for t in range(shape[0]) if frames is None else frames:
                yield np.squeeze(series.pages[t].asarray()) if per_page else whole[t]
    except Exception as exc:
        raise CellsegError(f"{path}: cannot read frame {t} ({type(exc).__name__}: {exc}); check the file") from None


def _read_frame(path: Path, t: int) -> np.ndarray:
    return next(_iter_frames(path, [t]))


def read_image(path: Path) -> np.ndarray:
    """A single 2-D image (grey or RGB) as an array; errors name the file."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(path)
        else:
            from skimage.io import imread

            data = imread(path)
    except Exception as exc:
        raise CellsegError(f"{path}: cannot read image ({type(exc).__name__}: {exc}); check the file") from None
    data = np.squeeze(np.asarray(data))
    if data.ndim == 3 and data.shape[0] in (3, 4) and data.shape[-1] not in (3, 4):
        data = np.moveaxis(data, 0, -1)
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[-1] not in (3, 4)):
        raise CellsegError(f"{path}: expected a 2-D grey or RGB image, got shape {data.shape}")
    return data


def mask_to_labels(mask: np.ndarray) -> np.ndarray:
    """Binary (two values) masks -> connected components; instance masks -> cleaned instances (uint32)."""
    from skimage.measure import label

    if mask.ndim == 3:
        mask = mask[..., 0]
    values = np.unique(mask)
    if len(values) <= 2:
        return label(mask > 0, connectivity=1).astype(np.uint32)
    return clean_instances(mask.astype(np.uint32))


def load_sample(pair: Pair, *, percentiles: tuple[float, float], interior_width: int = 2,
                border_weight: float = 0.0) -> Sample:
    """Read, check and prepare one pair: normalised grey image and (cell, interior) targets, the interior
    eroded by ``interior_width`` pixels (:func:`~cellsegcli.instances.interior_target`), and with a
    ``border_weight`` > 0 the pixel weights of :func:`~cellsegcli.training.border.border_weights` (w0)."""
    image = pair.read_image()
    mask = pair.read_mask()
    if image.shape[:2] != mask.shape[:2]:
        raise CellsegError(f"{pair.mask}: shape {mask.shape[:2]} does not match its image {pair.image.name} "
                           f"{image.shape[:2]}; masks must have their image's size")
    try:
        grey = normalize(to_grey(image), percentiles)
    except BadFrameError as exc:
        raise CellsegError(f"{pair.image}: {exc}; remove it from the annotations") from None
    from ..evaluation import checked_labels

    labels = mask_to_labels(checked_labels(mask[..., 0] if mask.ndim == 3 else mask, str(pair.mask)))
    targets = np.stack([labels > 0, interior_target(labels, width=interior_width)]).astype(np.float32)
    weights = border_weights(labels, w0=border_weight) if border_weight > 0 else None
    return Sample(pair.name, grey, targets, labels, weights)


def fingerprint(pairs: list[Pair]) -> str:
    """sha256 over names and sizes of the files (a cheap identity of the training set)."""
    import hashlib

    digest = hashlib.sha256()
    for p in pairs:
        for f in (p.image, p.mask):
            digest.update(f"{f.name}:{f.stat().st_size};".encode())
        if p.frame is not None:
            digest.update(f"t{p.frame};".encode())
    return digest.hexdigest()[:16]


def _cell_areas(samples: list[Sample]) -> np.ndarray:
    areas = np.concatenate([np.bincount(s.labels.ravel())[1:] for s in samples] or [np.zeros(0, np.int64)])
    return areas[areas > 0]


def suggest_min_size(samples: list[Sample]) -> int:
    """Smallest cell to keep at inference: half the 1st percentile of the annotated cell areas (pixels)."""
    areas = _cell_areas(samples)
    return int(0.5 * np.percentile(areas, 1)) if len(areas) else 0


def cell_diameter(samples: list[Sample]) -> float:
    """The median equivalent diameter (2 sqrt(area / pi)) of the annotated cells, in pixels (0: no cells):
    the cell size a model trained on ``samples`` expects, which ``segment --diameter`` rescales frames to."""
    areas = _cell_areas(samples)
    return round(float(np.median(2 * np.sqrt(areas / np.pi))), 1) if len(areas) else 0.0


def annotations_have_holes(samples: list[Sample], *, share: float = 0.02) -> bool:
    """Whether the annotated cells have holes to keep: more than ``share`` of them enclose a hole of at
    least 1 % of their area (a model trained on them then keeps holes; otherwise instances are filled)."""
    counts = np.array([count_holed(s.labels) for s in samples] or [(0, 0)]).sum(axis=0)
    return bool(counts[1] and counts[0] > share * counts[1])
