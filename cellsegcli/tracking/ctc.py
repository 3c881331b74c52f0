"""The Cell Tracking Challenge (CTC) result format, and scoring against CTC ground truth.

A CTC result folder holds ``maskNNN.tif`` (uint16 labels, one per frame; four digits past 1,000
frames) and ``res_track.txt``: one line ``L B E P`` per track (label, first and last frame, parent
label, 0 for none). A CTC track is present on every frame from B to E, so a cell missed for a few
frames continues under a new label whose parent is the label before the gap; cellseg's own tracks
keep one id across gaps, and :func:`ctc_segments` splits them on export.

Scoring (TRA, DET, LNK, division F1 as BC(i)) is py-ctcmetrics' implementation of the challenge's
measures, not a re-implementation.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import CellsegError, OutputExistsError
from ..io.atomic import remove_path, replace_path

MAX_LABEL = 65535   # CTC masks are 16-bit


def mask_name(t: int, n_frames: int) -> str:
    return f"mask{t:0{4 if n_frames > 1000 else 3}d}.tif"


def read_track_file(path: Path) -> np.ndarray:
    """(M, 4) int64 ``L B E P`` rows of a ``man_track.txt`` / ``res_track.txt``."""
    path = Path(path)
    if not path.is_file():
        raise CellsegError(f"{path}: no such file; a CTC folder needs its track file (L B E P per line)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = [int(v) for v in line.split()]
        except ValueError:
            row = []
        if len(row) != 4 or min(row) < 0 or row[2] < row[1]:
            raise CellsegError(f"{path}: line {n} is not 'L B E P' (four non-negative integers, E >= B): "
                               f"{line.strip()[:60]!r}")
        rows.append(row)
    return np.array(rows, np.int64).reshape(-1, 4)


def ctc_segments(presence: list[np.ndarray], lineage: np.ndarray) -> tuple[np.ndarray, list[dict[int, int]]]:
    """CTC tracks of cellseg tracks that may have gaps.

    Parameters
    ----------
    presence : the track ids present on each frame.
    lineage : (M, 4) ``track_id, first, last, parent`` of the tracks.

    Returns
    -------
    ctc : (K, 4) ``L B E P`` with every track present on each frame from B to E.
    remap : per frame, ``{track_id: label}`` for the tracks written under another label there.
    """
    frames_of: dict[int, list[int]] = {}
    for t, ids in enumerate(presence):
        for i in np.asarray(ids).tolist():
            frames_of.setdefault(int(i), []).append(t)
    parent_of = {int(r[0]): int(r[3]) for r in lineage}
    next_label = max([0, *frames_of, *parent_of]) + 1
    last_label: dict[int, int] = {}
    rows, remap = [], [dict() for _ in presence]
    for track in sorted(frames_of, key=lambda i: (frames_of[i][0], i)):
        frames = np.asarray(frames_of[track])
        runs = np.split(frames, np.flatnonzero(np.diff(frames) > 1) + 1)
        parent = last_label.get(parent_of.get(track, 0), parent_of.get(track, 0))
        for k, run in enumerate(runs):
            label = track if k == 0 else next_label
            if k:
                next_label += 1
                for t in run.tolist():
                    remap[t][track] = label
            rows.append((label, int(run[0]), int(run[-1]), parent))
            parent = label
        last_label[track] = parent
    ctc = np.array(rows, np.int64).reshape(-1, 4)
    return ctc[np.argsort(ctc[:, 0], kind="stable")], remap


def write_ctc(folder: Path, frame: Callable[[int], np.ndarray], n_frames: int, lineage: np.ndarray, *,
              overwrite: bool = False, presence: list[np.ndarray] | None = None, progress=None) -> Path:
    """Write a CTC result folder from track-id label frames (``frame(t)``) and their lineage.

    ``presence`` lists the track ids on each frame when the caller knows them; otherwise a first pass over
    the frames finds them. Written under a hidden temporary name and renamed, so an interrupted export
    leaves no folder that looks complete.
    """
    import tifffile

    folder = Path(folder)
    if (folder.exists() or folder.is_symlink()) and not overwrite:
        raise OutputExistsError(f"{folder} exists; pass --overwrite to replace it, or choose another folder")
    if presence is None:
        presence = []
        for t in range(n_frames):
            ids = np.unique(frame(t))
            presence.append(ids[ids > 0])
    ctc, remap = ctc_segments(presence, lineage)
    if len(ctc) and ctc[:, 0].max() > MAX_LABEL:
        raise CellsegError(f"{folder}: {int(ctc[:, 0].max())} track labels do not fit CTC's 16-bit masks "
                           f"(at most {MAX_LABEL}); export a shorter range of frames")
    temp = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    remove_path(temp)
    try:
        temp.mkdir(parents=True)
        for t in range(n_frames):
            labels = np.asarray(frame(t))
            if remap[t]:
                table = np.arange(int(labels.max()) + 1, dtype=np.int64)
                for track, label in remap[t].items():
                    table[track] = label
                labels = table[labels]
            tifffile.imwrite(temp / mask_name(t, n_frames), labels.astype(np.uint16), compression="zlib")
            if progress is not None:
                progress(t + 1, n_frames)
        np.savetxt(temp / "res_track.txt", ctc, fmt="%d")
        replace_path(temp, folder, overwrite=overwrite)
    except OSError as exc:
        remove_path(temp)
        from ..io.atomic import os_error_message

        raise CellsegError(os_error_message(folder, exc)) from exc
    except BaseException:
        remove_path(temp)
        raise
    return folder


def check_ground_truth(gt: Path) -> Path:
    """The ``XX_GT`` folder of a CTC ground truth (with ``TRA/man_track.txt`` and ``TRA/man_track*.tif``)."""
    gt = Path(gt)
    if gt.name == "TRA":
        gt = gt.parent
    tra = gt / "TRA"
    if not tra.is_dir():
        raise CellsegError(f"{gt}: not a CTC ground-truth folder (no TRA/ inside); give the XX_GT folder")
    if not (tra / "man_track.txt").is_file():
        raise CellsegError(f"{tra}: no man_track.txt; CTC tracking truth needs it next to the man_track*.tif masks")
    if not any(tra.glob("man_track*.tif")):
        raise CellsegError(f"{tra}: no man_track*.tif masks")
    read_track_file(tra / "man_track.txt")
    return gt


TRACK_METRICS = ["Valid", "TRA", "DET", "LNK", "BC", "CT", "TF", "CCA"]


def score(result: Path, gt: Path, *, threads: int = 1) -> dict:
    """CTC measures of a result folder against a ground-truth folder, by py-ctcmetrics.

    Returns a dict with ``Valid`` (1: the result is a valid CTC result), ``TRA``, ``DET``, ``LNK``,
    ``AOGM`` and its parts, ``BC(0..3)`` (division F1 with a tolerance of i frames), ``CT``, ``TF``, ``CCA``.
    """
    try:
        from ctc_metrics.scripts.evaluate import calculate_metrics, load_data
    except ImportError:
        raise CellsegError("scoring tracks needs py-ctcmetrics: pip install py-ctcmetrics") from None
    gt = check_ground_truth(gt)
    result = Path(result)
    n_res = len(list(result.glob("mask*.tif")))
    n_gt = len(list((gt / "TRA").glob("man_track*.tif")))
    if n_res != n_gt:
        raise CellsegError(f"{result}: {n_res} mask frames but {gt / 'TRA'} has {n_gt}; score the whole movie")
    import warnings

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comp, ref, traj, segm, _, valid = load_data(str(result), str(gt), True, False, threads)
        values = calculate_metrics(comp, ref, traj, segm, list(TRACK_METRICS), valid)
    return {k: (float(v) if v is not None else None) for k, v in values.items()}
