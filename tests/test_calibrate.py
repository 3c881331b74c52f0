"""Threshold calibration: exact choices on constructed probability maps, and the CLI's writing rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from cellsegcli.calibrate import Setting, best, sweep
from cellsegcli.cli import app
from cellsegcli.instances import interior_target
from cellsegcli.models import ModelConfig, build, save_model

runner = CliRunner()


def _touching_pairs(size=96) -> np.ndarray:
    """Pairs of touching squares: merged by a bad seed threshold, split by a good one."""
    labels = np.zeros((size, size), np.uint16)
    n = 0
    for y in (8, 56):
        for x in (8, 48):
            labels[y:y + 28, x:x + 16] = n + 1
            labels[y:y + 28, x + 16:x + 32] = n + 2
            n += 2
    return labels


def test_sweep_picks_the_thresholds_that_recover_the_truth():
    labels = _touching_pairs()
    # cell probability 0.35 inside: only threshold 0.3 keeps the cells; interior 0.75: seed thresholds
    # up to 0.7 split the pairs, 0.8 and 0.9 find no seeds and merge each pair into one object
    prob = np.stack([0.35 * (labels > 0), 0.75 * interior_target(labels)]).astype(np.float32)
    settings = sweep([prob], [labels])
    assert len(settings) == 5 * 7
    chosen = best(settings)
    assert (chosen.threshold, chosen.seed_threshold) == (0.3, 0.5)  # tie among 0.3..0.7 -> nearest 0.5
    assert chosen.jaccard == 1.0 and chosen.f1 == 1.0
    merged = next(s for s in settings if (s.threshold, s.seed_threshold) == (0.3, 0.8))
    assert merged.jaccard == 1.0 and merged.f1 == 0.0
    empty = next(s for s in settings if s.threshold == 0.4)
    assert empty.jaccard == 0.0


def test_binary_maps_sweep_the_cell_threshold_only():
    labels = _touching_pairs()
    prob = (0.65 * (labels > 0)).astype(np.float32)[None]
    settings = sweep([prob], [labels > 0])
    assert [s.threshold for s in settings] == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert best(settings).threshold == 0.5  # 0.3..0.6 tie; 0.7 loses everything


def test_best_breaks_ties_towards_the_default():
    a = Setting(0.3, 0.3, 0.8, 0.8, 0.5)
    b = Setting(0.5, 0.6, 0.8, 0.8, 0.5)
    c = Setting(0.7, 0.7, 0.7, 0.95, 0.5)
    assert best([a, b, c]) is c                      # highest objective wins
    assert best([a, b]) is b                         # tie: nearest (0.5, 0.5)
    assert best([a, b], default=(0.3, 0.3)) is a


def test_the_current_thresholds_stay_unless_beaten_by_the_margin():
    current = Setting(0.5, 0.9, 0.80, 0.80, 0.5)
    slightly = Setting(0.4, 0.8, 0.805, 0.805, 0.5)     # objective +0.005
    clearly = Setting(0.6, 0.7, 0.82, 0.82, 0.5)        # objective +0.02
    assert best([current, slightly], (0.5, 0.9), margin=0.01) is current
    assert best([current, slightly], (0.5, 0.9)) is slightly            # no margin: the best wins
    assert best([current, slightly, clearly], (0.5, 0.9), margin=0.01) is clearly
    assert best([slightly], (0.5, 0.9), margin=0.01) is slightly        # current not swept: nothing to keep


def test_sweep_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="as many"):
        sweep([np.zeros((1, 8, 8), np.float32)], [])


def _model_and_annotations(root: Path) -> tuple[Path, Path]:
    import torch

    torch.manual_seed(0)
    weights = root / "weights"
    config = ModelConfig(name="tiny", architecture="resnet18-fpn", tile=64)
    save_model(build("resnet18-fpn", in_channels=1, classes=2), config, weights / "tiny")
    ann = root / "ann"
    (ann / "images").mkdir(parents=True)
    (ann / "masks").mkdir()
    labels = _touching_pairs()
    image = (labels > 0) * 800 + np.random.default_rng(0).normal(200, 30, labels.shape)
    for i in range(2):
        tifffile.imwrite(ann / "images" / f"im{i}.tif", np.roll(image, 5 * i, axis=1).astype(np.uint16))
        tifffile.imwrite(ann / "masks" / f"im{i}.tif", np.roll(labels, 5 * i, axis=1))
    return weights, ann


def test_calibrate_cli_writes_a_copy_and_leaves_shipped_models_alone(tmp_path, monkeypatch):
    weights, ann = _model_and_annotations(tmp_path)
    monkeypatch.setenv("CELLSEG_WEIGHTS", str(weights))
    shipped = (weights / "tiny" / "config.json").read_text()

    refused = runner.invoke(app, ["calibrate", "tiny", str(ann), "--device", "cpu"])
    assert refused.exit_code == 1 and "-o FOLDER" in refused.output

    dry = runner.invoke(app, ["calibrate", "tiny", str(ann), "--device", "cpu", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    record = json.loads(dry.stdout)
    assert record["frames"] == 2 and record["tta"] == "none"
    assert record["after"]["objective"] >= record["before"]["objective"]

    out = tmp_path / "calibrated"
    done = runner.invoke(app, ["calibrate", "tiny", str(ann), "-o", str(out), "--device", "cpu", "--json"])
    assert done.exit_code == 0, done.output
    written = json.loads((out / "config.json").read_text())
    assert (written["threshold"], written["seed_threshold"]) == (record["after"]["threshold"],
                                                                 record["after"]["seed_threshold"])
    assert written["training"]["calibration"] == json.loads(done.stdout)
    assert (out / "model.safetensors").read_bytes() == (weights / "tiny" / "model.safetensors").read_bytes()
    assert (weights / "tiny" / "config.json").read_text() == shipped

    again = runner.invoke(app, ["calibrate", "tiny", str(ann), "-o", str(out), "--device", "cpu"])
    assert again.exit_code == 1 and "not empty" in again.output


@pytest.mark.parametrize("where", ["copy", "in place"])
def test_calibrate_on_a_full_disk_is_one_line_and_leaves_no_partial_model(tmp_path, monkeypatch, where):
    import errno
    import os

    import cellsegcli.models

    weights, ann = _model_and_annotations(tmp_path)
    before = sorted(p.name for p in weights.iterdir()), (weights / "tiny" / "config.json").read_text()

    def full(folder, config):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cellsegcli.models, "write_config", full)
    out = tmp_path / "calibrated"
    args = ["-o", str(out)] if where == "copy" else []
    result = runner.invoke(app, ["calibrate", str(weights / "tiny"), str(ann), "--device", "cpu", *args])
    target = out if where == "copy" else weights / "tiny"
    assert result.exit_code == 1
    assert result.output.strip().endswith(f"{target}: no space left on the device; free some space or choose "
                                          f"another output folder")
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    assert (sorted(p.name for p in weights.iterdir()), (weights / "tiny" / "config.json").read_text()) == before


def test_calibrate_cli_updates_a_model_folder_in_place(tmp_path):
    weights, ann = _model_and_annotations(tmp_path)
    folder = weights / "tiny"
    result = runner.invoke(app, ["calibrate", str(folder), str(ann), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    config = json.loads((folder / "config.json").read_text())
    assert config["threshold"] == record["after"]["threshold"]
    assert config["training"]["calibration"]["frames"] == 2


def test_calibrate_with_diameter_segments_as_segment_would_and_records_it(tmp_path):
    import dataclasses

    from cellsegcli.models.folder import read_config, write_config

    weights, ann = _model_and_annotations(tmp_path)
    folder = weights / "tiny"
    no_size = runner.invoke(app, ["calibrate", str(folder), str(ann), "--device", "cpu", "--dry-run",
                                  "--diameter", "20"])
    assert no_size.exit_code == 1 and "records no training cell diameter" in no_size.output
    write_config(folder, dataclasses.replace(read_config(folder), diameter=20.0))
    records = {}
    for d in (None, "20", "40"):
        result = runner.invoke(app, ["calibrate", str(folder), str(ann), "--device", "cpu", "--dry-run", "--json",
                                     *(["--diameter", d] if d else [])])
        assert result.exit_code == 0, result.output
        records[d] = json.loads(result.stdout)
    assert records["40"]["diameter"] == 40.0 and records[None]["diameter"] is None
    # the model's own diameter resizes nothing: the very same scores; twice it halves the frames first
    assert records["20"]["before"] == records[None]["before"]
    assert records["40"]["before"] != records[None]["before"]


def test_sizes_sweep_drops_debris_the_annotations_do_not_have():
    from cellsegcli.calibrate import best_size, sweep_sizes

    labels = _touching_pairs()
    prob = np.stack([0.9 * (labels > 0), 0.9 * interior_target(labels)]).astype(np.float32)
    prob[0, 90:94, 2:6] = 0.9                 # a 16 px speck of debris, alone on the background
    prob[1, 90:94, 2:6] = 0.9
    settings = sweep_sizes([prob], [labels], [1, 10, 20, 500], threshold=0.5, seed_threshold=0.5)
    assert [s.min_size for s in settings] == [1, 10, 20, 500]
    by = {s.min_size: s for s in settings}
    assert by[20].f1 == 1.0 and by[1].f1 < 1.0 and by[10].f1 == by[1].f1     # the speck is 16 px
    assert by[500].f1 == 0.0                                                  # every cell (448 px) goes too
    assert best_size(settings, current=1).min_size == 20
    assert best_size(settings[:3], current=1, margin=0.2).min_size == 1      # not beaten by the margin


def test_calibrate_chooses_the_smallest_cell_too_when_the_model_knows_its_cell_size(tmp_path):
    import dataclasses

    from cellsegcli.models.folder import read_config, write_config

    weights, ann = _model_and_annotations(tmp_path)
    folder = weights / "tiny"
    write_config(folder, dataclasses.replace(read_config(folder), diameter=20.0, min_size=7))
    result = runner.invoke(app, ["calibrate", str(folder), str(ann), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    tried = record["sizes"]["tried"]
    shares = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
    assert tried == sorted({7, *(round(f * 3.14159265 / 4 * 400) for f in shares)})
    assert record["before"]["min_size"] == 7 and record["after"]["min_size"] in tried
    assert record["sizes"]["margin"] == 0.01   # a model's own size is protected as its thresholds are
    assert record["margin"] == 0.01
    assert json.loads((folder / "config.json").read_text())["min_size"] == record["sizes"]["model_min_size"]
    kept = runner.invoke(app, ["calibrate", str(folder), str(ann), "--device", "cpu", "--json", "--keep-min-size",
                               "--dry-run"])
    assert kept.exit_code == 0 and "sizes" not in json.loads(kept.stdout)


def test_calibrating_a_calibrated_model_again_changes_nothing(tmp_path):
    """Thresholds and smallest cell are chosen in turn until neither moves the other, so a second calibration
    on the same frames starts where the first ended and stays there."""
    import dataclasses

    from cellsegcli.models.folder import read_config, write_config

    weights, ann = _model_and_annotations(tmp_path)
    folder = weights / "tiny"
    write_config(folder, dataclasses.replace(read_config(folder), diameter=20.0, min_size=7))
    first = runner.invoke(app, ["calibrate", str(folder), str(ann), "--device", "cpu", "--json"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["calibrate", str(folder), str(ann), "--device", "cpu", "--json"])
    assert second.exit_code == 0, second.output
    after, again = json.loads(first.stdout)["after"], json.loads(second.stdout)
    assert again["before"] == after and again["after"] == after


def test_a_new_size_chooses_the_thresholds_again(tmp_path, monkeypatch):
    """The search itself, on an objective where the best seed depends on the size (as on a phase fold: seed 0.9
    at the annotations' size, 0.8 at the size chosen next): thresholds, then size, then thresholds again."""
    import dataclasses

    import torch

    from cellsegcli import calibrate
    from cellsegcli.models import load_model
    from cellsegcli.models.folder import read_config, write_config
    from cellsegcli.training.data import find_pairs, load_sample

    def objective(seed, size):
        best_seed = 0.9 if size < 50 else 0.8
        return 0.8 - 0.1 * abs(seed - best_seed) - abs(size - 94) / 100

    calls = []

    def fake_sweep(maps, truths, *, min_size=0, thresholds, seed_thresholds, splits, **_):
        calls.append(("thresholds", min_size))
        return [Setting(t, s, objective(s, min_size), objective(s, min_size) - (t != 0.5), 0.0, split_clumps=c)
                for t in thresholds for s in seed_thresholds for c in splits]

    def fake_sweep_sizes(maps, truths, sizes, *, threshold, seed_threshold, split_clumps=False, **_):
        calls.append(("sizes", seed_threshold))
        return [Setting(threshold, seed_threshold, objective(seed_threshold, z), objective(seed_threshold, z), 0.0,
                        min_size=z, split_clumps=split_clumps) for z in sizes]

    monkeypatch.setattr(calibrate, "sweep", fake_sweep)
    monkeypatch.setattr(calibrate, "sweep_sizes", fake_sweep_sizes)
    weights, ann = _model_and_annotations(tmp_path)
    folder = weights / "tiny"
    write_config(folder, dataclasses.replace(read_config(folder), diameter=20.0, min_size=7))
    model = load_model(folder)
    samples = [load_sample(p, percentiles=model.config.percentiles) for p in find_pairs(ann)]
    result = calibrate.calibrate_samples(model, samples, torch.device("cpu"), sizes=True, margin=0.0, size_margin=0.0)
    assert (result.chosen.threshold, result.chosen.seed_threshold, result.chosen.min_size) == (0.5, 0.8, 94)
    # seeds at the model's 7 px (0.9), the size at 0.9 (94 px), seeds at 94 px (0.8), the size at 0.8 (94 px): done
    assert calls == [("thresholds", 7), ("sizes", 0.9), ("thresholds", 94), ("sizes", 0.8)]
    assert result.current.min_size == 7 and result.model_min_size == 94
