"""The command line: the only module that imports typer. Each command parses options, builds a config,
calls one function of :mod:`cellsegcli.pipeline` (or the training loop) and renders its result.

Exit codes: 0 success, 1 a problem with the input or options (one line on stderr), 2 a malformed command
line as click reports it (unknown option, bad choice or type, missing argument: three plain lines), 3 a
quality gate failed (``evaluate --min-jaccard``), 70 an internal error (a bug: please report it), 130
Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import __version__

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_GATE, EXIT_INTERNAL = 0, 1, 2, 3, 70
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143

app = typer.Typer(
    name="cellseg",
    help="Segment cells in time-lapse microscopy (phase contrast, brightfield, nuclei).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

class _Command(typer.core.TyperCommand):
    """A command whose ``--help`` is listed without a value, like the other flags."""

    def get_help_option(self, ctx):   # noqa: ANN001, ANN201 - click's signature
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


def _flag(*names: str, **kwargs: Any) -> Any:
    """An on/off option: shown without a value in the help (it takes none)."""
    return typer.Option(*names, metavar="", **kwargs)


DebugOpt = Annotated[bool, _flag("--debug", help="Show the full traceback on errors.")]
JsonOpt = Annotated[bool, _flag("--json", help="Print a machine-readable JSON summary on stdout.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]


class Schedule(str, Enum):
    plateau = "plateau"
    cosine = "cosine"


class Loss(str, Enum):
    bce_dice = "bce-dice"
    bce_lovasz = "bce-lovasz"


class Sampling(str, Enum):
    area = "area"
    image = "image"


class ZMode(str, Enum):
    slices = "slices"
    max = "max"


class Arch(str, Enum):
    unet = "resnet18-unet"
    fpn = "resnet18-fpn"
    unet_rp = "resnet18-unet-rp"


def _run(action: Callable[[], Any], *, debug: bool, as_json: bool = False) -> Any:
    """Run a command body: user errors -> one line + exit 1; anything else -> internal error, exit 70.
    With ``--json`` an error is also a JSON document on stdout: ``{"error": ..., "exit_code": ...}``."""
    from . import console
    from .errors import CellsegError

    def fail(message: str, code: int) -> typer.Exit:
        console.error(message)
        if as_json:
            console.print_json({"error": message, "exit_code": code})
        return typer.Exit(code)

    try:
        return action()
    except CellsegError as exc:
        if debug:
            raise
        raise fail(str(exc), EXIT_INPUT) from None
    except KeyboardInterrupt as exc:
        from .errors import Terminated

        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        raise fail(f"{what}; nothing was left behind that looks complete (segment --resume continues a run)",
                   EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED) from None
    except typer.Exit:
        raise
    except Exception as exc:  # an internal error: say so, and how to get details
        if debug:
            raise
        raise fail(f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())} (rerun with --debug for "
                   f"the traceback, and report it)", EXIT_INTERNAL) from None


def _command_line(ctx: typer.Context) -> str:
    """The running command with every option spelled out (an exact, reproducible equivalent)."""
    words = ["cellseg", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in ("debug", "as_json") or value is None or value is False:
            continue
        value = value.value if isinstance(value, Enum) else value
        if param.param_type_name == "argument":
            words.append(str(value))
        elif value is True:
            words.append(param.opts[0])
        else:
            words += [param.opts[0], str(value)]
    return shlex.join(words)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cellseg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[Optional[bool], _flag("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """cellseg: segment cells in time-lapse microscopy."""


@app.command("train", cls=_Command)
def train_cli(
    ctx: typer.Context,
    annotations: Annotated[Path, typer.Argument(help="Folder with images/ + masks/ (or name_masks.tif files); "
                                                "a (T, Y, X) label stack trains on its non-empty frames; "
                                                "an optional val/ inside holds the validation set.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")],
    arch: Annotated[Arch, typer.Option("--arch", help="Architecture; the default scored best over both "
                                       "datasets at an equal budget (README).")] = Arch.unet,
    smp_arch: Annotated[Optional[str], typer.Option("--smp", help="Any smp architecture, e.g. Unet/resnet34 "
                                                     "(overrides --arch).")] = None,
    init: Annotated[str, typer.Option("--init", help="none, imagenet, default (fine-tune the shipped 'phase' "
                                      "model), a shipped model name or a model folder.")] = "none",
    imagenet_weights: Annotated[Optional[Path], typer.Option("--imagenet-weights", help="torchvision "
                                "resnet18-f37072fd.pth for --init imagenet (else downloaded when online).")] = None,
    epochs: Annotated[int, typer.Option("--epochs")] = 100,
    patience: Annotated[int, typer.Option("--patience", help="Early stopping patience (epochs).")] = 10,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 1e-3,
    schedule: Annotated[Schedule, typer.Option("--schedule", help="Learning-rate schedule: plateau halves it "
                        "when the validation loss stalls; cosine decays it to lr/100 at --epochs.")] = "plateau",
    sampling: Annotated[Sampling, typer.Option("--sampling", help="Which image each crop comes from: area draws "
                        "in proportion to image size, image draws every image equally (for mixed sizes scored "
                        "per image).")] = "area",
    loss: Annotated[Loss, typer.Option("--loss", help="bce-dice (the papers') or bce-lovasz (BCE + the "
                    "Lovász hinge, an IoU-aware loss).")] = "bce-dice",
    ema: Annotated[Optional[float], typer.Option("--ema", help="Validate and save a moving average of the "
                   "weights with this decay per step (e.g. 0.999: about the last 1000 steps).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    crop: Annotated[int, typer.Option("--crop", help="Training crop size (multiple of 32).")] = 256,
    interior_width: Annotated[Optional[int], typer.Option("--interior-width", help="Pixels each cell is eroded "
                              "by in the interior target that parts touching cells (default: the --init "
                              "model's, else 2).")] = None,
    border_weight: Annotated[float, typer.Option("--border-weight", help="Extra loss weight of the pixels "
                             "between touching or close cells (U-Net's w0, e.g. 10; sigma 5 px); 0: "
                             "unweighted.")] = 0.0,
    asinh: Annotated[Optional[float], typer.Option("--asinh", help="Give the network an input curve, asinh(x / "
                     "S) / asinh(1 / S) after the percentile normalisation, that lifts dim objects towards bright "
                     "ones (e.g. 0.05: an object at 10 % of the range goes in at 39 %); 0: none (default: the "
                     "--init model's).")] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Validation share when there is no "
                                                "val/ folder; the images that validated an --init model trained "
                                                "on this folder stay in validation.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    steps_per_epoch: Annotated[Optional[int], typer.Option("--steps-per-epoch", help="Batches per epoch "
                               "(default: about one pass over the training pixels).")] = None,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", help="Stop after this long, "
                           "checkpointed (continue with --resume).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name (default: folder name).")] = None,
    description: Annotated[Optional[str], typer.Option("--description", help="What the model is for, stored "
                           "in its config.json (default: what it was trained on, and how).")] = None,
    loader_workers: Annotated[int, typer.Option("--loader-workers", help="Processes making the augmented "
                              "batches (0: the training process; on a GPU give the spare cores so the GPU is kept "
                              "busy; any number >= 1 gives the same batches).")] = 0,
    resume: Annotated[bool, _flag("--resume", help="Continue from OUT/checkpoints/last.pt.")] = False,
    no_checkpoint: Annotated[bool, _flag("--no-checkpoint", help="Remove OUT/checkpoints/ (~170 MB, needed only "
                             "by --resume) once training has finished, leaving a ~30 MB model folder.")] = False,
    overwrite: Annotated[bool, _flag("--overwrite", help="Replace a model already in OUT.")] = False,
    calibrate: Annotated[bool, _flag("--calibrate/--no-calibrate", help="Choose the cell and seed "
                         "thresholds, then the smallest cell kept, on the validation frames after training.")] = True,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train or fine-tune a model on a folder of annotated images."""
    command = _command_line(ctx)

    def action() -> None:
        from dataclasses import asdict

        from . import console
        from .device import resolve_device
        from .training.loop import TrainConfig, train

        config = TrainConfig(
            architecture=f"smp:{smp_arch}" if smp_arch else arch.value, init=init,
            imagenet_weights=imagenet_weights, epochs=epochs, patience=patience, lr=lr, batch_size=batch_size,
            crop=crop, val_fraction=val_fraction, seed=seed, steps_per_epoch=steps_per_epoch, name=name,
            max_minutes=max_minutes, command=command, schedule=Schedule(schedule).value,
            calibrate=calibrate, sampling=Sampling(sampling).value, ema=ema, loss=Loss(loss).value,
            description=description, keep_checkpoint=not no_checkpoint, loader_workers=loader_workers,
            interior_width=interior_width, border_weight=border_weight, asinh=asinh,
        )
        dev = resolve_device(device)
        console.info(f"training {config.architecture} on {annotations} -> {out} ({dev})")

        def on_epoch(r) -> None:
            mark = " *" if r.improved else ""
            console.info(f"epoch {r.epoch}/{r.epochs}: train loss {r.train_loss:.4f}, val loss {r.val_loss:.4f}, "
                         f"val Jaccard {r.val_jaccard:.4f}, lr {r.lr:.2g}, {r.seconds:.0f} s{mark}")

        with console.progress("epoch", unit="batches", quiet=as_json) as report:
            result = train(annotations, out, config, device=dev, resume=resume, overwrite=overwrite, progress=report,
                           on_epoch=on_epoch, notify=console.info, warn=console.warn)
        summary = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
        if as_json:
            console.print_json(summary)
        else:
            console.info(f"best epoch {result.best_epoch}: val loss {result.best_val_loss:.4f}, "
                         f"val Jaccard {result.best_val_jaccard:.4f}; stopped: {result.stopped}; model in {out}")
            if result.calibration:
                a, b = result.calibration["after"], result.calibration["before"]
                size = result.calibration.get("sizes", {}).get("model_min_size")
                console.info(f"calibrated on {result.calibration['frames']} validation frames: threshold "
                             f"{a['threshold']}, seed threshold {a['seed_threshold']}"
                             f"{', clumps split' if a.get('split_clumps') else ''}"
                             f"{'' if size is None else f', smallest cell {size} px'} (Jaccard {b['jaccard']:.4f} -> "
                             f"{a['jaccard']:.4f}, F1 {b['f1']:.4f} -> {a['f1']:.4f})")

    _run(action, debug=debug, as_json=as_json)


MaxDistanceOpt = Annotated[Optional[float], typer.Option("--max-distance", help="Tracking: largest move of a "
                           "cell between frames, in pixels (default: one median cell diameter).")]
GapFramesOpt = Annotated[int, typer.Option("--gap-frames", help="Tracking: frames a cell may be missed and keep "
                         "its track.")]
DivisionsOpt = Annotated[bool, _flag("--divisions/--no-divisions", help="Tracking: detect divisions "
                         "(daughters start new tracks whose parent is the mother's).")]
DivisionsFirstOpt = Annotated[bool, _flag("--divisions-first", help="Tracking: find divisions before "
                              "closing gaps (for movies whose mitotic cells the model misses for a frame or two "
                              "before they divide; slower, and more false divisions where cells are missed at "
                              "random).")]
FrameIntervalOpt = Annotated[Optional[str], typer.Option("--frame-interval", help="Time between frames, e.g. 5min, "
                             "30s, 0.5h (default: the file's OME TimeIncrement or ImageJ finterval): the zarr's time "
                             "axis in seconds, the tables' time_s column, speeds in um/min.")]


def _link_options(max_distance: Optional[float], gap_frames: int, divisions: bool, divisions_first: bool = False):
    from .errors import CellsegError
    from .tracking import LinkOptions

    try:
        return LinkOptions(max_distance=max_distance, gap_frames=gap_frames, divisions=divisions,
                           divisions_first=divisions_first)
    except ValueError as exc:
        raise CellsegError(f"--max-distance/--gap-frames: {exc}") from None


def _interval(text: Optional[str]) -> Optional[float]:
    from .tracking.motility import parse_interval

    return None if text is None else parse_interval(text)


class TTA(str, Enum):
    auto = "auto"
    none = "none"
    flip = "flip"
    d4 = "d4"


class TableFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"


class LabelOn(str, Enum):
    cpu = "cpu"
    device = "device"


@app.command("segment", cls=_Command)
def segment_cli(
    inputs: Annotated[list[Path], typer.Argument(metavar="STACK", help="Stacks: TIFF/OME-TIFF/ImageJ files, folders of frames, "
                                                 "or nd2/czi/lif through bioio.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: next to each "
                   "input), or OUT.zarr for a single input.")] = None,
    model: Annotated[list[str], typer.Option("--model", "-m", metavar="NAME|FOLDER", help="Shipped model name (see `cellseg models`) "
                                             "or a model folder; repeat it to average several models' "
                                             "probabilities (an ensemble: the first one's thresholds apply, "
                                             "each costs its own forward pass).")] = ["phase"],
    tta: Annotated[TTA, typer.Option("--tta", help="Test-time augmentation: none, flip (4 flips), d4 (8 "
                   "rotations/flips, ~8x the time); auto = d4 on GPU, none on CPU.")] = TTA.auto,
    tile: Annotated[Optional[int], typer.Option("--tile", help="Tile size, a multiple of 32 (default: 1024 "
                    "on CPU, the model's on GPU).")] = None,
    overlap: Annotated[float, typer.Option("--overlap", help="Tile overlap as a fraction of the tile.")] = 0.25,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Tiles per forward pass "
                          "(default 8 on GPU, 1 on CPU).")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Cell probability threshold "
                         "(default: the model's).")] = None,
    seed_threshold: Annotated[Optional[float], typer.Option("--seed-threshold", help="Cell interior probability "
                              "that seeds a cell; higher splits fewer cells (default: the model's).")] = None,
    min_size: Annotated[Optional[int], typer.Option("--min-size", help="Smallest cell kept, in pixels.")] = None,
    split_clumps: Annotated[Optional[bool], _flag("--split-clumps/--no-split-clumps", help="Inside clumps "
                            "(foreground regions of twice the typical cell or more), split seeds that part at "
                            "higher interior levels: touching nuclei come apart (default: the model's; the "
                            "shipped nuclei model does).", show_default=False)] = None,
    diameter: Annotated[Optional[float], typer.Option("--diameter", help="Typical cell diameter in these images, "
                        "in pixels, when it differs from the model's (see `cellseg models`): frames are resized "
                        "so their cells match the model's training size, and the labels come back at full "
                        "size.")] = None,
    axes: Annotated[Optional[str], typer.Option("--axes", help="Override the file's axes, e.g. TYX, TCYX.")] = None,
    channel: Annotated[Optional[int], typer.Option("--channel", help="Channel to segment when there are "
                       "several.")] = None,
    frames: Annotated[Optional[str], typer.Option("--frames", metavar="START:STOP[:STEP]", help="Segment only "
                  "these frames (STOP excluded, e.g. 100:200 or 0:600:10); the tables keep the movie's frame "
                  "numbers and the zarr's time axis starts at START.")] = None,
    z: Annotated[Optional[ZMode], typer.Option("--z", help="A Z stack: segment each slice as "
                 "its own image (slices) or a maximum projection of each time point (max); a file with Z is "
                 "refused without it.")] = None,
    series: Annotated[Optional[int], typer.Option("--series", help="Image series of a TIFF that holds several "
                      "(such a file is refused without it).")] = None,
    pixel_size: Annotated[Optional[float], typer.Option("--pixel-size", help="Micrometres per pixel "
                          "(default: from the file's metadata).")] = None,
    no_image: Annotated[bool, _flag("--no-image", help="Do not copy the image into the zarr.")] = False,
    save_probabilities: Annotated[bool, _flag("--save-probabilities", help="Also store the cell "
                                  "probability (uint8).")] = False,
    table_format: Annotated[TableFormat, typer.Option("--table-format", help="csv or parquet.")] = TableFormat.csv,
    overwrite: Annotated[bool, _flag("--overwrite", help="Replace existing outputs.")] = False,
    resume: Annotated[bool, _flag("--resume", help="Continue an interrupted run (killed, Ctrl-C, a full "
                      "disk) of the same input, model and options from its last finished frame; the result is "
                      "the same as an uninterrupted run's.")] = False,
    gt: Annotated[Optional[Path], typer.Option("--gt", help="Ground-truth labels (TIFF stack, folder or zarr) to "
                  "score against; writes NAME.scores.csv.")] = None,
    device: DeviceOpt = "auto",
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="Spread frames over a Dask cluster: "
                         "tcp://HOST:8786, a scheduler .json file, or local[:N] (needs cellseg[distributed]; "
                         "workers must share the file system).")] = None,
    frames_per_task: Annotated[int, typer.Option("--frames-per-task", help="Frames per Dask task "
                               "(with --scheduler).")] = 8,
    post_workers: Annotated[Optional[int], typer.Option("--post-workers", help="Processes that turn "
                            "probabilities into labels and tables, frames still written in order (default: 1 "
                            "on CPU, the cores left after the GPU's feeder on a GPU).")] = None,
    label_on: Annotated[LabelOn, typer.Option("--label-on", help="Where cells are labelled: cpu (the post "
                        "workers; the reference) or device (torch, where the network ran: frees the CPU on a GPU; "
                        "labels agree with cpu's to object F1 >= 0.98, see docs/guide.md).")] = LabelOn.cpu,
    track: Annotated[bool, _flag("--track", help="Follow cells over time: labels/cells holds track ids "
                     "(one per cell's life; daughters get new ids), plus NAME.tracks.csv, NAME.napari-tracks.csv "
                     "and NAME.lineage.json.")] = False,
    max_distance: MaxDistanceOpt = None,
    gap_frames: GapFramesOpt = 2,
    divisions: DivisionsOpt = True,
    divisions_first: DivisionsFirstOpt = False,
    frame_interval: FrameIntervalOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Segment every frame of each stack into OME-Zarr labels and per-cell / per-frame tables."""

    def action() -> None:
        from . import console, pipeline
        from .errors import CellsegError

        link = _link_options(max_distance, gap_frames, divisions, divisions_first) if track else None
        config = pipeline.SegmentConfig(
            model=model[0] if len(model) == 1 else tuple(model), tta=tta.value, tile=tile, overlap=overlap, batch_size=batch_size, threshold=threshold,
            seed_threshold=seed_threshold, min_size=min_size, split_clumps=split_clumps, diameter=diameter,
            device=device, axes=axes, channel=channel, pixel_size=pixel_size, save_image=not no_image, save_probabilities=save_probabilities, table_format=table_format.value,
            overwrite=overwrite, gt=gt, track=track, link=link, frame_interval_min=_interval(frame_interval),
            post_workers=post_workers, resume=resume, series=series, frames=frames, z=z.value if z else None,
            label_on=label_on.value,
        )
        if gt is not None and len(inputs) > 1:
            raise CellsegError("--gt scores one stack; segment one input per call when giving ground truth")
        pipeline.check_inputs(inputs, config, out)   # all of them, before the first is segmented
        client = None
        if scheduler is not None:
            from .distributed import connect

            client = connect(scheduler)
        summaries = []
        try:
            for source in inputs:
                with console.progress(f"segment {source.name}", quiet=as_json) as report:
                    result = pipeline.segment(source, config, out=out, several=len(inputs) > 1, progress=report,
                                              notify=None if as_json else console.info, scheduler=client,
                                              frames_per_task=frames_per_task, warn=console.warn)
                summaries.append(_report_segment(source, result, gt, as_json))
        finally:
            if client is not None:
                client.close()
        if as_json:
            console.print_json(summaries[0] if len(summaries) == 1 else summaries)

    _run(action, debug=debug, as_json=as_json)


def _report_segment(source: Path, result, gt: Optional[Path], as_json: bool) -> dict:
    """One line per stack (and its scores) on the console; the summary dict for --json."""
    from . import console

    s = result.summary()
    if not as_json:
        console.info(f"{source}: {s['frames']} frames, {s['cells_total']} cells "
                     f"({s['cells_per_frame_mean']:.1f} per frame) in {s['seconds']:.1f} s "
                     f"({s['frames_per_second']:.2f} frames/s) -> {s['zarr']}, {s['cells_table']}, "
                     f"{s['frames_table']}")
        if result.tracking:
            tr = result.tracking
            console.info(f"tracks: {tr['tracks']} ({tr['divisions']} divisions) -> {tr['tracks_table']}, "
                         f"{tr['napari_tracks']}, {tr['lineage']}")
        if result.scores:
            sc = result.scores
            skipped = sc.get("unannotated_frames") or []
            note = f" ({len(skipped)} frames empty in the ground truth not scored)" if skipped else ""
            console.info(f"scores vs {gt}: pixel Jaccard {sc['jaccard']['mean']:.4f}, "
                         f"Dice {sc['dice']['mean']:.4f}, object F1@0.5 {sc['f1']['mean']:.4f}, "
                         f"mean AP {sc['mean_ap']['mean']:.4f}{note} -> {s['scores_table']}")
            from .error_kinds import describe

            console.info(f"errors: {describe(sc['errors'])}")
    return s

@app.command("evaluate", cls=_Command)
def evaluate_cli(
    pred: Annotated[Path, typer.Argument(help="Predicted labels: a .zarr from cellseg segment, a TIFF stack or a "
                                         "folder of images.")],
    gt: Annotated[Path, typer.Argument(help="Ground truth: the same kinds; binary masks or instance labels.")],
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Write the per-frame scores to this CSV.")] = None,
    min_jaccard: Annotated[Optional[float], typer.Option("--min-jaccard", help="Exit with code 3 when the mean "
                           "pixel Jaccard is below this.")] = None,
    tracks: Annotated[bool, _flag("--tracks", help="Score tracking instead: PRED is a tracked .zarr or a "
                      "CTC result folder, GT a CTC ground-truth folder (XX_GT with TRA/); CTC TRA, DET, LNK and "
                      "division F1 by py-ctcmetrics.")] = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Score predicted labels against ground truth: pixel Jaccard/Dice/precision/recall, object F1@0.5,
    DSB2018 mean AP and Cell Tracking Challenge SEG, per frame and as mean +- std; or, with --tracks,
    tracking against CTC ground truth."""

    def action() -> None:
        import math

        from . import console
        from .errors import CellsegError
        from .evaluation import evaluate

        if min_jaccard is not None and not (math.isfinite(min_jaccard) and 0 <= min_jaccard <= 1):
            raise CellsegError(f"--min-jaccard {min_jaccard}: give a Jaccard index between 0 and 1")
        if tracks:
            _evaluate_tracks(pred, gt, as_json)
            return

        with console.progress("evaluate", quiet=as_json) as report:
            result = evaluate(pred, gt, progress=report)
        if csv is not None:
            from .io.tables import write_table

            write_table({k: [r[k] for r in result.rows] for k in result.rows[0]}, csv, overwrite=True)
        if as_json:
            console.print_json(result.as_dict())
        else:
            names = {"jaccard": "pixel Jaccard", "dice": "pixel Dice", "precision": "pixel precision",
                     "recall": "pixel recall", "object_precision": "object precision @0.5",
                     "object_recall": "object recall @0.5", "f1": "object F1 @0.5", "mean_ap": "mean AP (DSB2018)",
                     "seg": "SEG (CTC)"}
            skipped = f", {len(result.unannotated)} empty in the ground truth not scored" if result.unannotated else ""
            console.table(f"{pred} vs {gt} ({len(result.rows)} frames{skipped})", ["metric", "mean", "std"],
                          [[label, result.summary[k]["mean"], result.summary[k]["std"]] for k, label in names.items()]
                          + [["pixel Jaccard, pooled over frames", result.pooled["jaccard"], ""],
                             ["object F1 @0.5, pooled over frames", result.pooled["f1"], ""],
                             ["SEG (CTC), pooled over frames", result.pooled["seg"], ""]])
            from .error_kinds import describe

            console.info(f"errors at IoU > 0.5: {describe(result.errors)}")
        mean = result.summary["jaccard"]["mean"]
        if min_jaccard is not None and not mean >= min_jaccard:
            console.error(f"mean pixel Jaccard {mean:.4f} is below --min-jaccard {min_jaccard}")
            raise typer.Exit(3)

    _run(action, debug=debug, as_json=as_json)


def _evaluate_tracks(pred: Path, gt: Path, as_json: bool) -> None:
    from . import console
    from .errors import CellsegError
    from .tracking.pipeline import score_tracks

    scores = score_tracks(pred, gt)
    if not scores.get("Valid"):
        raise CellsegError(f"{pred}: not a valid CTC result (py-ctcmetrics' checks failed); export it again with "
                           f"cellseg export --ctc")
    if as_json:
        console.print_json({"result": str(pred), "gt": str(gt), **scores})
        return
    names = {"TRA": "TRA (CTC tracking accuracy)", "DET": "DET (detection)", "LNK": "LNK (linking)",
             "BC(0)": "division F1, exact frame (BC(0))", "BC(2)": "division F1, +-2 frames (BC(2))",
             "CT": "complete tracks (CT)", "TF": "track fractions (TF)", "CCA": "cell-cycle accuracy (CCA)"}
    console.table(f"{pred} vs {gt}", ["measure", "value"], [[label, scores.get(k)] for k, label in names.items()]
                  + [["AOGM (FN x10, FP, NS x5, EA x1.5, ED, EC)", scores.get("AOGM")]])


@app.command("track", cls=_Command)
def track_cli(
    labels: Annotated[Path, typer.Argument(help="Labels to link: a .zarr from cellseg segment, a (T, Y, X) label "
                                           "TIFF, or a folder of label images in natural order (CTC maskNNN.tif / "
                                           "man_segNNN.tif, Cellpose _masks.tif).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The tracked OME-Zarr (default: "
                   "NAME.tracked.zarr next to LABELS, unless only --ctc is given).")] = None,
    ctc: Annotated[Optional[Path], typer.Option("--ctc", help="Also (or, without -o, only) write a Cell Tracking "
                   "Challenge result folder: maskNNN.tif + res_track.txt.")] = None,
    max_distance: MaxDistanceOpt = None,
    gap_frames: GapFramesOpt = 2,
    divisions: DivisionsOpt = True,
    divisions_first: DivisionsFirstOpt = False,
    pixel_size: Annotated[Optional[float], typer.Option("--pixel-size", help="Micrometres per pixel (default: "
                          "the source's metadata).")] = None,
    frame_interval: FrameIntervalOpt = None,
    table_format: Annotated[TableFormat, typer.Option("--table-format", help="csv or parquet.")] = TableFormat.csv,
    overwrite: Annotated[bool, _flag("--overwrite", help="Replace existing outputs.")] = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Link labelled cells over time into tracks (one id per cell's life, divisions as parent links)."""

    def action() -> None:
        from . import console
        from .errors import CellsegError
        from .tracking.pipeline import track

        if pixel_size is not None and not pixel_size > 0:
            raise CellsegError(f"--pixel-size {pixel_size}: give micrometres per pixel, a positive number")
        options = _link_options(max_distance, gap_frames, divisions, divisions_first)
        with console.progress(f"track {labels.name}", quiet=as_json) as report:
            result = track(labels, out=out, ctc=ctc, options=options, pixel_size_um=pixel_size,
                           frame_interval_min=_interval(frame_interval), table_format=table_format.value,
                           overwrite=overwrite, progress=report)
        s = result.summary()
        if as_json:
            console.print_json(s)
            return
        where = ", ".join(str(p) for p in (s["zarr"], s.get("tracks_table"), s["ctc"]) if p)
        console.info(f"{labels}: {s['frames']} frames, {s['detections']} cells -> {s['tracks']} tracks "
                     f"({s['divisions']} divisions) in {s['seconds']:.1f} s (linking {s['link_seconds']:.1f} s) "
                     f"-> {where}")

    _run(action, debug=debug, as_json=as_json)


@app.command("export", cls=_Command)
def export_cli(
    result: Annotated[Path, typer.Argument(help="A finished result .zarr (cellseg segment, or cellseg track).")],
    tiff: Annotated[Optional[Path], typer.Option("--tiff", metavar="DIR", help="Write the labels as an ImageJ "
                    "hyperstack DIR/NAME_labels.tif (uint16, TYX, pixel size and frame interval set) for Fiji and "
                    "TrackMate.")] = None,
    tiff_per_frame: Annotated[bool, _flag("--tiff-per-frame", help="With --tiff: one TIFF per frame "
                              "(DIR/NAME_tNNNN.tif), ids renumbered 1..n in each frame; for results whose ids "
                              "exceed 65535 (track ids are lost).")] = False,
    rois: Annotated[Optional[Path], typer.Option("--rois", metavar="DIR", help="Write one ImageJ ROI set per frame "
                    "(DIR/NAME_tNNNN.zip): a polygon per cell, named cell-NNNN (track-NNNN when tracked).")] = None,
    outlines: Annotated[Optional[Path], typer.Option("--outlines", metavar="DIR", help="Write one PNG per frame "
                        "(DIR/NAME_tNNNN.png): cell outlines over the image.")] = None,
    ctc: Annotated[Optional[Path], typer.Option("--ctc", metavar="DIR", help="Write a Cell Tracking Challenge result "
                   "folder (maskNNN.tif + res_track.txt); needs a tracked result.")] = None,
    overwrite: Annotated[bool, _flag("--overwrite", help="Replace existing output folders (only folders holding "
                         "nothing but export files).")] = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Export a result to Fiji/ImageJ/TrackMate (TIFF, ROIs), PNG outlines or the CTC format; give at least one
    of --tiff, --rois, --outlines, --ctc. DIR folders are created; --tiff, --rois and --outlines may share one."""

    def action() -> None:
        from . import console
        from .export import export_result

        with console.progress("export", quiet=as_json) as report:
            summary = export_result(result, tiff=tiff, rois=rois, outlines=outlines, ctc=ctc,
                                    tiff_per_frame=tiff_per_frame, overwrite=overwrite, progress=report)
        if as_json:
            console.print_json(summary)
        else:
            for kind, out in summary["outputs"].items():
                console.info(f"{kind}: {out['files']} file(s) -> {out['folder']}")
            cells = f", {summary['cells']} cells" if summary.get("cells") is not None else ""
            console.info(f"{result}: {summary['frames']} frames{cells} exported")

    _run(action, debug=debug, as_json=as_json)


@app.command("calibrate", cls=_Command)
def calibrate_cli(
    model: Annotated[str, typer.Argument(help="A model folder, or a shipped model name (then give -o).")],
    annotations: Annotated[Path, typer.Argument(help="Annotated frames (images/ + masks/, or name_masks.tif "
                                                "files) the model did not train on.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write a calibrated copy of the model here "
                   "(default: update MODEL's config.json).")] = None,
    tta: Annotated[TTA, typer.Option("--tta", help="TTA used while calibrating (use the one you segment with; "
                   "auto: d4 on GPU, none on CPU).")] = TTA.auto,
    dry_run: Annotated[bool, _flag("--dry-run", help="Print the chosen thresholds, write nothing.")] = False,
    diameter: Annotated[Optional[float], typer.Option("--diameter", help="Typical cell diameter in these frames, "
                        "in pixels, as you will pass it to segment.")] = None,
    sizes: Annotated[bool, _flag("--min-size/--keep-min-size", help="Also choose the smallest cell kept (among "
                     "shares of the model's typical cell area), after the thresholds.")] = True,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Choose a model's cell and seed thresholds, then its smallest cell, on annotated frames (best mean of
    pixel Jaccard and F1@0.5)."""

    def action() -> None:
        from . import console
        from .calibrate import calibrate_folder
        from .device import resolve_device
        from .pipeline import resolve_tta

        dev = resolve_device(device)
        with console.progress("calibrate", unit="settings", quiet=as_json) as report:
            result = calibrate_folder(model, annotations, dev, tta=resolve_tta(tta.value, dev), diameter=diameter,
                                      out=out, write=not dry_run, sizes=sizes, progress=report)
        record = result.record()
        if as_json:
            console.print_json(record)
            return
        top = sorted(result.settings, key=lambda s: -s.objective)[:5]
        console.table(f"{model} on {annotations} ({result.n_frames} frames, tta {result.tta})",
                      ["threshold", "seed threshold", "split clumps", "pixel Jaccard", "F1 @0.5", "mean AP"],
                      [[s.threshold, s.seed_threshold, "yes" if s.split_clumps else "no", s.jaccard, s.f1, s.mean_ap]
                       for s in top])
        c, b = result.chosen, result.current
        where = "not written (--dry-run)" if dry_run else f"written to {(out or model)}"
        size = "" if result.model_min_size is None else f", smallest cell {b.min_size} -> {c.min_size} px"
        if b.split_clumps != c.split_clumps:
            size += f", clump splitting {'on' if c.split_clumps else 'off'}"
        console.info(f"thresholds {b.threshold}/{b.seed_threshold} -> {c.threshold}/{c.seed_threshold}{size}: "
                     f"Jaccard {b.jaccard:.4f} -> {c.jaccard:.4f}, F1 {b.f1:.4f} -> {c.f1:.4f}; {where}")

    _run(action, debug=debug, as_json=as_json)


@app.command("overlay", cls=_Command)
def overlay_cli(
    result: Annotated[Path, typer.Argument(help="A .zarr written by cellseg segment (or a label stack with --image).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNGs, GIF and plot.")] = Path("overlays"),
    image: Annotated[Optional[Path], typer.Option("--image", help="The image stack, when RESULT holds none.")] = None,
    gt: Annotated[Optional[Path], typer.Option("--gt", help="Ground truth: false negatives magenta, false "
                  "positives green.")] = None,
    frame: Annotated[Optional[list[int]], typer.Option("--frame", help="Frames to draw (repeatable; default "
                     "all).")] = None,
    frame_range: Annotated[Optional[str], typer.Option("--frames", metavar="START:STOP[:STEP]", help="A range of "
                           "frames to draw (STOP excluded), instead of --frame.")] = None,
    tracks: Annotated[bool, _flag("--tracks", help="A tracked result: colour cells by track, draw each "
                      "track's recent path, and plot the lineage (NAME_lineage.png).")] = False,
    trail: Annotated[int, typer.Option("--trail", help="With --tracks: frames of path drawn behind each cell.",
                                       min=0)] = 10,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Draw predicted outlines over the image (PNG per frame, GIF for a stack) and plot cells over time."""

    def action() -> None:
        from . import console
        from .overlay import overlay_result

        with console.progress("overlay", quiet=as_json) as report:
            res = overlay_result(result, out, image=image, gt=gt, frames=frame or None, progress=report,
                                 tracks=tracks, trail=trail, frame_range=frame_range)
        summary = {"pngs": [str(p) for p in res.pngs], "gif": str(res.gif) if res.gif else None,
                   "plot": str(res.plot), "lineage_plot": str(res.lineage_plot) if res.lineage_plot else None}
        if as_json:
            console.print_json(summary)
        else:
            console.info(f"{len(res.pngs)} PNG overlays in {out}" + (f", animation {res.gif}" if res.gif else "")
                         + f", plot {res.plot}" + (f", lineage {res.lineage_plot}" if res.lineage_plot else ""))

    _run(action, debug=debug, as_json=as_json)


@app.command("models", cls=_Command)
def models_cli(as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """List the shipped models with their metadata."""

    def action() -> None:
        from . import console
        from .models.folder import file_sha256, read_config, shipped_models, WEIGHTS

        rows = []
        for folder in shipped_models():
            c = read_config(folder)
            t = c.training
            rows.append({"name": c.name, "architecture": c.architecture, "path": str(folder),
                         "description": c.description, "val_jaccard": t.get("val_jaccard"),
                         "diameter": c.diameter or None,
                         "epochs": t.get("epoch"), "trained_on": t.get("data"),
                         "sha256": file_sha256(folder / WEIGHTS) if (folder / WEIGHTS).is_file() else None})
        if as_json:
            console.print_json(rows)
            return
        if not rows:
            console.info("no shipped models found (looked in weights/ or $CELLSEG_WEIGHTS)")
            return
        console.table("shipped models", ["name", "architecture", "val Jaccard", "epochs", "cell diameter (px)",
                                         "description"],
                      [[r["name"], r["architecture"], r["val_jaccard"] if r["val_jaccard"] is not None else "-",
                        r["epochs"] or "-", f"{r['diameter']:g}" if r["diameter"] else "-", r["description"]] for r in rows])

    _run(action, debug=debug, as_json=as_json)


def main(argv: list[str] | None = None) -> None:
    """The ``cellseg`` console script: runs the app, turns click's usage errors into three plain lines
    (exit 2) and SIGTERM into a clean exit 143."""
    import signal
    import sys

    from . import allocator, console
    from .errors import Terminated

    def terminate(signum, frame):   # noqa: ARG001 - the signal handler's signature
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)
    allocator.keep_freed_memory()   # large blocks reused, not page-faulted in again for every tile and frame
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = app(args=args, prog_name="cellseg", standalone_mode=False)
    except typer.TyperException as exc:   # click's exceptions (typer vendors click)
        if type(exc).__name__ == "NoArgsIsHelpError":   # `cellseg` alone: typer has printed the help
            sys.exit(EXIT_USAGE)
        message = " ".join(exc.format_message().replace("Value error, ", "").split())
        ctx = getattr(exc, "ctx", None)
        usage = ctx.get_usage() if ctx is not None else None
        hint = f"Try '{ctx.command_path} -h' for help." if ctx is not None else None
        console.usage_error(message, usage, hint)
        if "--json" in args:
            console.print_json({"error": message, "exit_code": exc.exit_code})
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.error("aborted")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
