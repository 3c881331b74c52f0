"""Label images as ImageJ TIFF, for Fiji, TrackMate's label-image detector and MorphoLibJ.

ImageJ has no 32-bit integer images, so labels are written as uint16: the whole movie as one hyperstack
``NAME_labels.tif`` (axes TYX, ids unchanged, so track ids stay track ids) when every id is at most
65535, or on request one file per frame ``NAME_tNNNN.tif`` with each frame's ids renumbered 1..n in
increasing order (then an id no longer names the same cell from frame to frame). Pixel size (micron) and
frame interval (seconds) go into the ImageJ metadata; the files are zlib-compressed, which ImageJ reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import CellsegError
from .result import dense_labels

UINT16_MAX = 65535


def hyperstack_name(name: str) -> str:
    return f"{name}_labels.tif"


def check_hyperstack_ids(max_id: int, where: str) -> None:
    """Refuse ids that a uint16 hyperstack cannot hold, saying what to do instead."""
    if max_id > UINT16_MAX:
        raise CellsegError(f"{where}: ids go up to {max_id}, more than an ImageJ (uint16) label TIFF holds "
                           f"({UINT16_MAX}); pass --tiff-per-frame for one TIFF per frame with ids renumbered "
                           f"1..n in each frame (track ids are then lost), or export fewer frames")


def imagej_options(pixel_size_um: float | None, frame_interval_min: float | None) -> dict:
    """Keyword arguments of ``TiffWriter.write`` for an ImageJ label stack: the resolution (pixels per
    micron) and the ImageJ ``unit`` and ``finterval`` (seconds), when known."""
    metadata: dict = {}
    options: dict = {"compression": "zlib", "photometric": "minisblack", "maxworkers": 1, "metadata": metadata}
    if pixel_size_um is not None:
        options["resolution"] = (1.0 / pixel_size_um, 1.0 / pixel_size_um)
        metadata["unit"] = "micron"
    if frame_interval_min is not None:
        metadata["finterval"] = float(frame_interval_min) * 60.0
    return options


def write_hyperstack(path: Path, frames: Iterable[np.ndarray], *, n_frames: int, shape: tuple[int, int],
                     pixel_size_um: float | None = None, frame_interval_min: float | None = None) -> Path:
    """Write ``n_frames`` label frames as one ImageJ hyperstack (TYX, uint16), pulling one frame at a time
    from ``frames`` (an iterator of (Y, X) arrays with ids <= 65535), so memory stays one frame."""
    import tifffile

    def checked() -> Iterable[np.ndarray]:
        for t, frame in enumerate(frames):
            top = int(frame.max(initial=0))
            check_hyperstack_ids(top, f"{path}: frame {t}")
            yield np.ascontiguousarray(frame, dtype=np.uint16)

    options = imagej_options(pixel_size_um, frame_interval_min)
    options["metadata"]["axes"] = "TYX"
    with tifffile.TiffWriter(path, imagej=True) as tif:
        tif.write(iter(checked()), shape=(n_frames, *shape), dtype=np.uint16, **options)
    return path


def renumbered(labels: np.ndarray, ids: np.ndarray, where: str) -> np.ndarray:
    """(Y, X) uint16 ``labels`` with its sorted cell ``ids`` replaced by 1..n (order kept, 0 stays 0)."""
    if len(ids) > UINT16_MAX:
        raise CellsegError(f"{where}: {len(ids)} cells in one frame, more than an ImageJ (uint16) label TIFF holds "
                           f"({UINT16_MAX}); export this result with --rois instead")
    return dense_labels(labels, ids, np.uint16)


def write_frame_tiff(path: Path, labels: np.ndarray, *, pixel_size_um: float | None = None) -> Path:
    """Write one (Y, X) uint16 label frame as an ImageJ TIFF."""
    import tifffile

    if labels.dtype != np.uint16:
        raise TypeError(f"write_frame_tiff takes uint16 labels, got {labels.dtype}")
    options = imagej_options(pixel_size_um, None)
    options["metadata"]["axes"] = "YX"
    tifffile.imwrite(path, labels, imagej=True, **options)
    return path
