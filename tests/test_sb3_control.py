"""Stable-Baselines3's DDPG+HER as a control column (reengage/sb3_control.py): the same files
as the population loop, the same evaluation episodes, refusals before anything is written,
and resumption at seed granularity."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from stable_baselines3 import DDPG  # noqa: E402
from stable_baselines3.td3.td3 import TD3  # noqa: E402

from reengage import sb3_control  # noqa: E402
from reengage.analysis.aggregate import aggregate_runs  # noqa: E402
from reengage.cli import main  # noqa: E402
from reengage.config import ConfigError, TrainConfig  # noqa: E402
from reengage.run import (  # noqa: E402
    PROGRESS_COLUMNS,
    Evaluator,
    MemberStreams,
    RunInterrupted,
    train,
)
from reengage.sb3_control import SB3Evaluator, train_population  # noqa: E402

CFG = TrainConfig(env="ContinuousSeek", dim=2, method="sb3_ddpg_her", seeds=[0, 1], steps=300,
                  batch_size=32, eval_every=100, eval_episodes=5, learning_starts=100,
                  threads=1, device="cpu", extra={"hidden": (16, 16)})
STEP_LIMIT = 0.4  # the fixed evaluation policy moves at most this far per coordinate


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) if r[key] else math.nan for r in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Two seeds of 300 steps, trained once for the tests that only read the files."""
    out = tmp_path_factory.mktemp("sb3") / "ContinuousSeek-d2" / "sb3_ddpg_her" / "b32_lr0.001"
    return out, train(CFG, out, progress=False)


def _seek_goal(obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """A fixed deterministic policy whose returns depend on the goals: a slow step toward
    the goal, so far goals are missed and near ones reached at different times."""
    return np.clip(goal - obs, -STEP_LIMIT, STEP_LIMIT).astype(np.float32)


class SeekPredictor:
    def predict(self, observation, deterministic=False):
        return _seek_goal(observation["observation"], observation["desired_goal"]), None


class SeekLearner:
    def act(self, state: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        # The state ends with the observation under either input layout.
        position = state[..., -goal.shape[-1]:]
        return (goal - position).clamp(-STEP_LIMIT, STEP_LIMIT)


# -- outputs --------------------------------------------------------------------------------
def test_files_have_the_population_loops_columns_and_schedule(trained):
    out, records = trained
    for seed in CFG.seeds:
        rows = read_rows(out / f"seed{seed}" / "progress.csv")
        assert list(rows[0]) == PROGRESS_COLUMNS
        assert [int(r["step"]) for r in rows] == [0, 100, 200, 300]
        success = column(rows, "success_rate")
        assert all(0.0 <= s <= 1.0 for s in success)
        assert all(-10.0 <= r <= 0.0 for r in column(rows, "mean_return"))
        # No update before learning_starts; SB3 logs no goal-gradient term and no Q mean.
        assert [r["critic_loss"] == "" for r in rows] == [True, True, False, False]
        assert [r["actor_loss"] == "" for r in rows] == [True, True, False, False]
        assert all(r["goal_grad_loss"] == "" and r["q_mean"] == "" for r in rows)
        assert all(math.isfinite(v) for v in column(rows, "critic_loss")[2:])
        rates = column(rows, "updates_per_s")
        assert rates[:2] == [0.0, 0.0] and all(r > 0 for r in rates[2:])
    assert [r["seed"] for r in records] == CFG.seeds
    assert not (out / ".checkpoints").exists()  # the finished seeds' copies are gone


def test_run_json_has_the_population_loops_fields(trained, tmp_path):
    out, records = trained
    # What the population loop writes, from a tiny DDPG+HER run of its own.
    ours = train(replace(CFG, method="ddpg_her", seeds=[0], steps=20, eval_every=10,
                         eval_episodes=1, learning_starts=10, batch_size=8,
                         extra={"hidden": (8, 8), "compile": False}),
                 tmp_path / "ours", progress=False)[0]
    config = json.loads(json.dumps(CFG.to_dict()))
    for seed, record in zip(CFG.seeds, records, strict=True):
        on_disk = json.loads((out / f"seed{seed}" / "run.json").read_text())
        assert on_disk == json.loads(json.dumps(record))
        assert set(ours) <= set(on_disk)
        assert on_disk["format_version"] == ours["format_version"]
        assert on_disk["status"] == "finished" and on_disk["seed"] == seed
        assert on_disk["population"] == [0, 1] and on_disk["config"] == config
        assert on_disk["label"] == "SB3 DDPG+HER" and on_disk["fixed_policy"] is False
        assert on_disk["device"] == "cpu" and on_disk["threads"] == 1
        assert on_disk["step"] == 300 and on_disk["resume_count"] == 0
        assert on_disk["resumed"] == []
        assert on_disk["versions"]["stable_baselines3"].startswith("2.")
        implementation = on_disk["implementation"]
        assert implementation["library"] == "stable-baselines3"
        assert "final state is included" in implementation["her"]
        assert "int(4/5·B) = 25" in implementation["her_relabel"]
        assert implementation["network_input"].startswith(
            "achieved_goal, desired_goal, observation")
    # run.json's wall time is the population's clock: the seeds' own times summed in order.
    assert records[0]["wall_time_s"] == pytest.approx(records[0]["seed_wall_time_s"])
    assert records[1]["wall_time_s"] == pytest.approx(
        records[0]["seed_wall_time_s"] + records[1]["seed_wall_time_s"])


def test_the_analysis_reads_the_control_column(trained):
    out, _ = trained
    table = aggregate_runs(out.parent.parent.parent, "exp")
    assert set(table["variant"]) == {"sb3_ddpg_her"} and set(table["label"]) == {"SB3 DDPG+HER"}
    assert sorted(table["seed"].unique()) == [0, 1] and set(table["status"]) == {"finished"}


# -- refusals -------------------------------------------------------------------------------
@pytest.mark.parametrize("change, option", [
    ({"inputs": "obs_goal"}, "--inputs"),
    ({"her_future": "next_to_penultimate"}, "--her-future"),
    ({"env": "DriveSeek", "steps": 400}, "--env"),
    ({"extra": {"compile": False}}, "--set"),
    ({"extra": {"hidden": (16, 0)}}, "--set"),
    ({"c": 0.2}, "--c"),
])
def test_what_sb3_cannot_do_is_refused_before_anything_is_written(tmp_path, change, option):
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as error:
        train(replace(CFG, **change), out, progress=False)
    assert error.value.option == option
    assert not out.exists()


def test_a_missing_stable_baselines3_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)  # import now fails
    with pytest.raises(ConfigError, match=r"pip install 'stable-baselines3>=2.3'") as error:
        train_population(CFG, tmp_path / "out", progress=False)
    assert error.value.option == "--method" and not (tmp_path / "out").exists()


# -- the command line -----------------------------------------------------------------------
def _cli(out: Path, *extra: str) -> list[str]:
    return ["train", "--env", "ContinuousSeek", "--dim", "2", "--method", "sb3_ddpg_her",
            "--seeds", "3", "--steps", "200", "--eval-every", "100", "--eval-episodes", "5",
            "--learning-starts", "100", "--batch-size", "32", "--set", "hidden=[16,16]",
            "--threads", "1", "--device", "cpu", "--out", str(out), "--quiet", *extra]


def test_reengage_train_runs_the_control_and_refuses_in_one_line(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(_cli(out)) == 0
    rows = read_rows(out / "seed3" / "progress.csv")
    assert [int(r["step"]) for r in rows] == [0, 100, 200]
    record = json.loads((out / "seed3" / "run.json").read_text())
    assert record["status"] == "finished" and record["config"]["extra"] == {"hidden": [16, 16]}

    capsys.readouterr()
    refused = tmp_path / "refused"
    assert main(_cli(refused, "--inputs", "obs_goal")) == 2
    err = capsys.readouterr().err
    assert err.startswith("reengage train: --inputs: ") and err.count("\n") == 1
    assert not refused.exists()
    assert main(_cli(refused, "--set", "compile=false")) == 2
    err = capsys.readouterr().err
    assert err.startswith("reengage train: --set: ") and err.count("\n") == 1
    assert not refused.exists()


# -- resumption -----------------------------------------------------------------------------
def _spy_on_trained_seeds(monkeypatch) -> list[int]:
    """The seeds the runner trains from now on, in order (it still trains them)."""
    trained_seeds: list[int] = []
    original = sb3_control._train_seed

    def spy(cfg, seed, *args):
        trained_seeds.append(seed)
        return original(cfg, seed, *args)

    monkeypatch.setattr(sb3_control, "_train_seed", spy)
    return trained_seeds


def test_a_finished_population_is_trained_again_and_only_kept_seeds_are_skipped(
        trained, tmp_path, monkeypatch):
    """As for the population loop, only what an interrupted run kept counts: a finished
    population is trained again on a re-run, a kept seed of this configuration is read back,
    one of another configuration is not."""
    source, records = trained
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    trained_seeds = _spy_on_trained_seeds(monkeypatch)
    again = train_population(CFG, out, progress=False)
    assert trained_seeds == [0, 1]
    assert [r["status"] for r in again] == ["finished", "finished"]

    # What a run killed while training seed 1 keeps: seed 0's files beside the checkpoints.
    kept = sb3_control.checkpoint_path(out, CFG.seeds).with_suffix(".sb3") / "seed0"
    kept.mkdir(parents=True)
    for name in ("progress.csv", "run.json"):
        (kept / name).write_text((source / "seed0" / name).read_text())
    (out / "seed0" / "run.json").unlink()
    resumed = train_population(CFG, out, progress=False)
    assert trained_seeds == [0, 1, 1]
    assert resumed[0] == json.loads(json.dumps(records[0]))
    assert (out / "seed0" / "run.json").read_text() == (source / "seed0" / "run.json").read_text()
    assert not kept.exists()  # the copies go once every seed is done

    # A kept seed of another configuration is not a finished seed of this one.
    other = replace(CFG, lr=5e-4, steps=100)
    kept.mkdir(parents=True)
    for name in ("progress.csv", "run.json"):
        (kept / name).write_text((source / "seed0" / name).read_text())
    train_population(other, out, progress=False)
    assert trained_seeds == [0, 1, 1, 0, 1]


def test_a_signal_stops_the_seed_in_flight_and_a_rerun_finishes_it(tmp_path, monkeypatch):
    """SIGTERM during seed 1: seed 0 stays finished, seed 1 is written as interrupted. The
    workflow engine then deletes the failed job's outputs; the re-run takes seed 0 back
    from the copy beside the checkpoints and trains seed 1 alone."""
    out = tmp_path / "out"
    original, handler = TD3.train, signal.getsignal(signal.SIGTERM)

    def train_then_signal(self, gradient_steps, batch_size):
        original(self, gradient_steps=gradient_steps, batch_size=batch_size)
        if self.seed == 1 and self.num_timesteps == 150:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(TD3, "train", train_then_signal)
    with pytest.raises(RunInterrupted) as interruption:
        train_population(CFG, out, progress=False)
    assert interruption.value.signal_number == signal.SIGTERM
    # The message tells what a re-run repeats: this runner has no mid-seed checkpoint.
    assert "seed 1 restarts from step 0" in str(interruption.value)
    assert signal.getsignal(signal.SIGTERM) == handler  # the handler is restored
    finished = (out / "seed0" / "run.json").read_text()
    assert json.loads(finished)["status"] == "finished"
    record = json.loads((out / "seed1" / "run.json").read_text())
    assert record["status"] == "interrupted" and 150 <= record["step"] < 300
    assert not (out / "seed1" / "progress.csv").exists()  # nothing finished-looking

    monkeypatch.setattr(TD3, "train", original)
    trained_seeds = _spy_on_trained_seeds(monkeypatch)
    shutil.rmtree(out / "seed0")
    shutil.rmtree(out / "seed1")
    records = train_population(CFG, out, progress=False)
    assert trained_seeds == [1]
    assert [r["status"] for r in records] == ["finished", "finished"]
    assert (out / "seed0" / "run.json").read_text() == finished
    assert len(read_rows(out / "seed0" / "progress.csv")) == 4
    assert len(read_rows(out / "seed1" / "progress.csv")) == 4
    assert not (out / ".checkpoints").exists()  # the copies go once every seed is done


# -- divergence -----------------------------------------------------------------------------
def test_a_non_finite_loss_is_recorded_as_divergence(tmp_path, monkeypatch):
    original = TD3.train

    def train_then_break(self, gradient_steps, batch_size):
        original(self, gradient_steps=gradient_steps, batch_size=batch_size)
        if self.num_timesteps >= 150:
            self.logger.record("train/critic_loss", float("nan"))

    monkeypatch.setattr(TD3, "train", train_then_break)
    record = train_population(replace(CFG, seeds=[0]), tmp_path, progress=False)[0]
    assert record["status"] == "diverged" and record["diverged_at_step"] == 150
    assert record["diverged_reason"] == "critic_loss became nan"
    rows = read_rows(tmp_path / "seed0" / "progress.csv")
    assert [int(r["step"]) for r in rows] == [0, 100, 200, 300]
    assert [r["success_rate"] == "" for r in rows] == [False, False, True, True]


# -- reproducibility ------------------------------------------------------------------------
def test_a_seed_trained_again_gives_the_same_curve(trained, tmp_path):
    """SB3 seeds python, numpy and torch from `seed`: on the CPU with one thread, a seed
    trained alone repeats the curve it had as the first of a population, bit for bit."""
    source, _ = trained
    train_population(replace(CFG, seeds=[1, 0]), tmp_path, progress=False)
    for seed in CFG.seeds:
        first = read_rows(source / f"seed{seed}" / "progress.csv")
        again = read_rows(tmp_path / f"seed{seed}" / "progress.csv")
        for key in ("success_rate", "mean_return", "critic_loss", "actor_loss"):
            assert [r[key] for r in again] == [r[key] for r in first], key


# -- the same evaluation episodes as the population loop -----------------------------------
def test_the_evaluator_plays_the_population_loops_episodes():
    cfg = replace(CFG, eval_episodes=8)
    results = {}
    for seed in (0, 1):
        sb3 = SB3Evaluator(cfg, seed)
        ours = Evaluator(cfg, [MemberStreams.from_seed(seed, cfg.eval_episodes)],
                         torch.device("cpu"))
        results[seed] = []
        for _ in range(3):  # the first evaluation is seeded, the later ones continue
            success, mean_return = ours(SeekLearner())
            assert sb3(SeekPredictor()) == (float(success[0]), float(mean_return[0]))
            results[seed].append((float(success[0]), float(mean_return[0])))
    # The policy's score depends on the goals: different evaluations saw different goals.
    assert len(set(results[0] + results[1])) > 3


def test_the_runner_evaluates_on_the_population_loops_episodes(tmp_path, monkeypatch):
    """With SB3's policy replaced by a fixed one, every row of the runner's progress.csv is
    what reengage.run.Evaluator measures for the same seed at the same evaluation."""
    monkeypatch.setattr(DDPG, "predict", lambda self, observation, state=None,
                        episode_start=None, deterministic=False:
                        SeekPredictor().predict(observation))
    seen = []  # (env steps, gradient steps) at each evaluation
    evaluate = SB3Evaluator.__call__

    def spy(self, model):
        seen.append((model.num_timesteps, model._n_updates))
        return evaluate(self, model)

    monkeypatch.setattr(SB3Evaluator, "__call__", spy)
    cfg = replace(CFG, seeds=[4], steps=200)
    train_population(cfg, tmp_path, progress=False)
    # As in the population loop, an evaluation follows its step's update (steps 101-200).
    assert seen == [(0, 0), (100, 0), (200, 100)]
    rows = read_rows(tmp_path / "seed4" / "progress.csv")
    ours = Evaluator(cfg, [MemberStreams.from_seed(4, cfg.eval_episodes)], torch.device("cpu"))
    for row in rows:
        success, mean_return = ours(SeekLearner())
        assert float(row["success_rate"]) == float(success[0])
        assert float(row["mean_return"]) == float(mean_return[0])
    assert len({r["mean_return"] for r in rows}) > 1
