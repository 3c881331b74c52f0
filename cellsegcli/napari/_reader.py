"""napari reader of cellseg results: ``NAME.zarr`` (written by ``cellseg segment`` or ``cellseg track``)
-> napari LayerData tuples ``(data, layer keyword arguments, layer type)``.

Nothing here imports napari: the functions return plain tuples, so they are tested without it. The
layers, bottom to top:

- the input image (``0``), named after the input file (``"image"`` when unknown); absent with ``--no-image``;
- ``probabilities`` (``probabilities/0`` x its ``value_scale``, 1/255): contrast 0-1, additive, hidden;
- ``cells`` (``labels/cells/0``): the instance labels (track ids in a tracked result), visible;
- ``tracks``: a Tracks layer ``[track_id, t, y, x]`` from ``NAME.napari-tracks.csv`` beside the zarr, its
  ``graph`` (``{track_id: [parent_id]}``) from ``tracks/lineage``; only for tracked results.

Scales, translations, axis names and units come from each group's NGFF ``multiscales`` metadata (whatever
units it holds: micrometre pixels, seconds between frames). Pixel data stay on disk as dask arrays of
one chunk per frame, so a long movie opens at once and frames are read as they are shown.

:func:`get_reader` claims only cellseg results (root attribute ``"cellseg"``), so other ``.zarr`` stores go
to other readers (napari-ome-zarr). A result whose run did not finish (``complete`` not true) is claimed
and refused by :func:`read_result` with one line saying why, which napari shows, rather than left to a
generic reader that would show its partial labels as if they were a result.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CellsegError

LayerData = tuple[Any, dict[str, Any], str]   # (data, layer keyword arguments, layer type)
PathLike = str | os.PathLike
LAYER_NAMES = ("probabilities", "cells", "tracks")   # the image layer never takes one of these


def get_reader(path: PathLike | Sequence[PathLike]) -> Callable[..., list[LayerData]] | None:
    """The npe2 reader command: :func:`read_result` for one cellseg result, None for anything else
    (several paths, a file, another zarr), so that napari tries its other readers."""
    single = _single(path)
    if single is None or result_attributes(single) is None:
        return None
    return read_result


def result_attributes(path: PathLike) -> dict[str, Any] | None:
    """The provenance ``attrs["cellseg"]`` of the cellseg result at ``path``; None when ``path`` is not one
    (reads the root ``zarr.json`` only)."""
    try:
        node = json.loads((Path(path) / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):   # no such file, not JSON, not UTF-8
        return None
    if not isinstance(node, dict) or node.get("node_type") != "group":
        return None
    attributes = node.get("attributes")
    cellseg = attributes.get("cellseg") if isinstance(attributes, dict) else None
    return cellseg if isinstance(cellseg, dict) else None


def read_result(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """The layers of the cellseg result ``path``, bottom to top (see the module docstring).

    Raises
    ------
    CellsegError
        If ``path`` is not a cellseg result, is incomplete (its run did not finish) or lacks its labels.
    """
    import zarr

    from ..io.omezarr import IMAGE_PATH, LABEL_NAME, LABELS_PATH, LINEAGE_PATH, PROBABILITIES_PATH

    single = _single(path)
    if single is None:
        raise CellsegError(f"{path}: give one cellseg result (a .zarr written by cellseg segment)")
    path = Path(single)
    attributes = result_attributes(path)
    if attributes is None:
        raise CellsegError(f"{path}: not a cellseg result (its zarr.json has no 'cellseg' attributes)")
    if attributes.get("complete") is not True:
        raise CellsegError(f"{path}: an incomplete result (its run did not finish, or is still running); wait for "
                           f"it, or segment it again")
    root = zarr.open_group(path, mode="r", zarr_format=3)
    labels_group = root.get(f"labels/{LABEL_NAME}")
    if not isinstance(labels_group, zarr.Group) or not isinstance(root.get(LABELS_PATH), zarr.Array):
        raise CellsegError(f"{path}: no {LABELS_PATH} array; the result is damaged, segment it again")

    layers: list[LayerData] = []
    image = root.get(IMAGE_PATH)
    if isinstance(image, zarr.Array):
        layers.append(image_layer(image, root.attrs.get("ome", {}), name=image_name(attributes)))
    probabilities = root.get(PROBABILITIES_PATH)
    if isinstance(probabilities, zarr.Array):
        group = root["probabilities"]
        layers.append(probability_layer(probabilities, group.attrs.get("ome", {}),
                                        dict(group.attrs.get("cellseg", {}))))
    cells = labels_layer(root[LABELS_PATH], labels_group.attrs.get("ome", {}), attributes)
    layers.append(cells)
    if isinstance(root.get(LINEAGE_PATH), zarr.Array):
        tracks = tracks_layer(path, root[LINEAGE_PATH][:], cells[1])
        if tracks is not None:
            layers.append(tracks)
    return layers


# --- one layer each -------------------------------------------------------------------------------------


def image_layer(array, ome: dict, *, name: str) -> LayerData:
    """The input frames (T, Y, X) as a lazy image layer."""
    data = _lazy(array)
    kwargs = {"name": name, "colormap": "gray", "blending": "translucent", "visible": True,
              **placement(ome, array.ndim, where="image").layer_kwargs()}
    return data, kwargs, "image"


def probability_layer(array, ome: dict, attributes: dict) -> LayerData:
    """The stored uint8 probabilities as floats in [0, 1] (x ``value_scale``), hidden and additive."""
    import numpy as np

    from ..io.omezarr import PROBABILITY_SCALE

    value_scale = float(attributes.get("value_scale", 1 / PROBABILITY_SCALE))
    data = _lazy(array).astype(np.float32) * np.float32(value_scale)
    kwargs = {"name": "probabilities", "colormap": "magma", "contrast_limits": (0.0, 1.0), "blending": "additive",
              "opacity": 0.6, "visible": False, **placement(ome, array.ndim, where="probabilities").layer_kwargs()}
    return data, kwargs, "image"


def labels_layer(array, ome: dict, attributes: dict) -> LayerData:
    """The instance labels (T, Y, X) as a visible lazy Labels layer ``cells``; provenance in ``metadata``."""
    from ..io.omezarr import LABEL_NAME

    kwargs = {"name": LABEL_NAME, "visible": True, "opacity": 0.6, "metadata": {"cellseg": attributes},
              **placement(ome, array.ndim, where=f"labels/{LABEL_NAME}").layer_kwargs()}
    return _lazy(array), kwargs, "labels"


def tracks_layer(path: Path, lineage, cells_kwargs: dict) -> LayerData | None:
    """The Tracks layer of a tracked result: points from ``NAME.napari-tracks.csv``, ``graph`` from the
    ``(M, 4)`` ``lineage`` (track_id, first_frame, last_frame, parent_id), placed as the labels are.
    None (with a warning when the table is missing) when there is nothing to show."""
    import numpy as np
    import pandas as pd

    from ..io.tables import table_path

    lineage = np.asarray(lineage, np.int64).reshape(-1, 4)
    table = table_path(path, "napari-tracks")
    if not len(lineage):
        return None
    if not table.is_file():
        warnings.warn(f"{path} is tracked but {table.name} is not beside it, so its tracks are not shown; "
                      f"keep the result's tables next to its .zarr", UserWarning, stacklevel=2)
        return None
    points = pd.read_csv(table)
    columns = ["track_id", "t", "y", "x"]
    if list(points.columns) != columns:
        raise CellsegError(f"{table}: expected the columns {', '.join(columns)}, found {', '.join(points.columns)}")
    if not len(points):
        return None
    data = points.to_numpy(np.float64)
    present = set(points["track_id"].astype(np.int64).tolist())
    graph = {int(track): [int(parent)] for track, _, _, parent in lineage
             if parent and track in present and parent in present}
    keep = ("scale", "translate", "units", "axis_labels")
    kwargs = {"name": "tracks", "graph": graph, "tail_length": 10, "visible": True,
              **{k: v for k, v in cells_kwargs.items() if k in keep}}
    return data, kwargs, "tracks"


# --- metadata -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where an NGFF image's pixels lie: per axis (in data order) its name, the world coordinate of pixel
    ``i`` (``translate + i * scale``) and its unit (None when no axis has one: napari's pixels)."""

    axis_labels: tuple[str, ...]
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    units: tuple[str, ...] | None

    def layer_kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scale": self.scale, "translate": self.translate, "axis_labels": self.axis_labels}
        if self.units is not None:
            out["units"] = self.units
        return out


def placement(ome: dict, ndim: int, *, where: str = "image") -> Placement:
    """The :class:`Placement` of the full-resolution dataset (path ``"0"``) in the NGFF ``ome`` attributes
    of a group: its coordinate transformations, then the multiscale's own, composed; an axis without a
    unit gets napari's ``"pixel"`` when another has one. Without ``multiscales``: unit pixels at 0."""
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    if not multiscales:
        return Placement(_default_axes(ndim), (1.0,) * ndim, (0.0,) * ndim, None)
    ms = multiscales[0]
    axes = ms.get("axes") or [{"name": n} for n in _default_axes(ndim)]
    if len(axes) != ndim:
        raise CellsegError(f"{where}: its NGFF metadata has {len(axes)} axes for a {ndim}-D array; the result is "
                           f"damaged, segment it again")
    datasets = ms.get("datasets") or [{}]
    dataset = next((d for d in datasets if d.get("path") == "0"), datasets[0])
    scale, translate = [1.0] * ndim, [0.0] * ndim
    for transform in [*dataset.get("coordinateTransformations", []), *ms.get("coordinateTransformations", [])]:
        kind = transform.get("type")
        if kind == "scale":
            factors = _vector(transform.get("scale"), ndim, where)
            scale = [s * f for s, f in zip(scale, factors)]
            translate = [t * f for t, f in zip(translate, factors)]
        elif kind == "translation":
            shifts = _vector(transform.get("translation"), ndim, where)
            translate = [t + s for t, s in zip(translate, shifts)]
        elif kind != "identity":
            raise CellsegError(f"{where}: NGFF coordinate transformation {kind!r} is not supported (scale and "
                               f"translation are)")
    names = tuple(str(a.get("name", n)) for a, n in zip(axes, _default_axes(ndim)))
    units = [a.get("unit") for a in axes]
    return Placement(names, tuple(scale), tuple(translate),
                     tuple(u or "pixel" for u in units) if any(units) else None)


def image_name(attributes: dict) -> str:
    """The image layer's name: the input's file name without its extension (``movie.ome.tif`` ->
    ``movie``), ``"image"`` when the input is not recorded; never the name of another layer."""
    source = attributes.get("input")
    if not source:
        return "image"
    stem = Path(str(source)).stem   # as cellseg segment names the result NAME.zarr
    stem = stem.removesuffix(".ome")
    return f"{stem} (image)" if stem in LAYER_NAMES else stem


# --- helpers --------------------------------------------------------------------------------------------


def _single(path: PathLike | Sequence[PathLike]) -> str | None:
    """One path as a string (napari may pass a one-element list); None for several."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    return os.fspath(path)


def _lazy(array):
    """A zarr array as a dask array of the same chunks (one per frame): nothing is read until shown."""
    import dask.array as da

    return da.from_zarr(array)


def _vector(values, ndim: int, where: str) -> list[float]:
    if not isinstance(values, list) or len(values) != ndim:
        raise CellsegError(f"{where}: an NGFF coordinate transformation holds {values!r}, not {ndim} numbers; the "
                           f"result is damaged, segment it again")
    return [float(v) for v in values]


def _default_axes(ndim: int) -> tuple[str, ...]:
    return ("t", "y", "x")[-ndim:] if ndim <= 3 else tuple(f"axis {i}" for i in range(ndim))
