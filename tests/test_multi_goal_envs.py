"""DriveSeek, NoisySeek and the greedy agent against hand-worked values (docs/paper.md §2)."""

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import reengage.envs  # noqa: F401
from reengage.agents.greedy import greedy_action, greedy_mean_return
from reengage.envs.multi_goal import (
    DriveSeekEnv,
    NoisySeekEnv,
    item_reward,
    multi_goal_reward,
    pack_goal_set,
    sample_drive_seek_goals,
    sample_noisy_seek_goals,
)

ENV_IDS = ["reengage/DriveSeek-v0", "reengage/NoisySeek-v0"]


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("n_max", [200, 7])
def test_check_env_passes(env_id, n_max):
    with warnings.catch_warnings():
        # NoisySeek's plane is unbounded, so its Box spaces are (-inf, inf) by design.
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(gym.make(env_id, n_max=n_max).unwrapped)


def test_drive_seek_turns_and_clips_steering():
    env = DriveSeekEnv(n_max=4)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["observation"], [0, 0, 1, 0])
    env.core.goal_set[0] = pack_goal_set([[1, 0], [2, 1]], 4)
    obs, reward, *_ = env.step(np.array([3.0], np.float32))  # clipped to 1: θ = 0.5
    c, s = math.cos(0.5), math.sin(0.5)
    np.testing.assert_allclose(obs["observation"], [c, s, c, s], rtol=1e-6)
    np.testing.assert_array_equal(obs["achieved_goal"], [1, 0])  # round(0.878, 0.479)
    assert reward == 1.0
    obs, reward, *_ = env.step(np.array([-1.0], np.float32))  # θ back to 0
    np.testing.assert_allclose(obs["observation"], [c + 1, s, 1, 0], rtol=1e-6)
    np.testing.assert_array_equal(obs["achieved_goal"], [2, 0])
    assert reward == 0.0
    obs, *_ = env.step(np.array([0.5], np.float32))  # θ = 0.25
    np.testing.assert_allclose(
        obs["observation"][:2], [c + 1 + math.cos(0.25), s + math.sin(0.25)], rtol=1e-6
    )


def test_drive_seek_wraps_around_the_torus():
    env = DriveSeekEnv(n_max=4)
    env.reset(seed=0)
    env.core.goal_set[0] = pack_goal_set([[-10, 0]], 4)
    for t in range(1, 11):
        obs, reward, *_ = env.step(np.zeros(1, np.float32))
        assert obs["observation"][0] == t and reward == 0.0
    # x = 11 wraps to (11 + 10.5) mod 21 - 10.5 = -10: cells 10 and -10 are neighbours.
    obs, reward, *_ = env.step(np.zeros(1, np.float32))
    np.testing.assert_array_equal(obs["observation"], [-10, 0, 1, 0])
    np.testing.assert_array_equal(obs["achieved_goal"], [-10, 0])
    assert reward == 1.0
    # Heading π/2 moves along y, which wraps the same way.
    env.reset(seed=0)
    env.core.heading[:] = math.pi / 2
    env.core.position[:] = [0.0, 10.0]
    obs, *_ = env.step(np.zeros(1, np.float32))
    np.testing.assert_allclose(obs["observation"][:2], [0, -10], atol=1e-6)


def test_noisy_seek_rescales_actions_and_rounds_half_to_even():
    env = NoisySeekEnv(n_max=4, noise_sigma=0.0)
    env.reset(seed=0)
    env.core.goal_set[0] = pack_goal_set([[1, 0]], 4)
    obs, reward, *_ = env.step(np.array([0.5, 0.0], np.float32))
    np.testing.assert_array_equal(obs["observation"], [0.5, 0.0])
    np.testing.assert_array_equal(obs["achieved_goal"], [0, 0])  # rint(0.5) = 0
    assert reward == 0.0
    obs, reward, *_ = env.step(np.array([3.0, 4.0], np.float32))  # norm 5 -> (0.6, 0.8)
    np.testing.assert_allclose(obs["observation"], [1.1, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(obs["achieved_goal"], [1, 1])
    obs, reward, *_ = env.step(np.array([-0.6, -0.3], np.float32))  # norm < 1: unchanged
    np.testing.assert_allclose(obs["observation"], [0.5, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(obs["achieved_goal"], [0, 0])  # rint(0.5) = 0 twice
    obs, reward, *_ = env.step(np.array([0.5, -0.5], np.float32))
    np.testing.assert_array_equal(obs["achieved_goal"], [1, 0])
    assert reward == 1.0


def test_noisy_seek_noise_follows_the_goal_draws_of_the_same_seed():
    env = NoisySeekEnv(n_max=50)
    obs, _ = env.reset(seed=42)
    rng = np.random.default_rng(42)
    np.testing.assert_array_equal(obs["desired_goal"], sample_noisy_seek_goals(rng, 50))
    obs, *_ = env.step(np.array([3.0, 4.0], np.float32))
    expected = np.array([0.6, 0.8]) + rng.normal(0.0, 1.0, size=2)
    np.testing.assert_allclose(obs["observation"], expected, rtol=1e-6)
    obs, *_ = env.step(np.zeros(2, np.float32))
    np.testing.assert_allclose(obs["observation"], expected + rng.normal(0.0, 1.0, 2), rtol=1e-6)


def _check_goal_set(goal_set, n_max):
    assert goal_set.shape == (n_max, 3) and goal_set.dtype == np.float32
    gates = goal_set[:, 0]
    count = int(gates.sum())
    assert 1 <= count <= n_max
    np.testing.assert_array_equal(gates, np.r_[np.ones(count), np.zeros(n_max - count)])
    assert not goal_set[count:].any()
    items = goal_set[:count, 1:]
    np.testing.assert_array_equal(items, np.rint(items))
    assert len(np.unique(items, axis=0)) == count
    keys = [tuple(row) for row in items]
    assert keys == sorted(keys)  # lexicographic: x, then y
    return count, items


@pytest.mark.parametrize("n_max", [200, 20])
def test_drive_seek_goal_sets(n_max):
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(400):
        count, items = _check_goal_set(sample_drive_seek_goals(rng, n_max), n_max)
        assert np.abs(items).max() <= 10
        counts.append(count)
    # n ~ U{1..n_max}: mean (n_max + 1) / 2, both ends reachable.
    assert abs(np.mean(counts) - (n_max + 1) / 2) < 0.1 * n_max
    assert min(counts) <= 0.05 * n_max + 1 and max(counts) >= 0.95 * n_max


@pytest.mark.parametrize(("n_max", "max_mean_fraction"), [(200, 0.4), (20, 0.6)])
def test_noisy_seek_goal_sets(n_max, max_mean_fraction):
    rng = np.random.default_rng(1)
    counts, spreads = [], []
    for _ in range(400):
        count, items = _check_goal_set(sample_noisy_seek_goals(rng, n_max), n_max)
        counts.append(count)
        spreads.append(np.abs(items).max())
    # n' ~ U{1..n_max} has mean about n_max / 2; merging duplicate cells of tight clusters
    # lowers it, strongly at n_max = 200 (measured 0.34 n_max) and little at 20.
    assert 0.25 * n_max < np.mean(counts) < max_mean_fraction * n_max
    assert np.median(spreads) > 10  # centres ~ N(0, 10²) reach well beyond the origin


def test_rewards_ignore_padding_rows_and_vectorise():
    goal_set = pack_goal_set([[1, 2], [-3, 0]], 4)  # rows 2, 3 are padding (0, 0, 0)
    achieved = np.array([[[1, 2], [0, 0]], [[-3, 0], [2, 1]]], np.float32)
    expected_items = np.zeros((2, 2, 4), np.float32)
    expected_items[0, 0, 1] = 1.0  # sorted: (-3, 0) is row 0, (1, 2) is row 1
    expected_items[1, 0, 0] = 1.0
    np.testing.assert_array_equal(item_reward(achieved, goal_set), expected_items)
    np.testing.assert_array_equal(multi_goal_reward(achieved, goal_set), [[1, 0], [1, 0]])
    env = DriveSeekEnv(n_max=4)
    np.testing.assert_array_equal(
        env.compute_reward(achieved, np.broadcast_to(goal_set, (2, 2, 4, 3)), None),
        [[1, 0], [1, 0]],
    )


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_vector_env_equals_single_env_copy_by_copy(env_id):
    seeds = [3, 7, 11]
    vec = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point", n_max=30)
    singles = [gym.make(env_id, n_max=30) for _ in seeds]
    vobs, _ = vec.reset(seed=seeds)
    sobs = [env.reset(seed=s)[0] for env, s in zip(singles, seeds, strict=True)]
    rng = np.random.default_rng(0)
    action_dim = vec.single_action_space.shape[0]
    for t in range(1, 86):  # two autoresets
        for key in ("observation", "achieved_goal", "desired_goal"):
            np.testing.assert_array_equal(vobs[key], np.stack([o[key] for o in sobs]))
        actions = rng.uniform(-1.5, 1.5, (3, action_dim)).astype(np.float32)
        vobs, vrew, vterm, vtrunc, vinfo = vec.step(actions)
        assert not vterm.any()
        if t % 41 == 0:  # next-step autoreset: this step only starts new episodes
            sobs = [env.reset()[0] for env in singles]
            assert not vrew.any() and not vtrunc.any()
            continue
        results = [env.step(a) for env, a in zip(singles, actions, strict=True)]
        sobs = [r[0] for r in results]
        np.testing.assert_array_equal(vrew, [r[1] for r in results])
        np.testing.assert_array_equal(vtrunc, [r[3] for r in results])
        assert vtrunc.all() == (t % 41 == 40)
        np.testing.assert_array_equal(vinfo["is_success"], [r[4]["is_success"] for r in results])


def test_parking_on_a_goal_scores_every_step_and_success_is_sticky():
    env = gym.make("reengage/NoisySeek-v0", n_max=4, noise_sigma=0.0)
    env.reset(seed=0)
    env.unwrapped.core.goal_set[0] = pack_goal_set([[1, 0]], 4)
    total, t, truncated = 0.0, 0, False
    while not truncated:
        action = np.array([1.0, 0.0] if t == 0 else [0.0, 0.0], np.float32)
        _, reward, terminated, truncated, info = env.step(action)
        total, t = total + reward, t + 1
        assert not terminated and info["is_success"]
    assert t == 40 and total == 40.0  # goals are not consumed


def test_greedy_action_unit_steps_exact_landing_and_ties():
    goal_set = pack_goal_set([[0, 0], [1, 0], [3, 4]], 5)
    position = np.array([[0.5, 0.0], [0.0, 0.7], [6.0, 8.0], [0.9, 0.1]], np.float32)
    action = greedy_action(position, np.broadcast_to(goal_set, (4, 5, 3)))
    np.testing.assert_allclose(action[0], [-0.5, 0.0])  # tie -> first row (0, 0)
    np.testing.assert_allclose(action[1], [0.0, -0.7], rtol=1e-6)  # closer than 1: exact
    np.testing.assert_allclose(action[2], [-0.6, -0.8], rtol=1e-6)  # unit step to (3, 4)
    np.testing.assert_allclose(action[3], [0.1, -0.1], rtol=1e-6)
    # Padding rows (0, 0, 0) are never goals, even next to the origin.
    far = pack_goal_set([[5, 0]], 5)
    np.testing.assert_allclose(greedy_action(np.zeros(2), far), [1.0, 0.0])


def test_greedy_return_on_a_hand_made_goal_set():
    # From the origin to (2, 1), |(2, 1)| = 2.236: step 1 ends at (0.894, 0.447) -> cell (1, 0),
    # step 2 at (1.789, 0.894) -> cell (2, 1), a goal; then it lands on (2, 1) and stays.
    vec = gym.make_vec("reengage/NoisySeek-v0", num_envs=3,
                       vectorization_mode="vector_entry_point", n_max=8, noise_sigma=0.0)
    vec.unwrapped.core.sample_goal_set = lambda rng: pack_goal_set([[2, 1], [-9, 9]], 8)
    mean, stderr = greedy_mean_return(vec, episodes=7, seed=0)
    assert mean == 39.0 and stderr == 0.0


def test_greedy_mean_return_on_noisy_seek():
    vec = gym.make_vec("reengage/NoisySeek-v0", num_envs=100,
                       vectorization_mode="vector_entry_point")
    mean, stderr = greedy_mean_return(vec, episodes=1000, seed=0)
    assert 0 < stderr < 0.5
    assert 10.0 < mean < 15.0  # measured 12.1 ± 0.07 over 10k episodes
