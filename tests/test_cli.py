"""Bad input: one line on stderr naming the option, exit status 2, nothing written."""

import subprocess
import sys

import pytest

from reengage.cli import main
from reengage.config import parse_seeds

GOOD = {"--env": "ContinuousSeek", "--dim": "2", "--method": "reengage_her", "--c": "0.2",
        "--seeds": "0-1", "--steps": "100", "--eval-every": "50"}


def _args(out, **changes):
    options = {**GOOD, **{k.replace("_", "-"): v for k, v in changes.items()}}
    args = ["train", "--out", str(out), "--quiet"]
    for key, value in options.items():
        if value is not None:
            args += [key, value]
    return args


def _exit_code(args):
    """argparse exits for malformed numbers; our checks return the code."""
    try:
        return main(args)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize("change, option", [
    ({"--env": "HalfCheetah"}, "--env"),
    ({"--method": "ppo"}, "--method"),
    ({"--dim": "0"}, "--dim"),
    ({"--dim": "two"}, "--dim"),
    ({"--c": "-0.1"}, "--c"),
    ({"--c": None}, "--c"),
    ({"--method": "ddpg_her"}, "--c"),
    ({"--batch-size": "0"}, "--batch-size"),
    ({"--batch-size": "2000000"}, "--batch-size"),
    ({"--steps": "0"}, "--steps"),
    ({"--steps": "1.5"}, "--steps"),
    ({"--eval-every": "-3"}, "--eval-every"),
    ({"--seeds": "0-"}, "--seeds"),
    ({"--seeds": "3-1"}, "--seeds"),
    ({"--seeds": "a,b"}, "--seeds"),
    ({"--seeds": "1,1"}, "--seeds"),
])
def test_bad_option_is_refused_in_one_line(tmp_path, capsys, change, option):
    out = tmp_path / "out"
    code = _exit_code(_args(out, **change))
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert option in err
    assert not out.exists()


def test_existing_non_empty_out_needs_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "seed0").mkdir()
    assert _exit_code(_args(out)) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "--force" in err
    assert [p.name for p in out.iterdir()] == ["seed0"]


def test_seed_lists_and_ranges():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("0,3,5") == [0, 3, 5]
    assert parse_seeds("0-1,7") == [0, 1, 7]


def test_console_script_help_and_error():
    result = subprocess.run([sys.executable, "-m", "reengage.cli", "train", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "--seeds" in result.stdout and "--c" in result.stdout
    result = subprocess.run([sys.executable, "-m", "reengage.cli", "train", "--env", "X"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
