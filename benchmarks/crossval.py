"""Held-out scores by k-fold cross-validation: every frame scored once, by a model that never saw it and
whose best epoch and thresholds it did not choose.

    python benchmarks/crossval.py ANNOTATIONS -o runs/cv/phase --folds 5 [--same set23,set40]
        [--epochs 20 --steps-per-epoch 40 --lr 1e-3 --schedule cosine --crop 256 --loss bce-dice --init none]
        [--tta none] [--test DIR [--ensemble]] [--by-kind]

Groups: the annotated frames of one stack are one group (as ``cellseg train`` splits them), and ``--same``
joins named images into one (a field imaged twice; repeat it for several). Groups are dealt into ``--folds``
folds (seeded). For fold i its frames are the test frames; of the other groups a seeded ``--val-fraction``
validates (chooses the best epoch and calibrates the thresholds, as every ``cellseg train``) and the rest
train. Reported: the mean +- std over all held-out frames, the mean +- std of the fold means, and the
scores pooled over all frames. ``--test DIR`` also scores every fold model on DIR (images no fold saw), and
``--ensemble`` the average of the k fold models' probabilities there, with its cost per image relative to
one model. ``--by-kind`` splits the held-out table by image kind (fluorescence, brightfield, stained tissue).

Resumable: a finished fold (``OUT/fold-i/scores.json``) is skipped, a fold cut short continues from its
``last.pt``. ``--report`` trains nothing and prints the tables of the folds finished so far; ``--only 3`` trains fold 3 alone
(e.g. one fold per machine or session). Until every fold has finished the tables go to ``partial.json``, not
``crossval.json``. On this 2-core machine one fold of 30 epochs x 40
steps takes ~22 minutes on one thread (phase, 26 training frames; nuclei, 360 images: ~35 with scoring);
``--recalibrate`` re-chooses a finished fold's post-processing with today's calibration and scores it again.
``--report --tta d4`` scores the finished folds' test frames again with that TTA (``scores[-recalibrated]-d4.json``,
kept); the post-processing stays the one chosen without TTA.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cellsegcli.device import resolve_device
from cellsegcli.training.data import find_pairs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune import link_subset  # noqa: E402
from scores import COLUMNS, aggregate, by_kind, print_table, run, score_model  # noqa: E402


def groups_of(pairs, same: list[str] = ()) -> list[list]:
    """Pairs grouped: the frames of one stack together, and the images named in each ``same`` entry
    (comma-separated names) together; groups in the order of their first pair."""
    key = {}
    for entry in same:
        names = [n.strip() for n in entry.split(",") if n.strip()]
        for n in names:
            key[n] = names[0]
    groups: dict[str, list] = {}
    for p in pairs:
        groups.setdefault(key.get(p.name, str(p.image)), []).append(p)
    return list(groups.values())


def make_folds(groups: list[list], k: int, seed: int) -> list[list[int]]:
    """Indices of the groups in each of ``k`` folds: a seeded permutation dealt into nearly equal parts
    (by number of frames: each group goes to the fold that has the fewest frames so far)."""
    if not 2 <= k <= len(groups):
        raise SystemExit(f"error: --folds {k}: need between 2 and {len(groups)} (the number of groups)")
    order = np.random.default_rng(seed).permutation(len(groups))
    folds: list[list[int]] = [[] for _ in range(k)]
    sizes = [0] * k
    for g in sorted(order, key=lambda i: -len(groups[i])):   # stable: big groups first, then the permutation
        f = int(np.argmin(sizes))
        folds[f].append(int(g))
        sizes[f] += len(groups[g])
    return folds


def fold_split(groups: list[list], folds: list[list[int]], i: int, val_fraction: float, seed: int):
    """(train, val, test) pairs of fold ``i``: its groups test; of the others a seeded share validates."""
    rest = [g for j, f in enumerate(folds) if j != i for g in f]
    order = np.random.default_rng(seed + i).permutation(rest)
    n_val = min(len(rest) - 1, max(1, round(len(rest) * val_fraction)))

    def pairs_of(indices) -> list:
        return [p for g in sorted(indices) for p in groups[g]]

    return pairs_of(order[n_val:]), pairs_of(order[:n_val]), pairs_of(folds[i])


def train_fold(data: Path, out: Path, args, device) -> Path:
    """Train one fold's model (or continue it) with the recipe of ``args``; returns its folder."""
    from cellsegcli.training.loop import TrainConfig, checkpoint_path, train

    config = TrainConfig(architecture=args.arch, init=args.init, epochs=args.epochs, patience=args.epochs,
                         lr=args.lr, batch_size=args.batch_size, crop=args.crop, seed=args.seed,
                         steps_per_epoch=args.steps_per_epoch, schedule=args.schedule, loss=args.loss,
                         name=out.name, command=" ".join(sys.argv), max_minutes=args.max_minutes,
                         loader_workers=args.loader_workers, interior_width=args.interior_width,
                         border_weight=args.border_weight)

    def on_epoch(r) -> None:
        print(f"  {out.name} epoch {r.epoch}/{r.epochs}: train {r.train_loss:.4f}, val {r.val_loss:.4f}, "
              f"Jaccard {r.val_jaccard:.4f}, {r.seconds:.0f} s{' *' if r.improved else ''}", file=sys.stderr,
              flush=True)

    result = train(data, out, config, device=device, resume=checkpoint_path(out).is_file(), on_epoch=on_epoch)
    if result.stopped.startswith("reached --max-minutes"):
        raise SystemExit(f"{out}: stopped by --max-minutes at epoch {result.epochs_run}; rerun to continue")
    return out


def recalibrate_fold(folder: Path, groups, folds, i: int, args, device) -> dict:
    """Fold ``i``'s model calibrated again on its own validation frames (``model-recalibrated``), scored on its
    test frames (``scores-recalibrated.json``, kept: later runs reuse it)."""
    from cellsegcli.calibrate import calibrate_folder
    from cellsegcli.io.atomic import remove_path

    done = folder / scores_name(args.tta, "-recalibrated")
    target = folder / "model-recalibrated"
    if not done.is_file():
        _, _, test_pairs = fold_split(groups, folds, i, args.val_fraction, args.seed)
        if not (target / "config.json").is_file():   # calibrated once, without TTA; other --tta reuse it
            remove_path(target)
            # chosen again as training chooses today: the fold's current setting is no choice to protect
            result = calibrate_folder(str(folder / "model"), folder / "data" / "val", device, out=target,
                                      margin=0.0, size_margin=0.0)
            c = result.chosen
            print(f"fold {i} recalibrated: threshold {c.threshold}, seed {c.seed_threshold}, smallest cell "
                  f"{result.model_min_size} px", file=sys.stderr, flush=True)
        done.write_text(json.dumps(score_model(str(target), test_pairs, tta=args.tta, device=device), indent=1))
    return json.loads(done.read_text())


def scores_name(tta: str, kind: str = "") -> str:
    """A fold's score file: ``scores{kind}.json`` without TTA, ``scores{kind}-{tta}.json`` with it."""
    return f"scores{kind}.json" if tta == "none" else f"scores{kind}-{tta}.json"


def held_out_report(per_fold: list[dict], fold_ids: list[int], args, tag: str) -> dict:
    """Print the held-out tables of the finished folds; returns them for the JSON report."""
    rows = [r for f in per_fold for r in f["rows"]]
    label = f"{args.folds}-fold" if len(per_fold) == args.folds else f"{len(per_fold)} of {args.folds} folds"
    held_out = {"model": label + tag, "architecture": args.arch, "tta": args.tta, "frames": len(rows),
                **aggregate(rows)}
    tables = [held_out] + (by_kind([{**held_out, "rows": rows}]) if args.by_kind else [])
    print_table(tables, f"held out{tag}: {len(rows)} frames of {args.annotations}, each scored by the fold model "
                        f"that never saw it; mean +- std over frames")
    means = fold_means(per_fold)
    print("over folds (mean +- std of the fold means): " + ", ".join(
        f"{k} {means[k]['mean']:.3f} +- {means[k]['std']:.3f}" for k in COLUMNS))
    return {"held_out": held_out, "over_folds": means, "folds": [
        {"fold": i, "test": [r["name"] for r in f["rows"]], "summary": f["summary"]} for i, f in zip(fold_ids, per_fold)]}


def fold_means(per_fold: list[dict]) -> dict:
    """Mean and std over folds of each fold's mean score."""
    out = {}
    for key in COLUMNS:
        values = np.array([f["summary"][key]["mean"] for f in per_fold], float)
        out[key] = {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values, ddof=1)) if len(values) > 1
                    else float("nan")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--same", action="append", default=[], help="comma-separated names of one field")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="of the training folds' groups")
    parser.add_argument("--arch", default="resnet18-unet")
    parser.add_argument("--init", default="none")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps-per-epoch", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--schedule", choices=["plateau", "cosine"], default="cosine")
    parser.add_argument("--loss", choices=["bce-dice", "bce-lovasz"], default="bce-dice")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--interior-width", type=int, help="erosion of the interior target, px (default 2)")
    parser.add_argument("--border-weight", type=float, default=0.0,
                        help="U-Net's w0: extra loss weight between close cells (default 0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, help="per fold; rerun to continue")
    parser.add_argument("--loader-workers", type=int, default=0, help="processes making the training batches")
    parser.add_argument("--tta", choices=["none", "flip", "d4"], default="none")
    parser.add_argument("--test", type=Path, help="an annotated folder no fold trains on")
    parser.add_argument("--ensemble", action="store_true", help="with --test: also score the fold ensemble")
    parser.add_argument("--by-kind", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--recalibrate", action="store_true",
                        help="also calibrate each finished fold's model again on its validation frames with today's "
                             "calibration (thresholds, then the smallest cell) and score its test frames with it")
    parser.add_argument("--only", help="comma-separated fold numbers to train (the others are reported if finished)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: the tables of the folds finished so far (OUT/partial.json)")
    args = parser.parse_args()
    if args.ensemble and args.test is None:
        raise SystemExit("error: --ensemble is scored on --test DIR (the folds' own frames were seen by the others)")
    only = None if args.only is None else {int(i) for i in args.only.split(",")}
    if only is not None and not only <= set(range(args.folds)):
        raise SystemExit(f"error: --only {args.only}: folds are numbered 0 to {args.folds - 1}")
    device = resolve_device(args.device)
    pairs = find_pairs(args.annotations)
    groups = groups_of(pairs, args.same)
    folds = make_folds(groups, args.folds, args.seed)
    per_fold, models, fold_ids, recalibrated = [], [], [], []
    for i in range(args.folds):
        folder = args.out / f"fold-{i}"
        done = folder / scores_name(args.tta)
        model_dir = folder / "model"
        trained = (folder / "scores.json").is_file() or done.is_file()   # scores.json: TTA none, after training
        if (args.report or (only is not None and i not in only)) and not trained:
            continue
        if trained and not done.is_file():   # a finished fold scored again with another --tta
            test_pairs = fold_split(groups, folds, i, args.val_fraction, args.seed)[2]
            done.write_text(json.dumps(score_model(str(model_dir), test_pairs, tta=args.tta, device=device), indent=1))
        if not done.is_file():
            train_pairs, val_pairs, test_pairs = fold_split(groups, folds, i, args.val_fraction, args.seed)
            print(f"fold {i}: {len(train_pairs)} train, {len(val_pairs)} validate, {len(test_pairs)} test "
                  f"({', '.join(p.name for p in test_pairs[:8])}{' ...' if len(test_pairs) > 8 else ''})",
                  file=sys.stderr, flush=True)
            link_subset(train_pairs, folder / "data")
            link_subset(val_pairs, folder / "data" / "val")
            train_fold(folder / "data", model_dir, args, device)
            result = score_model(str(model_dir), test_pairs, tta=args.tta, device=device)
            done.write_text(json.dumps(result, indent=1))
        per_fold.append(json.loads(done.read_text()))
        models.append(str(model_dir))
        fold_ids.append(i)
        if args.recalibrate:
            recalibrated.append(recalibrate_fold(folder, groups, folds, i, args, device))
    if not per_fold:
        raise SystemExit(f"{args.out}: no fold has finished yet (fold-i/scores.json)")
    report = held_out_report(per_fold, fold_ids, args, "")
    if recalibrated:
        report["recalibrated"] = held_out_report(recalibrated, fold_ids, args, ", recalibrated")
    if args.test is not None:
        test_pairs = find_pairs(args.test)
        results = [score_model(m, test_pairs, tta=args.tta, device=device) for m in models]
        if args.ensemble:
            results.append(score_model(models, test_pairs, tta=args.tta, device=device))
            single = float(np.mean([r["seconds"] for r in results[:-1]]))
            results[-1]["model"] = f"ensemble of {len(models)}"
            print(f"ensemble: {results[-1]['seconds'] / single:.2f}x the time of one model per image "
                  f"({results[-1]['seconds'] / len(test_pairs):.2f} s vs {single / len(test_pairs):.2f} s)")
        print_table(results, f"{len(test_pairs)} images of {args.test} (no fold trained on them)")
        report["test"] = [{k: v for k, v in r.items() if k != "rows"} for r in results]
    complete = len(per_fold) == args.folds and not args.report
    (args.out / ("crossval.json" if complete else "partial.json")).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    run(main)
