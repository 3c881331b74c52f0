"""Post-processing of one 2568x1912 frame on one thread: the reference labelling (the whole-frame
watershed) against the landed one, and the per-cell / per-frame tables; prints a table of seconds and
the ratio, measured in one run, and checks that the labels agree.

    python benchmarks/postprocess.py [--data ../shared/data] [--model phase] [--repeat 3]

The probabilities are real: the shipped model's on a mosaic of T98G frame 0 (mirrored tiles, as
benchmarks/segment.py builds them), computed once (CPU, no TTA) and cached in runs/post/mosaic.npz.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def mosaic_probabilities(data: Path, model_name: str, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    if cache.is_file():
        saved = np.load(cache)
        return saved["prob"], saved["image"]
    import tifffile
    import torch

    from cellsegcli.models import load_models
    from cellsegcli.normalize import normalize
    from cellsegcli.pipeline import SegmentConfig, make_predictor

    f = tifffile.imread(data / "t98g-timelapse" / "stack.tif", key=0)
    image = np.block([[f, f[:, ::-1], f], [f[::-1], f[::-1, ::-1], f[::-1]]])[:1912, :2568]
    model = load_models(model_name)
    predictor, _ = make_predictor(model, torch.device("cpu"), SegmentConfig(model=model_name))
    prob = next(iter(predictor.predict_stream(iter([normalize(image, model.config.percentiles)]))))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, prob=prob.astype(np.float32), image=image)
    return prob, image


def best_of(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CELLSEG_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--model", default="phase")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import threadpoolctl

    from cellsegcli.instances import label_instances, label_instances_reference
    from cellsegcli.models.folder import find_model, read_config
    from cellsegcli.morphology import cell_table, frame_table_row

    prob, image = mosaic_probabilities(args.data, args.model, ROOT / "runs" / "post" / "mosaic.npz")
    config = read_config(find_model(args.model))
    kw = dict(threshold=config.threshold, seed_threshold=config.seed_threshold, min_size=config.min_size,
              holes=config.holes)
    with threadpoolctl.threadpool_limits(1):
        t_ref, ref = best_of(args.repeat, lambda: label_instances_reference(prob[0], prob[1], **kw))
        t_new, new = best_of(args.repeat, lambda: label_instances(prob[0], prob[1], **kw))
        t_tab, _ = best_of(args.repeat, lambda: (cell_table(new, image), frame_table_row(new)))
    same = float(np.mean(ref == new))
    print(f"2568x1912 mosaic of T98G frame 0, model {args.model}: {int(new.max())} cells; one thread, best of "
          f"{args.repeat}; labels equal on {100 * same:.4f} % of pixels")
    print("| step | reference s | landed s | ratio |")
    print("|---|---|---|---|")
    print(f"| label_instances | {t_ref:.3f} | {t_new:.3f} | {t_ref / t_new:.2f}x |")
    print(f"| cell_table + frame_table_row | {t_tab:.3f} | {t_tab:.3f} | 1.00x |")
    print(f"| in all | {t_ref + t_tab:.3f} | {t_new + t_tab:.3f} | {(t_ref + t_tab) / (t_new + t_tab):.2f}x |")


if __name__ == "__main__":
    main()
