"""End-to-end training of one grid cell: population equivalence, determinism, learning, and
what a run shows while it trains."""

import json
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reengage.analysis.aggregate import aggregate_runs
from reengage.cli import main
from reengage.config import TrainConfig
from reengage.progress import ProgressListener
from reengage.run import RunInterrupted, train

WALL_CLOCK = ["wall_time_s", "updates_per_s"]
EVALUATION_LINE = re.compile(r"^ContinuousSeek-d3 reengage_her seed 2: step (\d+)/400: "
                             r"success \d\.\d\d, return -?\d+\.\d\d(, \d+ updates/s)?$")


def _train(out: Path, seeds: str, method="reengage_her", *extra: str) -> None:
    args = ["train", "--env", "ContinuousSeek", "--dim", "3", "--method", method,
            "--seeds", seeds, "--steps", "400", "--learning-starts", "100",
            "--eval-every", "200", "--eval-episodes", "5", "--batch-size", "64",
            "--threads", "1", "--out", str(out), "--quiet", *extra]
    if method == "reengage_her":
        args += ["--c", "0.3"]
    assert main(args) == 0


def _progress(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=WALL_CLOCK)


def test_population_member_equals_the_seed_alone(tmp_path):
    _train(tmp_path / "population", "0-2")
    _train(tmp_path / "alone", "1")
    together = _progress(tmp_path / "population" / "seed1" / "progress.csv")
    alone = _progress(tmp_path / "alone" / "seed1" / "progress.csv")
    assert list(together["step"]) == [0, 200, 400]
    assert together["critic_loss"].notna().sum() == 2  # 300 updates were logged
    # Bitwise at the default widths (the closed-form update compiled, fused Adam per
    # member); see README "What is reproducible" for the widths where BLAS rounds
    # a member's products differently.
    pd.testing.assert_frame_equal(together, alone, check_exact=True)
    other = _progress(tmp_path / "population" / "seed0" / "progress.csv")
    assert not np.allclose(other["critic_loss"].iloc[1:], alone["critic_loss"].iloc[1:])


def test_same_command_twice_gives_identical_progress(tmp_path):
    _train(tmp_path / "a", "0,4", "ddpg_her")
    _train(tmp_path / "b", "0,4", "ddpg_her")
    for seed in (0, 4):
        a = _progress(tmp_path / "a" / f"seed{seed}" / "progress.csv")
        b = _progress(tmp_path / "b" / f"seed{seed}" / "progress.csv")
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_outputs_per_seed(tmp_path, capsys):
    _train(tmp_path / "run", "2")
    # --quiet drops the bar but a workflow's log still shows each evaluation.
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "ContinuousSeek-d3 reengage_her seed 2: started, 400 steps"
    evaluations = [line for line in lines if EVALUATION_LINE.match(line)]
    assert [int(EVALUATION_LINE.match(line).group(1)) for line in evaluations] == [0, 200, 400]
    assert len(lines) == 4
    progress = pd.read_csv(tmp_path / "run" / "seed2" / "progress.csv")
    for column in ("step", "success_rate", "mean_return", "critic_loss", "goal_grad_loss",
                   "wall_time_s"):
        assert column in progress
    assert progress["step"].iloc[0] == 0 and np.isnan(progress["critic_loss"].iloc[0])
    record = json.loads((tmp_path / "run" / "seed2" / "run.json").read_text())
    assert record["status"] == "finished" and record["seed"] == 2
    assert record["config"]["c"] == 0.3 and record["config"]["method"] == "reengage_her"
    assert {"torch", "numpy", "gymnasium", "reengage"} <= set(record["versions"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ddpg_her", "reengage_her"])
def test_learns_continuous_seek_d2(tmp_path, method):
    args = ["train", "--env", "ContinuousSeek", "--dim", "2", "--method", method,
            "--seeds", "0,1", "--steps", "3000", "--eval-every", "1500",
            "--eval-episodes", "50", "--out", str(tmp_path), "--quiet"]
    if method == "reengage_her":
        args += ["--c", "0.2"]
    assert main(args) == 0
    final = [pd.read_csv(tmp_path / f"seed{s}" / "progress.csv")["success_rate"].iloc[-1]
             for s in (0, 1)]
    assert pd.read_csv(tmp_path / "seed0" / "progress.csv")["success_rate"].iloc[0] < 0.2
    assert min(final) >= 0.9, final


class FileWatcher(ProgressListener):
    """Reads a seed's files each time it is evaluated: what a user sees mid-run."""

    def __init__(self, out: Path):
        self.out, self.seen, self.started = out, [], []

    def seed_started(self, record, rows):
        self.started.append((record["seed"], record["status"], [r["step"] for r in rows]))

    def evaluated(self, seed, row):
        directory = self.out / f"seed{seed}"
        partial = pd.read_csv(directory / "progress.partial.csv")
        status = json.loads((directory / "run.json").read_text())["status"]
        self.seen.append((seed, row["step"], status, list(partial["step"]),
                          (directory / "progress.csv").exists(),
                          (directory / "policy.pt").exists()))
        if seed == 0 and row["step"] == 100 and not (self.out / "seed5").exists():
            shutil.copytree(directory, self.out / "seed5")  # a running seed, kept as is


def test_progress_is_readable_while_training_and_finished_only_at_the_end(tmp_path):
    """Every evaluation row is in progress.partial.csv as soon as it is measured, with
    run.json `running`; an interrupted seed keeps its rows there and has no progress.csv or
    policy.pt; the resumed run finishes them and removes the partial file."""
    cfg = TrainConfig(env="ContinuousSeek", dim=2, method="ddpg_her", seeds=[0, 1], steps=400,
                      learning_starts=100, batch_size=16, eval_every=100, eval_episodes=3,
                      threads=1, checkpoint_every=0,
                      extra={"hidden": (16, 16), "compile": False})
    out = tmp_path / "ContinuousSeek-d2" / "ddpg_her" / "b16_lr0.001"

    def stop_at_250(step, learner):
        if step == 250:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler's time limit would

    watcher = FileWatcher(out)
    with pytest.raises(RunInterrupted):
        train(cfg, out, progress=False, step_hook=stop_at_250, listeners=[watcher])
    for seed in (0, 1):
        directory = out / f"seed{seed}"
        assert json.loads((directory / "run.json").read_text())["status"] == "interrupted"
        assert list(pd.read_csv(directory / "progress.partial.csv")["step"]) == [0, 100, 200]
        assert not (directory / "progress.csv").exists()
        assert not (directory / "policy.pt").exists()

    records = train(cfg, out, progress=False, listeners=[watcher])
    assert [r["status"] for r in records] == ["finished", "finished"]
    assert watcher.started == [(0, "running", []), (1, "running", []),
                               (0, "running", [0, 100, 200]), (1, "running", [0, 100, 200])]
    assert [(seed, step) for seed, step, *_ in watcher.seen] == [
        (seed, step) for step in (0, 100, 200, 300, 400) for seed in (0, 1)]
    for _, step, status, partial_steps, finished_file, policy in watcher.seen:
        assert status == "running" and not finished_file and not policy
        assert partial_steps == list(range(0, step + 1, 100))
    for seed in (0, 1):
        directory = out / f"seed{seed}"
        assert not (directory / "progress.partial.csv").exists()
        assert list(pd.read_csv(directory / "progress.csv")["step"]) == [0, 100, 200, 300, 400]
        assert (directory / "policy.pt").exists()
    assert not (out / ".checkpoints").exists()
    # The analysis reads the finished seeds and leaves out the one still running.
    table = aggregate_runs(tmp_path, "live")
    assert sorted(table["run_dir"].unique()) == [
        "ContinuousSeek-d2/ddpg_her/b16_lr0.001/seed0",
        "ContinuousSeek-d2/ddpg_her/b16_lr0.001/seed1"]
