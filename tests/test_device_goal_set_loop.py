"""DriveSeek and NoisySeek on the device loop (reengage/device/driver.py with the tasks of
reengage/device/goal_sets.py): what the buffer holds is the trajectory the task took and
the learner's rewards are the per-item rewards; a run interrupted mid-episode and resumed
equals the run left alone, and a member equals its seed trained alone, bit for bit on the
CPU; packed Multi-ReenGAGE cells (c and lr differing) equal their cells alone;
`reengage evaluate` replays the run's evaluations, motion noise included."""

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from run_files import policy_weights, progress, sigterm_at

from reengage.config import TrainConfig
from reengage.device import PackedCell, train_on_device, train_pack
from reengage.device.driver import DeviceTraining
from reengage.device.goal_sets import item_reward
from reengage.evaluate import evaluate_run
from reengage.run import RunInterrupted

NETWORKS = {"encoder_hidden": 16, "head_hidden": 16, "embedding": 8}


def _config(env: str, method: str, **changes) -> TrainConfig:
    # Episodes are 40 steps: 130 is mid-episode, after updates began.
    cfg = TrainConfig(env=env, dim=6, method=method, seeds=[0, 1],
                      c=5.0 if method == "multi_reengage" else None, steps=160,
                      learning_starts=80, eval_every=80, eval_episodes=4, batch_size=16,
                      buffer_size=400, threads=1, device="cpu", checkpoint_every=0,
                      loop="device", extra={"networks": NETWORKS})
    return replace(cfg, **changes)





def _assert_same_seed(a: Path, b: Path, seed: int) -> None:
    pd.testing.assert_frame_equal(progress(a, seed), progress(b, seed), check_exact=True)
    wa, wb = policy_weights(a, seed), policy_weights(b, seed)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.mark.parametrize("env, method", [("DriveSeek", "multi_reengage"),
                                         ("NoisySeek", "ddpg")])
def test_the_buffer_holds_the_trajectory_and_rewards_are_item_rewards(env, method):
    cfg = _config(env, method, seeds=[3])
    training = DeviceTraining(cfg, torch.device("cpu"))
    task, replay = training.task, training.replay
    rows = []
    for step in range(1, 2 * training.T + 1):
        mode = training.mode(step)
        training.step(mode)
        obs = task.observation()
        rows.append(torch.cat([obs["achieved_goal"], obs["observation"]], dim=-1)[0, 0])
        if step == training.T:
            goal = task.observation()["desired_goal"][0, 0].clone()
    # The first episode, in ring slot 0: its stored next-observations are what the task
    # showed after each step, and its goal set is the one it was driven under.
    stored = replay.obs[0, 0, 1:]
    assert torch.equal(stored, torch.stack(rows[:training.T]))
    assert torch.equal(stored[:, :2], torch.round(stored[:, 2:4]))  # achieved = rint(pos)
    assert torch.equal(replay.desired[0, 0].view(cfg.dim, 3), goal)
    batch = replay.sample(cfg.batch_size, training.updates)
    n_max = cfg.dim
    expected = item_reward(batch.next_achieved, batch.goal.view(1, -1, n_max, 3))
    assert batch.reward.shape == (1, cfg.batch_size, n_max)
    assert torch.equal(batch.reward, expected)
    assert not batch.relabelled.any()  # no HER on goal sets


@pytest.mark.parametrize("env, method, n_max, skip_padding", [
    ("DriveSeek", "multi_reengage", 6, False), ("NoisySeek", "ddpg", 40, True)])
def test_interrupted_runs_and_lone_members_equal_the_whole_run(tmp_path, env, method, n_max,
                                                               skip_padding):
    # NoisySeek's goals cluster away from the start: more of them and more episodes, or
    # no evaluation scores and the rows could not tell evaluation episodes apart.
    cfg = _config(env, method, dim=n_max, eval_episodes=4 if env == "DriveSeek" else 12,
                  extra={"networks": {**NETWORKS, "skip_padding": skip_padding}})
    train_on_device(cfg, tmp_path / "whole", progress=False)
    with pytest.raises(RunInterrupted) as stopped:
        train_on_device(cfg, tmp_path / "pieced", progress=False, step_hook=sigterm_at(130))
    assert stopped.value.step == 130
    train_on_device(cfg, tmp_path / "pieced", progress=False)
    train_on_device(replace(cfg, seeds=[1]), tmp_path / "alone", progress=False)
    whole = progress(tmp_path / "whole", 1)
    assert list(whole["step"]) == [0, 80, 160]
    assert whole["mean_return"].iloc[1:].sum() > 0  # rows that tell evaluations apart
    assert whole["critic_loss"].iloc[2:].notna().all()  # updates start after step 80
    for seed in cfg.seeds:
        _assert_same_seed(tmp_path / "whole", tmp_path / "pieced", seed)
    if skip_padding:
        # Packing the present rows pads every member to the population's largest count,
        # so the encoder's matrix shapes depend on the population and a member equals its
        # seed alone to float rounding only (as in the numpy loop:
        # tests/test_multi_goal_training.py); the dense encoder is bitwise.
        pd.testing.assert_frame_equal(progress(tmp_path / "whole", 1),
                                      progress(tmp_path / "alone", 1), rtol=1e-5, atol=1e-5)
    else:
        _assert_same_seed(tmp_path / "whole", tmp_path / "alone", 1)
    # `reengage evaluate` replays the device loop's evaluation episodes (NoisySeek: the
    # motion noise of that evaluation too) from the saved policy.
    last = progress(tmp_path / "whole", 0).iloc[-1]
    scores = {s.seed: s for s in evaluate_run(tmp_path / "whole", evaluation="last")}
    # progress.csv keeps 16 significant digits; a different set of episodes would differ by
    # at least 1/eval_episodes.
    assert scores[0].success_rate == pytest.approx(last["success_rate"], abs=1e-12)
    assert scores[0].mean_return == pytest.approx(last["mean_return"], abs=1e-12)
    assert last["mean_return"] > 0 or env == "DriveSeek"  # NoisySeek: noise that mattered


def test_packed_multi_reengage_cells_equal_their_cells_alone(tmp_path):
    settings = [{"c": 5.0, "lr": 1e-3, "seeds": [0, 1]}, {"c": 10.0, "lr": 3e-3, "seeds": [0]}]
    dense = {"networks": {**NETWORKS, "skip_padding": False}}  # bitwise alone, as above
    cells = [PackedCell(_config("DriveSeek", "multi_reengage", steps=120, extra=dense, **s),
                        tmp_path / "pack" / f"cell{i}") for i, s in enumerate(settings)]
    train_pack(cells, tmp_path / "pack", progress=False)
    for i, cell in enumerate(cells):
        alone = tmp_path / f"alone{i}"
        train_on_device(cell.cfg, alone, progress=False)
        for seed in cell.cfg.seeds:
            _assert_same_seed(cell.out, alone, seed)
    # The two cells' seed 0 trained apart (c and lr differ), not as one copy.
    assert not progress(cells[0].out, 0).equals(progress(cells[1].out, 0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("env, method", [("DriveSeek", "multi_reengage"),
                                         ("NoisySeek", "ddpg")])
def test_cuda_goal_set_step_is_captured_once_per_mode_and_never_syncs(env, method):
    """On CUDA (dense encoder, forced there): each mode is captured once, and once captured
    no step or evaluation synchronises with the host (sync debug mode raises on any)."""
    cfg = _config(env, method, device="cuda", dim=20, buffer_size=200, learning_starts=80)
    training = DeviceTraining(cfg, torch.device("cuda"))
    assert not training.learner.model.config.skip_padding
    for step in range(1, 241):
        training.run_step(training.mode(step))
    for _ in range(3):
        training.run_evaluation(None)
    assert training.run_step.captures == 4 and training.run_evaluation.captures == 1
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(241, 401):
            training.run_step(training.mode(step))
        training.run_evaluation(None)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert training.run_step.captures == 4
    assert int(training.updates) == 400 - 80 and int(training.replay.size) == 5
