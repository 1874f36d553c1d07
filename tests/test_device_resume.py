"""Checkpoints and resume on the device loop (reengage/device/driver.py), and how
`reengage train --loop device` reaches it: a run interrupted by SIGTERM mid-episode and
resumed equals the run left alone, bit for bit on the CPU; periodic checkpoints; the
numpy loop's checkpoint is refused; the command line dispatches and refuses."""

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from run_files import progress, sigterm_at

from reengage.checkpoint import CheckpointError, fingerprint
from reengage.cli import main
from reengage.config import TrainConfig
from reengage.paths import checkpoint_path
from reengage.run import RunInterrupted, train


def _config(**changes) -> TrainConfig:
    # Episodes are 10 steps: 325 is mid-episode, after updates began. At d = 1 the policy
    # succeeds now and then, so evaluation goals (their stream counter) matter to the rows.
    cfg = TrainConfig(env="ContinuousSeek", dim=1, method="reengage_her", seeds=[0, 1], c=0.3,
                      steps=500, learning_starts=100, eval_every=100, eval_episodes=5,
                      batch_size=32, buffer_size=300, threads=1, device="cpu",
                      checkpoint_every=0, loop="device",
                      extra={"hidden": (32, 32), "compile": False})
    return replace(cfg, **changes)




def test_a_run_interrupted_mid_episode_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = _config()
    reference = train(cfg, tmp_path / "whole", progress=False)
    out = tmp_path / "interrupted"
    with pytest.raises(RunInterrupted) as stopped:
        train(cfg, out, progress=False, step_hook=sigterm_at(325))
    assert stopped.value.step == 325
    assert checkpoint_path(out, cfg.seeds).exists()
    for seed in cfg.seeds:
        record = json.loads((out / f"seed{seed}" / "run.json").read_text())
        assert record["status"] == "interrupted" and record["step"] == 325
        assert list(pd.read_csv(out / f"seed{seed}" / "progress.partial.csv")["step"]) == [
            0, 100, 200, 300]
    resumed = train(cfg, out, progress=False)
    assert [r["status"] for r in resumed] == ["finished", "finished"]
    assert [r["resumed"][0]["from_step"] for r in resumed] == [325, 325]
    assert not checkpoint_path(out, cfg.seeds).exists()
    for seed in cfg.seeds:
        whole, pieced = progress(tmp_path / "whole", seed), progress(out, seed)
        assert list(whole["step"]) == [0, 100, 200, 300, 400, 500]
        assert whole["success_rate"].iloc[4:].sum() > 0  # rows that can tell goals apart
        pd.testing.assert_frame_equal(whole, pieced, check_exact=True)
        a = torch.load(tmp_path / "whole" / f"seed{seed}" / "policy.pt")["weights"]
        b = torch.load(out / f"seed{seed}" / "policy.pt")["weights"]
        for name in a:
            assert torch.equal(a[name], b[name]), name
    assert reference[0]["resumed"] == [] and reference[0]["resume_count"] == 0
    # The resumed run continued the wall clock rather than restarting it.
    wall = pd.read_csv(out / "seed0" / "progress.csv")["wall_time_s"]
    assert wall.is_monotonic_increasing


def test_checkpoints_fall_every_checkpoint_every_steps(tmp_path):
    cfg = _config(steps=300, checkpoint_every=120)
    out = tmp_path / "run"
    ckpt = checkpoint_path(out, cfg.seeds)
    seen = {}

    def look(step, learner):
        seen[step] = ckpt.exists() and ckpt.stat().st_mtime_ns

    train(cfg, out, progress=False, step_hook=look)
    # Written after steps 120 and 240 (the hook runs before the step's checkpoint).
    assert not seen[120] and seen[121] and seen[240] == seen[121] and seen[241] != seen[121]
    assert not ckpt.exists()  # removed once every seed finished


def test_the_numpy_loops_checkpoint_is_refused(tmp_path):
    numpy_cfg = _config(loop="numpy", steps=300)
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        train(numpy_cfg, out, progress=False, step_hook=sigterm_at(150))
    with pytest.raises(CheckpointError, match="different configuration"):
        train(replace(numpy_cfg, loop="device"), out, progress=False)


def test_checkpoints_from_before_the_loop_setting_still_match():
    settings = _config(loop="numpy").to_dict()
    before = {k: v for k, v in settings.items() if k != "loop"}
    assert fingerprint(settings) == fingerprint(before)
    assert fingerprint({**settings, "loop": "device"}) != fingerprint(before)


def _command(out: Path, *extra: str) -> list[str]:
    return ["train", "--env", "ContinuousSeek", "--dim", "2", "--method", "ddpg_her",
            "--seeds", "0", "--steps", "150", "--learning-starts", "50", "--eval-every", "50",
            "--eval-episodes", "3", "--batch-size", "16", "--threads", "1", "--device", "cpu",
            "--set", "hidden=[16,16]", "--set", "compile=false", "--quiet", "--out",
            str(out), *extra]


def test_the_command_line_runs_the_device_loop(tmp_path):
    assert main(_command(tmp_path / "device", "--loop", "device")) == 0
    assert main(_command(tmp_path / "numpy")) == 0
    device = json.loads((tmp_path / "device" / "seed0" / "run.json").read_text())
    numpy_ = json.loads((tmp_path / "numpy" / "seed0" / "run.json").read_text())
    assert device["config"]["loop"] == "device" and numpy_["config"]["loop"] == "numpy"
    # Two loops ran: the same seed's random streams differ, so the curves do too.
    a, b = progress(tmp_path / "device", 0), progress(tmp_path / "numpy", 0)
    assert list(a["step"]) == list(b["step"]) == [0, 50, 100, 150]
    assert not a["critic_loss"].equals(b["critic_loss"])


@pytest.mark.parametrize("extra, option", [
    (["--env", "DriveSeek"], "--env"),
    (["--method", "sac_her"], "--method"),
])
def test_the_command_line_refuses_what_the_device_loop_does_not_train(tmp_path, capsys, extra,
                                                                        option):
    assert main(_command(tmp_path / "run", "--loop", "device", *extra)) == 2
    assert option in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_unknown_loop_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(_command(tmp_path / "run", "--loop", "gpu"))
    assert stopped.value.code == 2 and "--loop" in capsys.readouterr().err


def test_evaluate_replays_a_device_loop_runs_evaluations(tmp_path):
    """`reengage evaluate` of a device-loop seed plays the episodes of the device loop's
    own evaluations (its counter streams), so `--evaluation last` gives progress.csv's last
    row; the numpy loop's episodes would not."""
    from reengage.evaluate import evaluate_run

    cfg = _config(seeds=[1])
    train(cfg, tmp_path, progress=False)
    rows = pd.read_csv(tmp_path / "seed1" / "progress.csv")
    assert rows["success_rate"].iloc[-1] > 0  # a row that tells episodes apart
    (last,) = evaluate_run(tmp_path, evaluation="last")
    assert (last.success_rate, last.mean_return) == (rows["success_rate"].iloc[-1],
                                                     rows["mean_return"].iloc[-1])
    numpy_loop = replace(cfg, loop="numpy")
    document = torch.load(tmp_path / "seed1" / "policy.pt")
    from reengage.evaluate import evaluate_policy

    other = evaluate_policy({**document, "config": numpy_loop.to_dict()},
                            evaluation=len(rows))
    assert other != (last.success_rate, last.mean_return)
