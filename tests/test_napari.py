"""The napari plugin: the reader's LayerData tuples and the widget's segment function (always run, no
napari needed), then a real headless viewer opening results through the plugin and running the widget
(skipped without napari; run them under ``xvfb-run -a``)."""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from cellsegcli.errors import CellsegError
from cellsegcli.io.omezarr import OmeZarrWriter, TimeAxis
from cellsegcli.io.tables import table_path, write_table
from cellsegcli.napari._reader import get_reader, image_name, placement, read_result
from cellsegcli.napari._segment import SegmentOptions, iter_segment, segment_array

MANIFEST = Path(__file__).resolve().parents[1] / "cellsegcli" / "napari.yaml"
T, Y, X = 4, 12, 10
LINEAGE = [[1, 0, 1, 0], [2, 2, 3, 1], [3, 2, 3, 1]]   # track 1 divides into 2 and 3 at frame 2


def _labels(t: int) -> np.ndarray:
    labels = np.zeros((Y, X), np.uint32)
    labels[2:5, 1 + t : 4 + t] = 1
    labels[7:10, 5:8] = 2 + t
    return labels


def _result(path: Path, *, image: bool = True, probabilities: bool = True, tracked: bool = False,
            pixel_size: float | None = 0.5, interval_s: float | None = 30.0, commit: bool = True,
            source: str = "/data/movie.ome.tif"):
    """A cellseg result of T frames written by the library's writer (what cellseg segment writes)."""
    writer = OmeZarrWriter(path, n_frames=T, shape=(Y, X), image_dtype=np.uint16 if image else None,
                           pixel_size_um=pixel_size, save_probabilities=probabilities, attributes={"input": source},
                           time=TimeAxis.of(range(T), interval_s))
    for t in range(T):
        writer.write_frame(t, _labels(t), image=np.full((Y, X), 100 * t, np.uint16) if image else None,
                           probabilities=np.full((Y, X), 0.5) if probabilities else None)
    if tracked:
        writer.write_tracks(np.array(LINEAGE))
        write_table({"track_id": [1, 1, 2, 2, 3, 3], "t": [0, 1, 2, 3, 2, 3], "y": [3.0, 3, 2, 2, 4, 4],
                     "x": [2.0, 3, 4, 5, 4, 5]}, table_path(path, "napari-tracks"))
    if not commit:
        return writer
    writer.commit()
    return path


def _by_name(layers):
    return {kwargs["name"]: (data, kwargs, kind) for data, kwargs, kind in layers}


# --- reader, without napari ----------------------------------------------------------------------------


def test_reader_claims_cellseg_results_only(tmp_path):
    result = _result(tmp_path / "movie.zarr")
    zarr.open_group(tmp_path / "other.zarr", mode="w", zarr_format=3, attributes={"ome": {"version": "0.5"}})
    zarr.open_group(tmp_path / "v2.zarr", mode="w", zarr_format=2)
    tifffile.imwrite(tmp_path / "movie.tif", np.zeros((2, 4, 4), np.uint16))
    assert get_reader(str(result)) is read_result
    assert get_reader([str(result)]) is read_result
    for other in ("other.zarr", "v2.zarr", "movie.tif", "missing.zarr"):
        assert get_reader(str(tmp_path / other)) is None, other
    assert get_reader([str(result), str(result)]) is None


def test_reader_layers_names_types_placement_and_lazy_data(tmp_path):
    layers = read_result(str(_result(tmp_path / "movie.zarr")))
    assert [(kw["name"], kind) for _, kw, kind in layers] == [
        ("movie", "image"), ("probabilities", "image"), ("cells", "labels")]   # bottom to top
    for data, kwargs, _ in layers:
        assert kwargs["scale"] == (30.0, 0.5, 0.5)   # seconds per frame, micrometres per pixel
        assert kwargs["translate"] == (0.0, 0.0, 0.0)
        assert kwargs["units"] == ("second", "micrometer", "micrometer")
        assert kwargs["axis_labels"] == ("t", "y", "x")
        assert type(data).__module__.startswith("dask") and data.chunks == ((1,) * T, (Y,), (X,))
    layer = _by_name(layers)
    data, kwargs, _ = layer["cells"]
    assert kwargs["visible"] is True and data.dtype == np.uint32
    np.testing.assert_array_equal(np.asarray(data), np.stack([_labels(t) for t in range(T)]))
    assert kwargs["metadata"]["cellseg"]["complete"] is True
    data, kwargs, _ = layer["probabilities"]
    assert kwargs["contrast_limits"] == (0.0, 1.0) and kwargs["blending"] == "additive"
    assert kwargs["visible"] is False
    np.testing.assert_allclose(np.asarray(data), 128 / 255, rtol=1e-6)   # 0.5 stored as round(127.5) = 128
    data, kwargs, _ = layer["movie"]
    assert kwargs["visible"] is True and data.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(data)[:, 0, 0], [0, 100, 200, 300])


def test_reader_reads_no_pixels_when_opening(tmp_path, monkeypatch):
    """A 600-frame result opens at once: only metadata are read until napari shows a frame."""
    result = _result(tmp_path / "movie.zarr")
    original = zarr.Array.__getitem__

    def no_frames(self, selection):
        if self.ndim == 3:
            raise AssertionError(f"frames of {self.path} read while opening")
        return original(self, selection)

    monkeypatch.setattr(zarr.Array, "__getitem__", no_frames)
    assert len(read_result(str(result))) == 3


def test_no_image_result_opens_with_labels_only(tmp_path):
    layers = read_result(str(_result(tmp_path / "m.zarr", image=False, probabilities=False)))
    assert [(kw["name"], kind, kw["visible"]) for _, kw, kind in layers] == [("cells", "labels", True)]
    assert layers[0][1]["scale"] == (30.0, 0.5, 0.5)


def test_units_follow_the_metadata(tmp_path):
    """No pixel size and no interval: unit scales and no units (napari's pixels); a pixel size only:
    micrometres for y and x, pixels for t."""
    (_, bare, _), = read_result(str(_result(tmp_path / "a.zarr", image=False, probabilities=False,
                                            pixel_size=None, interval_s=None)))
    assert bare["scale"] == (1.0, 1.0, 1.0) and "units" not in bare
    (_, sized, _), = read_result(str(_result(tmp_path / "b.zarr", image=False, probabilities=False,
                                             interval_s=None)))
    assert sized["scale"] == (1.0, 0.5, 0.5) and sized["units"] == ("pixel", "micrometer", "micrometer")


def test_placement_composes_the_ngff_transformations():
    ome = {"multiscales": [{
        "axes": [{"name": "t", "type": "time", "unit": "second"}, {"name": "y", "unit": "micrometer"},
                 {"name": "x", "unit": "micrometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [2.0, 0.5, 0.5]}, {"type": "translation", "translation": [10.0, 1.0, 1.0]}]}],
        "coordinateTransformations": [{"type": "scale", "scale": [1.0, 2.0, 2.0]}]}]}
    placed = placement(ome, 3)
    assert placed.scale == (2.0, 1.0, 1.0) and placed.translate == (10.0, 2.0, 2.0)
    with pytest.raises(CellsegError, match="2 axes for a 3-D array"):
        placement({"multiscales": [{"axes": [{"name": "y"}, {"name": "x"}], "datasets": [{"path": "0"}]}]}, 3)


def test_tracked_result_adds_a_tracks_layer_with_its_lineage_graph(tmp_path):
    layers = read_result(str(_result(tmp_path / "movie.zarr", tracked=True)))
    assert [kw["name"] for _, kw, _ in layers] == ["movie", "probabilities", "cells", "tracks"]
    data, kwargs, kind = layers[-1]
    assert kind == "tracks" and data.shape == (6, 4)
    np.testing.assert_array_equal(data[:, :2], [[1, 0], [1, 1], [2, 2], [2, 3], [3, 2], [3, 3]])
    assert kwargs["graph"] == {2: [1], 3: [1]}
    assert kwargs["scale"] == (30.0, 0.5, 0.5) and kwargs["units"] == ("second", "micrometer", "micrometer")


def test_tracked_result_without_its_table_warns_and_opens_the_rest(tmp_path):
    result = _result(tmp_path / "movie.zarr", tracked=True)
    table_path(result, "napari-tracks").unlink()
    with pytest.warns(UserWarning, match=r"movie\.napari-tracks\.csv is not beside it"):
        layers = read_result(str(result))
    assert [kw["name"] for _, kw, _ in layers] == ["movie", "probabilities", "cells"]


def test_incomplete_result_is_claimed_and_refused_with_a_reason(tmp_path):
    writer = _result(tmp_path / "movie.zarr", commit=False)
    try:
        partial = str(writer.temp_path)
        assert get_reader(partial) is read_result   # not left to a generic zarr reader
        with pytest.raises(CellsegError, match="an incomplete result"):
            read_result(partial)
    finally:
        writer.abort()


def test_image_layer_name_is_the_input_stem_and_never_another_layers():
    assert image_name({"input": "/data/movie.ome.tif"}) == "movie"
    assert image_name({"input": "frames_folder"}) == "frames_folder"
    assert image_name({}) == "image"
    assert image_name({"input": "/data/cells.tif"}) == "cells (image)"


@pytest.mark.data
def test_a_real_movie_segmented_and_tracked_by_the_cli_opens_as_cells_in_micrometres(shared_data, env, tmp_path):
    from typer.testing import CliRunner

    from cellsegcli.cli import app

    movie = shared_data / "t98g-timelapse" / "stack.tif"
    out = tmp_path / "t98g.zarr"
    run = CliRunner().invoke(app, ["segment", str(movie), "--model", "tiny", "--device", "cpu", "--frames", "0:2",
                                   "--track", "--pixel-size", "0.87", "--frame-interval", "10min", "-o", str(out)])
    assert run.exit_code == 0, run.output
    layers = _by_name(read_result(str(out)))
    assert list(layers) == ["stack", "cells", "tracks"]
    data, kwargs, kind = layers["cells"]
    assert kind == "labels" and kwargs["visible"] is True and data.shape == (2, 1022, 1024)
    np.testing.assert_allclose(kwargs["scale"], [600.0, 0.87, 0.87])
    assert list(kwargs["units"]) == ["second", "micrometer", "micrometer"]
    np.testing.assert_array_equal(np.asarray(data[1]), zarr.open_group(out, mode="r")["labels/cells/0"][1])


def test_manifest_points_at_importable_commands():
    text = MANIFEST.read_text()
    names = dict(re.findall(r"- id: (\S+)\n\s+title: .*\n\s+python_name: (\S+)", text))
    assert set(names) == {"cellseg.get_reader", "cellseg.segment_widget"}
    module, _, attribute = names["cellseg.get_reader"].partition(":")
    assert getattr(__import__(module, fromlist=[attribute]), attribute) is get_reader
    assert 'filename_patterns: ["*.zarr"]' in text and "accepts_directories: true" in text


# --- the widget's segment function, without napari ------------------------------------------------------


def _movie(frames: int = 2) -> np.ndarray:
    return (np.random.default_rng(0).random((frames, 64, 80)) * 1000).astype(np.uint16)


def test_segment_array_labels_every_frame_with_progress(env):
    calls = []
    options = SegmentOptions(model="tiny", tta="none", device="cpu", tile=64)
    labels = segment_array(_movie(), options, progress=lambda done, total: calls.append((done, total)))
    assert labels.shape == (2, 64, 80) and labels.dtype == np.uint32
    assert calls == [(1, 2), (2, 2)]
    single = segment_array(_movie()[1], options)
    assert single.shape == (64, 80)
    np.testing.assert_array_equal(single, labels[1])   # a frame's labels do not depend on its neighbours
    frames = list(iter_segment(_movie(), options))
    np.testing.assert_array_equal(np.stack(frames), labels)


def test_segment_array_equals_cellseg_segment(env, tmp_path):
    """Same model, tile and TTA: the widget's labels are the CLI's, pixel for pixel."""
    from typer.testing import CliRunner

    from cellsegcli.cli import app

    movie = _movie()
    tifffile.imwrite(tmp_path / "m.tif", movie, imagej=True, metadata={"axes": "TYX"})
    result = CliRunner().invoke(app, ["segment", str(tmp_path / "m.tif"), "--model", "tiny", "--device", "cpu",
                                      "--tile", "64", "--tta", "flip"])
    assert result.exit_code == 0, result.output
    cli = zarr.open_group(tmp_path / "m.zarr", mode="r")["labels/cells/0"][:]
    ours = segment_array(movie, SegmentOptions(model="tiny", tta="flip", device="cpu", tile=64))
    np.testing.assert_array_equal(ours, cli)


@pytest.mark.parametrize("case", ["shape", "tta", "constant", "model", "diameter"])
def test_segment_array_refuses_what_it_cannot_segment(env, case):
    image = {"shape": np.zeros((2, 3, 8, 8)), "constant": np.full((1, 32, 32), 7)}.get(case, _movie(1))
    options = {"tta": SegmentOptions(model="tiny", tta="d8"), "model": SegmentOptions(model="nosuchmodel"),
               "diameter": SegmentOptions(model="tiny", diameter=-3)}.get(case, SegmentOptions(model="tiny", tile=64))
    message = {"shape": "give a \\(Y, X\\) image", "tta": "choose one of", "constant": "frame 0: frame is constant",
               "model": "model 'nosuchmodel' not found", "diameter": "--diameter -3"}[case]
    with pytest.raises(CellsegError, match=message):
        segment_array(image, replace(options, device="cpu"))


# --- a real napari viewer (headless: xvfb-run -a) -------------------------------------------------------

NAPARI_NOISE = [   # raised by napari, npe2 and Qt themselves (napari 0.9.2, npe2 0.10, PyQt5), not by the plugin
    "ignore:System theme detection requires a Qt6 backend:UserWarning",
    "ignore::DeprecationWarning:npe2.*",   # pydantic 2.12 deprecations in npe2's manifest models, at import
    "ignore:`json_encoders` is deprecated:DeprecationWarning",
]


@pytest.fixture
def viewer():
    """A headless viewer. torch with triton is loaded first: this test session builds models in its own
    process too, and triton cannot load once Mesa's OpenGL has (the widget itself runs the network in a
    child process, see ``_segment.iter_segment_in_process``)."""
    napari = pytest.importorskip("napari")
    if sys.platform.startswith("linux") and not any(os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY")):
        pytest.skip("no display for napari's OpenGL canvas; run the napari tests under xvfb-run -a")
    import torch._dynamo  # noqa: F401

    viewer = napari.Viewer(show=False)
    yield viewer
    viewer.close()


def _wait(widget, seconds: float = 120.0) -> None:
    """Run the Qt event loop until ``widget``'s worker has finished (its signals arrive on this thread)."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + seconds
    while widget.running and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)
    assert not widget.running, "the worker did not finish"


@pytest.mark.filterwarnings(*NAPARI_NOISE)
def test_napari_opens_a_result_through_the_plugin(viewer, tmp_path):
    from napari.layers import Image, Labels, Tracks

    result = _result(tmp_path / "movie.zarr", tracked=True)
    viewer.open(str(result), plugin="cellseg")
    layers = {layer.name: layer for layer in viewer.layers}
    assert list(layers) == ["movie", "probabilities", "cells", "tracks"]
    cells = layers["cells"]
    assert isinstance(cells, Labels) and cells.visible
    np.testing.assert_allclose(cells.scale, [30.0, 0.5, 0.5])
    assert [str(u) for u in cells.units] == ["second", "micrometer", "micrometer"]
    assert cells.data.shape == (T, Y, X)
    assert isinstance(layers["movie"], Image) and isinstance(layers["tracks"], Tracks)
    assert not layers["probabilities"].visible and layers["probabilities"].blending == "additive"
    assert layers["tracks"].graph == {2: [1], 3: [1]}


@pytest.mark.filterwarnings(*NAPARI_NOISE)
def test_napari_shows_why_an_incomplete_result_is_refused(viewer, tmp_path):
    writer = _result(tmp_path / "movie.zarr", commit=False)
    try:
        with pytest.raises(Exception, match="an incomplete result"):
            viewer.open(str(writer.temp_path), plugin="cellseg")
    finally:
        writer.abort()
    assert len(viewer.layers) == 0


@pytest.mark.filterwarnings(*NAPARI_NOISE)
def test_napari_finds_the_plugin_by_its_entry_point():
    pytest.importorskip("napari")
    from npe2 import PluginManager

    manager = PluginManager.instance()
    manager.discover()
    manifest = manager.get_manifest("cellseg")
    assert [r.filename_patterns for r in manifest.contributions.readers] == [["*.zarr"]]
    assert [w.display_name for w in manifest.contributions.widgets] == ["Segment cells"]
    assert manager.get_command("cellseg.segment_widget").python_name == "cellsegcli.napari._widget:SegmentWidget"


@pytest.mark.filterwarnings(*NAPARI_NOISE)
def test_widget_segments_the_image_layer_into_cells(viewer, env):
    from napari.layers import Labels

    from cellsegcli.napari._widget import SegmentWidget

    viewer.add_image(_movie(), name="movie", scale=(30.0, 0.5, 0.5), units=("second", "micrometer", "micrometer"))
    widget = SegmentWidget(viewer)
    assert "tiny" in widget.model.choices and widget.image.value is viewer.layers["movie"]
    widget.model.value, widget.tta.value, widget.device.value = "tiny", "none", "cpu"
    assert widget.run() is not None
    _wait(widget)
    cells = viewer.layers["cells"]
    assert isinstance(cells, Labels) and cells.visible and cells.data.shape == (2, 64, 80)
    np.testing.assert_allclose(cells.scale, [30.0, 0.5, 0.5])
    assert [str(u) for u in cells.units] == ["second", "micrometer", "micrometer"]
    assert widget.progress.value == widget.progress.max == 2 and widget.status.value == "2 frames segmented"
    np.testing.assert_array_equal(cells.data, segment_array(_movie(), widget.options()))


def test_segmenting_in_a_child_process_gives_the_same_labels(env):
    """What the widget runs: the network in a spawned child (never in napari's process, where Mesa's
    OpenGL and triton's LLVM cannot both load), frames sent two at a time, errors raised here."""
    from cellsegcli.napari._segment import iter_segment_in_process

    movie = _movie()
    options = SegmentOptions(model="tiny", tta="flip", device="cpu", tile=64)
    here = list(iter_segment(movie, options))
    there = list(iter_segment_in_process(movie, options))
    assert len(there) == len(movie)
    for a, b in zip(here, there, strict=True):
        np.testing.assert_array_equal(a, b)
    bad = movie.astype(np.float32)
    bad[1] = np.nan
    with pytest.raises(CellsegError, match="frame 1"):
        list(iter_segment_in_process(bad, options))


@pytest.mark.filterwarnings(*NAPARI_NOISE)
def test_widget_says_why_it_cannot_segment_a_layer(viewer, env):
    from cellsegcli.napari._widget import SegmentWidget

    viewer.add_image(np.zeros((2, 3, 16, 16), np.uint16), name="stack")
    widget = SegmentWidget(viewer)
    widget.model.value = "tiny"
    assert widget.run() is not None
    _wait(widget)
    assert widget.status.value.startswith("failed: an image of shape (2, 3, 16, 16)")
    assert "cells" not in viewer.layers and widget.run_button.text == "Segment"
