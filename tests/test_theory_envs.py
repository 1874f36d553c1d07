"""RotationReach and TwoPhaseRotation (Propositions 1 and 2) against hand-worked steps."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import reengage.envs  # noqa: F401  (registers the ids)
from reengage.envs.rotation import (
    BOUND,
    RotationReachEnv,
    TwoPhaseRotationEnv,
    haar_orthogonal,
    project_to_unit_ball,
    rotation_reach_step,
    two_phase_step,
)

QUARTER_TURN = np.array([[0.0, -1.0], [1.0, 0.0]])  # U e1 = e2, U e2 = -e1


def test_rotation_reach_hand_worked_step():
    # a = (3, 4) is rescaled to (0.6, 0.8); U a = (-0.8, 0.6); s' = (1, 2) + U a.
    env = RotationReachEnv(dim=2)
    env.reset(seed=0)
    env._rotation = QUARTER_TURN
    env.state = np.array([1.0, 2.0])
    env.goal = np.array([1.0, 0.0])
    obs, reward, terminated, truncated, info = env.step(np.array([3.0, 4.0]))
    np.testing.assert_allclose(obs["observation"], [0.2, 2.6])
    np.testing.assert_allclose(obs["achieved_goal"], [0.2, 2.6])
    np.testing.assert_allclose(obs["desired_goal"], [1.0, 0.0])
    assert reward == pytest.approx(0.2)
    assert not terminated and not truncated and info == {}


def test_two_phase_hand_worked_steps():
    env = TwoPhaseRotationEnv(dim=2)
    env.reset(seed=0)
    env._rotation = QUARTER_TURN
    env.state = np.array([1.0, 2.0, 0.0, 0.0])
    env.goal = np.array([1.0, 0.0])
    # s¹ ≠ 0: s¹' = 0, s²' = s¹ + U a; the reward reads s¹' = 0.
    obs, reward, *_ = env.step(np.array([3.0, 4.0]))
    np.testing.assert_allclose(obs["observation"], [0.0, 0.0, 0.2, 2.6])
    np.testing.assert_allclose(obs["achieved_goal"], [0.0, 0.0])
    assert reward == 0.0
    # s¹ = 0: s¹' = s², s²' = 0, whatever the action; reward gᵀs².
    obs, reward, *_ = env.step(np.array([-1.0, 0.0]))
    np.testing.assert_allclose(obs["observation"], [0.2, 2.6, 0.0, 0.0])
    assert reward == pytest.approx(0.2)


def test_pure_dynamics_vectorised_over_leading_axes():
    rng = np.random.default_rng(0)
    rotation = haar_orthogonal(3, rng)
    state = rng.normal(size=(4, 5, 3))
    action = rng.normal(size=(4, 5, 3))
    expected = state + project_to_unit_ball(action) @ rotation.T
    np.testing.assert_allclose(rotation_reach_step(state, action, rotation), expected)
    halves = np.concatenate([state, np.zeros_like(state)], -1)
    halves[0, 0, :3] = 0.0  # one waiting copy among moving ones
    halves[0, 0, 3:] = 7.0
    out = two_phase_step(halves, action, rotation)
    np.testing.assert_allclose(out[0, 0], [7.0, 7.0, 7.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(out[1:, :, 3:], expected[1:])
    np.testing.assert_allclose(out[1:, :, :3], 0.0)


def test_actions_longer_than_one_are_rescaled_shorter_kept():
    np.testing.assert_allclose(project_to_unit_ball(np.array([0.3, -0.4])), [0.3, -0.4])
    np.testing.assert_allclose(project_to_unit_ball(np.array([3.0, -4.0])), [0.6, -0.8])


@pytest.mark.parametrize("dim", [1, 2, 5, 16])
def test_haar_rotation_is_orthogonal_and_seeded(dim):
    a = RotationReachEnv(dim=dim, rotation_seed=3).rotation
    b = RotationReachEnv(dim=dim, rotation_seed=3).rotation
    c = RotationReachEnv(dim=dim, rotation_seed=4).rotation
    np.testing.assert_allclose(a @ a.T, np.eye(dim), atol=1e-12)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_haar_covers_both_components_with_mean_zero_entries():
    # Haar on O(d): det = ±1 equally often, E[U] = 0 (the sign fix matters for this).
    draws = np.stack([haar_orthogonal(3, np.random.default_rng(s)) for s in range(2000)])
    dets = np.linalg.det(draws)
    assert 0.45 < np.mean(dets > 0) < 0.55
    assert np.abs(draws.mean(0)).max() < 0.06


def test_rotation_stays_fixed_across_resets_and_seeds():
    env = TwoPhaseRotationEnv(dim=4, rotation_seed=1)
    before = env.rotation
    env.reset(seed=5)
    env.reset(seed=6)
    np.testing.assert_array_equal(env.rotation, before)


@pytest.mark.parametrize("name", ["RotationReach", "TwoPhaseRotation"])
@pytest.mark.parametrize("dim", [1, 3, 8])
def test_check_env_passes(name, dim):
    env = gym.make(f"reengage/{name}-v0", dim=dim)
    check_env(env.unwrapped)


@pytest.mark.parametrize("cls", [RotationReachEnv, TwoPhaseRotationEnv])
def test_compute_reward_vectorised_and_matches_step(cls):
    env = cls(dim=4)
    obs, _ = env.reset(seed=2)
    achieved, desired, rewards = [], [], []
    for _ in range(6):
        obs, reward, *_ = env.step(env.action_space.sample())
        achieved.append(obs["achieved_goal"])
        desired.append(obs["desired_goal"])
        rewards.append(reward)
    achieved = np.stack(achieved).reshape(2, 3, 4)
    desired = np.stack(desired).reshape(2, 3, 4)
    batch = env.compute_reward(achieved, desired, None)
    assert batch.shape == (2, 3)
    np.testing.assert_allclose(batch.ravel(), rewards)


@pytest.mark.parametrize("name", ["RotationReach", "TwoPhaseRotation"])
def test_starts_goals_and_bounds_over_a_registered_episode(name):
    env = gym.make(f"reengage/{name}-v0", dim=5)
    obs, _ = env.reset(seed=0)
    assert np.linalg.norm(obs["desired_goal"]) == pytest.approx(1.0)
    if name == "RotationReach":
        np.testing.assert_array_equal(obs["observation"], 0.0)
    else:
        assert np.linalg.norm(obs["observation"][:5]) == pytest.approx(1.0)
        np.testing.assert_array_equal(obs["observation"][5:], 0.0)
    steps = 0
    truncated = False
    while not truncated:
        # Full-length actions: the fastest the state can grow.
        obs, _, _, truncated, _ = env.step(np.ones(5))
        steps += 1
        assert env.observation_space.contains(obs), obs
        assert np.abs(obs["observation"]).max() <= BOUND
    assert steps == 20
