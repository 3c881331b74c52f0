"""``cellseg export``: a finished result to the formats of other tools, in one pass over its frames.

Everything is checked before anything is written (the result, every destination, ids that a TIFF cannot
hold when the result's lineage knows them); each destination folder is built under a hidden temporary
name and renamed into place only once every output succeeded, so a failed or interrupted export leaves
no new folder behind. Nothing here prints or exits: progress goes through a callback.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..errors import CellsegError, WriteError
from ..io.atomic import os_error_message
from .folders import StagedFolder, check_destination
from .result import Result, cell_ids, open_result

Progress = Callable[..., None]
Sink = Callable[[int, np.ndarray, np.ndarray, "np.ndarray | None"], None]   # (t, labels, ids, image)


def export_result(result: Path, *, tiff: Path | None = None, rois: Path | None = None,
                  outlines: Path | None = None, ctc: Path | None = None, tiff_per_frame: bool = False,
                  overwrite: bool = False, progress: Progress | None = None) -> dict:
    """Export a finished cellseg result ``NAME.zarr`` (``cellseg segment``, ``cellseg track``) for Fiji,
    TrackMate, ImageJ and the Cell Tracking Challenge.

    Parameters
    ----------
    result : Path
        The ``.zarr`` result; it must be complete (its run finished), and tracked for ``ctc``.
    tiff : Path or None
        Folder for the labels as ImageJ TIFF (uint16): one hyperstack ``NAME_labels.tif`` (TYX, ids
        unchanged, pixel size and frame interval in its metadata). Refused when an id exceeds 65535,
        unless ``tiff_per_frame``.
    rois : Path or None
        Folder for one ImageJ ROI set per frame, ``NAME_tNNNN.zip``: one polygon per cell (the outer
        boundary of its largest piece, holes filled) named ``cell-NNNN`` by its id, ``track-NNNN`` in a
        tracked result, with its 1-based frame as ``t_position``.
    outlines : Path or None
        Folder for one RGB PNG per frame, ``NAME_tNNNN.png``: the cells' outlines over the input frame
        (on black for a result segmented with ``--no-image``).
    ctc : Path or None
        Folder for a Cell Tracking Challenge result (``maskNNN.tif`` + ``res_track.txt``, see
        :func:`cellsegcli.tracking.pipeline.export_ctc`); needs a tracked result and a folder of its own.
    tiff_per_frame : bool
        Write ``tiff`` as one TIFF per frame, ``NAME_tNNNN.tif``, each frame's ids renumbered 1..n in
        increasing order (so ids no longer follow a cell, or a track, across frames).
    overwrite : bool
        Replace existing destination folders (only folders holding nothing but export files).
    progress : callable or None
        ``progress(done, total)`` in frames, over all passes (one for tiff/rois/outlines, one for ctc).

    Returns
    -------
    dict
        ``result``, ``frames``, ``shape``, ``cells`` (summed over frames; None when only ``ctc``),
        ``tracks`` (None when untracked), ``pixel_size_um``, ``frame_interval_min``, ``seconds`` and
        ``outputs``: per written kind, ``folder`` and ``files`` (for ``tiff`` also ``mode``,
        ``"hyperstack"`` or ``"per-frame"``; for ``rois`` also ``rois``; for ``ctc`` also ``tracks``).

    Raises
    ------
    CellsegError
        No output asked for, a missing, incomplete or untracked (for ``ctc``) result, a destination that
        exists (:class:`~cellsegcli.errors.OutputExistsError`) or lies inside the result or another
        destination, ids that do not fit a uint16 TIFF, a failed write.
    """
    started = time.monotonic()
    result = Path(result)
    folders = {kind: Path(folder) for kind, folder in (("tiff", tiff), ("rois", rois), ("outlines", outlines))
               if folder is not None}
    ctc = None if ctc is None else Path(ctc)
    if not folders and ctc is None:
        raise CellsegError("nothing to export; give at least one of --tiff DIR, --rois DIR, --outlines DIR, --ctc DIR")
    if tiff_per_frame and tiff is None:
        raise CellsegError("--tiff-per-frame chooses how --tiff is written; give --tiff DIR as well")
    source = open_result(result, need_tracks=ctc is not None)
    try:
        plan = _plan_folders(folders, ctc, result=result, overwrite=overwrite)
        if tiff is not None and not tiff_per_frame and source.tracked and len(source.lineage):
            from .tiff import check_hyperstack_ids

            check_hyperstack_ids(int(source.lineage[:, 0].max()), f"--tiff {tiff}")
        passes = int(bool(folders)) + int(ctc is not None)
        total = passes * source.n_frames
        outputs: dict[str, dict] = {}
        cells = None
        with contextlib.ExitStack() as stack:
            staged = {key: stack.enter_context(StagedFolder(path, overwrite=overwrite))
                      for key, (path, _) in plan.items()}
            if folders:
                stage_of = {kind: staged[key] for key, (_, kinds) in plan.items() for kind in kinds}
                try:
                    cells, outputs = _write_frames(source, stage_of, tiff_per_frame=tiff_per_frame,
                                                   progress=progress, total=total)
                except OSError as exc:   # a full disk, a folder made read-only meanwhile
                    raise WriteError(os_error_message(_destination_of(exc, staged.values()), exc)) from exc
            if ctc is not None:
                from ..tracking.pipeline import export_ctc

                offset = total - source.n_frames
                done = export_ctc(result, ctc, overwrite=overwrite, progress=None if progress is None else
                                  (lambda i, _: progress(offset + i, total)))
                outputs["ctc"] = {"folder": str(ctc), "files": source.n_frames + 1, "tracks": done["tracks"]}
            for folder in staged.values():
                folder.commit()
    finally:
        source.close()
    return {"result": str(result), "frames": source.n_frames, "shape": list(source.shape), "cells": cells,
            "tracks": None if source.lineage is None else len(source.lineage),
            "pixel_size_um": source.pixel_size_um, "frame_interval_min": source.frame_interval_min,
            "seconds": round(time.monotonic() - started, 3), "outputs": outputs}


def _plan_folders(folders: dict[str, Path], ctc: Path | None, *, result: Path,
                  overwrite: bool) -> dict[Path, tuple[Path, list[str]]]:
    """The folders to build (resolved path -> (path, kinds written there)), after checking each. tiff,
    rois and outlines may share a folder (their file names differ); ctc needs its own, and no destination
    may lie inside another."""
    plan: dict[Path, tuple[Path, list[str]]] = {}
    for kind, folder in folders.items():
        plan.setdefault(folder.resolve(), (folder, []))[1].append(kind)
    options = {key: f"--{kinds[0]}" for key, (_, kinds) in plan.items()}
    if ctc is not None:
        if ctc.resolve() in plan:
            key = ctc.resolve()
            raise CellsegError(f"--ctc {ctc} is also the folder of {options[key]}; give --ctc a folder of its own "
                               f"(a CTC result holds only its masks and res_track.txt)")
        options[ctc.resolve()] = "--ctc"
    for key, option in options.items():
        for other, outer in options.items():
            if other in key.parents:
                raise CellsegError(f"{option} {key} lies inside the folder of {outer} ({other}); give separate "
                                   f"folders, or one folder for --tiff, --rois and --outlines")
    for key, (folder, kinds) in plan.items():
        check_destination(folder, option=f"--{kinds[0]}", result=result, overwrite=overwrite)
    if ctc is not None:
        check_destination(ctc, option="--ctc", result=result, overwrite=overwrite)
    return plan


def _destination_of(exc: OSError, staged) -> Path:
    """The destination path the failed write was for (its file in the folder being built, renamed)."""
    failed = Path(exc.filename) if exc.filename else None
    for folder in staged:
        if failed is not None and folder.temp_path in failed.parents:
            return folder.path / failed.relative_to(folder.temp_path)
    return next(iter(staged)).path


def _write_frames(source: Result, stage_of: dict[str, StagedFolder], *, tiff_per_frame: bool,
                  progress: Progress | None, total: int) -> tuple[int, dict[str, dict]]:
    """One pass over the frames feeding every per-frame output; the TIFF hyperstack pulls the frames."""
    from . import tiff as tiffs

    sinks: list[Sink] = []
    outputs: dict[str, dict] = {}
    n = source.n_frames
    if "tiff" in stage_of and tiff_per_frame:
        sinks.append(_tiff_sink(source, stage_of["tiff"]))
        outputs["tiff"] = {"folder": str(stage_of["tiff"].path), "files": n, "mode": "per-frame"}
    elif "tiff" in stage_of:
        outputs["tiff"] = {"folder": str(stage_of["tiff"].path), "files": 1, "mode": "hyperstack",
                           "file": str(stage_of["tiff"].path / tiffs.hyperstack_name(source.name))}
    roi_count = [0]
    if "rois" in stage_of:
        sinks.append(_roi_sink(source, stage_of["rois"], roi_count))
    if "outlines" in stage_of:
        sinks.append(_outline_sink(source, stage_of["outlines"]))
        outputs["outlines"] = {"folder": str(stage_of["outlines"].path), "files": n}
    hyperstack = "tiff" in stage_of and not tiff_per_frame
    where = f"--tiff {stage_of['tiff'].path}" if hyperstack else ""
    cells = [0]

    def frames() -> Iterator[np.ndarray]:
        for t in range(n):
            labels = source.frame_labels(t)
            ids = cell_ids(labels)
            if hyperstack and len(ids):
                tiffs.check_hyperstack_ids(int(ids[-1]), f"{where} (frame {t} of {source.path})")
            image = source.frame_image(t) if "outlines" in stage_of else None
            for sink in sinks:
                sink(t, labels, ids, image)
            cells[0] += len(ids)
            if progress is not None:
                progress(t + 1, total)
            yield labels

    if hyperstack:
        tiffs.write_hyperstack(stage_of["tiff"].file(tiffs.hyperstack_name(source.name)), frames(), n_frames=n,
                               shape=source.shape, pixel_size_um=source.pixel_size_um,
                               frame_interval_min=source.frame_interval_min)
    else:
        for _ in frames():
            pass
    if "rois" in stage_of:
        outputs["rois"] = {"folder": str(stage_of["rois"].path), "files": n, "rois": roi_count[0]}
    return cells[0], outputs


def _tiff_sink(source: Result, stage: StagedFolder) -> Sink:
    from .tiff import renumbered, write_frame_tiff

    def write(t: int, labels: np.ndarray, ids: np.ndarray, image: np.ndarray | None) -> None:
        name = source.frame_file(t, ".tif")
        write_frame_tiff(stage.file(name), renumbered(labels, ids, f"{source.path}: frame {t}"),
                         pixel_size_um=source.pixel_size_um)

    return write


def _roi_sink(source: Result, stage: StagedFolder, count: list[int]) -> Sink:
    from .rois import frame_rois, write_roi_zip

    def write(t: int, labels: np.ndarray, ids: np.ndarray, image: np.ndarray | None) -> None:
        rois = frame_rois(labels, ids, t, tracked=source.tracked)
        write_roi_zip(stage.file(source.frame_file(t, ".zip")), rois)
        count[0] += len(rois)

    return write


def _outline_sink(source: Result, stage: StagedFolder) -> Sink:
    from .outlines import write_outline_png

    def write(t: int, labels: np.ndarray, ids: np.ndarray, image: np.ndarray | None) -> None:
        write_outline_png(stage.file(source.frame_file(t, ".png")), labels, image, by_id=source.tracked)

    return write
