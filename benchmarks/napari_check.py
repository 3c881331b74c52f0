"""Open cellseg results in a real, headless napari viewer through the plugin and check what it shows.

    xvfb-run -a python benchmarks/napari_check.py [--frames 3] [--size 128] [--model tiny] [--long 600]

1. Segments a synthetic movie (bright disks drifting over noise; pixel size 0.5 um, 30 s between
   frames) with the real ``cellseg segment`` CLI, ``--track --save-probabilities``; the model is a
   randomly initialised ``tiny`` one made here (the default) or a shipped one (``--model phase``).
2. Opens it with ``viewer.open(path, plugin="cellseg")`` and prints a table of the layers: name, type,
   visible, scale, units, shape.
3. Runs the plugin's ``Segment cells`` widget once on the open image layer (same model, default tile
   and TTA, in its worker thread) and checks that its ``cells`` layer holds the CLI's cells (the same
   pixels of each cell; the CLI's ids are track ids).
4. With ``--long N`` (default 600, 0 to skip): writes an N-frame result with the library's writer and
   times opening it, counting the frames read from disk while it opens (lazy: a handful at most).

Exits 1 when a ``cells`` Labels layer is missing, hidden or placed at another scale than the pixel size,
or when the widget's cells differ from the CLI's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PIXEL_UM, INTERVAL_S = 0.5, 30.0


def synthetic_movie(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """(T, size, size) uint16: disks 16 px across drifting 2 px a frame over Gaussian noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(16, size - 16, (max(2, size // 24), 2))
    movie = np.empty((frames, size, size), np.uint16)
    for t in range(frames):
        image = rng.normal(500, 20, (size, size))
        for cy, cx in centres + 2.0 * t:
            image[(yy - cy % size) ** 2 + (xx - cx % size) ** 2 < 64] += 800
        movie[t] = np.clip(image, 0, 65535).astype(np.uint16)
    return movie


def tiny_model(folder: Path) -> Path:
    """A randomly initialised ResNet-18 FPN named ``tiny`` in ``folder`` (outputs are noise, timing is real)."""
    import torch

    from cellsegcli.models import ModelConfig, build, save_model

    torch.manual_seed(0)
    save_model(build("resnet18-fpn", in_channels=1, classes=2),
               ModelConfig(name="tiny", architecture="resnet18-fpn", description="random weights, napari_check"),
               folder / "tiny", half=True)
    return folder


def segment_with_cli(movie: np.ndarray, folder: Path, model: str, env: dict[str, str]) -> Path:
    import tifffile

    source = folder / "movie.tif"
    tifffile.imwrite(source, movie, imagej=True, resolution=(1 / PIXEL_UM, 1 / PIXEL_UM),
                     metadata={"axes": "TYX", "unit": "um", "finterval": INTERVAL_S})
    command = [sys.executable, "-m", "cellsegcli", "segment", str(source), "--model", model, "--device", "cpu",
               "--track", "--save-probabilities"]
    started = time.monotonic()
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"cellseg segment failed ({done.returncode}):\n{done.stderr}")
    print(f"cellseg segment: {len(movie)} frames of {movie.shape[1]}x{movie.shape[2]} in "
          f"{time.monotonic() - started:.1f} s")
    return folder / "movie.zarr"


def long_result(folder: Path, frames: int, size: int) -> Path:
    """An N-frame result (image + labels) written frame by frame with the library's writer."""
    from cellsegcli.io.omezarr import OmeZarrWriter, TimeAxis

    path = folder / "long.zarr"
    labels = np.zeros((size, size), np.uint32)
    labels[10:30, 10:30] = 1
    with OmeZarrWriter(path, n_frames=frames, shape=(size, size), image_dtype=np.uint16, pixel_size_um=PIXEL_UM,
                       attributes={"input": "long.tif"}, time=TimeAxis.of(range(frames), INTERVAL_S)) as writer:
        image = np.full((size, size), 500, np.uint16)
        for t in range(frames):
            writer.write_frame(t, labels, image=image)
        writer.commit()
    return path


def layer_rows(viewer) -> list[list[str]]:
    rows = []
    for layer in viewer.layers:
        units = ", ".join(str(u) for u in layer.units)
        shape = "x".join(str(n) for n in np.shape(layer.data))
        rows.append([layer.name, type(layer).__name__, str(layer.visible),
                     ", ".join(f"{s:g}" for s in layer.scale), units, shape])
    return rows


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def check_cells(viewer, problems: list[str]) -> None:
    from napari.layers import Labels

    if "cells" not in viewer.layers or not isinstance(viewer.layers["cells"], Labels):
        problems.append("no Labels layer named 'cells'")
        return
    cells = viewer.layers["cells"]
    if not cells.visible:
        problems.append("the 'cells' layer is hidden")
    if not np.allclose(cells.scale[-2:], [PIXEL_UM, PIXEL_UM]):
        problems.append(f"the 'cells' layer's y/x scale is {tuple(cells.scale[-2:])}, not the pixel size {PIXEL_UM}")


def run_widget(viewer, image_name: str, model: str, seconds: float = 600.0):
    """The plugin's widget on ``image_name``: returns its labels and the seconds it took."""
    from qtpy.QtWidgets import QApplication

    from cellsegcli.napari._widget import SegmentWidget

    widget = SegmentWidget(viewer)
    widget.image.value = viewer.layers[image_name]
    widget.model.value, widget.device.value = model, "cpu"
    started = time.monotonic()
    widget.run()
    while widget.running and time.monotonic() - started < seconds:
        QApplication.processEvents()
        time.sleep(0.01)
    if widget.running or widget.status.value.startswith("failed"):
        sys.exit(f"the widget failed: {widget.status.value if not widget.running else 'timed out'}")
    return np.asarray(viewer.layers["cells"].data), time.monotonic() - started, widget.status.value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--model", default="tiny", help="tiny (random weights, made here) or a shipped model")
    parser.add_argument("--long", type=int, default=600, help="frames of the lazily opened result (0: skip)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cellseg-napari-") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        if args.model == "tiny":
            env["CELLSEG_WEIGHTS"] = os.environ["CELLSEG_WEIGHTS"] = str(tiny_model(folder / "weights"))
        movie = synthetic_movie(args.frames, args.size)
        result = segment_with_cli(movie, folder, args.model, env)
        long = long_result(folder, args.long, 256) if args.long else None

        import napari
        import zarr

        started = time.monotonic()
        viewer = napari.Viewer(show=False)
        print(f"napari {napari.__version__}: viewer up in {time.monotonic() - started:.1f} s")
        problems: list[str] = []
        try:
            started = time.monotonic()
            viewer.open(str(result), plugin="cellseg")
            print(f"\nopened {result.name} through the plugin in {time.monotonic() - started:.2f} s")
            print_table(["name", "type", "visible", "scale", "units", "shape"], layer_rows(viewer))
            check_cells(viewer, problems)

            cli_labels = zarr.open_group(result, mode="r")["labels/cells/0"][:]
            labels, seconds, status = run_widget(viewer, "movie", args.model)
            same = same_cells(labels, cli_labels)
            print(f"\nwidget on the image layer: {status} in {seconds:.1f} s; the same cells as the CLI's "
                  f"(ids aside: the CLI's are track ids): {same}")
            check_cells(viewer, problems)
            if not same:
                problems.append("the widget's cells differ from cellseg segment's")

            if long is not None:
                viewer.layers.clear()
                reads = count_frame_reads(zarr)
                started = time.monotonic()
                viewer.open(str(long), plugin="cellseg")
                opened = time.monotonic() - started
                print(f"\nopened a {args.long}-frame 256x256 result in {opened:.2f} s, reading {reads[0]} frame "
                      f"chunks of {2 * args.long} (image + labels) from disk")
                print_table(["name", "type", "visible", "scale", "units", "shape"], layer_rows(viewer))
                check_cells(viewer, problems)
        finally:
            viewer.close()
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


def same_cells(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two (T, Y, X) label movies hold the same cells in every frame, whatever their ids: the same
    foreground, and each id of one frame of ``a`` covers exactly one id of ``b`` and no other."""
    if a.shape != b.shape:
        return False
    for fa, fb in zip(a, b):
        if not np.array_equal(fa > 0, fb > 0):
            return False
        pairs = np.unique(np.stack([fa.ravel(), fb.ravel()]), axis=1)
        if not len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]:
            return False
    return True


def count_frame_reads(zarr) -> list[int]:
    """Count reads of (T, Y, X) arrays from now on (frames a viewer loads), in a one-element list."""
    count = [0]
    original = zarr.Array.__getitem__

    def counted(self, selection):
        if self.ndim == 3:
            count[0] += 1
        return original(self, selection)

    zarr.Array.__getitem__ = counted
    return count


if __name__ == "__main__":
    sys.exit(main())
