"""The device ContinuousSeek against the numpy env, and the counter-based streams it draws
from (reengage/device/seek.py, reengage/device/streams.py)."""

import numpy as np
import pytest
import torch

from reengage.agents.noise import splitmix64
from reengage.device.seek import SeekTask, seek_reward
from reengage.device.streams import GAMMA, GOALS, REPLAY, CounterStreams, below, mix64
from reengage.envs.continuous_seek import (
    EPISODE_STEPS,
    ContinuousSeekVectorEnv,
    continuous_seek_reward,
)


def test_task_matches_the_numpy_env_given_the_same_goals_and_actions():
    members, dim, episodes = 3, 4, 3
    env = ContinuousSeekVectorEnv(members, dim=dim)
    task = SeekTask(members, 1, dim, "cpu")
    rng = np.random.default_rng(0)
    compared = 0
    for episode in range(episodes):
        env.reset(seed=list(range(members)) if episode == 0 else None)
        # Goals near the path, and one exactly reachable, so that successes happen.
        goals = rng.uniform(-2, 2, (members, dim)).astype(np.float32)
        goals[0] = np.float32(0.5) * np.arange(1, dim + 1, dtype=np.float32) / dim
        env.core.goal[:] = goals
        task.begin(torch.from_numpy(goals).view(members, 1, dim))
        for t in range(EPISODE_STEPS):
            # Large actions test the clipping to [-1, 1] and to the box [-5, 5].
            action = rng.uniform(-1.6, 1.6, (members, dim)).astype(np.float32)
            if t < 2:
                action[0] = np.float32(0.5) * np.arange(1, dim + 1, dtype=np.float32) / dim / 2
            action[2, 0] = 1.6  # member 2 runs into the wall at +5
            obs, reward, terminated, truncated, info = env.step(action)
            t_reward, t_truncated = task.step(torch.from_numpy(action).view(members, 1, dim))
            t_obs = task.observation()
            for key in ("observation", "achieved_goal", "desired_goal"):
                np.testing.assert_array_equal(t_obs[key][:, 0].numpy(), obs[key])
            np.testing.assert_array_equal(t_reward[:, 0].numpy(), reward)
            np.testing.assert_array_equal(t_truncated[:, 0].numpy(), truncated)
            np.testing.assert_array_equal(task.reached[:, 0].numpy(), info["is_success"])
            assert not terminated.any()
            compared += 1
        assert truncated.all()  # the episode ends after EPISODE_STEPS on both
        assert info["is_success"][0]  # the reachable goal was reached
        assert obs["observation"][2, 0] == 5.0
    assert compared == episodes * EPISODE_STEPS


def test_begin_starts_every_episode_afresh():
    task = SeekTask(2, 3, 2, "cpu")
    task.begin(torch.ones(2, 3, 2))
    task.step(torch.ones(2, 3, 2))  # reaches the goal (1, 1)
    task.step(torch.zeros(2, 3, 2))
    assert task.reached.all() and task.elapsed.eq(2).all()
    goal = torch.full((2, 3, 2), 0.25)
    task.begin(goal)
    assert task.elapsed.eq(0).all() and task.position.eq(0).all() and not task.reached.any()
    assert torch.equal(task.goal, goal)


def test_reward_matches_the_numpy_reward():
    rng = np.random.default_rng(1)
    achieved = rng.uniform(-1, 1, (500, 3)).astype(np.float32)
    goal = achieved + rng.uniform(-0.15, 0.15, (500, 3)).astype(np.float32)
    expected = continuous_seek_reward(achieved, goal)
    assert 0 < (expected == 0).sum() < 500
    got = seek_reward(torch.from_numpy(achieved), torch.from_numpy(goal))
    np.testing.assert_array_equal(got.numpy(), expected)


def test_mix64_is_splitmix64():
    """The tensor version with wrapping int64 arithmetic and masked shifts gives the bits of
    the reference (agents/noise.py): `splitmix64(x)` is `mix64(x + γ)`."""
    values = [0, 1, 2**63 - 1, 12345678901234567, 2**64 - 1, 2**63]
    signed = [v - 2**64 if v >= 2**63 else v for v in values]
    got = mix64(torch.tensor(signed, dtype=torch.int64) + GAMMA)
    assert [int(x) & (2**64 - 1) for x in got] == [splitmix64(v) for v in values]


def test_a_stream_is_splitmix64_from_the_members_key():
    """Draw j at counter c is output c·2^32 + j of splitmix64 (the reference, agents/noise.py,
    is its mixing function) seeded with the member's key for that purpose."""
    streams = CounterStreams([4, 8], "cpu")
    got = streams.bits(REPLAY, torch.tensor(3), 5)
    for m in range(2):
        key = int(streams.keys[m, REPLAY]) & (2**64 - 1)
        expected = [splitmix64((key + (3 * 2**32 + j) * 0x9E3779B97F4A7C15) & (2**64 - 1))
                    for j in range(5)]
        assert [int(x) & (2**64 - 1) for x in got[m]] == expected


def test_streams_are_per_member_and_counter_keyed():
    together = CounterStreams([5, 9, 11], "cpu")
    alone = CounterStreams([9], "cpu")
    counter = torch.tensor(17)
    assert torch.equal(together.bits(GOALS, counter, 64)[1], alone.bits(GOALS, counter, 64)[0])
    normal_together = together.normal(GOALS, counter, 7)
    assert torch.equal(normal_together[1], alone.normal(GOALS, counter, 7)[0])
    # Another counter, another purpose or another member: other numbers.
    assert not torch.equal(together.bits(GOALS, counter + 1, 64), together.bits(GOALS, counter,
                                                                                64))
    assert not torch.equal(together.bits(REPLAY, counter, 64), together.bits(GOALS, counter, 64))
    assert not torch.equal(together.bits(GOALS, counter, 64)[0],
                           together.bits(GOALS, counter, 64)[2])


def test_stream_distributions():
    streams = CounterStreams([3], "cpu")
    u = streams.uniform(GOALS, torch.tensor(0), 200_000)
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.003 and abs(u.var().item() - 1 / 12) < 0.002
    z = streams.normal(GOALS, torch.tensor(1), 200_000)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert abs((z.abs() < 1).double().mean().item() - 0.6827) < 0.005
    k = below(streams.bits32(GOALS, torch.tensor(2), 100_000), torch.tensor(7))
    counts = torch.bincount(k.flatten(), minlength=7).double()
    assert k.min() == 0 and k.max() == 6
    assert (counts / counts.sum() - 1 / 7).abs().max() < 0.006


def test_goals_are_uniform_on_the_box_and_fresh_per_episode():
    task = SeekTask(2, 1000, 3, "cpu")
    streams = CounterStreams([0, 1], "cpu")
    first = task.draw_goals(streams, GOALS, torch.tensor(0))
    second = task.draw_goals(streams, GOALS, torch.tensor(1))
    assert first.dtype == torch.float32 and first.abs().max() <= 5
    assert abs(first.mean().item()) < 0.2 and first.std().item() == pytest.approx(10 / 12**0.5,
                                                                                  rel=0.05)
    assert not torch.equal(first, second)
