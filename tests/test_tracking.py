"""Tracking: detections, linking on small synthetic movies with known tracks, the CTC format (checked by
py-ctcmetrics), motility tables, and `cellseg track` / `export` / `evaluate --tracks` / `segment --track`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from cellsegcli.cli import app
from cellsegcli.tracking import Detections, LinkOptions, detect, link
from cellsegcli.tracking.ctc import ctc_segments, read_track_file, score, write_ctc
from cellsegcli.tracking.motility import parse_interval, track_table

runner = CliRunner()
R = 6   # disk radius of the synthetic movies


def movie(cells: dict[int, dict[int, tuple[float, float]]], frames: int, shape=(80, 120), seed=0) -> np.ndarray:
    """(T, Y, X) labels: ``cells[identity][t] = (y, x)`` draws a disk; label ids are shuffled per frame so
    that nothing can be read from them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros((frames, *shape), np.uint16)
    for t in range(frames):
        present = [c for c in cells if t in cells[c]]
        ids = rng.permutation(len(present)) + 1 + rng.integers(0, 50)
        for c, i in zip(present, ids):
            y, x = cells[c][t]
            out[t][(yy - y) ** 2 + (xx - x) ** 2 <= R * R] = i
    return out


def tracks_of(labels: np.ndarray, **options):
    detections = [detect(f, t) for t, f in enumerate(labels)]
    return detections, link(detections, LinkOptions(**options))


def identity_at(labels, detections, tracks, t, y, x) -> int:
    """Track id of the object under pixel (y, x) of frame t."""
    return int(tracks.lookup(detections[t])[labels[t][int(y), int(x)]])


# --- detections ----------------------------------------------------------------------------------------


def test_detect_gives_exact_centroids_areas_and_boxes(disks):
    d = detect(disks, frame=4)
    assert d.frame == 4 and list(d.label) == [1, 2, 3]
    for i in range(3):
        mask = disks == d.label[i]
        ys, xs = np.nonzero(mask)
        assert d.area[i] == mask.sum()
        assert d.y[i] == pytest.approx(ys.mean()) and d.x[i] == pytest.approx(xs.mean())
        assert list(d.bbox[i]) == [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]
    assert len(detect(np.zeros((5, 5), np.uint8))) == 0


def test_detect_treats_huge_sparse_ids_and_pieces_as_one_object():
    labels = np.zeros((10, 10), np.uint32)
    labels[0, 0] = labels[9, 9] = 4_000_000_000
    labels[5, 5] = 7
    d = detect(labels)
    assert list(d.label) == [7, 4_000_000_000] and list(d.area) == [1, 2]
    assert d.y[1] == pytest.approx(4.5) and d.x[1] == pytest.approx(4.5)


# --- linking -------------------------------------------------------------------------------------------


def test_moving_disks_keep_one_id_each():
    cells = {c: {t: (20 + 30 * c, 15 + 4 * t) for t in range(12)} for c in range(2)}
    labels = movie(cells, 12)
    detections, tracks = tracks_of(labels)
    assert tracks.n_tracks == 2 and tracks.n_divisions == 0
    for c in cells:
        ids = {identity_at(labels, detections, tracks, t, *cells[c][t]) for t in range(12)}
        assert len(ids) == 1
    assert sorted(tracks.lineage[:, 1:].tolist()) == [[0, 11, 0], [0, 11, 0]]


@pytest.mark.parametrize("first", [False, True])
def test_a_division_ends_the_mother_and_starts_two_daughters(first):
    mother = {t: (40, 30 + 2 * t) for t in range(6)}
    a = {t: (40 - 8, 40 + 2 * (t - 6)) for t in range(6, 12) if t != 8}   # missed on frame 8
    b = {t: (40 + 8, 40 + 2 * (t - 6)) for t in range(6, 12)}
    labels = movie({0: mother, 1: a, 2: b}, 12)
    detections, tracks = tracks_of(labels, divisions_first=first)
    m = identity_at(labels, detections, tracks, 0, *mother[0])
    da, db = (identity_at(labels, detections, tracks, 6, *d[6]) for d in (a, b))
    rows = {int(r[0]): r[1:].tolist() for r in tracks.lineage}
    assert rows[m] == [0, 5, 0] and rows[da] == [6, 11, m] and rows[db] == [6, 11, m]
    assert tracks.n_divisions == 1 and len({m, da, db}) == 3
    detections, tracks = tracks_of(labels, divisions=False)
    assert tracks.n_divisions == 0 and (tracks.lineage[:, 3] == 0).all()


def test_a_cell_missed_for_two_frames_keeps_its_id_and_gap_closing_can_be_off():
    cell = {t: (40, 20 + 3 * t) for t in range(12) if t not in (5, 6)}
    labels = movie({0: cell}, 12)
    detections, tracks = tracks_of(labels)
    assert tracks.lineage.tolist() == [[1, 0, 11, 0]]
    detections, tracks = tracks_of(labels, gap_frames=0)
    assert tracks.lineage.tolist() == [[1, 0, 4, 0], [2, 7, 11, 0]]


def test_cells_leave_and_enter_the_field():
    leaving = {t: (40, 100 + 5 * t) for t in range(4)}   # cut by the edge at frame 3, gone from frame 4 on
    entering = {t: (20, 10 + 2 * t) for t in range(3, 10)}
    labels = movie({0: leaving, 1: entering}, 10)
    detections, tracks = tracks_of(labels)
    rows = sorted(tracks.lineage[:, 1:].tolist())
    assert rows == [[0, 3, 0], [3, 9, 0]]


def test_a_fragment_seen_for_one_frame_is_no_division():
    cell = {t: (40, 30 + 2 * t) for t in range(10)}
    piece = {5: (40 + 10, 30 + 10)}
    labels = movie({0: cell, 1: piece}, 10)
    detections, tracks = tracks_of(labels)
    assert tracks.n_divisions == 0
    ids = {identity_at(labels, detections, tracks, t, *cell[t]) for t in range(10)}
    assert len(ids) == 1
    detections, tracks = tracks_of(labels, min_daughter_frames=1)
    assert tracks.n_divisions == 1


def test_a_division_on_the_last_frame_is_kept_though_its_daughters_live_one_frame():
    mother = {t: (40, 30 + 2 * t) for t in range(9)}
    a, b = {9: (32, 48)}, {9: (48, 48)}
    labels = movie({0: mother, 1: a, 2: b}, 10)
    assert tracks_of(labels)[1].n_divisions == 1
    assert tracks_of(movie({0: mother, 1: a, 2: b}, 12))[1].n_divisions == 0   # they vanish: fragments


def test_distance_limits_scale_with_the_cell_size():
    """The same movie at twice the magnification links the same way with the default options."""
    cell = {t: (20, 10 + 9 * t) for t in range(6)}   # 9 px per frame: 0.75 diameters of a radius-6 disk
    small = movie({0: cell}, 6, shape=(40, 64))
    big = np.kron(small, np.ones((2, 2), small.dtype))
    for labels in (small, big):
        assert tracks_of(labels)[1].n_tracks == 1
    assert tracks_of(small, max_distance=5)[1].n_tracks == 6


def test_link_refuses_detections_out_of_order():
    with pytest.raises(ValueError, match="one Detections per frame"):
        link([Detections.empty(1)])
    with pytest.raises(ValueError):
        LinkOptions(distance=0)


# --- CTC format ------------------------------------------------------------------------------------------


def test_ctc_segments_split_tracks_at_gaps_and_reparent_daughters():
    presence = [np.array([1]), np.array([1]), np.array([]), np.array([1]), np.array([2, 3])]
    lineage = np.array([[1, 0, 3, 0], [2, 4, 4, 1], [3, 4, 4, 1]])
    ctc, remap = ctc_segments(presence, lineage)
    assert ctc.tolist() == [[1, 0, 1, 0], [2, 4, 4, 4], [3, 4, 4, 4], [4, 3, 3, 1]]
    assert remap[3] == {1: 4} and remap[0] == {} and remap[4] == {}


def _ctc_truth(folder: Path, labels: np.ndarray, lineage) -> Path:
    (folder / "TRA").mkdir(parents=True)
    for t, f in enumerate(labels):
        tifffile.imwrite(folder / "TRA" / f"man_track{t:03d}.tif", f.astype(np.uint16))
    np.savetxt(folder / "TRA" / "man_track.txt", np.array(lineage), fmt="%d")
    return folder


def _truth_movie():
    """A movie drawn with its CTC truth: a cell divides at frame 6, another is missed on frame 4."""
    mother = {t: (40, 30 + 2 * t) for t in range(6)}
    a = {t: (32, 40 + 2 * (t - 6)) for t in range(6, 12)}
    b = {t: (48, 40 + 2 * (t - 6)) for t in range(6, 12)}
    c1 = {t: (15, 100 - 2 * t) for t in range(4)}
    c2 = {t: (15, 100 - 2 * t) for t in range(5, 12)}
    yy, xx = np.mgrid[:80, :120]
    truth = np.zeros((12, 80, 120), np.uint16)
    for label, cell in enumerate([mother, a, b, c1, c2], start=1):
        for t, (y, x) in cell.items():
            truth[t][(yy - y) ** 2 + (xx - x) ** 2 <= R * R] = label
    lineage = [[1, 0, 5, 0], [2, 6, 11, 1], [3, 6, 11, 1], [4, 0, 3, 0], [5, 5, 11, 4]]
    return truth, lineage, movie({0: mother, 1: a, 2: b, 3: {**c1, **c2}}, 12)


def test_written_ctc_results_are_valid_and_score_tra_1_against_the_truth(tmp_path):
    truth, lineage, labels = _truth_movie()
    gt = _ctc_truth(tmp_path / "01_GT", truth, lineage)
    detections, tracks = tracks_of(labels)
    write_ctc(tmp_path / "RES", lambda t: tracks.lookup(detections[t])[labels[t]], len(labels), tracks.lineage)
    assert sorted(p.name for p in (tmp_path / "RES").iterdir())[:2] == ["mask000.tif", "mask001.tif"]
    assert tifffile.imread(tmp_path / "RES" / "mask000.tif").dtype == np.uint16
    assert len(read_track_file(tmp_path / "RES" / "res_track.txt")) == 5   # the gap splits one track in two
    s = score(tmp_path / "RES", gt)
    assert s["Valid"] == 1 and s["TRA"] == pytest.approx(1.0) and s["DET"] == pytest.approx(1.0)
    assert s["BC(0)"] == pytest.approx(1.0)
    with pytest.raises(Exception, match="exists"):
        write_ctc(tmp_path / "RES", lambda t: labels[t], len(labels), tracks.lineage)


def test_a_wrong_link_lowers_tra(tmp_path):
    truth, lineage, labels = _truth_movie()
    gt = _ctc_truth(tmp_path / "01_GT", truth, lineage)
    detections, tracks = tracks_of(labels, divisions=False, gap_frames=0)
    write_ctc(tmp_path / "RES", lambda t: tracks.lookup(detections[t])[labels[t]], len(labels), tracks.lineage)
    s = score(tmp_path / "RES", gt)
    assert s["Valid"] == 1 and s["DET"] == pytest.approx(1.0) and s["TRA"] < 1.0 and s["BC(0)"] == 0


def test_track_files_that_are_not_l_b_e_p_are_one_line(tmp_path):
    (tmp_path / "t.txt").write_text("1 0 5 0\n2 7 3 0\n")
    with pytest.raises(Exception, match="line 2"):
        read_track_file(tmp_path / "t.txt")


# --- motility ----------------------------------------------------------------------------------------------


def test_straight_motion_gives_exact_speed_displacement_and_straightness():
    n = 6
    dets = [Detections(t, np.array([1]), np.array([10.0 + 3 * t]), np.array([5.0 + 4 * t]), np.array([50]),
                       np.zeros((1, 4), np.int64)) for t in range(n)]
    tracks = link(dets)
    table = track_table(dets, tracks, pixel_size_um=0.5, frame_interval_min=2.0)
    assert table["displacement"][0] == pytest.approx(25.0) and table["path_length"][0] == pytest.approx(25.0)
    assert table["mean_speed"][0] == pytest.approx(5.0) and table["straightness"][0] == pytest.approx(1.0)
    assert table["mean_speed_um_per_min"][0] == pytest.approx(1.25) and table["duration_min"][0] == 10.0
    assert table["n_frames"][0] == 6 and table["n_missing"][0] == 0
    table = track_table(dets, tracks)
    assert np.isnan(table["mean_speed_um_per_min"][0]) and np.isnan(table["displacement_um"][0])


def test_a_gap_counts_as_elapsed_time_and_a_zigzag_is_not_straight():
    ys, keep = [0, 4, 0, 4, 0], [0, 1, 3, 4]   # frame 2 missed
    dets = [Detections(t, np.array([1]), np.array([float(ys[t])]), np.array([0.0]), np.array([50]),
                       np.zeros((1, 4), np.int64)) if t in keep else Detections.empty(t) for t in range(5)]
    table = track_table(dets, link(dets))
    assert table["n_frames"][0] == 4 and table["n_missing"][0] == 1
    assert table["path_length"][0] == pytest.approx(4 + 0 + 4) and table["displacement"][0] == 0
    assert table["mean_speed"][0] == pytest.approx(8 / 4) and table["straightness"][0] == 0


@pytest.mark.parametrize("text,minutes", [("5", 5.0), ("5min", 5.0), ("30s", 0.5), ("0.5h", 30.0), ("2 min", 2.0)])
def test_frame_intervals_parse_with_units(text, minutes):
    assert parse_interval(text) == pytest.approx(minutes)


@pytest.mark.parametrize("text", ["", "-3", "0", "5 parsecs", "nan"])
def test_bad_frame_intervals_are_one_line(text):
    with pytest.raises(Exception, match="frame-interval"):
        parse_interval(text)


def test_readers_find_the_frame_interval_in_imagej_and_ome_metadata(tmp_path):
    from cellsegcli.io.readers import open_stack

    data = np.zeros((3, 8, 8), np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, metadata={"axes": "TYX", "finterval": 90.0})
    tifffile.imwrite(tmp_path / "ome.ome.tif", data, photometric="minisblack",
                     metadata={"axes": "TYX", "TimeIncrement": 2.0, "TimeIncrementUnit": "min"})
    tifffile.imwrite(tmp_path / "none.tif", data, photometric="minisblack")
    seconds = {}
    for name in ("ij.tif", "ome.ome.tif", "none.tif"):
        with open_stack(tmp_path / name) as stack:
            seconds[name] = stack.info.frame_interval_s
    assert seconds == {"ij.tif": pytest.approx(90.0), "ome.ome.tif": pytest.approx(120.0), "none.tif": None}


# --- CLI -------------------------------------------------------------------------------------------------------


def test_track_cli_writes_a_tracked_zarr_tables_and_ctc(tmp_path):
    truth, lineage, labels = _truth_movie()
    tifffile.imwrite(tmp_path / "labels.tif", labels, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TYX", "unit": "um", "finterval": 300.0})
    result = runner.invoke(app, ["track", str(tmp_path / "labels.tif"), "--ctc", str(tmp_path / "RES"), "-o",
                                 str(tmp_path / "t.zarr"), "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["tracks"] == 4 and s["divisions"] == 1 and s["frames"] == 12
    assert s["pixel_size_um"] == 0.5 and s["frame_interval_min"] == 5.0
    root = zarr.open_group(tmp_path / "t.zarr", mode="r")
    assert root.attrs["cellseg"]["complete"] is True and root.attrs["cellseg"]["tracking"]["tracks"] == 4
    lab = root["labels/cells/0"][:]
    cells = pd.read_csv(tmp_path / "t.cells.csv")
    assert (cells["track_id"] == cells["label"]).all()
    for t in range(12):   # the table's ids are the label image's ids
        assert sorted(cells.loc[cells.frame == t, "label"]) == sorted(set(np.unique(lab[t])) - {0})
    tracks = pd.read_csv(tmp_path / "t.tracks.csv")
    assert len(tracks) == 4 and tracks["divides"].sum() == 1
    assert tracks["mean_speed_um_per_min"].notna().all()
    napari = pd.read_csv(tmp_path / "t.napari-tracks.csv")
    assert list(napari.columns) == ["track_id", "t", "y", "x"] and len(napari) == len(cells)
    graph = json.loads((tmp_path / "t.lineage.json").read_text())["graph"]
    assert len(graph) == 2 and all(len(v) == 1 for v in graph.values())
    gt = _ctc_truth(tmp_path / "01_GT", truth, lineage)
    for res in (tmp_path / "RES", tmp_path / "t.zarr"):
        result = runner.invoke(app, ["evaluate", "--tracks", str(res), str(gt), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["TRA"] == pytest.approx(1.0)
    result = runner.invoke(app, ["export", str(tmp_path / "t.zarr"), "--ctc", str(tmp_path / "RES2")])
    assert result.exit_code == 0, result.output
    for t in range(12):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "RES2" / f"mask{t:03d}.tif"),
                                      tifffile.imread(tmp_path / "RES" / f"mask{t:03d}.tif"))


def test_track_cli_on_a_folder_of_ctc_masks_writes_ctc_only(tmp_path):
    _, _, labels = _truth_movie()
    (tmp_path / "SEG").mkdir()
    for t, f in enumerate(labels):
        tifffile.imwrite(tmp_path / "SEG" / f"man_seg{t}.tif", f)   # natural order: 2 before 10
    result = runner.invoke(app, ["track", str(tmp_path / "SEG"), "--ctc", str(tmp_path / "RES")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RES", "SEG"]
    assert len(read_track_file(tmp_path / "RES" / "res_track.txt")) == 5


def _one_line_exit_1(result) -> str:
    """The error line of a run that failed with exit 1 (progress lines before it are allowed)."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_frames_of_different_sizes_are_one_line_and_leave_nothing(tmp_path):
    (tmp_path / "L").mkdir()
    tifffile.imwrite(tmp_path / "L" / "mask000.tif", np.ones((20, 20), np.uint16))
    tifffile.imwrite(tmp_path / "L" / "mask001.tif", np.ones((20, 24), np.uint16))
    line = _one_line_exit_1(runner.invoke(app, ["track", str(tmp_path / "L"), "-o", str(tmp_path / "o.zarr")]))
    assert "mask001" in line and "one size" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["L"]


def test_float_and_negative_labels_are_refused(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.full((2, 8, 8), 0.5, np.float32))
    assert "whole numbers" in _one_line_exit_1(runner.invoke(app, ["track", str(tmp_path / "f.tif")]))
    tifffile.imwrite(tmp_path / "n.tif", np.full((2, 8, 8), -1, np.int16))
    assert "negative" in _one_line_exit_1(runner.invoke(app, ["track", str(tmp_path / "n.tif")]))


def test_existing_outputs_and_bad_ground_truth_are_one_line(tmp_path):
    _, _, labels = _truth_movie()
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    (tmp_path / "RES").mkdir()
    line = _one_line_exit_1(runner.invoke(app, ["track", str(tmp_path / "labels.tif"), "--ctc", str(tmp_path / "RES")]))
    assert "exists" in line and "--overwrite" in line
    assert runner.invoke(app, ["track", str(tmp_path / "labels.tif"), "--ctc", str(tmp_path / "RES"),
                               "--overwrite"]).exit_code == 0
    (tmp_path / "01_GT" / "TRA").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "01_GT" / "TRA" / "man_track000.tif", labels[0])
    line = _one_line_exit_1(runner.invoke(app, ["evaluate", "--tracks", str(tmp_path / "RES"), str(tmp_path / "01_GT")]))
    assert "man_track.txt" in line
    line = _one_line_exit_1(runner.invoke(app, ["evaluate", "--tracks", str(tmp_path / "RES"), str(tmp_path)]))
    assert "TRA" in line
    assert "frame-interval" in _one_line_exit_1(runner.invoke(app, ["track", str(tmp_path / "labels.tif"),
                                                                    "--frame-interval", "soon"]))


def test_export_of_an_untracked_result_says_how_to_track_it(tmp_path):
    from cellsegcli.io.omezarr import OmeZarrWriter

    with OmeZarrWriter(tmp_path / "r.zarr", n_frames=2, shape=(8, 8), image_dtype=None) as w:
        for t in range(2):
            w.write_frame(t, np.ones((8, 8), np.uint32))
        w.commit()
    line = _one_line_exit_1(runner.invoke(app, ["export", str(tmp_path / "r.zarr"), "--ctc", str(tmp_path / "C")]))
    assert "cellseg track" in line
    assert not (tmp_path / "C").exists()


def test_segment_track_links_while_it_writes(tmp_path):
    """Textured disks moving over a flat background, found by the classical baseline (no network)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:140, :200]
    frames = []
    for t in range(6):
        image = rng.normal(1000, 5, (140, 200))
        for cy, cx in [(40, 40 + 6 * t), (100, 160 - 6 * t)]:
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 < 25**2
            image[disk] += rng.normal(0, 300, disk.sum())
        frames.append(image)
    tifffile.imwrite(tmp_path / "m.tif", np.array(frames).astype(np.uint16), metadata={"axes": "TYX"})
    result = runner.invoke(app, ["segment", str(tmp_path / "m.tif"), "--model", "phantast", "--min-size", "300",
                                 "--track", "--frame-interval", "10min", "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["tracks"]["tracks"] == 2 and s["cells_total"] == 12
    root = zarr.open_group(tmp_path / "m.zarr", mode="r")
    lab = root["labels/cells/0"][:]
    left = {int(lab[t][40, 40 + 6 * t]) for t in range(6)}
    right = {int(lab[t][100, 160 - 6 * t]) for t in range(6)}
    assert len(left) == len(right) == 1 and left != right and 0 not in left | right
    assert root["tracks/lineage"][:].tolist() == [[1, 0, 5, 0], [2, 0, 5, 0]]
    assert root.attrs["cellseg"]["frame_interval_min"] == 10.0
    cells = pd.read_csv(tmp_path / "m.cells.csv")
    assert sorted(set(cells["track_id"])) == [1, 2] and (cells["track_id"] == cells["label"]).all()
    assert len(pd.read_csv(tmp_path / "m.tracks.csv")) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no spool left behind


# --- real data -------------------------------------------------------------------------------------------------


@pytest.mark.data
@pytest.mark.slow
def test_linking_the_ctc_truth_masks_scores_tra_above_0_99(shared_data, tmp_path):
    gt = shared_data / "ctc-sim-nuclei" / "01_GT"
    result = runner.invoke(app, ["track", str(gt / "TRA"), "--ctc", str(tmp_path / "RES")])
    assert result.exit_code == 0, result.output
    s = score(tmp_path / "RES", gt)
    assert s["Valid"] == 1 and s["DET"] == pytest.approx(1.0) and s["TRA"] >= 0.99


def test_ctc_named_files_are_placed_by_their_frame_number(tmp_path):
    """A CTC truth annotated on some frames only: the number in the name is the frame, the rest are empty."""
    _, _, labels = _truth_movie()
    (tmp_path / "SEG").mkdir()
    for t in (0, 1, 3):
        tifffile.imwrite(tmp_path / "SEG" / f"man_seg{t:03d}.tif", labels[t])
    result = runner.invoke(app, ["track", str(tmp_path / "SEG"), "--ctc", str(tmp_path / "RES"), "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["frames"] == 4 and s["empty_frames_without_file"] == [2]
    assert not tifffile.imread(tmp_path / "RES" / "mask002.tif").any()
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "RES" / "mask003.tif") > 0, labels[3] > 0)
