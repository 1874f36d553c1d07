"""Weights & Biases: one wandb run per seed, grouped by cell, logged live during training, in
the mode the command line or the workflow config asks for."""

import json
import os
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from reengage.cli import build_parser, main
from reengage.workflow import apply_defaults, cells, run_options, train_arguments, validate_config


class FakeRun:
    """What WandbTracker uses of a wandb run; each log call notes what the seed's files say
    at that moment."""

    def __init__(self, out: Path, **kwargs):
        self.out, self.kwargs = out, kwargs
        self.logged: list[tuple[int, dict, str, int, bool]] = []
        self.summary: dict = {}
        self.exit_code: int | None = None

    def log(self, values: dict, step: int) -> None:
        directory = self.out / f"seed{self.kwargs['config']['seed']}"
        status = json.loads((directory / "run.json").read_text())["status"]
        last = int(pd.read_csv(directory / "progress.partial.csv")["step"].iloc[-1])
        self.logged.append((step, values, status, last, (directory / "progress.csv").exists()))

    def finish(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code


def test_every_evaluation_is_logged_while_training_in_the_mode_asked(tmp_path, monkeypatch):
    out = tmp_path / "run"
    runs: list[FakeRun] = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: runs.append(FakeRun(out, **kwargs)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert main(["train", "--env", "ContinuousSeek", "--dim", "2", "--method", "ddpg_her",
                 "--seeds", "0,1", "--steps", "200", "--learning-starts", "100",
                 "--eval-every", "100", "--eval-episodes", "2", "--batch-size", "16",
                 "--set", "hidden=[16,16]", "--set", "compile=false", "--threads", "1",
                 "--quiet", "--out", str(out), "--wandb-project", "proj",
                 "--wandb-group", "cell-a", "--wandb-mode", "online"]) == 0
    assert [run.kwargs["name"] for run in runs] == ["cell-a/seed0", "cell-a/seed1"]
    for seed, run in enumerate(runs):
        assert run.kwargs["mode"] == "online" and run.kwargs["group"] == "cell-a"
        assert run.kwargs["project"] == "proj" and run.kwargs["config"]["seed"] == seed
        assert [step for step, *_ in run.logged] == [0, 100, 200]
        for step, values, status, last_row, finished_file in run.logged:
            # Logged during training: the row is already readable, the seed not finished.
            assert status == "running" and last_row == step and not finished_file
            assert "success_rate" in values and "step" not in values
        assert "critic_loss" not in run.logged[0][1]  # a missing value is not logged
        assert run.summary == {"status": "finished"} and run.exit_code == 0


def test_offline_wandb_run_per_seed(tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    env = {**os.environ, "WANDB_DIR": str(tmp_path / "wandb"), "WANDB_SILENT": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "reengage.cli", "train", "--env", "ContinuousSeek", "--dim", "2",
         "--method", "ddpg_her", "--seeds", "0,1", "--steps", "100", "--learning-starts", "50",
         "--eval-every", "50", "--eval-episodes", "2", "--batch-size", "16", "--quiet",
         "--out", str(out), "--wandb-project", "reengage-test", "--wandb-group", "cell-a"],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    runs = sorted((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    for run in runs:
        files = list(run.glob("run-*.wandb"))
        assert files and files[0].stat().st_size > 0
        # The run's history holds the progress.csv metrics.
        assert b"success_rate" in files[0].read_bytes()


@pytest.mark.parametrize("mode", ["online", "disabled", "offline"])
def test_the_workflow_passes_the_configured_wandb_mode(mode):
    config = apply_defaults({
        "wandb": {"enabled": True, "mode": mode},
        "experiments": {"cs": {"env": "ContinuousSeek", "dims": [2], "steps": 100, "seeds": 1,
                               "methods": [{"name": "ddpg_her"}]}},
    })
    validate_config(config)
    (cell,) = cells(config)
    arguments = train_arguments(config, cell, (0,))
    options = run_options(config)
    args = build_parser().parse_args(["train", *shlex.split(arguments),
                                      *shlex.split(options), "--out", "x"])
    assert args.wandb_project == "reengage" and args.wandb_mode == mode
    # Logging is how a job runs, not what it computes: it stays out of the arguments
    # Snakemake compares with finished jobs'.
    assert "--wandb" not in arguments
