"""Tests for cellsegcli.io.readers: lazy stack reading, axes, channels, pixel size, bad input."""

from __future__ import annotations

import sys
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellsegcli.errors import CellsegError
from cellsegcli.io import readers
from cellsegcli.io.readers import Stack, StackInfo, list_images, open_stack


def _stack(shape: tuple[int, ...], dtype: str = "uint16", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _frames(stack: Stack) -> np.ndarray:
    return np.stack(list(stack))


def _write(path: Path, data: np.ndarray, axes: str, **kwargs) -> Path:
    tifffile.imwrite(path, data, photometric="minisblack", metadata={"axes": axes}, **kwargs)
    return path


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "int16", "uint32", "float64"])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tyx_round_trip(tmp_path, dtype, compression):
    data = _stack((40, 24, 20), dtype)
    path = _write(tmp_path / "s.tif", data, "TYX", compression=compression)
    with open_stack(path) as stack:
        assert stack.info == StackInfo(path, "TYX", 40, (24, 20), np.dtype(dtype), None, None)
        assert len(stack) == 40
        frames = _frames(stack)
    assert frames.dtype == dtype
    np.testing.assert_array_equal(frames, tifffile.imread(path))


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("imagej", [False, True])
def test_tcyx_round_trip_picks_channel(tmp_path, compression, imagej):
    data = _stack((30, 3, 16, 12))
    path = tmp_path / "s.tif"
    if imagej:
        tifffile.imwrite(path, data, imagej=True, compression=compression, metadata={"axes": "TCYX"})
    else:
        _write(path, data, "TCYX", compression=compression)
    with open_stack(path, channel=2) as stack:
        assert (stack.info.axes, stack.info.n_frames, stack.info.channel) == ("TCYX", 30, 2)
        frames = _frames(stack)
    np.testing.assert_array_equal(frames, tifffile.imread(path)[:, 2])


def test_frames_in_any_order_are_fresh_arrays(tmp_path):
    data = _stack((5, 8, 6))
    path = _write(tmp_path / "s.tif", data, "TYX", compression="zlib")
    with open_stack(path) as stack:
        for t in (4, 0, 2, 4):
            np.testing.assert_array_equal(stack.frame(t), data[t])
        first = stack.frame(1)
        first[:] = 0
        np.testing.assert_array_equal(stack.frame(1), data[1])
        assert stack.frame(np.int64(3)).shape == (8, 6)
        with pytest.raises(IndexError):
            stack.frame(5)
        with pytest.raises(IndexError):
            stack.frame(-1)
    with pytest.raises(ValueError, match="closed"):
        stack.frame(0)
    stack.close()  # closing twice is harmless


def test_single_frame_and_big_endian(tmp_path):
    data = _stack((9, 7), "uint16")
    path = tmp_path / "be.tif"
    tifffile.imwrite(path, data, byteorder=">")
    with open_stack(path) as stack:
        assert (stack.info.axes, stack.info.n_frames, stack.info.dtype) == ("YX", 1, np.dtype("uint16"))
        frame = stack.frame(0)
    assert frame.dtype.isnative
    np.testing.assert_array_equal(frame, data)


@pytest.mark.parametrize("axes", ["IYX", "QYX"])
def test_i_q_axes_are_the_frame_axis(tmp_path, axes):
    data = _stack((4, 8, 6))
    path = _write(tmp_path / "s.tif", data, axes)
    with open_stack(path, axes=axes) as stack:
        assert (stack.info.axes, stack.info.n_frames) == (axes, 4)
        np.testing.assert_array_equal(_frames(stack), data)


def test_a_z_stack_is_never_read_as_time_without_being_told(tmp_path):
    data = _stack((4, 8, 6))
    path = _write(tmp_path / "s.tif", data, "ZYX")
    with pytest.raises(CellsegError, match=r"holds a Z stack \(Z=4.*--z slices.*--z max"):
        open_stack(path, axes="ZYX")
    with open_stack(path, axes="ZYX", z="slices") as stack:   # each slice its own image
        assert stack.info.n_frames == 4
        np.testing.assert_array_equal(_frames(stack), data)
    with open_stack(path, axes="ZYX", z="max") as stack:      # one maximum projection
        assert stack.info.n_frames == 1
        np.testing.assert_array_equal(_frames(stack)[0], data.max(axis=0))


def test_max_projection_of_each_time_point(tmp_path):
    data = _stack((3, 4, 8, 6))
    path = _write(tmp_path / "s.tif", data, "TZYX")
    with open_stack(path, axes="TZYX", z="max") as stack:
        assert (stack.info.n_frames, stack.info.shape) == (3, (8, 6))
        np.testing.assert_array_equal(_frames(stack), data.max(axis=1))
    with pytest.raises(CellsegError, match="--z slices makes the slices the frames, but the file also has T=3"):
        open_stack(path, axes="TZYX", z="slices")
    with pytest.raises(CellsegError, match="--z sum: give one of slices, max"):
        open_stack(path, axes="TZYX", z="sum")


def test_plain_3d_tiff_is_a_stack(tmp_path):
    data = _stack((4, 8, 6))
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, data, photometric="minisblack", metadata=None)  # tifffile calls the axes QYX
    with open_stack(path) as stack:
        assert stack.info.n_frames == 4
        np.testing.assert_array_equal(_frames(stack), data)


def test_several_long_frame_axes_ask_for_axes(tmp_path):
    data = _stack((3, 2, 8, 6))
    path = tmp_path / "tz.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(CellsegError, match=r"holds a Z stack \(Z=2; axes TZYX.*--z max.*--axes"):
        open_stack(path)
    with pytest.raises(CellsegError, match=r"more than one frame axis \(T=3, I=2.*--axes"):
        open_stack(path, axes="TIYX")
    with open_stack(path, axes="TCYX", channel=1) as stack:  # relabel Z as C and pick a plane
        np.testing.assert_array_equal(_frames(stack), data[:, 1])


# --- channels and RGB -----------------------------------------------------------------------------


def test_several_channels_need_channel(tmp_path):
    path = _write(tmp_path / "c.tif", _stack((2, 3, 8, 6)), "TCYX")
    with pytest.raises(CellsegError) as error:
        open_stack(path)
    assert str(error.value) == (f"{path}: the image has 3 channels (axes TCYX, shape (2, 3, 8, 6)); "
                                "pick one with --channel N (0..2)")
    with pytest.raises(CellsegError, match=r"channel 3 is out of range for 3 channels.*\(0\.\.2\)$"):
        open_stack(path, channel=3)
    with pytest.raises(CellsegError, match="out of range"):
        open_stack(path, channel=-1)


def test_cyx_single_frame(tmp_path):
    data = _stack((2, 8, 6))
    path = _write(tmp_path / "c.tif", data, "CYX")
    with open_stack(path, channel=1) as stack:
        assert (stack.info.n_frames, stack.info.channel) == (1, 1)
        np.testing.assert_array_equal(stack.frame(0), data[1])


def test_channel_without_channel_axis(tmp_path):
    path = _write(tmp_path / "s.tif", _stack((2, 8, 6)), "TYX")
    with pytest.raises(CellsegError, match=r"--channel 0 given but .* no channel axis.*leave out --channel$"):
        open_stack(path, channel=0)


def test_rgb_becomes_grey_unless_a_channel_is_picked(tmp_path):
    rgb = np.zeros((3, 4, 5, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 30, 60, 91  # mean 60.33 -> 60
    rgb[1, 0, 0] = (255, 255, 254)  # mean 254.67 -> 255
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb", metadata={"axes": "TYXS"})
    with open_stack(path) as stack:
        assert (stack.info.axes, stack.info.dtype, stack.info.channel) == ("TYXS", np.dtype("uint8"), None)
        grey = _frames(stack)
    expected = np.full((3, 4, 5), 60, np.uint8)
    expected[1, 0, 0] = 255
    np.testing.assert_array_equal(grey, expected)
    with open_stack(path, channel=2) as stack:
        np.testing.assert_array_equal(_frames(stack), rgb[..., 2])


def test_rgba_drops_alpha_and_planar_rgb(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint16)
    rgba[..., :3] = (100, 200, 300)
    rgba[..., 3] = 65535
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
    with open_stack(path) as stack:
        np.testing.assert_array_equal(stack.frame(0), np.full((4, 5), 200, np.uint16))
    planar = np.moveaxis(rgba[..., :3], -1, 0).astype(np.float32)  # (S, Y, X)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, planar, photometric="rgb", planarconfig="separate")
    with open_stack(path) as stack:
        assert stack.info.axes == "SYX"
        np.testing.assert_array_equal(stack.frame(0), np.full((4, 5), 200, np.float32))


# --- axes overrides -------------------------------------------------------------------------------


def test_axes_override(tmp_path):
    data = _stack((4, 8, 6))
    path = _write(tmp_path / "s.tif", data, "TYX")
    with open_stack(path, axes="iyx") as stack:
        assert stack.info.axes == "IYX"
        np.testing.assert_array_equal(_frames(stack), data)
    with open_stack(path, axes="CYX", channel=3) as stack:
        assert (stack.info.n_frames, stack.info.channel) == (1, 3)
        np.testing.assert_array_equal(stack.frame(0), data[3])


@pytest.mark.parametrize("axes", ["YX", "TCYX", "TYY", "YXT", "AYX", "T-X", "TXY"])
def test_impossible_axes(tmp_path, axes):
    path = _write(tmp_path / "s.tif", _stack((4, 8, 6)), "TYX")
    with pytest.raises(CellsegError) as error:
        open_stack(path, axes=axes)
    message = str(error.value)
    assert message.startswith(f"{path}: axes {axes.upper()!r} do not fit data of shape (4, 8, 6): "
                              "expected 3 letters")
    assert message.endswith("pass a matching --axes (e.g. TYX)")


# --- pixel size -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "unit", "expected"),
                         [(0.5, None, 0.5), (0.5, "µm", 0.5), (650.0, "nm", 0.65)])
def test_ome_pixel_size(tmp_path, size, unit, expected):
    data = _stack((3, 2, 8, 6))
    metadata = {"axes": "TCYX", "PhysicalSizeX": size, "PhysicalSizeY": size}
    if unit:
        metadata["PhysicalSizeXUnit"] = unit
    path = tmp_path / "s.ome.tif"
    tifffile.imwrite(path, data, ome=True, compression="zlib", metadata=metadata)
    with open_stack(path, channel=1) as stack:
        assert stack.info.pixel_size_um == pytest.approx(expected)
        np.testing.assert_array_equal(_frames(stack), data[:, 1])


def test_ome_without_physical_size(tmp_path):
    path = tmp_path / "s.ome.tif"
    tifffile.imwrite(path, _stack((3, 8, 6)), ome=True, metadata={"axes": "TYX"})
    with open_stack(path) as stack:
        assert stack.info.pixel_size_um is None


@pytest.mark.parametrize(("unit", "expected"), [("um", 0.87), ("micron", 0.87), ("\\u00B5m", 0.87),
                                                ("nm", 0.00087), ("pixel", None), (None, None)])
def test_imagej_pixel_size(tmp_path, unit, expected):
    metadata = {"axes": "TYX", "spacing": 3.0}  # spacing is Z and must not be taken
    if unit:
        metadata["unit"] = unit
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, _stack((3, 8, 6)), imagej=True, resolution=(1 / 0.87, 1 / 0.87), metadata=metadata)
    with open_stack(path) as stack:
        assert stack.info.pixel_size_um == (pytest.approx(expected) if expected else None)


def test_pixel_size_override(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, _stack((3, 8, 6)), imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TYX", "unit": "um"})
    with open_stack(path, pixel_size=0.25) as stack:
        assert stack.info.pixel_size_um == 0.25
    with pytest.raises(CellsegError, match=r"pixel size -1\.0 is not a positive number"):
        open_stack(path, pixel_size=-1.0)


# --- laziness -------------------------------------------------------------------------------------


def test_reading_one_frame_reads_about_one_frame(tmp_path):
    data = _stack((64, 128, 128))  # 2 MiB in all, 32 KiB a frame
    path = _write(tmp_path / "s.tif", data, "TYX", compression="zlib")
    with open_stack(path) as stack:
        stack.frame(0)  # warm up zarr's event loop and caches
        tracemalloc.start()
        try:
            frame = stack.frame(50)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    np.testing.assert_array_equal(frame, data[50])
    assert peak < 8 * data[0].nbytes < data.nbytes / 4


# --- folders of images ----------------------------------------------------------------------------


def test_list_images_natural_order(tmp_path):
    for name in ["frame10.png", "frame2.png", "frame1.tif", "Frame3.JPG", "notes.txt", ".frame0.png"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "frame4.png").mkdir()
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["frame1.tif", "frame2.png", "Frame3.JPG", "frame10.png"]


def test_folder_of_pngs_is_a_stack(tmp_path):
    data = _stack((11, 6, 5), "uint16")
    for t, frame in enumerate(data):
        Image.fromarray(frame).save(tmp_path / f"f{t}.png")
    (tmp_path / "readme.txt").write_text("not an image")
    with open_stack(tmp_path) as stack:
        assert stack.info == StackInfo(tmp_path, "TYX", 11, (6, 5), np.dtype("uint16"), None, None)
        np.testing.assert_array_equal(_frames(stack), data)  # f10 comes last


def test_folder_of_tiffs_and_rgb_pngs(tmp_path):
    data = _stack((3, 6, 5), "uint8")
    for t, frame in enumerate(data):
        tifffile.imwrite(tmp_path / f"t{t}.tif", frame)
    with open_stack(tmp_path) as stack:
        np.testing.assert_array_equal(_frames(stack), data)
    rgb_folder = tmp_path / "rgb"
    rgb_folder.mkdir()
    rgb = np.stack([data, data // 2, data // 4], axis=-1)
    for t, frame in enumerate(rgb):
        Image.fromarray(frame).save(rgb_folder / f"c{t}.png")
    with open_stack(rgb_folder) as stack:
        assert stack.info.axes == "TYXS"
        np.testing.assert_array_equal(_frames(stack), np.rint(rgb.mean(axis=-1)).astype(np.uint8))
    with open_stack(rgb_folder, channel=1) as stack:
        np.testing.assert_array_equal(_frames(stack), data // 2)


def test_single_png_and_jpeg(tmp_path):
    frame = np.full((6, 5), 77, np.uint8)
    Image.fromarray(frame).save(tmp_path / "one.png")
    Image.fromarray(frame).save(tmp_path / "one.jpg")
    with open_stack(tmp_path / "one.png") as stack:
        np.testing.assert_array_equal(stack.frame(0), frame)
    with open_stack(tmp_path / "one.jpg") as stack:
        assert (stack.info.n_frames, stack.info.shape, stack.info.dtype) == (1, (6, 5), np.dtype("uint8"))


def test_folder_with_mismatched_shape(tmp_path):
    for name, shape in [("a1.png", (6, 5)), ("a2.png", (6, 5)), ("a3.png", (5, 6)), ("a4.png", (4, 4))]:
        Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / name)
    with pytest.raises(CellsegError) as error:
        open_stack(tmp_path)
    assert str(error.value).startswith(
        f"{tmp_path / 'a3.png'}: shape (5, 6) uint8 differs from (6, 5) uint8 of a1.png")
    assert str(error.value).endswith("resize or remove it")


def test_folder_with_a_multi_frame_tiff(tmp_path):
    _write(tmp_path / "a.tif", _stack((2, 6, 5)), "TYX")
    with pytest.raises(CellsegError, match=r"a\.tif: holds several frames .*multi-frame files on their own$"):
        open_stack(tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(CellsegError) as error:
        open_stack(tmp_path)
    expected = f"{tmp_path}: no images found in this folder; expected .tif/.tiff/.png/.jpg files"
    assert str(error.value) == expected


# --- bad input ------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(CellsegError) as error:
        open_stack(tmp_path / "nope.tif")
    assert str(error.value) == f"{tmp_path / 'nope.tif'}: no such file; check the path"


@pytest.mark.parametrize("content", [b"", b"II*\x00", np.random.default_rng(0).bytes(5000)])
def test_not_a_tiff(tmp_path, content):
    path = tmp_path / "junk.tif"
    path.write_bytes(content)
    with pytest.raises(CellsegError) as error:
        open_stack(path)
    assert str(error.value).startswith(f"{path}: not a readable TIFF (")
    assert str(error.value).endswith("; check that the file is a complete TIFF, or convert it to one")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "movie.avi"
    path.write_bytes(b"RIFF")
    with pytest.raises(CellsegError, match=r"movie\.avi: unsupported file type '\.avi'; use a TIFF"):
        open_stack(path)


@pytest.mark.parametrize("kind", ["shaped", "imagej", "ome"])
@pytest.mark.parametrize("compression", ["zlib", None])
def test_truncated_tiff(tmp_path, kind, compression):
    full = tmp_path / "full.tif"
    data = _stack((10, 32, 24))
    options = {"imagej": kind == "imagej", "ome": kind == "ome", "metadata": {"axes": "TYX"}}
    tifffile.imwrite(full, data, compression=compression, **options)
    path = tmp_path / "cut.tif"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CellsegError) as error:  # at open, or at the first bad frame
        with open_stack(path) as stack:
            list(stack)
    assert str(error.value).startswith(f"{path}: ")
    assert str(error.value).endswith("copy or export it again")


def test_damaged_frame_names_the_frame(tmp_path):
    path = _write(tmp_path / "s.tif", _stack((6, 32, 24)), "TYX", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[3].dataoffsets[0], tif.pages[3].databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[offset: offset + count] = b"\xff" * count
    path.write_bytes(bytes(raw))
    with open_stack(path) as stack:
        np.testing.assert_array_equal(stack.frame(2), tifffile.imread(path, key=2))
        with pytest.raises(CellsegError, match=r"s\.tif: cannot read frame 3 \(.*\); the file looks trunc"):
            stack.frame(3)


def test_damaged_image_in_folder(tmp_path):
    Image.fromarray(_stack((64, 48), "uint8")).save(tmp_path / "a1.png")
    good = (tmp_path / "a1.png").read_bytes()
    (tmp_path / "a2.png").write_bytes(good[: len(good) // 2])  # header intact, pixels cut off
    with open_stack(tmp_path) as stack:
        stack.frame(0)
        with pytest.raises(CellsegError, match=r"a2\.png: cannot read it .*replace or remove it$"):
            stack.frame(1)


# --- other formats through bioio ------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "plugin"),
                         [(".nd2", "bioio-nd2"), (".czi", "bioio-czi"), (".lif", "bioio-lif")])
@pytest.mark.parametrize("bioio_installed", [False, True])
def test_bioio_missing(tmp_path, monkeypatch, suffix, plugin, bioio_installed):
    def find_spec(name):  # bioio itself may be there; its plugin never is
        return object() if bioio_installed and name == "bioio" else None

    monkeypatch.setattr(readers, "find_spec", find_spec)
    path = tmp_path / f"movie{suffix}"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(CellsegError) as error:
        open_stack(path)
    assert str(error.value) == (f"{path}: reading {suffix} files needs bioio and its reader plugin; "
                                f"pip install bioio {plugin}")


def test_bioio_reads_tczyx(tmp_path, monkeypatch):
    data = _stack((1, 2, 5, 8, 6))  # one time point: Z becomes the frame axis

    class FakeBioImage:  # the part of bioio.BioImage the reader uses; numpy stands in for dask
        def __init__(self, path):
            self.dask_data = data
            self.dims = types.SimpleNamespace(order="TCZYX")
            self.physical_pixel_sizes = types.SimpleNamespace(Z=2.0, Y=0.3, X=0.3)

    monkeypatch.setattr(readers, "find_spec", lambda name: object())
    monkeypatch.setitem(sys.modules, "bioio", types.SimpleNamespace(BioImage=FakeBioImage))
    path = tmp_path / "movie.czi"
    path.write_bytes(b"")
    with pytest.raises(CellsegError, match=r"holds a Z stack \(Z=5; axes TCZYX"):
        open_stack(path, channel=1)
    with pytest.raises(CellsegError, match=r"2 channels \(axes TCZYX, shape \(1, 2, 5, 8, 6\)\)"):
        open_stack(path, z="slices")
    with open_stack(path, channel=1, z="slices") as stack:
        assert stack.info == StackInfo(path, "TCZYX", 5, (8, 6), np.dtype("uint16"), 1, 0.3)
        np.testing.assert_array_equal(_frames(stack), data[0, 1])


def test_bioio_czi_plugin_round_trip(tmp_path):
    """A real CZI written by Zeiss's libCZI, read through bioio and bioio-czi: pixels, axes and calibration."""
    pytest.importorskip("bioio_czi", reason="bioio-czi is not installed (pip install bioio bioio-czi)")
    pyczi = pytest.importorskip("pylibCZIrw.czi", reason="pylibCZIrw (bioio-czi's dependency) is missing")
    data = _stack((3, 40, 56))
    path = tmp_path / "movie.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        for t, plane in enumerate(data):
            writer.write(data=plane[..., None], plane={"T": t, "C": 0, "Z": 0})
        writer.write_metadata(document_name="cellseg test", channel_names={0: "PH"}, scale_x=0.65e-6,
                              scale_y=0.65e-6)
    with open_stack(path) as stack:
        assert stack.info == StackInfo(path, "TCZYX", 3, (40, 56), np.dtype("uint16"), 0, pytest.approx(0.65))
        np.testing.assert_array_equal(_frames(stack), data)


# --- real data ------------------------------------------------------------------------------------


@pytest.mark.data
def test_t98g_stack(shared_data):
    path = shared_data / "t98g-timelapse" / "stack.tif"
    with tifffile.TiffFile(path) as tif:  # the metadata holds no calibration: resolution 1/1, no unit
        assert not (tif.is_ome or tif.is_imagej)
    with open_stack(path) as stack:
        assert stack.info == StackInfo(path, "TYX", 37, (1022, 1024), np.dtype("uint16"), None, None)
        stack.frame(0)  # warm up zarr's event loop
        tracemalloc.start()
        try:
            last = stack.frame(36)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    frame_bytes = 1022 * 1024 * 2
    assert peak < 4 * frame_bytes  # the whole stack is 37 frames
    np.testing.assert_array_equal(last, tifffile.imread(path, key=36))
