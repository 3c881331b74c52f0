"""`cellseg export` to ImageJ/Fiji formats: label TIFFs, ROI sets and outline PNGs, read back with the readers
their users have (tifffile, roifile), on small synthetic results written by the project's own OME-Zarr writer
and on real instance labels."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from roifile import ROI_TYPE, roiread
from skimage.draw import polygon as fill_polygon
from skimage.segmentation import find_boundaries

from cellsegcli.errors import CellsegError, OutputExistsError
from cellsegcli.export import export_result
from cellsegcli.export.outlines import outline_frame
from cellsegcli.export.result import cell_ids
from cellsegcli.export.rois import cell_piece, frame_rois, outer_boundary
from cellsegcli.io.omezarr import OmeZarrWriter
from cellsegcli.overlay import OUTLINE, track_colour

SHAPE = (40, 50)
PX, INTERVAL = 0.65, 5.0
RECT = (7, slice(5, 15), slice(3, 13))       # id, rows 5..14, cols 3..12 (shifted right by t on frame t)


def movie(n_frames: int = 3) -> np.ndarray:
    """(T, 40, 50) uint32: a rectangle (7), a disk (3), a ring with a hole (12), a cell with a stray fragment
    (20), and on frame 1 a cell (9) of two pixels joined at a corner."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    frames = np.zeros((n_frames, *SHAPE), np.uint32)
    for t, frame in enumerate(frames):
        cell, rows, cols = RECT
        frame[rows, slice(cols.start + t, cols.stop + t)] = cell
        frame[(yy - 30) ** 2 + (xx - 12) ** 2 <= 49] = 3
        ring = (yy - 12) ** 2 + (xx - 36 + t) ** 2
        frame[(ring <= 64) & (ring > 9)] = 12
        frame[24:34, 30:38] = 20
        frame[36, 45] = 20                      # a stray pixel of cell 20
        if t == 1:
            frame[2, 45] = frame[3, 46] = 9
    return frames


def write_result(path: Path, labels: np.ndarray, *, image: np.ndarray | None = None, pixel_size_um: float | None = PX,
                 frame_interval_min: float | None = INTERVAL, lineage: np.ndarray | None = None) -> Path:
    with OmeZarrWriter(path, n_frames=len(labels), shape=labels.shape[1:],
                       image_dtype=None if image is None else image.dtype, pixel_size_um=pixel_size_um,
                       attributes={"pixel_size_um": pixel_size_um, "frame_interval_min": frame_interval_min}) as out:
        for t, frame in enumerate(labels):
            out.write_frame(t, frame, image=None if image is None else image[t])
        if lineage is not None:
            out.write_tracks(lineage)
        out.commit()
    return path


def lineage_of(labels: np.ndarray) -> np.ndarray:
    rows = []
    for i in np.unique(labels[labels > 0]):
        frames = np.flatnonzero((labels == i).any(axis=(1, 2)))
        rows.append([i, frames[0], frames[-1], 0])
    return np.array(rows, np.int64)


def filled(roi, shape) -> np.ndarray:
    """The pixels ImageJ counts inside a polygon ROI: those whose centre (x + 0.5, y + 0.5) is inside."""
    xy = roi.coordinates()
    rr, cc = fill_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
    mask = np.zeros(shape, bool)
    mask[rr, cc] = True
    return mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def nothing_written(folder: Path) -> bool:
    """Neither ``folder`` nor a hidden partial of it exists."""
    return not folder.exists() and not list(folder.parent.glob(f".{folder.name}.partial-*"))


@pytest.fixture
def result(tmp_path) -> Path:
    labels = movie()
    image = (np.random.default_rng(0).random(labels.shape) * 4000).astype(np.uint16)
    return write_result(tmp_path / "movie.zarr", labels, image=image)


@pytest.fixture
def tracked(tmp_path) -> Path:
    labels = movie()
    return write_result(tmp_path / "movie.tracked.zarr", labels, lineage=lineage_of(labels))


# --- boundaries on pixel corners ----------------------------------------------------------------------


def test_a_rectangle_is_traced_through_its_four_outer_corners():
    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:7] = True     # rows 1..3, cols 2..6: corners (1, 2) and (4, 7)
    assert outer_boundary(mask).tolist() == [[1, 2], [1, 7], [4, 7], [4, 2]]
    one = np.zeros((3, 3), bool)
    one[0, 0] = True          # a pixel on the border: its own square
    assert outer_boundary(one).tolist() == [[0, 0], [0, 1], [1, 1], [1, 0]]
    assert outer_boundary(np.zeros((3, 3), bool)).shape == (0, 2)


def test_traced_polygons_fill_back_to_exactly_their_pixels():
    rng = np.random.default_rng(2)
    for _ in range(300):
        piece = cell_piece(rng.random((8, 9)) < 0.55)
        if not piece.any():
            continue
        corners = outer_boundary(piece)
        rr, cc = fill_polygon(corners[:, 0] - 0.5, corners[:, 1] - 0.5, piece.shape)
        back = np.zeros_like(piece)
        back[rr, cc] = True
        assert np.array_equal(back, piece)
        y, x = corners[:, 0], corners[:, 1]   # shoelace area = pixel count
        assert abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2 == piece.sum()


def test_a_cell_piece_is_its_largest_8_connected_piece_with_holes_filled():
    mask = np.zeros((7, 9), bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False        # a hole
    mask[6, 8] = True         # a stray pixel
    mask[0, 6] = True         # touches the square at a corner only: part of it
    expected = np.zeros_like(mask)
    expected[1:6, 1:6] = True
    expected[0, 6] = True
    assert np.array_equal(cell_piece(mask), expected)


# --- TIFF --------------------------------------------------------------------------------------------


def test_tiff_is_an_imagej_hyperstack_with_the_zarr_ids_and_calibration(result, tmp_path):
    out = tmp_path / "fiji"
    summary = export_result(result, tiff=out)
    path = out / "movie_labels.tif"
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        meta = tif.imagej_metadata
        assert meta["frames"] == 3 and meta.get("slices", 1) == 1 and meta.get("channels", 1) == 1
        assert meta["hyperstack"] is True and meta["unit"] == "micron"
        assert meta["finterval"] == pytest.approx(INTERVAL * 60)
        series = tif.series[0]
        assert series.axes == "TYX" and series.shape == (3, *SHAPE) and series.dtype == np.uint16
        num, den = tif.pages[0].tags["XResolution"].value
        assert num / den == pytest.approx(1 / PX, rel=1e-6)
        data = tif.asarray()
    assert np.array_equal(data, zarr.open_group(result, mode="r")["labels/cells/0"][:])
    assert summary["outputs"]["tiff"] == {"folder": str(out), "files": 1, "mode": "hyperstack", "file": str(path)}
    assert summary["frames"] == 3 and summary["cells"] == 4 + 5 + 4 and summary["tracks"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fiji", "movie.zarr"]   # no partial left behind


def test_the_hyperstack_is_written_one_frame_at_a_time(tmp_path):
    import tracemalloc

    from cellsegcli.export.tiff import write_hyperstack

    n, shape = 40, (512, 512)          # 40 MB of uint32 frames in all

    def frames():
        for t in range(n):
            frame = np.zeros(shape, np.uint32)
            frame[t : t + 100, 50:300] = t + 1
            yield frame

    tracemalloc.start()
    try:
        write_hyperstack(tmp_path / "big.tif", frames(), n_frames=n, shape=shape)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * 512 * 512 * 4    # a few frames' worth, not the movie
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.series[0].shape == (n, *shape) and tif.pages[-1].asarray()[n - 1, 60] == n


def test_tiff_without_calibration_has_none(tmp_path):
    src = write_result(tmp_path / "bare.zarr", movie(2), pixel_size_um=None, frame_interval_min=None)
    export_result(src, tiff=tmp_path / "out")
    with tifffile.TiffFile(tmp_path / "out" / "bare_labels.tif") as tif:
        assert "unit" not in tif.imagej_metadata and "finterval" not in tif.imagej_metadata
        assert tif.series[0].shape == (2, *SHAPE)


def test_ids_beyond_uint16_are_refused_in_one_line_and_nothing_is_written(tmp_path):
    labels = movie(2)
    labels[1][labels[1] == 3] = 70_000
    src = write_result(tmp_path / "big.zarr", labels)
    out = tmp_path / "fiji"
    with pytest.raises(CellsegError) as caught:
        export_result(src, tiff=out, rois=tmp_path / "rois")
    message = str(caught.value)
    assert "\n" not in message and "70000" in message and "65535" in message and "--tiff-per-frame" in message
    assert nothing_written(out) and nothing_written(tmp_path / "rois")


def test_track_ids_beyond_uint16_are_refused_before_any_frame_is_read(tmp_path, monkeypatch):
    labels = movie(2)
    labels[labels == 3] = 70_000
    src = write_result(tmp_path / "big.zarr", labels, lineage=lineage_of(labels))
    from cellsegcli.export.result import Result

    monkeypatch.setattr(Result, "frame_labels", lambda *a: pytest.fail("read a frame before refusing"))
    with pytest.raises(CellsegError, match="65535"):
        export_result(src, tiff=tmp_path / "fiji")
    assert nothing_written(tmp_path / "fiji")


def test_tiff_per_frame_renumbers_each_frame_in_order(tmp_path):
    labels = movie(2)
    labels[labels == 3] = 70_000
    labels[labels == 20] = 100_000
    src = write_result(tmp_path / "big.zarr", labels)
    summary = export_result(src, tiff=tmp_path / "fiji", tiff_per_frame=True)
    assert summary["outputs"]["tiff"]["mode"] == "per-frame"
    for t in range(2):
        with tifffile.TiffFile(tmp_path / "fiji" / f"big_t{t:04d}.tif") as tif:
            assert tif.is_imagej and tif.series[0].dtype == np.uint16
            num, den = tif.pages[0].tags["XResolution"].value
            assert num / den == pytest.approx(1 / PX, rel=1e-6)
            data = tif.asarray()
        ids = cell_ids(labels[t])
        assert np.array_equal(np.unique(data[data > 0]), np.arange(1, len(ids) + 1))
        for new, old in enumerate(ids, start=1):    # the same pixels, order of ids kept
            assert np.array_equal(data == new, labels[t] == old)


# --- ROIs --------------------------------------------------------------------------------------------


def test_rois_are_one_polygon_per_cell_named_by_id_on_their_frame(result, tmp_path):
    labels = movie()
    summary = export_result(result, rois=tmp_path / "rois")
    assert summary["outputs"]["rois"] == {"folder": str(tmp_path / "rois"), "files": 3, "rois": 13}
    for t in range(3):
        rois = roiread(tmp_path / "rois" / f"movie_t{t:04d}.zip")
        ids = cell_ids(labels[t])
        assert [r.name for r in rois] == [f"cell-{i:04d}" for i in ids]
        for roi, cell in zip(rois, ids, strict=True):
            assert roi.roitype == ROI_TYPE.POLYGON and roi.t_position == t + 1 and not roi.subpixelresolution
            pixels = labels[t] == cell
            mask = filled(roi, SHAPE)
            assert np.array_equal(mask, cell_piece(pixels))       # exactly the cell's piece, holes filled
            if pixels.sum() >= 30 and cell != 12:                 # the ring's hole is filled by design
                assert iou(mask, pixels) > 0.9


def test_a_rectangle_cell_is_a_roi_through_its_pixel_corners(result, tmp_path):
    export_result(result, rois=tmp_path / "rois")
    cell, rows, cols = RECT
    for t in range(3):
        roi = next(r for r in roiread(tmp_path / "rois" / f"movie_t{t:04d}.zip") if r.name == f"cell-{cell:04d}")
        x0, x1 = cols.start + t, cols.stop + t      # pixels x0..x1-1: corners x0 and x1
        assert roi.coordinates().tolist() == [[x0, rows.start], [x1, rows.start], [x1, rows.stop], [x0, rows.stop]]
        assert (roi.left, roi.top) == (x0, rows.start)


def test_rois_of_a_tracked_result_are_named_by_track(tracked, tmp_path):
    export_result(tracked, rois=tmp_path / "rois")
    names = [r.name for r in roiread(tmp_path / "rois" / "movie.tracked_t0001.zip")]
    assert names == ["track-0003", "track-0007", "track-0009", "track-0012", "track-0020"]


def test_a_frame_without_cells_gets_an_empty_roi_set(tmp_path):
    labels = movie(2)
    labels[1] = 0
    export_result(write_result(tmp_path / "r.zarr", labels), rois=tmp_path / "rois")
    import zipfile

    assert zipfile.ZipFile(tmp_path / "rois" / "r_t0001.zip").namelist() == []
    assert len(frame_rois(labels[1], cell_ids(labels[1]), 1)) == 0


# --- outlines ----------------------------------------------------------------------------------------


def test_outlines_colour_exactly_the_cell_boundaries_over_the_image(result, tmp_path):
    from PIL import Image

    labels = movie()
    export_result(result, outlines=tmp_path / "png")
    for t in range(3):
        rgb = np.asarray(Image.open(tmp_path / "png" / f"movie_t{t:04d}.png"))
        assert rgb.shape == (*SHAPE, 3) and rgb.dtype == np.uint8
        edges = find_boundaries(labels[t], mode="inner")
        assert (rgb[edges] == OUTLINE).all()
        rest = rgb[~edges]
        assert (rest[:, 0] == rest[:, 1]).all() and (rest[:, 1] == rest[:, 2]).all()   # the image in grey
        assert rest.std() > 10                                                         # ... not black


def test_outlines_without_an_image_are_on_black_and_tracks_keep_their_colour(tracked, tmp_path):
    labels = movie()
    rgb = [outline_frame(labels[t], None, by_id=True) for t in range(2)]
    export_result(tracked, outlines=tmp_path / "png")
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "png" / "movie.tracked_t0000.png")), rgb[0])
    for t in range(2):
        edges = find_boundaries(labels[t], mode="inner")
        assert (rgb[t][~edges] == 0).all()
        for cell in (3, 7, 12):
            assert (rgb[t][edges & (labels[t] == cell)] == track_colour(cell)).all()


# --- one entry, several outputs ----------------------------------------------------------------------


def test_tiff_rois_and_outlines_can_share_a_folder_and_progress_counts_frames(result, tmp_path):
    calls = []
    out = tmp_path / "fiji"
    summary = export_result(result, tiff=out, rois=out, outlines=out, progress=lambda d, n: calls.append((d, n)))
    assert sorted(p.name for p in out.iterdir()) == ["movie_labels.tif"] + [
        f"movie_t{t:04d}{ext}" for t in range(3) for ext in (".png", ".zip")]
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert set(summary["outputs"]) == {"tiff", "rois", "outlines"}
    json.dumps(summary)   # plain JSON for --json


def test_ctc_is_written_with_the_others(tracked, tmp_path):
    calls = []
    summary = export_result(tracked, tiff=tmp_path / "fiji", ctc=tmp_path / "RES",
                            progress=lambda d, n: calls.append((d, n)))
    assert (tmp_path / "RES" / "res_track.txt").is_file()
    assert sorted(p.name for p in (tmp_path / "RES").glob("mask*.tif")) == ["mask000.tif", "mask001.tif",
                                                                             "mask002.tif"]
    assert summary["outputs"]["ctc"] == {"folder": str(tmp_path / "RES"), "files": 4, "tracks": 5}
    assert summary["tracks"] == 5
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1] == (6, 6)


def test_a_failure_half_way_leaves_no_folder(result, tmp_path, monkeypatch):
    from cellsegcli.export import outlines

    real = outlines.write_outline_png

    def fail_on_frame_2(path, *args, **kwargs):
        if path.name.endswith("_t0002.png"):
            raise OSError(28, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(outlines, "write_outline_png", fail_on_frame_2)
    with pytest.raises(CellsegError, match="no space left") as caught:
        export_result(result, tiff=tmp_path / "fiji", outlines=tmp_path / "png")
    assert ".partial" not in str(caught.value) and str(tmp_path / "png" / "movie_t0002.png") in str(caught.value)
    assert nothing_written(tmp_path / "fiji") and nothing_written(tmp_path / "png")


# --- refusals ----------------------------------------------------------------------------------------


def test_an_existing_destination_is_refused_without_overwrite_and_replaced_with_it(result, tmp_path):
    out = tmp_path / "fiji"
    export_result(result, tiff=out)
    before = (out / "movie_labels.tif").read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_result(result, tiff=out, rois=tmp_path / "rois")
    assert nothing_written(tmp_path / "rois") and (out / "movie_labels.tif").read_bytes() == before
    export_result(result, rois=out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [f"movie_t{t:04d}.zip" for t in range(3)]


def test_overwrite_never_replaces_a_folder_holding_other_files(result, tmp_path):
    out = tmp_path / "desktop"
    out.mkdir()
    (out / "thesis.docx").write_text("years of work")
    with pytest.raises(CellsegError, match="thesis.docx"):
        export_result(result, tiff=out, overwrite=True)
    assert (out / "thesis.docx").read_text() == "years of work"
    with pytest.raises(CellsegError, match="outside"):
        export_result(result, tiff=result / "fiji")


def test_an_incomplete_result_is_refused(result, tmp_path):
    root = zarr.open_group(result, mode="r+")
    root.attrs["cellseg"] = {**root.attrs["cellseg"], "complete": False}
    with pytest.raises(CellsegError, match="incomplete"):
        export_result(result, tiff=tmp_path / "fiji")
    assert nothing_written(tmp_path / "fiji")


@pytest.mark.parametrize("make", ["missing", "plain folder", "tiff file", "zarr of labels"])
def test_a_missing_or_foreign_result_is_refused_in_one_line(tmp_path, make):
    path = tmp_path / "r.zarr"
    if make == "plain folder":
        path.mkdir()
    elif make == "zarr of labels":     # the right array, but not written by cellseg
        zarr.open_group(path, mode="w").create_array("labels/cells/0", shape=(1, *SHAPE), dtype=np.uint32)
    elif make == "tiff file":
        path = tmp_path / "r.tif"
        tifffile.imwrite(path, movie(1))
    with pytest.raises(CellsegError) as caught:
        export_result(path, tiff=tmp_path / "fiji")
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert ("no such result" in str(caught.value)) == (make == "missing")
    assert nothing_written(tmp_path / "fiji")


def test_ctc_needs_tracks_and_a_folder_of_its_own(result, tracked, tmp_path):
    with pytest.raises(CellsegError, match="holds no tracks"):
        export_result(result, tiff=tmp_path / "fiji", ctc=tmp_path / "RES")
    with pytest.raises(CellsegError, match="folder of its own"):
        export_result(tracked, tiff=tmp_path / "out", ctc=tmp_path / "out")
    with pytest.raises(CellsegError, match="inside"):
        export_result(tracked, tiff=tmp_path / "out", rois=tmp_path / "out" / "rois")
    assert all(nothing_written(tmp_path / name) for name in ("fiji", "RES", "out"))


def test_nothing_to_export_is_refused(result):
    with pytest.raises(CellsegError, match="at least one"):
        export_result(result)
    with pytest.raises(CellsegError, match="--tiff DIR"):
        export_result(result, rois=Path("rois"), tiff_per_frame=True)


# --- real data ---------------------------------------------------------------------------------------


@pytest.mark.data
def test_real_instance_labels_round_trip_through_tiff_and_rois(shared_data, tmp_path):
    from PIL import Image

    folder = shared_data / "usiigaci-phase"
    names = ["set01", "set02", "set03"]
    labels = np.stack([np.asarray(Image.open(folder / "masks" / f"{n}.png")) for n in names]).astype(np.uint32)
    image = np.stack([tifffile.imread(folder / "images" / f"{n}.tif") for n in names])
    src = write_result(tmp_path / "phase.zarr", labels, image=image, pixel_size_um=0.87, frame_interval_min=10.0)
    from typer.testing import CliRunner

    from cellsegcli.cli import app

    run = CliRunner().invoke(app, ["export", str(src), "--tiff", str(tmp_path / "fiji"), "--rois",
                                   str(tmp_path / "fiji"), "--json"])
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout)
    assert summary["cells"] == sum(len(cell_ids(f)) for f in labels)
    with tifffile.TiffFile(tmp_path / "fiji" / "phase_labels.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata["frames"] == 3
        assert np.array_equal(tif.asarray(), labels)
    checked = 0
    for t in range(3):
        rois = roiread(tmp_path / "fiji" / f"phase_t{t:04d}.zip")
        ids = cell_ids(labels[t])
        assert [r.name for r in rois] == [f"cell-{i:04d}" for i in ids]
        for roi, cell in zip(rois, ids, strict=True):
            pixels = labels[t] == cell
            mask = filled(roi, pixels.shape)
            assert roi.t_position == t + 1
            if pixels.sum() >= 30:
                assert iou(mask, pixels) > 0.9, (t, cell)
                checked += 1
    assert checked > 100


# --- the command line (needs cellseg export wired to export_result) ----------------------------------


@pytest.fixture
def export_cli_wired():
    from typer.testing import CliRunner

    from cellsegcli.cli import app

    runner = CliRunner()
    if "--tiff" not in runner.invoke(app, ["export", "--help"], env={"COLUMNS": "200"}).output:
        pytest.skip("cellseg export has no --tiff yet: the CLI is not wired to cellsegcli.export.export_result")
    return lambda *args: runner.invoke(app, ["export", *map(str, args)])


def test_cli_export_writes_and_reports_json(export_cli_wired, result, tmp_path):
    run = export_cli_wired(result, "--tiff", tmp_path / "fiji", "--rois", tmp_path / "fiji", "--json")
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout)
    assert summary["frames"] == 3 and set(summary["outputs"]) == {"tiff", "rois"}
    assert (tmp_path / "fiji" / "movie_labels.tif").is_file()


def test_cli_export_refusals_exit_1_with_one_line(export_cli_wired, result, tmp_path):
    assert export_cli_wired(result).exit_code == 1                                    # nothing asked for
    assert export_cli_wired(tmp_path / "none.zarr", "--tiff", tmp_path / "x").exit_code == 1
    assert export_cli_wired(result, "--ctc", tmp_path / "RES").exit_code == 1         # untracked
    (tmp_path / "fiji").mkdir()
    run = export_cli_wired(result, "--tiff", tmp_path / "fiji")
    assert run.exit_code == 1 and "--overwrite" in run.output
    assert os.listdir(tmp_path / "fiji") == []


def test_export_of_a_frame_range_names_files_by_the_movies_frames(env, tmp_path):
    """`segment --frames 2:6:2` then `export`: files named by the movie's frame numbers (as the tables),
    the hyperstack's frame interval that between the result's frames."""
    from typer.testing import CliRunner

    from cellsegcli.cli import app

    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "m.tif", (rng.random((6, 64, 64)) * 1000).astype(np.uint16), imagej=True,
                     metadata={"axes": "TYX", "finterval": 30.0})
    runner = CliRunner()
    seg = runner.invoke(app, ["segment", str(tmp_path / "m.tif"), "--model", "tiny", "--device", "cpu", "--tile",
                              "64", "--frames", "2:6:2", "-o", str(tmp_path / "r.zarr")])
    assert seg.exit_code == 0, seg.output
    out = runner.invoke(app, ["export", str(tmp_path / "r.zarr"), "--tiff", str(tmp_path / "x"), "--rois",
                              str(tmp_path / "x"), "--outlines", str(tmp_path / "x")])
    assert out.exit_code == 0, out.output
    names = sorted(p.name for p in (tmp_path / "x").iterdir())
    assert names == ["r_labels.tif", "r_t0002.png", "r_t0002.zip", "r_t0004.png", "r_t0004.zip"]
    with tifffile.TiffFile(tmp_path / "x" / "r_labels.tif") as tif:
        assert tif.imagej_metadata["frames"] == 2 and tif.imagej_metadata["finterval"] == 60.0
