"""Command-line conventions: exit codes (0 ok, 1 input/option, 2 usage as click reports it, 3 quality gate,
70 internal error), three plain lines for a usage error, flags without fake metavars, ``--json`` errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from cellsegcli import cli, pipeline
from cellsegcli.cli import app, main


def _main(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.mark.parametrize("args", [
    ["segment", "--bogus", "x.tif"],            # unknown option
    ["segment", "--tta", "d8", "x.tif"],        # bad choice
    ["segment", "--tile", "big", "x.tif"],      # bad type
    ["segment"],                                # missing argument
    ["nosuch"],                                 # unknown command
    ["segment", "--no-image=yes", "x.tif"],     # a flag given a value
])
def test_usage_errors_exit_2_in_at_most_three_plain_lines(capsys, args):
    code, out, err = _main(capsys, *args)
    lines = err.strip().splitlines()
    assert code == cli.EXIT_USAGE == 2 and out == ""
    assert 1 <= len(lines) <= 3 and lines[0].startswith("cellseg: usage error: ")
    assert not any(ch in err for ch in "╭╰│─") and "Traceback" not in err


def test_usage_error_with_json_is_a_json_document(capsys):
    code, out, err = _main(capsys, "segment", "--tta", "d8", "x.tif", "--json")
    assert code == 2 and json.loads(out) == {"error": err.splitlines()[0].removeprefix("cellseg: usage error: "),
                                             "exit_code": 2}


def test_input_errors_exit_1_and_json_says_why(capsys, tmp_path):
    code, out, err = _main(capsys, "segment", str(tmp_path / "missing.tif"), "--json")
    assert code == cli.EXIT_INPUT == 1
    assert err.strip().count("\n") == 0 and "missing.tif: no such file" in err
    assert json.loads(out)["exit_code"] == 1 and "missing.tif: no such file" in json.loads(out)["error"]


def test_an_internal_error_exits_70_with_one_line(capsys, tmp_path, monkeypatch, env):
    src = tmp_path / "m.tif"
    tifffile.imwrite(src, np.ones((2, 32, 32), np.uint16), imagej=True, metadata={"axes": "TYX"})

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(pipeline, "segment", broken)
    code, out, err = _main(capsys, "segment", str(src), "--model", "tiny")
    assert code == cli.EXIT_INTERNAL == 70
    assert err.strip().count("\n") == 0 and "internal error: ZeroDivisionError: a bug" in err


def test_help_and_version_exit_0(capsys):
    assert _main(capsys, "--version")[0] == 0
    assert _main(capsys, "segment", "-h")[0] == 0


def test_no_arguments_prints_the_help_and_exits_2(capsys):
    code, out, err = _main(capsys)
    assert code == 2 and "segment" in out + err


@pytest.mark.parametrize("command", ["segment", "train", "evaluate", "track", "export", "calibrate", "overlay",
                                     "models"])
def test_flags_show_no_value_in_the_help(command):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output and "list[str]" not in result.output
