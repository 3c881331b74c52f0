"""Overlays: size, colours where the false positives / negatives are, outlines; the CLI writes PNG/GIF/plot."""

import numpy as np
import tifffile
import zarr
from PIL import Image
from typer.testing import CliRunner

from cellsegcli.cli import app
from cellsegcli.overlay import FALSE_NEGATIVE, FALSE_POSITIVE, OUTLINE, overlay_frame


def _case():
    image = np.tile(np.linspace(0, 1000, 60, dtype=np.float32), (40, 1))
    pred = np.zeros((40, 60), np.uint32)
    gt = np.zeros((40, 60), np.uint32)
    pred[5:20, 5:20] = 1     # true positive square, with a false-positive strip on its right
    gt[5:20, 5:17] = 1
    gt[25:35, 40:50] = 2     # a missed cell: false negative
    return image, pred, gt


def test_overlay_has_the_image_size_and_the_papers_colours():
    image, pred, gt = _case()
    rgb = overlay_frame(image, pred, gt)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    fn, fp = rgb[30, 45].astype(int), rgb[12, 18].astype(int)
    assert fn[1] < fn[0] and fn[1] < fn[2]            # magenta: green channel lowest
    assert fp[1] > fp[0] and fp[1] > fp[2]            # green
    assert tuple(rgb[5, 10]) == OUTLINE               # predicted outline on the square's edge
    inside = rgb[12, 10]
    assert inside[0] == inside[1] == inside[2]         # true positives stay grey
    assert FALSE_NEGATIVE != FALSE_POSITIVE


def test_overlay_cli_writes_pngs_gif_and_plot(tmp_path):
    image, pred, gt = _case()
    root = zarr.open_group(tmp_path / "r.zarr", mode="w")
    root.create_array("0", data=np.stack([image, image]).astype(np.uint16))
    root.create_array("labels/cells/0", data=np.stack([pred, np.roll(pred, 5, axis=1)]))
    tifffile.imwrite(tmp_path / "gt.tif", np.stack([gt, gt]).astype(np.uint16), photometric="minisblack",
                     metadata={"axes": "TYX"})
    result = CliRunner().invoke(app, ["overlay", str(tmp_path / "r.zarr"), "--gt", str(tmp_path / "gt.tif"), "-o",
                                      str(tmp_path / "ov")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "ov" / "r_t0001.png") as png:
        assert png.size == (60, 40) and png.mode == "RGB"
    with Image.open(tmp_path / "ov" / "r.gif") as gif:
        assert gif.n_frames == 2
    with Image.open(tmp_path / "ov" / "r_timecourse.png") as plot:
        assert plot.size[0] > 600


def test_frames_left_empty_in_a_ground_truth_stack_are_drawn_without_it(tmp_path):
    image, pred, gt = _case()
    root = zarr.open_group(tmp_path / "r.zarr", mode="w")
    root.create_array("0", data=np.stack([image, image]).astype(np.uint16))
    root.create_array("labels/cells/0", data=np.stack([pred, pred]))
    tifffile.imwrite(tmp_path / "gt.tif", np.stack([gt, np.zeros_like(gt)]).astype(np.uint16),
                     photometric="minisblack", metadata={"axes": "TYX"})
    result = CliRunner().invoke(app, ["overlay", str(tmp_path / "r.zarr"), "--gt", str(tmp_path / "gt.tif"), "-o",
                                      str(tmp_path / "ov")])
    assert result.exit_code == 0, result.output
    annotated, empty = (np.asarray(Image.open(tmp_path / "ov" / f"r_t000{t}.png")) for t in (0, 1))
    stored = image.astype(np.uint16)
    assert np.array_equal(annotated, overlay_frame(stored, pred, gt))
    assert np.array_equal(empty, overlay_frame(stored, pred, None))   # not all false positives


def test_overlay_without_image_asks_for_one(tmp_path):
    root = zarr.open_group(tmp_path / "r.zarr", mode="w")
    root.create_array("labels/cells/0", data=np.zeros((1, 8, 8), np.uint32))
    result = CliRunner().invoke(app, ["overlay", str(tmp_path / "r.zarr")])
    assert result.exit_code == 1 and "--image" in result.stderr


def test_tracks_are_drawn_in_one_colour_per_track_with_their_path_and_a_lineage_plot(tmp_path):
    from cellsegcli.overlay import overlay_tracks_frame, track_colour

    image = np.full((40, 60), 100, np.uint16)
    frames = np.zeros((4, 40, 60), np.uint32)
    for t in range(4):
        frames[t, 10:18, 5 + 8 * t:13 + 8 * t] = 1      # track 1 moves right
        frames[t, 25:33, 40:48] = 2                     # track 2 stays
    rgb = overlay_tracks_frame(image, frames[3], {1: [(14.0, 8.5 + 8 * s) for s in range(4)], 2: [(28.5, 43.5)]})
    assert tuple(rgb[10, 31]) == track_colour(1) and tuple(rgb[25, 44]) == track_colour(2)
    assert tuple(rgb[14, 12]) == track_colour(1)          # the path, left behind the cell
    assert track_colour(1) != track_colour(2)
    root = zarr.open_group(tmp_path / "r.zarr", mode="w")
    root.create_array("0", data=np.stack([image] * 4))
    root.create_array("labels/cells/0", data=frames)
    runner = CliRunner()
    result = runner.invoke(app, ["overlay", str(tmp_path / "r.zarr"), "--tracks", "-o", str(tmp_path / "ov")])
    assert result.exit_code == 1 and "cellseg track" in result.output    # not tracked yet
    assert runner.invoke(app, ["track", str(tmp_path / "r.zarr"), "-o", str(tmp_path / "t.zarr")]).exit_code == 0
    result = runner.invoke(app, ["overlay", str(tmp_path / "t.zarr"), "--tracks", "-o", str(tmp_path / "ov"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "ov" / "t_lineage.png") as plot:
        assert plot.size[0] > 600
    with Image.open(tmp_path / "ov" / "t_t0003.png") as png:
        assert tuple(np.array(png)[14, 12]) == track_colour(1)   # centroid row 13.5 rounds to 14
