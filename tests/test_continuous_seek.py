"""ContinuousSeek against hand-worked steps (docs/paper.md §2)."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import reengage.envs  # noqa: F401
from reengage.envs.continuous_seek import ContinuousSeekEnv, continuous_seek_reward


def test_check_env_passes():
    check_env(gym.make("reengage/ContinuousSeek-v0", dim=3).unwrapped)


def test_steps_clip_actions_and_walls():
    env = ContinuousSeekEnv(dim=2)
    env.reset(seed=0)
    env.core.goal[:] = [4.0, -4.0]
    obs, reward, *_ = env.step(np.array([3.0, -0.5], dtype=np.float32))  # action clipped to 1
    np.testing.assert_allclose(obs["observation"], [1.0, -0.5])
    assert reward == -1.0
    for _ in range(6):
        obs, *_ = env.step(np.array([1.0, 1.0], dtype=np.float32))
    np.testing.assert_allclose(obs["observation"], [5.0, 5.0])  # stopped by the wall at 5
    np.testing.assert_array_equal(obs["achieved_goal"], obs["observation"])


def test_success_threshold_is_inclusive_l_infinity_0_1():
    g = np.zeros(3, dtype=np.float32)
    assert continuous_seek_reward(np.array([0.1, -0.1, 0.05], np.float32), g) == 0.0
    assert continuous_seek_reward(np.array([0.1001, 0.0, 0.0], np.float32), g) == -1.0
    # L-infinity, not Euclidean: 0.1 in every coordinate is still a success.
    assert continuous_seek_reward(np.full(3, 0.1, np.float32), g) == 0.0


def test_compute_reward_vectorised_over_leading_axes():
    rng = np.random.default_rng(0)
    achieved = rng.uniform(-1, 1, (4, 5, 3)).astype(np.float32)
    desired = achieved + rng.choice([0.0, 0.5], (4, 5, 1)).astype(np.float32)
    reward = ContinuousSeekEnv(3).compute_reward(achieved, desired, None)
    assert reward.shape == (4, 5)
    expected = [[continuous_seek_reward(achieved[i, j], desired[i, j]) for j in range(5)]
                for i in range(4)]
    np.testing.assert_array_equal(reward, np.array(expected))


def test_ten_step_episodes_and_sticky_success():
    env = gym.make("reengage/ContinuousSeek-v0", dim=1)
    env.reset(seed=1)
    env.unwrapped.core.goal[:] = [1.0]
    _, reward, _, truncated, info = env.step(np.array([1.0], np.float32))
    assert reward == 0.0 and info["is_success"] and not truncated
    for t in range(2, 11):
        _, reward, terminated, truncated, info = env.step(np.array([1.0], np.float32))
        assert reward == -1.0 and not terminated
        assert info["is_success"]  # reached once during the episode
        assert truncated == (t == 10)


def test_vector_env_equals_single_env_copy_by_copy():
    seeds = [3, 7, 11]
    vec = gym.make_vec("reengage/ContinuousSeek-v0", num_envs=3,
                       vectorization_mode="vector_entry_point", dim=4)
    singles = [ContinuousSeekEnv(dim=4) for _ in seeds]
    vobs, _ = vec.reset(seed=seeds)
    sobs = [env.reset(seed=s)[0] for env, s in zip(singles, seeds, strict=True)]
    rng = np.random.default_rng(0)
    for _ in range(10):
        for key in ("observation", "desired_goal"):
            np.testing.assert_array_equal(vobs[key], np.stack([o[key] for o in sobs]))
        actions = rng.uniform(-1.5, 1.5, (3, 4)).astype(np.float32)
        vobs, vrew, _, vtrunc, vinfo = vec.step(actions)
        results = [env.step(a) for env, a in zip(singles, actions, strict=True)]
        sobs = [r[0] for r in results]
        np.testing.assert_array_equal(vrew, [r[1] for r in results])
        np.testing.assert_array_equal(vinfo["is_success"], [r[4]["is_success"] for r in results])
    assert vtrunc.all()
    # Next-step autoreset: the following step starts new episodes at the origin.
    vobs, vrew, _, vtrunc, _ = vec.step(np.zeros((3, 4), np.float32))
    np.testing.assert_array_equal(vobs["observation"], np.zeros((3, 4)))
    assert not vtrunc.any()


def test_reset_seeds_each_copy():
    make = lambda: gym.make_vec("reengage/ContinuousSeek-v0", num_envs=2,  # noqa: E731
                                vectorization_mode="vector_entry_point", dim=2)
    a, _ = make().reset(seed=[5, 6])
    b, _ = make().reset(seed=[6, 5])
    np.testing.assert_array_equal(a["desired_goal"][0], b["desired_goal"][1])
    with pytest.raises(ValueError):
        make().reset(seed=[1, 2, 3])
