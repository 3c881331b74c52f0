"""Tracking use cases shared by the CLI and the Python API (no printing, no exits; see
:mod:`cellsegcli.pipeline`): ``track`` links the labels of a movie from anywhere, ``export_ctc`` writes a
tracked cellseg result in the Cell Tracking Challenge format, ``score_tracks`` scores one against CTC truth,
and :class:`TrackRecorder` is how ``cellseg segment --track`` links while it writes.

Tracking takes two passes over the frames: the first keeps only each cell's detection (centroid, area,
box), the linker works on those, and the second relabels each frame to track ids. Memory grows with
the number of cells in the movie, not with its pixels.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import CellsegError, OutputExistsError
from .detections import Detections, detect, from_cell_table
from .link import LinkOptions, Tracks, link
from .motility import napari_tracks, track_table

Progress = Callable[..., None]


@dataclass(frozen=True)
class TrackOutputs:
    """Where the track tables of a result ``NAME.zarr`` go: ``NAME.tracks.csv`` (one row per track),
    ``NAME.napari-tracks.csv`` (``track_id, t, y, x``) and ``NAME.lineage.json`` (napari's graph and
    the CTC ``L B E P`` rows)."""

    tracks: Path
    napari: Path
    lineage: Path

    @classmethod
    def for_zarr(cls, zarr_path: Path, table_format: str = "csv") -> TrackOutputs:
        from ..io.tables import table_path

        lineage = Path(zarr_path).with_suffix("")
        return cls(table_path(zarr_path, "tracks", table_format), table_path(zarr_path, "napari-tracks"),
                   lineage.with_name(f"{lineage.name}.lineage.json"))

    def check(self, overwrite: bool) -> None:
        for path in (self.tracks, self.napari, self.lineage):
            if path.exists() and not overwrite:
                raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")


def tracking_attributes(tracks: Tracks, options: LinkOptions, seconds: float) -> dict:
    """What a result records of its tracking (zarr attributes ``cellseg.tracking``)."""
    from dataclasses import asdict

    return {"linker": "laptrack (LAP, gap closing, divisions)", "tracks": tracks.n_tracks,
            "divisions": tracks.n_divisions, "median_diameter_px": round(tracks.diameter, 3),
            "max_distance_px": round(tracks.max_distance, 3), "options": asdict(options),
            "link_seconds": round(seconds, 3)}


def write_track_tables(outputs: TrackOutputs, detections: list[Detections], tracks: Tracks, *,
                       pixel_size_um: float | None, frame_interval_min: float | None, table_format: str,
                       overwrite: bool, numbers: range | None = None) -> None:
    """The per-track table, the napari tracks table and the lineage JSON. ``frame_interval_min`` is the
    movie's; ``numbers`` are the movie's frame numbers of the result's frames (``--frames``): the track
    table's first/last frames are given in them and its speeds per result frame; the napari table and the
    lineage count the result's frames, as its zarr does."""
    from ..io.tables import write_table

    step = numbers.step if numbers is not None else 1
    per_frame = frame_interval_min * step if frame_interval_min else frame_interval_min   # between result frames
    table = track_table(detections, tracks, pixel_size_um=pixel_size_um, frame_interval_min=per_frame)
    if numbers is not None:
        for key in ("first_frame", "last_frame"):
            table[key] = numbers.start + table[key] * numbers.step
    write_table(table, outputs.tracks, format=table_format, overwrite=overwrite)
    data, graph = napari_tracks(detections, tracks)
    write_table(data, outputs.napari, overwrite=overwrite)
    _write_json(outputs.lineage, {
        "columns": ["track_id", "first_frame", "last_frame", "parent_id"],
        "lineage": tracks.lineage.tolist(), "graph": {str(k): v for k, v in graph.items()},
        "pixel_size_um": pixel_size_um, "frame_interval_min": per_frame}, overwrite)


def _write_json(path: Path, data: dict, overwrite: bool) -> None:
    from ..io.atomic import os_error_message, temp_path_for

    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    temp = temp_path_for(path)
    try:
        temp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise CellsegError(os_error_message(path, exc)) from exc


class CellSpool:
    """The per-cell rows of a segmentation held on disk (a hidden CSV next to the outputs) until the
    track ids are known; read back in blocks of rows, so no table is ever held in memory."""

    def __init__(self, folder: Path) -> None:
        from ..io.atomic import os_error_message

        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=".cellseg-cells-", suffix=".csv", dir=folder)
        except OSError as exc:
            raise CellsegError(os_error_message(folder / ".cellseg-cells.csv", exc)) from exc
        self.path = Path(name)
        self._file = os.fdopen(handle, "w", newline="", encoding="utf-8")

    def append(self, cells: dict) -> None:
        import pandas as pd

        pd.DataFrame(cells).to_csv(self._file, header=self._file.tell() == 0, index=False, lineterminator="\n")

    def blocks(self, rows: int = 65_536):
        """The rows appended so far as DataFrames of up to ``rows`` rows, floats exactly as written."""
        import pandas as pd

        self._file.flush()
        if self._file.tell() == 0:   # nothing appended
            return
        for block in pd.read_csv(self.path, chunksize=rows):
            yield block

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class TrackRecorder:
    """Collects detections while frames are segmented (``record(t, cells)``), then links them and
    rewrites the labels and the per-cell table with track ids (``finish``). Used by ``segment --track``."""

    def __init__(self, n_frames: int, options: LinkOptions, spool_folder: Path, numbers: range | None = None) -> None:
        self.options = options
        self.numbers = numbers if numbers is not None else range(n_frames)   # the tables' frame numbers
        self.detections: list[Detections | None] = [None] * n_frames
        self.spool = CellSpool(spool_folder)
        self.link_seconds = 0.0

    def record(self, t: int, cells: dict) -> None:
        self.detections[t] = from_cell_table(cells, t)
        self.spool.append(cells)

    def finish(self, zarr_out, cells_out) -> Tracks:
        """Link, relabel every frame of the open ``zarr_out`` and write the per-cell rows with their
        ``track_id`` (the ``label`` column becomes the track id, as in the labels)."""
        detections = [d if d is not None else Detections.empty(t) for t, d in enumerate(self.detections)]
        self.detections = detections
        started = time.monotonic()
        tracks = link(detections, self.options)
        self.link_seconds = time.monotonic() - started
        lookups = [tracks.lookup(d) for d in detections]
        for t, table in enumerate(lookups):
            zarr_out.map_labels(t, table)
        for block in self.spool.blocks():
            cells_out.append(with_track_ids(block, lookups, self.numbers))
        return tracks

    def close(self) -> None:
        self.spool.close()


def with_track_ids(block, lookups: list[np.ndarray], numbers: range | None = None) -> dict:
    """Columns of a per-cell ``block`` with ``label`` mapped to track ids and a ``track_id`` column;
    ``numbers`` are the frame numbers the block's ``frame`` column holds (result frame t is ``numbers[t]``)."""
    frames = block["frame"].to_numpy(np.int64)
    if numbers is not None:
        frames = (frames - numbers.start) // numbers.step
    labels = block["label"].to_numpy(np.int64)
    ids = np.zeros(len(block), np.int64)
    for t in np.unique(frames):
        rows = frames == t
        ids[rows] = lookups[t][labels[rows]]
    columns = {k: block[k].to_numpy() for k in block.columns}
    columns["label"] = ids
    columns["track_id"] = ids
    return columns


# --- cellseg track -----------------------------------------------------------------------------------


@dataclass
class TrackResult:
    input: Path
    zarr: Path | None
    ctc: Path | None
    outputs: TrackOutputs | None
    cells_table: Path | None
    n_frames: int
    shape: tuple[int, int]
    n_detections: int
    n_tracks: int
    n_divisions: int
    diameter: float
    max_distance: float
    seconds: float
    link_seconds: float
    pixel_size_um: float | None = None
    frame_interval_min: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out = {"input": str(self.input), "zarr": str(self.zarr) if self.zarr else None,
               "ctc": str(self.ctc) if self.ctc else None, "frames": self.n_frames, "shape": list(self.shape),
               "detections": self.n_detections, "tracks": self.n_tracks, "divisions": self.n_divisions,
               "median_diameter_px": round(self.diameter, 3), "max_distance_px": round(self.max_distance, 3),
               "pixel_size_um": self.pixel_size_um, "frame_interval_min": self.frame_interval_min,
               "seconds": round(self.seconds, 3), "link_seconds": round(self.link_seconds, 3),
               "frames_per_second": round(self.n_frames / self.seconds, 3) if self.seconds > 0 else None}
        if self.outputs is not None:
            out.update({"cells_table": str(self.cells_table), "tracks_table": str(self.outputs.tracks),
                        "napari_tracks": str(self.outputs.napari), "lineage": str(self.outputs.lineage)})
        return {**out, **self.extra}


@dataclass
class _Movie:
    """A label movie opened for tracking: frames, and what the source knows about itself."""

    labels: Any                        # evaluation.LabelSource
    shape: tuple[int, int]
    image: Callable[[int], np.ndarray] | None = None   # the raw frames, when the source holds them
    image_dtype: Any = None
    pixel_size_um: float | None = None
    frame_interval_min: float | None = None
    attributes: dict = field(default_factory=dict)
    files: list[int | None] | None = None   # frame t -> index into labels (None: no file, an empty frame)

    @property
    def n_frames(self) -> int:
        return len(self.files) if self.files is not None else len(self.labels)

    @property
    def missing(self) -> list[int]:
        return [t for t, i in enumerate(self.files or []) if i is None]


CTC_NAME = re.compile(r"^(?:mask|man_seg|man_track)_?(\d+)$")


def ctc_frames(names: list[str]) -> list[int | None] | None:
    """Frame t -> file index for CTC-named files (``maskNNN``, ``man_segNNN``, ``man_trackNNN``: the number
    is the frame; frames without a file are empty, as in a CTC truth annotated on some frames only);
    None for other names (natural order, one file per frame)."""
    numbers = [CTC_NAME.match(n) for n in names]
    if not all(numbers):
        return None
    frames = [int(m.group(1)) for m in numbers]
    if len(set(frames)) != len(frames):
        return None
    files: list[int | None] = [None] * (max(frames) + 1)
    for i, t in enumerate(frames):
        files[t] = i
    return files


def _open_movie(source: Path) -> _Movie:
    from ..evaluation import open_labels

    labels = open_labels(source)
    if len(labels) == 0:
        labels.close()
        raise CellsegError(f"{source}: no label images found; give a .zarr, a (T, Y, X) label TIFF or a folder "
                           f"of label images")
    try:
        first = np.asarray(labels.frame(0))
    except BaseException:
        labels.close()
        raise
    movie = _Movie(labels, tuple(first.shape))
    if source.is_dir() and not (source / "zarr.json").is_file():
        movie.files = ctc_frames(labels.names)
    if source.suffix == ".zarr" or (source / "zarr.json").is_file():
        import zarr

        root = zarr.open(source, mode="r")
        if isinstance(root, zarr.Group):
            attrs = dict(root.attrs.get("cellseg", {}))
            if attrs and attrs.get("complete") is False:
                labels.close()
                raise CellsegError(f"{source}: an incomplete result (its run did not finish); segment it again")
            movie.attributes = attrs
            movie.pixel_size_um = attrs.get("pixel_size_um")
            movie.frame_interval_min = attrs.get("frame_interval_min")
            if "0" in root and isinstance(root["0"], zarr.Array) and root["0"].shape[0] == len(labels):
                array = root["0"]
                movie.image, movie.image_dtype = (lambda t: np.asarray(array[t])), array.dtype
    elif source.is_file():
        from ..io.readers import open_stack

        with open_stack(source, z="slices") as stack:
            movie.pixel_size_um = stack.info.pixel_size_um
            interval = getattr(stack.info, "frame_interval_s", None)
            movie.frame_interval_min = interval / 60 if interval else None
    return movie


def _frame(movie: _Movie, t: int) -> np.ndarray:
    i = t if movie.files is None else movie.files[t]
    if i is None:
        return np.zeros(movie.shape, np.uint32)
    labels = np.asarray(movie.labels.frame(i))
    where = f"{movie.labels.path}: frame {t} ({movie.labels.names[i]})"
    if labels.shape != movie.shape:
        raise CellsegError(f"{where} is {labels.shape[0]}x{labels.shape[1] if labels.ndim > 1 else ''} but frame 0 "
                           f"is {movie.shape[0]}x{movie.shape[1]}; every frame of a movie must have one size")
    if labels.dtype.kind not in "ui":
        if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise CellsegError(f"{where} holds {labels.dtype} values, not labels; give integer label images")
    if labels.size and labels.min() < 0:
        raise CellsegError(f"{where} has negative labels; 0 must be the background and cells 1, 2, ...")
    return labels


def track(source: Path, *, out: Path | None = None, ctc: Path | None = None, options: LinkOptions = LinkOptions(),
          pixel_size_um: float | None = None, frame_interval_min: float | None = None, table_format: str = "csv",
          overwrite: bool = False, progress: Progress | None = None) -> TrackResult:
    """Link the labels of ``source`` (a cellseg .zarr, a (T, Y, X) label TIFF or a folder of label images)
    into tracks; write an OME-Zarr of track ids with its tables (``out``, the default ``NAME.tracked.zarr``
    next to the source when ``ctc`` is not given) and/or a CTC result folder (``ctc``)."""
    from ..io.frames import provenance_numbers
    from ..io.omezarr import OmeZarrWriter, TimeAxis
    from ..io.tables import TableWriter, table_path
    from ..morphology import cell_table, frame_table_row, with_time

    started = time.monotonic()
    source = Path(source)
    if out is None and ctc is None:
        stem = source.name.split(".")[0] if source.is_file() or source.suffix == ".zarr" else source.name
        out = source.parent / f"{stem}.tracked.zarr"
    if out is not None and out.suffix != ".zarr":
        raise CellsegError(f"-o {out}: the tracked result is an OME-Zarr; give a path ending in .zarr")
    if out is not None and out.resolve() == source.resolve():
        raise CellsegError(f"-o {out} is the input; write the tracked result to another path")
    for path in [p for p in (out, ctc) if p is not None]:
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it, or choose another path")
    track_out = TrackOutputs.for_zarr(out, table_format) if out is not None else None
    if track_out is not None:
        track_out.check(overwrite)
    movie = _open_movie(source)
    px = pixel_size_um if pixel_size_um is not None else movie.pixel_size_um
    interval = frame_interval_min if frame_interval_min is not None else movie.frame_interval_min
    n = movie.n_frames
    numbers = provenance_numbers(movie.attributes, n)   # a `segment --frames` result: the movie's numbers
    interval_s = interval * 60 if interval else None
    total = 2 * n + (n if ctc is not None else 0)
    try:
        detections = []
        for t in range(n):
            detections.append(detect(_frame(movie, t), t))
            if progress is not None:
                progress(t + 1, total)
        link_started = time.monotonic()
        tracks = link(detections, options)
        link_seconds = time.monotonic() - link_started
        lookups = [tracks.lookup(d) for d in detections]

        def relabelled(t: int) -> np.ndarray:
            return lookups[t][_frame(movie, t)]

        cells_path = None
        if out is not None:
            cells_path, frames_path = (table_path(out, kind, table_format) for kind in ("cells", "frames"))
            attributes = {**{k: v for k, v in movie.attributes.items() if k not in ("complete", "tracking")},
                          "tracked_from": str(source), "pixel_size_um": px, "frame_interval_min": interval,
                          "tracking": tracking_attributes(tracks, options, link_seconds)}
            with OmeZarrWriter(out, n_frames=n, shape=movie.shape, image_dtype=movie.image_dtype,
                               pixel_size_um=px, attributes=attributes, overwrite=overwrite,
                               time=TimeAxis.of(numbers, interval_s)) as zarr_out, \
                    TableWriter(cells_path, format=table_format, overwrite=overwrite) as cells_out, \
                    TableWriter(frames_path, format=table_format, overwrite=overwrite) as frames_out:
                for t in range(n):
                    labels = relabelled(t)
                    image = movie.image(t) if movie.image is not None else None
                    zarr_out.write_frame(t, labels, image=image)
                    number = numbers[t]
                    seconds = number * interval_s if interval_s else None
                    cells = with_time(cell_table(labels, image, frame=number, pixel_size_um=px), number, seconds)
                    cells["track_id"] = cells["label"].copy()
                    cells_out.append(cells)
                    row = with_time(frame_table_row(labels, frame=number, pixel_size_um=px), number, seconds)
                    frames_out.append({k: [v] for k, v in row.items()})
                    if progress is not None:
                        progress(n + t + 1, total)
                zarr_out.write_tracks(tracks.lineage)
                cells_out.commit()
                frames_out.commit()
                write_track_tables(track_out, detections, tracks, pixel_size_um=px, frame_interval_min=interval,
                                   table_format=table_format, overwrite=overwrite, numbers=numbers)
                zarr_out.commit({"seconds": round(time.monotonic() - started, 3)})
        if ctc is not None:
            from .ctc import write_ctc

            write_ctc(ctc, relabelled, n, tracks.lineage, overwrite=overwrite, presence=tracks.ids,
                      progress=None if progress is None else (lambda i, _: progress(2 * n + i, total)))
    finally:
        movie.labels.close()
    return TrackResult(source, out, ctc, track_out, cells_path, n, movie.shape, sum(len(d) for d in detections),
                       tracks.n_tracks, tracks.n_divisions, tracks.diameter, tracks.max_distance,
                       time.monotonic() - started, link_seconds, px, interval,
                       extra={"empty_frames_without_file": movie.missing} if movie.missing else {})


# --- cellseg export --ctc, cellseg evaluate --tracks --------------------------------------------------


def export_ctc(result: Path, folder: Path, *, overwrite: bool = False, progress: Progress | None = None) -> dict:
    """Write a tracked cellseg result (``segment --track`` or ``track``) as a CTC result folder."""
    import zarr

    from ..evaluation import open_labels
    from ..io.omezarr import read_lineage
    from .ctc import write_ctc

    result = Path(result)
    if not result.exists():
        raise CellsegError(f"{result}: no such result; give a .zarr written by cellseg segment --track or cellseg track")
    try:
        lineage = read_lineage(result)
    except Exception:   # not a zarr group at all
        lineage = None
    if lineage is None:
        raise CellsegError(f"{result}: holds no tracks; run `cellseg track {result}` (or segment with --track) first")
    root = zarr.open_group(result, mode="r")
    if not root.attrs.get("cellseg", {}).get("complete", False):
        raise CellsegError(f"{result}: an incomplete result (its run did not finish); segment it again")
    labels = open_labels(result)
    try:
        write_ctc(folder, labels.frame, len(labels), lineage, overwrite=overwrite, progress=progress)
    finally:
        labels.close()
    return {"result": str(result), "ctc": str(folder), "frames": len(labels), "tracks": int(len(lineage))}


def score_tracks(result: Path, gt: Path) -> dict:
    """CTC measures (TRA, DET, LNK, division F1 ...) of ``result`` (a tracked cellseg .zarr or a CTC result
    folder with ``res_track.txt``) against a CTC ground-truth folder ``XX_GT``."""
    from .ctc import check_ground_truth, score

    result, gt = Path(result), check_ground_truth(Path(gt))
    if (result / "res_track.txt").is_file():
        return score(result, gt)
    with tempfile.TemporaryDirectory(prefix="cellseg-ctc-") as tmp:
        folder = Path(tmp) / "RES"
        export_ctc(result, folder)
        return score(folder, gt)
