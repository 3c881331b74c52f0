"""Peer baseline: the same model through MONAI's ``sliding_window_inference`` with one pass per TTA transform,
then scikit-image post-processing (the whole-frame watershed of ``label_instances_reference`` and
``regionprops_table``) and a zarr chunk per frame, against ``cellseg segment`` on the same frames and
device, in one run; prints a table of frames/s and the ratio.

    python benchmarks/peer.py [--data ../shared/data] [--model phase] [--device auto] [--tta d4]
        [--frames 37] [--peer-frames 8] [--size 1912,2568] [--batch-size 8] [--post-workers N] [--out table.md]

Frames are mosaics of real T98G frames (``benchmarks/segment.py``'s). The peer loop is what a user writes
with MONAI (pip install monai): frames one at a time, eight whole-frame sliding-window passes for d4, the
probabilities back on the host, post-processing on the same thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PEER_PROPERTIES = ("label", "area", "centroid", "bbox", "perimeter_crofton", "eccentricity", "solidity",
                   "axis_major_length", "axis_minor_length", "orientation", "intensity_mean")


def peer_run(stack: Path, model_name: str, device: str, tta: str, frames: int, batch: int, out: Path) -> dict:
    """The MONAI loop over the first ``frames`` frames of ``stack``; seconds from loading the model to the
    last frame written, as ``cellseg segment``'s summary counts them."""
    import tifffile
    import torch
    import zarr
    from monai.inferers import sliding_window_inference
    from skimage.measure import regionprops_table

    from cellsegcli import tta as _tta
    from cellsegcli.device import autocast_dtype, resolve_device
    from cellsegcli.inference import network_callable
    from cellsegcli.instances import label_instances_reference
    from cellsegcli.models import load_model
    from cellsegcli.normalize import normalize

    started = time.perf_counter()
    dev = resolve_device(device)
    model = load_model(model_name)
    config = model.config
    net = network_callable(model.network, dev)
    amp = autocast_dtype(dev)
    tile = config.tile
    transforms = _tta.transforms(tta)
    with tifffile.TiffFile(stack) as tif:
        series = tif.series[0]
        n = min(frames, series.shape[0])
        shape = series.shape[1:]
        labels_out = zarr.create_array(out, shape=(n, *shape), chunks=(1, *shape), dtype="uint32")

        def forward(x):
            with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                return net(x).float()

        with torch.inference_mode():
            forward(torch.zeros(1, 1, tile, tile, device=dev))   # warm-up
        cells = 0
        for t in range(n):
            raw = series.asarray(key=t)
            x = torch.from_numpy(normalize(raw, config.percentiles))[None, None].to(dev)
            acc = None
            for k in transforms:
                with torch.inference_mode():
                    y = sliding_window_inference(_tta.apply(x, k), roi_size=(tile, tile), sw_batch_size=batch,
                                                 predictor=forward, overlap=0.25, mode="gaussian")
                    y = _tta.invert(torch.sigmoid(y), k)
                acc = y if acc is None else acc + y
            prob = (acc / len(transforms))[0].cpu().numpy()
            labels = label_instances_reference(prob[0], prob[1] if prob.shape[0] > 1 else None,
                                               threshold=config.threshold, seed_threshold=config.seed_threshold,
                                               min_size=config.min_size, holes=config.holes)
            regionprops_table(labels, raw, properties=PEER_PROPERTIES)
            labels_out[t] = labels
            cells += int(labels.max())
        seconds = time.perf_counter() - started
    return {"frames": n, "seconds": seconds, "cells_per_frame": cells / max(n, 1), "device": str(dev)}


def cellseg_run(stack: Path, model_name: str, device: str, tta: str, batch: int, workers: int | None,
                out: Path) -> dict:
    from cellsegcli import pipeline

    config = pipeline.SegmentConfig(model=model_name, device=device, tta=tta, batch_size=batch,
                                    post_workers=workers, overwrite=True)
    return pipeline.segment(stack, config, out=out).summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CELLSEG_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--model", default="phase")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tta", default="d4", choices=["none", "flip", "d4"])
    parser.add_argument("--frames", type=int, default=37, help="frames cellseg segments")
    parser.add_argument("--peer-frames", type=int, default=8, help="frames the MONAI loop segments (it is slower)")
    parser.add_argument("--size", default="1912,2568", help="frame size Y,X of the mosaic")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--post-workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the table (and JSON) here")
    args = parser.parse_args()
    try:
        import monai  # noqa: F401
    except ImportError:
        raise SystemExit("MONAI is not installed: pip install monai (or the wheels benchmarks/gpu.sh carries)")
    from segment import _write_mosaic

    stack = args.data / "t98g-timelapse" / "stack.tif"
    if not stack.is_file():
        raise SystemExit(f"{stack}: not found; pass --data to a folder holding t98g-timelapse/stack.tif")
    shape = tuple(int(v) for v in args.size.split(","))
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        mosaic = _write_mosaic(stack, tmp / "mosaic.tif", max(args.frames, args.peer_frames), shape=shape)
        ours = cellseg_run(mosaic, args.model, args.device, args.tta, args.batch_size, args.post_workers,
                           tmp / "cellseg.zarr")
        peer = peer_run(mosaic, args.model, args.device, args.tta, args.peer_frames, args.batch_size,
                        tmp / "peer.zarr")
    fps_ours = ours["frames"] / ours["seconds"]
    fps_peer = peer["frames"] / peer["seconds"]
    size = f"{shape[1]}x{shape[0]}"
    lines = [
        f"{args.model} model, tta {args.tta}, {size} mosaics of T98G frames, device {peer['device']}, one run",
        "",
        "| pipeline | frames | seconds | frames/s | cells/frame | ratio |",
        "|---|---|---|---|---|---|",
        f"| cellseg segment (post workers {args.post_workers or 'default'}) | {ours['frames']} | "
        f"{ours['seconds']:.1f} | {fps_ours:.3g} | {ours['cells_per_frame_mean']:.1f} | {fps_ours / fps_peer:.2f}x |",
        f"| MONAI sliding window + per-transform TTA + scikit-image | {peer['frames']} | {peer['seconds']:.1f} | "
        f"{fps_peer:.3g} | {peer['cells_per_frame']:.1f} | 1.00x |",
    ]
    print("\n".join(lines))
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({"cellseg": ours, "peer": peer}, indent=1, default=str))


if __name__ == "__main__":
    main()
