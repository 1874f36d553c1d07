"""`reengage train` on the robotics envs: the Baselines regime as a runner
(reengage/baselines_her.py `train_robotics`): the command line's contract, the files it
writes, workers as one member, resume, divergence. Tiny FetchReach runs keep each test to
seconds. Skipped where the `robotics` extra is not installed."""

import csv
import json
import math
import os
import signal

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium_robotics")

import reengage.baselines_her as loop  # noqa: E402
from reengage.baselines_her import (  # noqa: E402
    COLUMNS,
    SETTINGS,
    BaselinesConfig,
    BaselinesRun,
    baselines_config,
    checkpoint_epochs,
)
from reengage.checkpoint import CheckpointError  # noqa: E402
from reengage.cli import ROBOTICS_SETTINGS, main  # noqa: E402
from reengage.config import ConfigError, TrainConfig, validate  # noqa: E402
from reengage.paths import checkpoint_path  # noqa: E402
from reengage.run import RunInterrupted, train  # noqa: E402

# One epoch of the tiny settings: 2 cycles × 2 workers × 1 env × T = 50 -> 200 steps.
TINY = {"workers": 2, "envs_per_worker": 1, "cycles": 2, "batches": 2, "hidden": (16,),
        "test_rollouts": 1, "compile": False, "buffer_size": 10_000}
EPOCH = 200


def _cfg(**changes) -> TrainConfig:
    settings = {"env": "FetchReach", "dim": 3, "method": "ddpg_her", "seeds": [0, 1],
                "steps": 3 * EPOCH, "eval_every": EPOCH, "batch_size": 16,
                "checkpoint_every": EPOCH, "threads": 1, "device": "cpu",
                "extra": dict(TINY)}
    settings.update(changes)
    return TrainConfig(**settings)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _results(rows):
    """What must be reproducible: every column but the clocks."""
    return [{k: v for k, v in row.items() if k not in ("wall_time_s", "updates_per_s")}
            for row in rows]


# -- the command line's contract -------------------------------------------------------------
HAND = ["train", "--env", "HandReach", "--dim", "15", "--method", "reengage_her", "--c",
        "0.0015", "--seeds", "0,1", "--steps", "190000", "--eval-every", "95000", "--quiet",
        "--set", "workers=19", "--set", "envs_per_worker=2"]


def _replace(args, option, value):
    args = list(args)
    args[args.index(option) + 1] = value
    return args


@pytest.mark.parametrize("args, option, words", [
    (_replace(HAND, "--dim", "3"), "--dim", "goal dimension, 15"),
    (_replace(HAND, "--steps", "100000"), "--steps", "95000 or 190000"),
    (_replace(HAND, "--eval-every", "50000"), "--eval-every", "one epoch is 95000"),
    (_replace(HAND, "--eval-every", "285000"), "--eval-every", "divides --steps"),
    ([*HAND, "--set", "alpha=1"], "--set", "it takes workers, envs_per_worker"),
    ([*HAND, "--set", "workers=0"], "--set workers", "positive integer"),
    ([*HAND, "--set", "vectorization_mode=fork"], "--set vectorization_mode", "sync or async"),
    (_replace(HAND, "--method", "sac_her"), "--method",
     "ddpg_her, reengage_her, reengage_her_normalized"),
    (_replace(HAND, "--method", "ddpg_her"), "--c", "takes no --c"),
    ([*HAND, "--gamma", "0.9"], "--gamma", "--set gamma"),
    ([*HAND, "--learning-starts", "0"], "--learning-starts", "Baselines regime"),
    ([*HAND, "--eval-episodes", "7"], "--eval-episodes", "380 episodes"),
    ([*HAND, "--buffer-size", "5", "--set", "buffer_size=7"], "--buffer-size", "contradicts"),
])
def test_a_robotics_command_that_breaks_the_contract_is_refused_in_one_line(
        tmp_path, capsys, args, option, words):
    out = tmp_path / "out"
    code = main([*args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert f"reengage train: {option}:" in err and words in err, err
    assert not out.exists()


def test_normalized_reengage_is_refused_off_the_robotics_envs(tmp_path, capsys):
    code = main(["train", "--env", "ContinuousSeek", "--dim", "2", "--method",
                 "reengage_her_normalized", "--c", "0.1", "--steps", "100", "--out",
                 str(tmp_path / "out")])
    assert code == 2
    assert "robotics envs only" in capsys.readouterr().err


def test_the_paper_command_resolves_to_the_paper_regime():
    """The HandReach command of the contract: 19 × 2 envs, epochs from --steps, α = c/d with
    c the release's weight, the Baselines defaults elsewhere."""
    cfg = _cfg(env="HandReach", dim=15, method="reengage_her", c=0.0015, batch_size=256,
               steps=50 * 95_000, eval_every=95_000, extra={"workers": 19,
                                                             "envs_per_worker": 2})
    validate(cfg)
    base = baselines_config(cfg)
    assert base.epoch_steps() == 50 * 19 * 2 * 50 == 95_000
    assert (base.epochs, base.test_every, base.cycles, base.batches) == (50, 1, 50, 40)
    assert (base.c, base.normalized_goal_gradient, base.batch_size) == (0.0015, False, 256)
    assert base.learner_config().goal_gradient_coef == 0.0015
    assert base.discount() == pytest.approx(0.98) and base.test_rollouts == 10
    normalized = baselines_config(_cfg(env="HandReach", dim=15, method="reengage_her_normalized",
                                       c=0.0, steps=95_000, eval_every=95_000,
                                       extra={"workers": 19}))
    assert normalized.normalized_goal_gradient and normalized.learner_config() \
        .normalized_goal_gradient


def test_checkpoint_every_rounds_up_to_whole_epochs():
    base = baselines_config(_cfg())
    assert [checkpoint_epochs(_cfg(checkpoint_every=k), base)
            for k in (0, 1, EPOCH, EPOCH + 1, 3 * EPOCH)] == [0, 1, 1, 2, 3]


def test_the_help_lists_the_settings_the_regime_takes():
    assert ROBOTICS_SETTINGS == SETTINGS
    names = {f for f in BaselinesConfig.__dataclass_fields__}
    assert set(SETTINGS) <= names
    with pytest.raises(ConfigError, match="epochs"):  # from --steps, not from --set
        validate(_cfg(extra={**TINY, "epochs": 3}))


# -- files -------------------------------------------------------------------------------------
def test_a_run_writes_progress_with_epochs_and_run_json_and_no_policy(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["train", "--env", "FetchReach", "--dim", "3", "--method", "reengage_her", "--c",
            "0.001", "--seeds", "0,1", "--steps", str(2 * EPOCH), "--eval-every", str(EPOCH),
            "--batch-size", "16", "--checkpoint-every", "1", "--quiet", "--out", str(out)]
    for key, value in TINY.items():
        value = list(value) if isinstance(value, tuple) else value
        args += ["--set", f"{key}={json.dumps(value)}"]
    assert main(args) == 0
    for seed in (0, 1):
        rows = _rows(out / f"seed{seed}" / "progress.csv")
        assert list(rows[0]) == COLUMNS and COLUMNS[-1] == "epoch"
        assert [(int(r["step"]), int(r["epoch"])) for r in rows] == [(0, 0), (EPOCH, 1),
                                                                     (2 * EPOCH, 2)]
        assert rows[0]["critic_loss"] == "" and float(rows[1]["critic_loss"]) > 0
        assert 0 <= float(rows[2]["success_rate"]) <= 1
        record = json.loads((out / f"seed{seed}" / "run.json").read_text())
        assert record["status"] == "finished" and record["seed"] == seed
        assert record["step"] == 2 * EPOCH and record["epoch"] == 2
        assert record["label"] == "ReenGAGE(α=0.001/d)+HER"
        assert record["regime"] == "baselines" and record["policy"] is None
        assert record["baselines"]["workers"] == 2 and record["baselines"]["epochs"] == 2
        assert record["baselines"]["test_episodes"] == 2
        assert "diverged_at_step" not in record
        assert not (out / f"seed{seed}" / "policy.pt").exists()
        assert not (out / f"seed{seed}" / "progress.partial.csv").exists()
    assert not checkpoint_path(out, [0, 1]).exists()  # removed once every seed finished
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 2
    assert "writes no policy.pt" in capsys.readouterr().err


# -- resume ------------------------------------------------------------------------------------
def test_a_resumed_run_equals_an_uninterrupted_one_bitwise(tmp_path, monkeypatch):
    """SIGTERM in the middle of epoch 2 (after its first cycle): a checkpoint at that cycle,
    RunInterrupted, run.json `interrupted`; the re-run continues and writes the rows an
    uninterrupted run writes, losses and test results alike."""
    cfg = _cfg(method="reengage_her", c=0.001)
    whole = train(cfg, tmp_path / "whole", progress=False)
    assert [r["status"] for r in whole] == ["finished", "finished"]

    cycle, calls = BaselinesRun.cycle, {"n": 0}

    def interrupted_cycle(self, meter):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return cycle(self, meter)

    out = tmp_path / "split"
    monkeypatch.setattr(BaselinesRun, "cycle", interrupted_cycle)
    with pytest.raises(RunInterrupted) as stop:
        train(cfg, out, progress=False)
    assert stop.value.signal_number == signal.SIGTERM and stop.value.step == 3 * 100
    assert checkpoint_path(out, cfg.seeds).exists()
    assert json.loads((out / "seed0" / "run.json").read_text())["status"] == "interrupted"
    assert not (out / "seed0" / "progress.csv").exists()
    monkeypatch.setattr(BaselinesRun, "cycle", cycle)
    records = train(cfg, out, progress=False)
    assert records[0]["resume_count"] == 1 and records[0]["resumed"][0]["from_step"] == 300
    for seed in cfg.seeds:
        expected = _results(_rows(tmp_path / "whole" / f"seed{seed}" / "progress.csv"))
        got = _results(_rows(out / f"seed{seed}" / "progress.csv"))
        assert len(got) == 4 and got == expected
    assert all(float(r["critic_loss"]) > 0 for r in expected[1:])


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "out"
    cycle = BaselinesRun.cycle

    def stop_at_once(self, meter):
        os.kill(os.getpid(), signal.SIGINT)
        return cycle(self, meter)

    monkeypatch.setattr(BaselinesRun, "cycle", stop_at_once)
    with pytest.raises(RunInterrupted):
        train(_cfg(), out, progress=False)
    monkeypatch.setattr(BaselinesRun, "cycle", cycle)
    with pytest.raises(CheckpointError, match="different configuration"):
        train(_cfg(lr=2e-3), out, progress=False)
    with pytest.raises(CheckpointError, match="different configuration"):
        train(_cfg(extra={**TINY, "batches": 3}), out, progress=False)


# -- divergence --------------------------------------------------------------------------------
def test_a_diverged_member_is_recorded_and_the_others_train_on(tmp_path, monkeypatch):
    """Member 1's loss becomes NaN in its 3rd update (first cycle of epoch 2): run.json says
    diverged at that cycle's step with the quantity, its later rows are missing, and seed 0
    finishes with finite rows."""
    update, calls = loop.DDPG.update, {"n": 0}

    def poisoned(self, **batch):
        values = update(self, **batch)
        calls["n"] += 1
        if calls["n"] >= 5:  # 2 updates per cycle: cycle 3 is epoch 2's first
            values["critic_loss"] = values["critic_loss"].clone()
            values["critic_loss"][1] = math.nan
        return values

    monkeypatch.setattr(loop.DDPG, "update", poisoned)
    records = train(_cfg(), tmp_path, progress=False)
    assert [r["status"] for r in records] == ["finished", "diverged"]
    assert records[1]["diverged_at_step"] == 3 * 100
    assert records[1]["diverged_reason"] == "critic_loss became nan"
    dead, alive = (_rows(tmp_path / f"seed{s}" / "progress.csv") for s in (1, 0))
    assert [r["success_rate"] for r in dead[2:]] == ["", ""] and dead[1]["success_rate"] != ""
    assert all(r["critic_loss"] != "" for r in alive[1:]) and len(alive) == 4


def test_non_finite_parameters_mark_a_member_diverged():
    run = BaselinesRun(BaselinesConfig(env="FetchReach", seeds=[0, 1], **TINY))
    assert run.finite_members().tolist() == [True, True]
    with torch.no_grad():
        next(run.learner.critic.parameters())[1, 0, 0] = math.inf
    assert run.finite_members().tolist() == [True, False]
    run.close()


# -- workers as one member ---------------------------------------------------------------------
def test_each_worker_contributes_exactly_a_batch_from_its_own_episodes():
    run = BaselinesRun(BaselinesConfig(env="FetchReach", seeds=[0, 1], batch_size=64, **TINY))
    run.rollout()
    run.rollout()
    batch = run.sample_batch()
    assert batch["obs"].shape == (2, 2 * 64, 10) and batch["reward"].shape == (2, 2 * 64)
    # Actions identify their episode (noisy, and FetchReach's first observation is the same
    # in every episode): [member, worker, steps, action].
    stored = run.replay.actions[:, :2].reshape(2, 2, -1, 4)
    for m in range(2):
        for w in range(2):
            own = {tuple(row) for row in stored[m, w].tolist()}
            other = {tuple(row) for row in stored[m, 1 - w].tolist()}
            rows = batch["action"][m, w * 64:(w + 1) * 64].tolist()
            assert all(tuple(r) in own and tuple(r) not in other for r in rows)
    # The normaliser's count: Baselines' worker-averaged one starts at W, then every worker
    # adds its episodes' steps.
    assert run.learner.goal_normalizer.count[:, 0].tolist() == [2 + 2 * 2 * 50] * 2
    run.close()


def test_a_member_of_two_workers_trains_as_its_seed_alone():
    settings = dict(TINY, batch_size=32)
    both = BaselinesRun(BaselinesConfig(env="FetchReach", seeds=[0, 1], **settings))
    alone = BaselinesRun(BaselinesConfig(env="FetchReach", seeds=[1], **settings))
    for run in (both, alone):
        for _ in range(2):
            run.rollout()
            run.train_cycle()
    for name, value in alone.learner.state_dict().items():
        torch.testing.assert_close(both.learner.state_dict()[name][1:], value,
                                   rtol=1e-5, atol=1e-6, msg=name)
    n = alone.replay.size
    np.testing.assert_array_equal(both.replay.obs[2:, :n], alone.replay.obs[:, :n])
    assert not np.array_equal(both.replay.obs[0, :n], both.replay.obs[1, :n])  # 2 workers
    success, _ = both.test()
    assert success.shape == (2,)
    both.close()
    alone.close()


# -- learning ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_reengage_train_solves_fetch_reach_within_two_epochs_on_one_worker(tmp_path):
    """Baselines' reference check through the command line: DDPG+HER on one worker with one
    env reaches ≥ 0.9 test success by epoch 2 (10 test episodes), from < 0.5 before training."""
    out = tmp_path / "out"
    assert main(["train", "--env", "FetchReach", "--dim", "3", "--method", "ddpg_her",
                 "--seeds", "0", "--steps", "5000", "--eval-every", "2500", "--quiet",
                 "--threads", "1", "--set", "envs_per_worker=1", "--out", str(out)]) == 0
    rows = _rows(out / "seed0" / "progress.csv")
    assert [int(r["step"]) for r in rows] == [0, 2500, 5000]
    assert float(rows[0]["success_rate"]) < 0.5
    assert max(float(r["success_rate"]) for r in rows[1:]) >= 0.9
