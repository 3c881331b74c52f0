"""Post-processing of one 2568x1912 frame on one thread: ``label_instances`` + ``cell_table`` +
``frame_table_row`` as landed, against the same functions at an earlier commit (default 3b4e3b2, before
this work; read with ``git show``) and against the in-tree references (``label_instances_reference``,
``cell_table_reference``); prints a table of seconds and ratios measured in one run, the object F1 between
the labels and the largest table difference.

    python benchmarks/postprocess.py [--data ../shared/data] [--model phase] [--repeat 3] [--baseline 3b4e3b2]
        [--torch-device cpu|cuda|none]

The torch labeller (``cellsegcli.device_labels``, ``--label-on device``) gets a row too, timed on
``--torch-device`` with the probabilities already there (as in ``cellseg segment``) and the labels copied back.

The probabilities are real: the shipped model's on a mosaic of T98G frame 0 (mirrored tiles, as
benchmarks/segment.py builds them), computed once (on the GPU when there is one, else the CPU; no TTA) and
cached in runs/post/mosaic.npz (mosaic-NAME.npz for another --model).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import subprocess
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
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")   # the probabilities only
    predictor, _ = make_predictor(model, device, SegmentConfig(model=model_name, tta="none"))
    prob = next(iter(predictor.predict_stream(iter([normalize(image, model.config.percentiles)]))))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, prob=prob.astype(np.float32), image=image)
    return prob, image


def baseline_modules(commit: str, folder: Path):
    """``instances`` and ``morphology`` as they were at ``commit`` (they import only numpy, scipy and
    scikit-image), or None outside a git checkout."""
    modules = []
    for name in ("instances", "morphology"):
        path = folder / f"{name}_{commit}.py"
        if not path.is_file():
            try:
                text = subprocess.run(["git", "show", f"{commit}:cellsegcli/{name}.py"], cwd=ROOT, check=True,
                                      capture_output=True, text=True).stdout
            except (OSError, subprocess.CalledProcessError):
                return None
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        spec = importlib.util.spec_from_file_location(f"baseline_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


def torch_labeller(device: str, prob: np.ndarray):
    """``label_instances``'s signature over the torch labeller, the probabilities put on ``device`` once
    (they are there already in ``cellseg segment``); the labels come back to the host (synchronising)."""
    import torch

    from cellsegcli.device_labels import label_instances_torch

    dev = torch.device(device)
    on_device = torch.from_numpy(prob).to(dev)

    def label(fg, interior, *, threshold=0.5, seed_threshold=0.5, min_size=0, holes=False):
        return label_instances_torch(on_device[0], on_device[1], threshold=threshold, seed_threshold=seed_threshold,
                                     min_size=min_size, holes=holes).cpu().numpy().view(np.uint32)

    label(None, None)   # first call: kernels and allocations
    return label


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
    parser.add_argument("--baseline", default="3b4e3b2", help="commit whose code is timed as the baseline")
    parser.add_argument("--torch-device", default="cpu", help="device of the torch labeller's row (none: no row)")
    args = parser.parse_args()
    import threadpoolctl

    from cellsegcli.instances import label_instances, label_instances_reference
    from cellsegcli.metrics import object_scores
    from cellsegcli.models.folder import find_model, read_config
    from cellsegcli.morphology import cell_table, cell_table_reference, frame_table_row

    cache = "mosaic.npz" if args.model == "phase" else f"mosaic-{Path(args.model).name}.npz"
    prob, image = mosaic_probabilities(args.data, args.model, ROOT / "runs" / "post" / cache)
    config = read_config(find_model(args.model))
    kw = dict(threshold=config.threshold, seed_threshold=config.seed_threshold, min_size=config.min_size,
              holes=config.holes)
    rows = {"landed": (label_instances, cell_table, frame_table_row),
            "in-tree reference": (label_instances_reference, cell_table_reference, frame_table_row)}
    old = baseline_modules(args.baseline, ROOT / "runs" / "post" / "baseline")
    if old is not None:
        rows[f"commit {args.baseline}"] = (old[0].label_instances, old[1].cell_table, old[1].frame_table_row)
    if args.torch_device != "none":
        rows[f"torch labeller on {args.torch_device}"] = (torch_labeller(args.torch_device, prob), cell_table,
                                                          frame_table_row)
    label_instances(prob[0][:64, :64], prob[1][:64, :64], **kw)   # compile / load the numba kernels first
    cell_table(np.ones((4, 4), np.uint32), image[:4, :4])
    times, results = {}, {}
    with threadpoolctl.threadpool_limits(1):
        for name, (label, table, frame_row) in rows.items():
            accepted = {k: v for k, v in kw.items() if k in inspect.signature(label).parameters}   # 3b4e3b2: no holes
            t_label, labels = best_of(args.repeat, lambda: label(prob[0], prob[1], **accepted))
            t_table, (cells, _) = best_of(args.repeat, lambda: (table(labels, image), frame_row(labels)))
            times[name], results[name] = (t_label, t_table), (labels, cells)
    base = f"commit {args.baseline}" if old is not None else "in-tree reference"
    ref_labels, ref_cells = results[base]
    print(f"2568x1912 mosaic of T98G frame 0, model {args.model}: {int(ref_labels.max())} cells; one thread, "
          f"best of {args.repeat}; ratios, F1 and equal pixels against {base}; table difference: the largest "
          "|difference| of any column between that code's cell_table and cell_table_reference, both on the landed labels "
          "(3b4e3b2 did not fill holes: the pixels that differ)")
    print("| code | label_instances s | cell_table + frame_table_row s | in all s | ratio | object F1 | "
          "labels equal | table difference |")
    print("|---|---|---|---|---|---|---|---|")
    t_base = sum(times[base])
    reference_cells = cell_table_reference(results["landed"][0], image)
    for name, (t_label, t_table) in times.items():
        labels, cells = results[name]
        f1 = object_scores(labels, ref_labels)["f1"]
        same = 100 * float(np.mean(labels == ref_labels))
        same_input = rows[name][1](results["landed"][0], image)   # this code's table of the landed labels
        diff = max(float(np.nanmax(np.abs(same_input[k] - reference_cells[k]), initial=0)) for k in reference_cells)
        diff_text = f"{diff:.1e}"
        print(f"| {name} | {t_label:.3f} | {t_table:.3f} | {t_label + t_table:.3f} | "
              f"{t_base / (t_label + t_table):.2f}x | {f1:.4f} | {same:.4f} % | {diff_text} |")


if __name__ == "__main__":
    main()
