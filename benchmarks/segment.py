"""Benchmark `cellseg segment`: frames/s, peak RSS and overhead over the bare model forward.

Runs each case in a fresh subprocess (so peak RSS is that run's own) and prints a table:

- the t98g stack (37 x 1022 x 1024) with --tta none, and its first frames with --tta d4;
- a 370-frame stack (the 37 frames repeated 10 times, written to a temporary TIFF) with --tta none,
  to show that memory does not grow with the stack's length;
- on a GPU, a mosaic of real frames at the papers' frame size 2568 x 1912;
- per stage, summed over frames: read (with normalisation; a thread ahead of the device), forward, label,
  tables and write (in the post-processing thread or ``--post-workers`` processes, beside the forward);
- the bare forward time of the same tiles (same tile size and batch, random input; timed on up to 24 tiles
  and scaled to the run's count of tiles x TTA transforms), so that
  overhead = end-to-end / forward is visible.

    python benchmarks/segment.py [--data ../shared/data] [--model phase] [--device auto] [--quick]
        [--cases t98g,d4,memory,mosaic] [--mosaic-frames N] [--post-workers 1,2,4] [--label-on cpu,device]
        [--mosaic-tta none,d4]

Rows are printed as the cases finish (a run cut short by a time limit keeps the rows it has).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

RUN = r"""
import json, resource, sys, time
from pathlib import Path
from cellsegcli import allocator, pipeline
allocator.keep_freed_memory()   # as the cellseg command does (CELLSEG_MALLOC=default: glibc as it is)
cfg = pipeline.SegmentConfig(**json.loads(sys.argv[1]))
t0 = time.perf_counter()
r = pipeline.segment(Path(sys.argv[2]), cfg, out=Path(sys.argv[3]))
s = r.summary()
s["wall"] = time.perf_counter() - t0
s["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(s))
"""

FORWARD = r"""
import json, sys, time, torch
from cellsegcli import allocator
allocator.keep_freed_memory()
from cellsegcli.device import resolve_device, autocast_dtype
from cellsegcli.inference import network_callable
from cellsegcli.models import load_model
model, tile, n, batch, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
dev = resolve_device(device)
net = network_callable(load_model(model).network, dev)
amp = autocast_dtype(dev)
x = torch.rand(batch, 1, tile, tile, device=dev)
def run():
    with torch.inference_mode(), torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
        return torch.sigmoid(net(x).float())
run()
if dev.type == "cuda": torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(max(1, n // batch)):
    run()
if dev.type == "cuda": torch.cuda.synchronize()
print(json.dumps({"seconds": time.perf_counter() - t0, "tiles": max(1, n // batch) * batch}))
"""


def _python(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _segment(stack: Path, tmp: Path, **config) -> dict:
    out = tmp / f"out-{time.monotonic_ns()}.zarr"
    return _python(RUN, json.dumps(config), str(stack), str(out))


def _write_subset(src: Path, dst: Path, frames: list[int], crop: int | None = None) -> Path:
    """A TYX stack of the given frames of ``src`` (optionally their top-left ``crop`` x ``crop``)."""
    import tifffile

    with tifffile.TiffFile(src) as tif:
        series = tif.series[0]
        first = series.asarray(key=frames[0])[:crop, :crop] if crop else series.asarray(key=frames[0])

        def pages():
            for t in frames:
                frame = series.asarray(key=t)
                yield frame[:crop, :crop] if crop else frame

        tifffile.imwrite(dst, pages(), shape=(len(frames), *first.shape), dtype=first.dtype,
                         metadata={"axes": "TYX"})
    return dst


def _write_mosaic(src: Path, dst: Path, frames: int, shape=(1912, 2568)) -> Path:
    """Frames of the papers' size stitched from real frames (mirrored tiles so edges stay continuous),
    streamed to ``dst`` one frame at a time."""
    import tifffile

    with tifffile.TiffFile(src) as tif:
        series = tif.series[0]
        n = series.shape[0]

        def pages():
            for t in range(frames):
                f = series.asarray(key=t % n)
                yield np.block([[f, f[:, ::-1], f], [f[::-1], f[::-1, ::-1], f[::-1]]])[: shape[0], : shape[1]]

        tifffile.imwrite(dst, pages(), shape=(frames, *shape), dtype=series.dtype, metadata={"axes": "TYX"})
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CELLSEG_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--model", default="phase")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--d4-frames", type=int, default=3, help="frames segmented with d4 TTA on CPU")
    parser.add_argument("--quick", action="store_true", help="skip the 37- vs 370-frame memory runs")
    parser.add_argument("--mosaic-frames", type=int, default=None,
                        help="frames of the 2568x1912 mosaic case (default: 37 on a GPU, none on CPU)")
    parser.add_argument("--cases", default="t98g,d4,memory,mosaic",
                        help="comma-separated subset of t98g (37 frames, no TTA), d4, memory (37 vs 370), mosaic")
    parser.add_argument("--post-workers", default="1",
                        help="comma-separated --post-workers values for the mosaic case (e.g. 1,2,4)")
    parser.add_argument("--label-on", default="cpu",
                        help="comma-separated --label-on values for the mosaic case (cpu, device)")
    parser.add_argument("--batch-size", default=None,
                        help="comma-separated --batch-size values for the mosaic case (default: the device's)")
    parser.add_argument("--mosaic-tta", default=None,
                        help="comma-separated TTA modes of the mosaic case (default: none,d4 on a GPU, none on CPU)")
    parser.add_argument("--rss-crop", type=int, default=512,
                        help="frame crop for the 37- vs 370-frame memory runs on CPU (0: whole frames)")
    args = parser.parse_args()
    stack = args.data / "t98g-timelapse" / "stack.tif"
    if not stack.is_file():
        raise SystemExit(f"{stack}: not found; pass --data to the shared data folder")
    import torch

    gpu = torch.cuda.is_available() and args.device in ("auto", "cuda") or args.device.startswith("cuda")
    base = {"model": args.model, "device": args.device, "overwrite": True}
    header = ["case", "device", "tta", "batch", "post workers", "label on", "frames", "frames/s", "peak RSS MB",
              "end-to-end s", "read s", "forward in run s", "label s", "tables s", "write s", "bare forward s",
              "overhead x"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header), flush=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        wanted = set(args.cases.split(","))
        cases = [("t98g 37 x 1022x1024", stack, "none", None)] if "t98g" in wanted else []
        if "d4" in wanted and gpu:
            cases.append(("t98g 37 x 1022x1024", stack, "d4", None))
        elif "d4" in wanted:
            cases.append((f"t98g {args.d4_frames} x 1022x1024", _write_subset(stack, tmp / "d4.tif",
                                                                             list(range(args.d4_frames))), "d4", None))
        if not args.quick and "memory" in wanted:
            crop = None if gpu else (args.rss_crop or None)
            size = f"{crop}x{crop}" if crop else "1022x1024"
            cases.append((f"t98g crops: 37 x {size}", _write_subset(stack, tmp / "x1.tif", list(range(37)), crop),
                          "none", None))
            cases.append((f"t98g crops x10: 370 x {size}",
                          _write_subset(stack, tmp / "x10.tif", list(range(37)) * 10, crop), "none", None))
        n_mosaic = args.mosaic_frames if args.mosaic_frames is not None else (37 if gpu else 0)
        if n_mosaic and "mosaic" in wanted:
            mosaic = _write_mosaic(stack, tmp / "mosaic.tif", n_mosaic)
            ttas = (args.mosaic_tta or ("none,d4" if gpu else "none")).split(",")
            batches = [int(b) for b in args.batch_size.split(",")] if args.batch_size else [None]
            for label_on in args.label_on.split(","):
                for workers in (int(w) for w in args.post_workers.split(",")):
                    for batch in batches:
                        for tta in ttas:
                            cases.append((f"mosaic {n_mosaic} x 2568x1912", mosaic, tta, workers, label_on, batch))
        for name, path, tta, workers, *more in cases:
            label_on, batch_size = more if more else ("cpu", None)
            s = _segment(path, tmp, tta=tta, label_on=label_on, **base,
                         **({"post_workers": workers} if workers else {}),
                         **({"batch_size": batch_size} if batch_size else {}))
            n_tta = {"none": 1, "flip": 4, "d4": 8}[tta]
            from cellsegcli.tiling import make_grid

            grid = make_grid(tuple(s["shape"]), tile=s["tile"], overlap=0.25)
            tiles = s["frames"] * len(grid.tiles) * n_tta
            batch = batch_size or (1 if s["device"] == "cpu" else 8)
            sample = min(tiles, 24)  # bare forward timed on up to 24 tiles, scaled to the run's tile count
            fwd = _python(FORWARD, args.model, str(grid.tile), str(sample), str(batch), args.device)
            bare = fwd["seconds"] * tiles / fwd["tiles"]
            stages = s.get("stage_seconds") or {}
            row = [name, s["device"], tta, batch, workers or "default", s["label_on"], s["frames"], s["frames"] / s["seconds"],
                   s["peak_rss_mb"], s["seconds"], stages.get("read", float("nan")), s["forward_seconds"],
                   *(stages.get(k, float("nan")) for k in ("label", "tables", "write")), bare, s["seconds"] / bare]
            print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |", flush=True)
            print(f"done: {name} {tta}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
