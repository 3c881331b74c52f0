"""Training: data pairing, augmentation alignment, loss, early stopping, resume, ImageNet loading, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from cellsegcli.cli import app
from cellsegcli.errors import CellsegError
from cellsegcli.models import build, load_model
from cellsegcli.models.imagenet import load_imagenet_encoder
from cellsegcli.training.augment import Augmentation, random_crop
from cellsegcli.training.data import find_pairs, load_sample
from cellsegcli.training.early_stopping import EarlyStopping
from cellsegcli.training.loop import TrainConfig, train
from cellsegcli.training.loss import bce_dice_loss

CPU = torch.device("cpu")
runner = CliRunner()


def _disks_image(rng, size=96, n=6):
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint16)
    for i in range(1, n + 1):
        cy, cx, r = rng.uniform(12, size - 12), rng.uniform(12, size - 12), rng.uniform(5, 10)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = i
    image = (labels > 0) * 800 + rng.normal(200, 30, labels.shape)
    return image.astype(np.uint16), labels


def _annotations(root: Path, n=4, layout="folders", size=96) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        image, labels = _disks_image(rng, size)
        if layout == "folders":
            (root / "images").mkdir(parents=True, exist_ok=True)
            (root / "masks").mkdir(exist_ok=True)
            tifffile.imwrite(root / "images" / f"im{i}.tif", image)
            tifffile.imwrite(root / "masks" / f"im{i}.tif", labels)
        else:
            root.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / f"im{i}.tif", image)
            tifffile.imwrite(root / f"im{i}_masks.tif", labels)
    return root


def _config(**kw) -> TrainConfig:
    base = dict(architecture="resnet18-fpn", epochs=1, batch_size=2, crop=64, steps_per_epoch=2, patience=3, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_both_annotation_layouts_pair_by_name(tmp_path):
    a = find_pairs(_annotations(tmp_path / "a", n=2))
    b = find_pairs(_annotations(tmp_path / "b", n=2, layout="cellpose"))
    assert [p.name for p in a] == [p.name for p in b] == ["im0", "im1"]
    assert b[0].mask.name == "im0_masks.tif"


def test_unpaired_files_are_named(tmp_path):
    root = _annotations(tmp_path, n=2)
    (root / "masks" / "im1.tif").unlink()
    with pytest.raises(CellsegError, match=r"images without a mask: im1\.tif"):
        find_pairs(root)


def test_augmented_image_and_targets_stay_aligned():
    rng = np.random.default_rng(1)
    _, labels = _disks_image(rng, 128)
    fg = (labels > 0).astype(np.float32)
    stack = torch.from_numpy(np.stack([fg, fg, fg]))
    aug = Augmentation().geometric()
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        crop = random_crop(stack, 64, aug, gen)
        agree = ((crop[0] > 0.5) == (crop[1] > 0.5)).float().mean()
        assert agree == 1.0
        assert set(torch.unique(crop[1]).tolist()) <= {0.0, 1.0}


def test_loss_is_zero_for_confident_correct_logits_and_large_otherwise():
    y = (torch.rand(2, 2, 16, 16) > 0.5).float()
    assert bce_dice_loss((y * 2 - 1) * 30, y) < 1e-3
    assert bce_dice_loss((1 - y * 2) * 30, y) > 10


@pytest.mark.parametrize("arch", ["resnet18-unet", "resnet18-fpn", "resnet18-unet-rp"])
def test_fresh_networks_start_with_unsaturated_logits(arch):
    # an uninformed start: BCE near log 2 and soft Dice near 1/2, not a saturated head that first has to unlearn
    torch.manual_seed(0)
    network = build(arch, in_channels=1, classes=2).train()
    x = torch.randn(2, 1, 64, 64)
    targets = (torch.rand(2, 2, 64, 64) < 0.5).float()
    with torch.no_grad():
        logits = network(x)
    assert float(logits.std()) < 2.0
    assert float(bce_dice_loss(logits, targets)) < 1.6


def test_early_stopping_counts_epochs_without_improvement():
    stop = EarlyStopping(patience=2)
    assert stop.update(1.0, 1) == (True, False, "")
    assert stop.update(0.9, 2)[0] is True
    assert stop.update(0.95, 3)[:2] == (False, False)
    improved, should_stop, reason = stop.update(0.91, 4)
    assert not improved and should_stop and "best 0.9000 at epoch 2" in reason


def test_loss_falls_on_a_learnable_set(tmp_path):
    root = _annotations(tmp_path / "ann", n=4)
    out = tmp_path / "m"
    result = train(root, out, _config(epochs=3, steps_per_epoch=8, lr=3e-3, val_fraction=0.25), device=CPU)
    history = (out / "history.csv").read_text().splitlines()
    losses = [float(line.split(",")[1]) for line in history[1:]]
    assert len(losses) == 3 and losses[-1] < losses[0] * 0.8
    model = load_model(out)
    assert model.config.architecture == "resnet18-fpn" and model.config.training["n_val"] == 1
    assert 30 < model.config.min_size < 160  # half the smallest annotated disks (radius 5..10 px)
    assert result.best_epoch >= 1 and (out / "curves.png").stat().st_size > 1000
    after = model.config.training["calibration"]["after"]  # thresholds chosen on the validation frame
    assert (model.config.threshold, model.config.seed_threshold) == (after["threshold"], after["seed_threshold"])
    assert result.calibration == model.config.training["calibration"]
    # the size the annotations suggested is a rule of thumb and the default thresholds no choice: no margin keeps
    # either, so the best setting on the validation frame wins
    sizes = result.calibration["sizes"]
    assert sizes["margin"] == 0.0 and model.config.min_size == sizes["model_min_size"]
    assert result.calibration["margin"] == 0.0 and after["objective"] >= result.calibration["before"]["objective"]


def test_cosine_schedule_decays_to_a_hundredth(tmp_path):
    import math

    root = _annotations(tmp_path / "ann", n=3)
    train(root, tmp_path / "m", _config(epochs=3, lr=1e-3, schedule="cosine", calibrate=False), device=CPU)
    rows = (tmp_path / "m" / "history.csv").read_text().splitlines()[1:]
    lrs = [float(r.split(",")[4]) for r in rows]  # the lr after each epoch's step
    expected = [1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * e / 3)) / 2 for e in (1, 2, 3)]
    assert lrs == pytest.approx(expected, rel=1e-4)
    assert "calibration" not in load_model(tmp_path / "m").config.training
    with pytest.raises(CellsegError, match="--schedule"):
        _config(schedule="step")


def test_resume_continues_at_the_next_epoch(tmp_path):
    root = _annotations(tmp_path / "ann", n=3)
    out = tmp_path / "m"
    train(root, out, _config(epochs=1), device=CPU)
    with pytest.raises(CellsegError, match="--resume"):
        train(root, out, _config(epochs=2), device=CPU)
    result = train(root, out, _config(epochs=2), device=CPU, resume=True)
    assert result.epochs_run == 2
    epochs = [line.split(",")[0] for line in (out / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2"]
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2


def test_full_disk_stops_training_with_one_line_and_a_resumable_checkpoint(tmp_path, monkeypatch):
    import errno
    import os

    import cellsegcli.training.loop as loop

    root = _annotations(tmp_path / "ann", n=3)
    out = tmp_path / "m"
    saves = []
    real_save = torch.save

    def fills_the_disk(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) < 2:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a full disk raises it: no file name

    monkeypatch.setattr(loop.torch, "save", fills_the_disk)
    with pytest.raises(CellsegError) as info:
        train(root, out, _config(epochs=3, calibrate=False), device=CPU)
    assert str(info.value) == (f"{out}: no space left on the device; free some space or choose "
                               f"another output folder; the checkpoint of epoch 1 in {out} is intact: rerun with "
                               f"--resume once there is space")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "curves.png", "history.csv",
                                                     "model.safetensors"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["last.pt"]
    monkeypatch.undo()
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert train(root, out, _config(epochs=3, calibrate=False), device=CPU, resume=True).epochs_run == 3


def test_same_seed_gives_the_same_weights_on_cpu(tmp_path):
    root = _annotations(tmp_path / "ann", n=3)
    for name in ("a", "b"):
        train(root, tmp_path / name, _config(), device=CPU)
    wa, wb = (torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True)["network"] for n in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fine_tuning_on_the_same_folder_keeps_the_init_models_validation_images(tmp_path):
    root = _annotations(tmp_path / "ann", n=6)
    first = train(root, tmp_path / "a", _config(val_fraction=0.34, calibrate=False), device=CPU)
    held_out = load_model(tmp_path / "a").config.training["val_names"]
    assert first.n_val == len(held_out) == 2 and first.n_val_from_init == 0
    said = []
    # another seed would split differently; the images that validated the init model stay in validation
    second = train(root, tmp_path / "b", _config(init=str(tmp_path / "a"), seed=7, val_fraction=0.5,
                                                 calibrate=False), device=CPU, notify=said.append)
    val = load_model(tmp_path / "b").config.training["val_names"]
    assert set(held_out) <= set(val) and len(val) == 3 and second.n_val_from_init == 2
    assert len(said) == 1 and "2 image(s) that validated" in said[0]
    from cellsegcli.training.loop import split_pairs

    assert [p.name for p in split_pairs(root, 0.5, 7)[1]] != sorted(val)  # the plain seed-7 split differs


def test_fine_tuned_model_takes_its_smallest_cell_from_the_new_annotations(tmp_path):
    from cellsegcli.models.folder import read_config, write_config

    root = _annotations(tmp_path / "ann", n=3)
    train(root, tmp_path / "big", _config(calibrate=False), device=CPU)
    config = read_config(tmp_path / "big")
    write_config(tmp_path / "big", dataclasses.replace(config, min_size=5000, diameter=300.0))  # for huge cells
    train(root, tmp_path / "small", _config(init=str(tmp_path / "big"), calibrate=False), device=CPU)
    small = load_model(tmp_path / "small").config
    assert 30 < small.min_size < 160  # the disks here have radius 5..10 px
    assert 10 <= small.diameter <= 20 and small.diameter == config.diameter


def test_cell_diameter_is_the_median_equivalent_diameter_of_the_annotated_cells():
    from cellsegcli.training.data import Sample, cell_diameter

    labels = np.zeros((60, 200), np.int32)
    for i, side in enumerate([4, 10, 10, 10, 30]):   # squares: areas 16, 100, 100, 100, 900
        labels[:side, 40 * i:40 * i + side] = i + 1
    sample = Sample("s", np.zeros((60, 200), np.float32), np.zeros((2, 60, 200), np.float32), labels)
    assert cell_diameter([sample]) == round(2 * np.sqrt(100 / np.pi), 1) == 11.3
    assert cell_diameter([dataclasses.replace(sample, labels=np.zeros_like(labels))]) == 0.0


def test_split_keeps_named_images_in_validation_but_leaves_one_to_train_on(tmp_path):
    from cellsegcli.training.loop import split_pairs

    root = _annotations(tmp_path / "ann", n=4)
    train_pairs, val = split_pairs(root, 0.25, 0, keep_in_val=["im1", "im3", "elsewhere"])
    assert [p.name for p in val] == ["im1", "im3"] and [p.name for p in train_pairs] == ["im0", "im2"]
    everything = ["im0", "im1", "im2", "im3"]
    train_pairs, val = split_pairs(root, 0.25, 0, keep_in_val=everything)  # nothing left: a fresh split
    assert len(val) == 1 and len(train_pairs) == 3 and split_pairs(root, 0.25, 0)[1] == val


def _movie(root: Path, annotated=(1, 3), n=5, rgb=False, **tiff) -> tuple[np.ndarray, np.ndarray]:
    """A (T, Y, X) image stack beside a label stack in which only the ``annotated`` frames hold cells."""
    rng = np.random.default_rng(1)
    frames = [_disks_image(rng, 64, n=3) for _ in range(n)]
    images = np.stack([f[0] for f in frames])
    labels = np.stack([f[1] if t in annotated else np.zeros_like(f[1]) for t, f in enumerate(frames)])
    if rgb:
        images = np.repeat(images[..., None], 3, axis=-1)
    root.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(root / "movie.tif", images, **tiff)
    tifffile.imwrite(root / "movie_masks.tif", labels, **tiff)
    return images, labels


@pytest.mark.parametrize("layout", ["pages", "imagej", "rgb", "three frames"])
def test_annotated_frames_of_a_label_stack_are_pairs(tmp_path, layout):
    from cellsegcli.training.data import mask_to_labels

    tiff = {"imagej": True, "metadata": {"axes": "TYX"}} if layout == "imagej" else {}
    if layout == "three frames":  # (3, Y, X) is a stack, not an RGB image: the TIFF's axes say which
        tiff = {"photometric": "minisblack"}
    n = 3 if layout == "three frames" else 5
    images, labels = _movie(tmp_path, n=n, rgb=layout == "rgb", **tiff)
    pairs = find_pairs(tmp_path)
    assert [(p.name, p.frame) for p in pairs] == [("movie_t001", 1)] + ([("movie_t003", 3)] if n == 5 else [])
    for p in pairs:
        assert np.array_equal(p.read_image(), images[p.frame])
        sample = load_sample(p, percentiles=(1.0, 99.8))
        assert np.array_equal(sample.labels, mask_to_labels(labels[p.frame])) and sample.labels.max() == 3
        assert sample.name == p.name and sample.image.shape == (64, 64)


def test_label_stack_needs_an_image_stack_of_the_same_frames_and_one_annotated_frame(tmp_path):
    images, labels = _movie(tmp_path)
    tifffile.imwrite(tmp_path / "movie.tif", images[:2])
    with pytest.raises(CellsegError) as info:
        find_pairs(tmp_path)
    assert str(info.value) == (f"{tmp_path / 'movie.tif'}: its mask movie_masks.tif is a stack of 5 frames of "
                               f"64 x 64; the image must be a TIFF stack of the same frames (T, Y, X), got shape "
                               f"(2, 64, 64)")
    tifffile.imwrite(tmp_path / "movie.tif", images)
    tifffile.imwrite(tmp_path / "movie_masks.tif", np.zeros_like(labels))
    with pytest.raises(CellsegError, match="every one of its 5 frames is empty; annotate at least one frame"):
        find_pairs(tmp_path)


def test_training_on_an_annotated_time_lapse(tmp_path):
    _movie(tmp_path / "ann", annotated=(0, 2, 4, 6, 8), n=9)
    out = tmp_path / "m"
    result = train(tmp_path / "ann", out, _config(val_fraction=0.4, calibrate=False), device=CPU)
    training = load_model(out).config.training
    assert (result.n_train, result.n_val) == (3, 2)
    assert set(training["val_names"]) < {f"movie_t{t:03d}" for t in (0, 2, 4, 6, 8)}


def test_frames_of_one_movie_stay_on_one_side_of_the_split(tmp_path):
    from cellsegcli.training.loop import split_pairs

    for name in ("a", "b", "c"):
        _movie(tmp_path / "tmp", annotated=(0, 2, 4), n=5)
        for suffix in ("", "_masks"):
            (tmp_path / "tmp" / f"movie{suffix}.tif").rename(tmp_path / f"{name}{suffix}.tif")
    for seed in range(4):
        train_pairs, val = split_pairs(tmp_path, 0.34, seed)
        movies = {p.image.stem for p in val}
        assert len(movies) == 1 and len(val) == 3 and not movies & {p.image.stem for p in train_pairs}
    _, val = split_pairs(tmp_path, 0.34, 0, keep_in_val=["b_t002"])  # one frame named: its movie goes
    assert {p.name for p in val} == {"b_t000", "b_t002", "b_t004"}


def test_image_sampling_draws_every_image_equally_whatever_its_size():
    from cellsegcli.training.data import Sample
    from cellsegcli.training.batches import sampling_weights

    samples = [Sample(str(k), np.zeros((k, 100), np.float32), np.zeros((2, k, 100), np.float32),
                      np.zeros((k, 100), np.uint32)) for k in (100, 400)]
    assert sampling_weights(samples, "area").tolist() == [1e4, 4e4]
    assert sampling_weights(samples, "image").tolist() == [1.0, 1.0]
    with pytest.raises(CellsegError, match="--sampling"):
        _config(sampling="pixel")


def test_imagenet_loader_maps_torchvision_keys(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(reference, path)
    net = build("resnet18-unet", in_channels=1, classes=2)
    with pytest.raises(CellsegError, match="sha256"):
        load_imagenet_encoder(net, path)
    load_imagenet_encoder(net, path, check_sha256=False)
    enc = net.encoder.state_dict()
    assert torch.equal(enc["layer3.1.conv2.weight"], reference["layer3.1.conv2.weight"])
    assert torch.allclose(enc["conv1.weight"], reference["conv1.weight"].sum(1, keepdim=True))


def test_imagenet_offline_without_a_file_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CellsegError, match="--imagenet-weights"):
        load_imagenet_encoder(build("resnet18-unet"), None)


@pytest.mark.parametrize("case", ["empty", "unpaired", "mismatch", "single", "stack"])
def test_train_cli_refuses_bad_annotation_folders(tmp_path, case):
    root = tmp_path / "ann"
    if case == "empty":
        root.mkdir()
    elif case == "stack":  # a label stack beside a single image
        _movie(root)
        tifffile.imwrite(root / "movie.tif", np.zeros((64, 64), np.uint16))
    else:
        _annotations(root, n=1 if case == "single" else 2)
    if case == "unpaired":
        tifffile.imwrite(root / "images" / "extra.tif", np.zeros((8, 8), np.uint16))
    if case == "mismatch":
        tifffile.imwrite(root / "masks" / "im1.tif", np.zeros((50, 50), np.uint16))
    result = runner.invoke(app, ["train", str(root), "-o", str(tmp_path / "m"), "--device", "cpu"])
    assert result.exit_code == 1
    lines = [ln for ln in result.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and str(root) in lines[0]
    assert not (tmp_path / "m").exists()


def test_train_cli_json_summary(tmp_path):
    root = _annotations(tmp_path / "ann", n=3, layout="cellpose")
    result = runner.invoke(app, ["train", str(root), "-o", str(tmp_path / "m"), "--arch", "resnet18-fpn", "--epochs",
                                 "1", "--crop", "64", "--batch-size", "2", "--steps-per-epoch", "1", "--device", "cpu",
                                 "--sampling", "image", "--ema", "0.99", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs_run"] == 1 and summary["n_train"] + summary["n_val"] == 3
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["training"]["command"].startswith("cellseg train")
    assert config["training"]["sampling"] == "image" and "--sampling image" in config["training"]["command"]
    assert config["training"]["ema"] == 0.99
    bad = runner.invoke(app, ["train", str(root), "-o", str(tmp_path / "m2"), "--ema", "1.5", "--device", "cpu"])
    assert bad.exit_code == 1 and "--ema 1.5" in bad.stderr and not (tmp_path / "m2").exists()


def test_fine_tuning_the_default_model_on_the_example_movie(tmp_path):
    example = Path(__file__).resolve().parent.parent / "examples" / "annotated"
    out = tmp_path / "m"
    result = runner.invoke(app, ["train", str(example), "-o", str(out), "--init", "default", "--epochs", "1",
                                 "--steps-per-epoch", "2", "--batch-size", "2", "--crop", "128", "--device", "cpu",
                                 "--no-calibrate", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["n_train"], summary["n_val"]) == (6, 2)  # the 8 annotated frames of one movie
    model = load_model(out)
    assert model.config.training["init"] == "default" and model.config.name == "m"
    assert all(name.startswith("movie_t") for name in model.config.training["val_names"])


@pytest.mark.data
def test_one_epoch_on_real_crops_gives_a_loadable_model(shared_data, tmp_path):
    from skimage.io import imread

    src = shared_data / "usiigaci-phase"
    root = tmp_path / "ann"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name in ("set01", "set02", "set03"):
        tifffile.imwrite(root / "images" / f"{name}.tif", tifffile.imread(src / "images" / f"{name}.tif")[:128, :160])
        tifffile.imwrite(root / "masks" / f"{name}.tif", imread(src / "masks" / f"{name}.png")[:128, :160])
    train(root, tmp_path / "m", _config(architecture="resnet18-unet"), device=CPU)
    model = load_model(tmp_path / "m")
    assert model.config.outputs == ("cell", "interior")


def test_weight_average_is_the_warmed_up_exponential_average_of_every_step():
    from cellsegcli.training.ema import WeightAverage, ema_decay

    assert [ema_decay(t, 0.9) for t in (1, 2, 8, 100)] == pytest.approx([2 / 11, 3 / 12, 0.5, 0.9])
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    avg = WeightAverage(net, 0.9)
    expected = {k: v.double().clone() for k, v in net.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    for step in range(1, 30):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=gen))
        net.train()(torch.randn(4, 3, generator=gen))      # moves BatchNorm's running statistics
        avg.update(net)
        d = ema_decay(step, 0.9)
        for k, v in net.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v.double() if v.is_floating_point() else v.double()
    for k, v in avg.module.state_dict().items():
        assert torch.allclose(v.double(), expected[k], atol=1e-5), k
    assert avg.module.state_dict()["1.num_batches_tracked"] == 29
    assert not any(p.requires_grad for p in avg.module.parameters())
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(net, 1.0)


def test_ema_run_saves_the_average_and_resumes_it_exactly(tmp_path):
    from safetensors.torch import load_file

    root = _annotations(tmp_path / "ann", n=3)
    cfg = _config(epochs=2, ema=0.99, patience=5, calibrate=False)
    train(root, tmp_path / "straight", cfg, device=CPU)
    train(root, tmp_path / "resumed", dataclasses.replace(cfg, epochs=1), device=CPU)
    for name, copy in (("checkpoints/last.pt", "one.pt"), ("model.safetensors", "one.safetensors")):
        (tmp_path / "resumed" / copy).write_bytes((tmp_path / "resumed" / name).read_bytes())
    train(root, tmp_path / "resumed", cfg, device=CPU, resume=True)
    a, b = (torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True) for n in ("straight", "resumed"))
    assert a["ema"]["steps"] == b["ema"]["steps"] == 4
    for k in a["ema"]["module"]:
        assert torch.equal(a["ema"]["module"][k], b["ema"]["module"][k]), k
    # after one epoch (always the best so far) the saved weights are the average, not the trained network
    one = torch.load(tmp_path / "resumed" / "one.pt", weights_only=True)
    saved = load_file(tmp_path / "resumed" / "one.safetensors")
    assert all(torch.equal(saved[k], v.half() if v.is_floating_point() else v) for k, v in one["ema"]["module"].items())
    assert not all(torch.equal(saved[k], one["network"][k].half()) for k in saved if saved[k].is_floating_point())
    assert load_model(tmp_path / "straight").config.training["ema"] == 0.99
    with pytest.raises(CellsegError, match="trained with --ema 0.99; resume it with the same --ema"):
        train(root, tmp_path / "straight", dataclasses.replace(cfg, epochs=3, ema=None), device=CPU, resume=True)
    with pytest.raises(CellsegError, match="--ema 1.5"):
        _config(ema=1.5)


def test_intensity_transforms_of_the_augmentation():
    from scipy import ndimage as ndi

    from cellsegcli.training.augment import gamma_curve, gaussian_blur, illumination_field, jitter_intensity

    x = torch.tensor([[[-0.2, 0.05, 0.3, 0.8]]])
    assert torch.allclose(gamma_curve(x, 2.0), torch.tensor([[[-0.2, -0.2 + 1 * 0.0625, 0.05, 0.8]]]))
    assert torch.equal(gamma_curve(torch.full((1, 4, 4), 0.3), 2.0), torch.full((1, 4, 4), 0.3))
    img = torch.from_numpy(np.random.default_rng(0).random((2, 40, 50), dtype=np.float32))
    for sigma in (0.5, 1.0, 2.0):
        expected = ndi.gaussian_filter(img.numpy(), (0, sigma, sigma), mode="mirror", truncate=3.0)
        assert np.allclose(gaussian_blur(img, sigma).numpy(), expected, atol=1e-5)
    gen = torch.Generator().manual_seed(0)
    field = illumination_field((64, 80), 0.15, gen)
    assert field.shape == (64, 80) and field.min() > 0
    assert float(field.diff(dim=1).abs().max()) < 0.02          # smooth: no step between neighbours
    assert torch.equal(illumination_field((8, 8), 0.0, gen), torch.ones(8, 8))
    assert torch.equal(jitter_intensity(img[:1], Augmentation.off(), gen), img[:1])
    g = Augmentation().geometric()  # the geometry stays, every intensity transform goes
    assert (g.rotate, g.scale, g.elastic_alpha) == (True, Augmentation().scale, Augmentation().elastic_alpha)
    assert (g.contrast, g.brightness, g.noise, g.gamma_p, g.blur_p, g.illumination_p) == ((1.0, 1.0), 0, 0, 0, 0, 0)


def test_object_gains_scale_each_objects_contrast_to_the_background():
    from cellsegcli.training.augment import object_gains

    labels = torch.zeros(20, 20)
    labels[2:6, 2:6] = 1
    labels[10:16, 10:16] = 2
    image = torch.full((1, 20, 20), 0.1)
    image[0][labels == 1] = 0.9
    image[0][labels == 2] = 0.5
    out = object_gains(image, labels, torch.tensor([7.0, 0.1, 0.5]), soften=0)
    assert torch.allclose(out[0][labels == 1], torch.tensor(0.1 + 0.8 * 0.1))
    assert torch.allclose(out[0][labels == 2], torch.tensor(0.1 + 0.4 * 0.5))
    assert torch.equal(out[0][labels == 0], image[0][labels == 0])       # background (gains[0]) stays
    assert torch.allclose(object_gains(image, labels, torch.ones(3)), image)
    soft = object_gains(image, labels, torch.tensor([1.0, 0.1, 1.0]))    # the halo dims with its object
    assert soft[0, 1, 3] < image[0, 1, 3] + 1e-6 and soft[0, 19, 0] == image[0, 19, 0]


def test_crops_dim_objects_but_keep_their_targets():
    rng = np.random.default_rng(3)
    image, labels = _disks_image(rng, 128, n=8)
    norm = torch.from_numpy(((image - 200.0) / 800).astype(np.float32))
    fg = torch.from_numpy((labels > 0).astype(np.float32))
    stack = torch.stack([norm, fg])
    ids = torch.from_numpy(labels.astype(np.float32))
    aug = dataclasses.replace(Augmentation.off(), object_p=1.0, object_gain=(0.05, 0.1), noise=0.0)
    dimmed = 0
    for seed in range(6):
        plain = random_crop(stack, 64, Augmentation.off(), torch.Generator().manual_seed(seed), ids)
        crop = random_crop(stack, 64, aug, torch.Generator().manual_seed(seed), ids)
        assert torch.equal(crop[1], plain[1])                         # same grid, same targets
        inside = plain[1] > 0
        if inside.any():
            dimmed += float(crop[0][inside].mean()) < 0.9 * float(plain[0][inside].mean())
    assert dimmed >= 2                                                # each object dimmed with probability 1/2
    assert torch.equal(random_crop(stack, 64, Augmentation.off(), torch.Generator().manual_seed(0), ids),
                       random_crop(stack, 64, Augmentation.off(), torch.Generator().manual_seed(0)))


def test_lovasz_hinge_is_the_jaccard_loss_at_unit_errors():
    from cellsegcli.training.loss import bce_lovasz_loss, lovasz_hinge

    rng = np.random.default_rng(0)
    y = torch.from_numpy(rng.random((2, 1, 8, 8)) > 0.5).float()
    wrong = torch.from_numpy(rng.random((2, 1, 8, 8)) < 0.2)
    logits = torch.where(wrong, torch.zeros_like(y), 2 * y - 1)      # errors: 1 where wrong, else 0
    expected = []
    for b in range(2):
        t, w = y[b, 0].bool(), wrong[b, 0]
        fn, fp = (t & w).sum(), (~t & w).sum()
        expected.append(1 - float(t.sum() - fn) / float(t.sum() + fp))
    assert abs(float(lovasz_hinge(logits, y)) - np.mean(expected)) < 1e-6
    assert float(lovasz_hinge((2 * y - 1) * 5, y)) == 0.0
    assert float(bce_lovasz_loss((2 * y - 1) * 30, y)) < 1e-6
    assert float(bce_lovasz_loss((1 - 2 * y) * 30, y)) > 10


def test_training_with_the_lovasz_loss_records_it(tmp_path):
    root = _annotations(tmp_path / "ann")
    result = train(root, tmp_path / "m", _config(loss="bce-lovasz", calibrate=False), device=CPU)
    assert load_model(result.model_dir).config.training["loss"] == "bce-lovasz"
    with pytest.raises(CellsegError, match="--loss dice"):
        _config(loss="dice")
    with pytest.raises(CellsegError, match="trained with --loss bce-lovasz; resume it with the same --loss"):
        train(root, tmp_path / "m", _config(epochs=2, calibrate=False), device=CPU, resume=True)


def test_model_folder_holds_the_checkpoint_apart_and_no_checkpoint_removes_it(tmp_path):
    root = _annotations(tmp_path / "ann", n=3)
    kept = train(root, tmp_path / "kept", _config(calibrate=False), device=CPU)
    assert (kept.model_dir / "checkpoints" / "last.pt").is_file() and not (kept.model_dir / "last.pt").exists()
    slim = train(root, tmp_path / "slim", _config(calibrate=False, keep_checkpoint=False), device=CPU)
    assert sorted(p.name for p in slim.model_dir.iterdir()) == ["config.json", "curves.png", "history.csv",
                                                                "model.safetensors"]
    size = sum(p.stat().st_size for p in slim.model_dir.iterdir())
    assert size < 40e6   # what a user copies around: ~30 MB of fp16 weights, no 170 MB optimizer state


def test_a_folder_of_the_earlier_layout_resumes_and_moves_its_checkpoint(tmp_path):
    root = _annotations(tmp_path / "ann", n=3)
    out = tmp_path / "m"
    train(root, out, _config(epochs=1, calibrate=False), device=CPU)
    (out / "checkpoints" / "last.pt").rename(out / "last.pt")   # as earlier versions left it
    (out / "checkpoints").rmdir()
    assert train(root, out, _config(epochs=2, calibrate=False), device=CPU, resume=True).epochs_run == 2
    assert (out / "checkpoints" / "last.pt").is_file() and not (out / "last.pt").exists()


def test_description_is_the_users_or_says_what_the_model_was_trained_on(tmp_path):
    root = _annotations(tmp_path / "ann", n=3)
    train(root, tmp_path / "a", _config(calibrate=False), device=CPU)
    auto = json.loads((tmp_path / "a" / "config.json").read_text())["description"]
    assert auto.startswith("resnet18-fpn from scratch on ann (2 training / 1 validation images")
    train(root, tmp_path / "b", _config(calibrate=False, init=str(tmp_path / "a")), device=CPU)
    tuned = json.loads((tmp_path / "b" / "config.json").read_text())["description"]
    assert tuned.startswith("resnet18-fpn fine-tuned from 'a' on ann")   # not the description of 'a'
    train(root, tmp_path / "c", _config(calibrate=False, description="HeLa, 20x phase, lab X"), device=CPU)
    assert json.loads((tmp_path / "c" / "config.json").read_text())["description"] == "HeLa, 20x phase, lab X"


def test_a_model_that_validates_poorly_ends_with_one_warning_line(tmp_path):
    root = _annotations(tmp_path / "ann", n=3)
    warnings: list[str] = []
    result = train(root, tmp_path / "m", _config(calibrate=False), device=CPU, warn=warnings.append)
    assert result.best_val_jaccard < 0.5   # one epoch of two steps from scratch
    assert warnings == [result.warning] and "\n" not in result.warning
    assert "below 0.5" in result.warning and "--epochs" in result.warning and "--init" in result.warning


@pytest.mark.parametrize("border_weight", [0.0, 10.0])
def test_loader_workers_make_the_same_batches_whatever_their_number(tmp_path, border_weight):
    from cellsegcli.training.batches import CropBatches, batch_loader

    root = _annotations(tmp_path / "ann", n=3)
    samples = [load_sample(p, percentiles=(1.0, 99.8), border_weight=border_weight) for p in find_pairs(root)]
    config = _config(loader_workers=1)
    here = CropBatches(samples, config.crop, config.batch_size, config.augment)
    seeds = [11, 5, 2**61 + 3]
    expected = [here[s] for s in seeds]
    assert not torch.equal(expected[0][0], expected[1][0])   # other seeds, other crops
    for workers in (1, 3):
        loader, sampler = batch_loader(here, workers, CPU)
        for epoch in range(2):   # the workers persist; the seeds change per epoch
            sampler.values = seeds[epoch:]
            got = list(loader)
            assert len(got) == len(seeds) - epoch
            for (x, y, w), (ex, ey, ew) in zip(got, expected[epoch:]):
                assert torch.equal(x, ex) and torch.equal(y, ey)
                assert (w is None and ew is None) if not border_weight else torch.equal(w, ew)
        del loader


def test_training_with_loader_workers_is_reproducible_and_resumes(tmp_path):
    root = _annotations(tmp_path / "ann", n=3)
    for name, workers in (("a", 1), ("b", 2)):
        train(root, tmp_path / name, _config(epochs=2, loader_workers=workers, calibrate=False), device=CPU)
    wa, wb = (torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True)["network"] for n in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert load_model(tmp_path / "b").config.training["loader_workers"] == 2
    train(root, tmp_path / "c", _config(epochs=1, loader_workers=2, calibrate=False), device=CPU)
    train(root, tmp_path / "c", _config(epochs=2, loader_workers=2, calibrate=False), device=CPU, resume=True)
    wc = torch.load(tmp_path / "c" / "checkpoints" / "last.pt", weights_only=True)["network"]
    assert all(torch.equal(wa[k], wc[k]) for k in wa)   # two epochs at once == one, then --resume for the second
    with pytest.raises(CellsegError, match="--loader-workers"):
        _config(loader_workers=-1)


def test_interior_width_erodes_touching_cells_apart_by_twice_the_width(annotate):
    labels = np.zeros((64, 96), np.uint16)
    labels[8:56, 8:48], labels[8:56, 48:88] = 1, 2   # two 48 x 40 cells sharing an edge at x = 48
    pair = find_pairs(annotate(labels))[0]
    for width in (2, 6):
        interior = load_sample(pair, percentiles=(1.0, 99.8), interior_width=width).targets[1] > 0
        cols = np.flatnonzero(interior[32])
        gap = np.flatnonzero(np.diff(cols) > 1)
        assert len(gap) == 1 and cols[gap[0] + 1] - cols[gap[0]] - 1 == 2 * width   # the pixels between them
        assert cols[0] == 8 + width and np.flatnonzero(interior[:, 20])[0] == 8 + width
    with pytest.raises(CellsegError, match="--interior-width 0"):
        _config(interior_width=0)


def test_interior_width_is_recorded_inherited_by_fine_tuning_and_checked_on_resume(tmp_path):
    root = _annotations(tmp_path / "ann", n=3)
    first = train(root, tmp_path / "w4", _config(interior_width=4, calibrate=False), device=CPU)
    assert load_model(first.model_dir).config.training["interior_width"] == 4
    tuned = train(root, tmp_path / "tuned", _config(init=str(first.model_dir), calibrate=False), device=CPU)
    assert load_model(tuned.model_dir).config.training["interior_width"] == 4   # the target it learnt
    plain = train(root, tmp_path / "plain", _config(calibrate=False), device=CPU)
    assert load_model(plain.model_dir).config.training["interior_width"] == 2
    with pytest.raises(CellsegError, match="trained with --interior-width 4; resume it with the same"):
        train(root, tmp_path / "w4", _config(epochs=2, interior_width=2, calibrate=False), device=CPU, resume=True)
    resumed = train(root, tmp_path / "w4", _config(epochs=2, interior_width=4, calibrate=False), device=CPU,
                    resume=True)
    assert resumed.epochs_run == 2


def test_border_weight_is_recorded_checked_on_resume_and_batched_alike_by_workers(tmp_path):
    from cellsegcli.training.batches import CropBatches, crop_batches

    root = _annotations(tmp_path / "ann", n=3)
    first = train(root, tmp_path / "bw", _config(border_weight=10, calibrate=False), device=CPU)
    assert load_model(first.model_dir).config.training["border_weight"] == 10
    with pytest.raises(CellsegError, match="trained with --border-weight 10.*resume it with the same"):
        train(root, tmp_path / "bw", _config(epochs=2, calibrate=False), device=CPU, resume=True)
    assert train(root, tmp_path / "bw", _config(epochs=2, border_weight=10, calibrate=False), device=CPU,
                 resume=True).epochs_run == 2
    samples = [load_sample(p, percentiles=(1.0, 99.8), border_weight=10) for p in find_pairs(root)]
    x, y, w = next(crop_batches(samples, 64, 2, 1, Augmentation(), torch.Generator().manual_seed(0)))
    assert x.shape == (2, 1, 64, 64) and y.shape == (2, 2, 64, 64) and w.shape == (2, 1, 64, 64)
    assert w.min() >= 1 - 1e-5
    xs, ys, ws = CropBatches(samples, 64, 2, Augmentation())[7]
    assert ys.shape == y.shape and ws.shape == w.shape
    plain = [load_sample(p, percentiles=(1.0, 99.8)) for p in find_pairs(root)]
    assert next(crop_batches(plain, 64, 2, 1, Augmentation(), torch.Generator().manual_seed(0)))[2] is None
    with pytest.raises(CellsegError, match="--border-weight -1"):
        _config(border_weight=-1)


def test_input_curve_is_part_of_the_network_saved_and_inherited(tmp_path):
    from cellsegcli.models.registry import asinh_curve, input_curve

    x = torch.tensor([0.0, 0.05, 0.1, 1.0, -0.2])
    y = asinh_curve(x, 0.05)
    assert y[0] == 0 and abs(y[3] - 1) < 1e-6 and y[4] == -asinh_curve(-x[4:], 0.05)[0]
    assert abs(float(y[2]) - float(np.arcsinh(2) / np.arcsinh(20))) < 1e-6   # 10 % of the range goes in at 39 %
    torch.manual_seed(0)
    plain, curved = build("resnet18-fpn"), build("resnet18-fpn", asinh=0.05)
    curved.load_state_dict(plain.state_dict())   # the curve has no weights
    plain.eval(), curved.eval()
    image = torch.rand(1, 1, 64, 64) * 0.3
    with torch.no_grad():
        assert torch.allclose(curved(image), plain(asinh_curve(image, 0.05)), atol=1e-5)
        assert not torch.allclose(curved(image), plain(image), atol=1e-3)
        import copy
        assert torch.equal(copy.deepcopy(curved)(image), curved(image))   # a weight average keeps it
    root = _annotations(tmp_path / "ann", n=3)
    first = train(root, tmp_path / "curved", _config(asinh=0.05, calibrate=False), device=CPU)
    loaded = load_model(first.model_dir)
    assert loaded.config.asinh == 0.05 and input_curve(loaded.network) == 0.05
    tuned = train(root, tmp_path / "tuned", _config(init=str(first.model_dir), calibrate=False), device=CPU)
    assert load_model(tuned.model_dir).config.asinh == 0.05          # fine-tuning keeps the curve it learnt
    linear = train(root, tmp_path / "linear", _config(init=str(first.model_dir), asinh=0, calibrate=False),
                   device=CPU)
    assert load_model(linear.model_dir).config.asinh == 0
    assert "asinh" not in json.loads((linear.model_dir / "config.json").read_text())   # reads as before
    with pytest.raises(CellsegError, match="trained with --asinh 0.05; resume it with the same"):
        train(root, tmp_path / "curved", _config(epochs=2, calibrate=False), device=CPU, resume=True)
    assert train(root, tmp_path / "curved", _config(epochs=2, asinh=0.05, calibrate=False), device=CPU,
                 resume=True).epochs_run == 2
    with pytest.raises(CellsegError, match="--asinh -1"):
        _config(asinh=-1)
