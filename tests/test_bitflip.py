"""BitFlip(d) against hand-worked steps (docs/paper.md §2), and its two faces agreeing."""

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import reengage.envs  # noqa: F401
from reengage.analysis import report
from reengage.analysis.aggregate import aggregate_runs
from reengage.analysis.report import Experiment, build_report
from reengage.analysis.select import select_cells
from reengage.analysis.stats import compute_stats
from reengage.envs.bitflip import BitFlipEnv, bitflip_reward
from reengage.registry import ENVS, METHODS


def _make_vec(n: int, dim: int) -> gym.vector.VectorEnv:
    return gym.make_vec("reengage/BitFlip-v0", num_envs=n,
                        vectorization_mode="vector_entry_point", dim=dim)


def test_check_env_passes():
    check_env(gym.make("reengage/BitFlip-v0", dim=5).unwrapped)


def test_hand_worked_episode():
    env = gym.make("reengage/BitFlip-v0", dim=3)
    env.reset(seed=0)
    env.unwrapped.core.bits[:] = [0, 1, 0]
    env.unwrapped.core.goal[:] = [1, 1, 1]
    obs, reward, terminated, truncated, info = env.step(0)
    np.testing.assert_array_equal(obs["observation"], [1, 1, 0])
    np.testing.assert_array_equal(obs["achieved_goal"], [1, 1, 0])
    np.testing.assert_array_equal(obs["desired_goal"], [1, 1, 1])
    assert (reward, terminated, truncated, info["is_success"]) == (-1.0, False, False, False)
    obs, reward, terminated, truncated, info = env.step(2)
    np.testing.assert_array_equal(obs["observation"], [1, 1, 1])
    assert (reward, terminated, truncated, info["is_success"]) == (0.0, False, False, True)
    # Flipping away again: the reward falls back, success stays (reached once), and the
    # episode ends after d = 3 steps, not at the goal.
    obs, reward, terminated, truncated, info = env.step(2)
    np.testing.assert_array_equal(obs["observation"], [1, 1, 0])
    assert (reward, terminated, truncated, info["is_success"]) == (-1.0, False, True, True)


@pytest.mark.parametrize("dim", [1, 4, 9])
def test_episodes_last_d_steps(dim):
    env = gym.make("reengage/BitFlip-v0", dim=dim)
    env.reset(seed=3)
    ends = [env.step(t % dim)[3] for t in range(dim)]
    assert ends == [False] * (dim - 1) + [True]
    assert ENVS["BitFlip"].steps_at(dim) == dim


def test_reward_is_exact_match_vectorised_over_leading_axes():
    goal = np.array([1, 0, 1, 1], np.float32)
    assert bitflip_reward(goal, goal) == 0.0
    assert bitflip_reward(np.array([1, 0, 1, 0], np.float32), goal) == -1.0
    rng = np.random.default_rng(0)
    achieved = rng.integers(0, 2, (3, 5, 4)).astype(np.float32)
    desired = np.where(rng.random((3, 5, 1)) < 0.5, achieved, 1 - achieved)
    reward = BitFlipEnv(4).compute_reward(achieved, desired, None)
    assert reward.shape == (3, 5)
    expected = [[0.0 if (achieved[i, j] == desired[i, j]).all() else -1.0 for j in range(5)]
                for i in range(3)]
    np.testing.assert_array_equal(reward, expected)
    assert (reward == 0).any() and (reward == -1).any()


def test_reset_draws_bits_and_goal_uniformly():
    env = BitFlipEnv(dim=16)
    draws = [env.reset(seed=s)[0] for s in range(300)]
    bits = np.stack([o["observation"] for o in draws])
    goals = np.stack([o["desired_goal"] for o in draws])
    assert set(np.unique(bits)) == {0.0, 1.0} and set(np.unique(goals)) == {0.0, 1.0}
    # 4800 fair bits each: the mean is 0.5 within a few standard errors (0.0072).
    assert abs(bits.mean() - 0.5) < 0.03 and abs(goals.mean() - 0.5) < 0.03
    assert not np.array_equal(bits, goals)


def test_action_out_of_range_is_refused():
    env = BitFlipEnv(dim=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="bit indices"):
        env.step(3)


def test_vector_env_equals_single_env_copy_by_copy():
    seeds, dim = [3, 7, 11], 5
    vec = _make_vec(3, dim)
    singles = [gym.make("reengage/BitFlip-v0", dim=dim) for _ in seeds]
    vobs, _ = vec.reset(seed=seeds)
    sobs = [env.reset(seed=s)[0] for env, s in zip(singles, seeds, strict=True)]
    rng = np.random.default_rng(0)
    for t in range(2 * dim):
        if t == dim:  # next-step autoreset on the vector side, a fresh reset on the single
            sobs = [env.reset()[0] for env in singles]
            vobs, vrew, _, vtrunc, _ = vec.step(np.zeros((3, 1), np.float32))
            assert not vtrunc.any() and (vrew == 0).all()
        for key in ("observation", "achieved_goal", "desired_goal"):
            np.testing.assert_array_equal(vobs[key], np.stack([o[key] for o in sobs]))
        # Actions as the training loop hands them over: a float column of indices.
        actions = rng.integers(0, dim, (3, 1)).astype(np.float32)
        vobs, vrew, vterm, vtrunc, vinfo = vec.step(actions)
        results = [env.step(int(a[0])) for env, a in zip(singles, actions, strict=True)]
        sobs = [r[0] for r in results]
        np.testing.assert_array_equal(vrew, [r[1] for r in results])
        np.testing.assert_array_equal(vtrunc, [r[3] for r in results])
        np.testing.assert_array_equal(vinfo["is_success"], [r[4]["is_success"] for r in results])
        assert not vterm.any()
    assert vtrunc.all()


def test_reset_seeds_each_copy():
    a, _ = _make_vec(2, 6).reset(seed=[5, 6])
    b, _ = _make_vec(2, 6).reset(seed=[6, 5])
    np.testing.assert_array_equal(a["desired_goal"][0], b["desired_goal"][1])
    np.testing.assert_array_equal(a["observation"][1], b["observation"][0])
    with pytest.raises(ValueError):
        _make_vec(2, 6).reset(seed=[1, 2, 3])


# -- claim 5 in the report -----------------------------------------------------------------------
def _write_run(root: Path, method: str, c: float | None, dim: int, seed: int,
               success: list[float]) -> None:
    """One seed's progress.csv and run.json at the workflow's path."""
    folder = method if c is None else f"{method}_c{c:g}"
    directory = root / f"BitFlip-d{dim}" / folder / "b128_lr0.001" / f"seed{seed}"
    directory.mkdir(parents=True)
    lines = ["step,success_rate,mean_return,critic_loss,goal_grad_loss,actor_loss,q_mean,"
             "wall_time_s,updates_per_s"]
    lines += [f"{100 * i},{v!r},{-dim * (1 - v)!r},0.5,0.5,,0.5,{10 * i},50.0"
              for i, v in enumerate(success)]
    (directory / "progress.csv").write_text("\n".join(lines) + "\n")
    (directory / "run.json").write_text(json.dumps({
        "format_version": 1, "status": "finished", "seed": seed, "population": [seed],
        "config": {"env": "BitFlip", "dim": dim, "method": method, "c": c, "batch_size": 128,
                   "lr": 0.001, "steps": 100 * (len(success) - 1), "eval_every": 100,
                   "eval_episodes": 10},
        "label": METHODS[method].label(c), "wall_time_s": 10.0, "versions": {}}))


def _bitflip_experiment(root: Path, levels: dict[str, float]) -> Experiment:
    """Each method rising to its level (c = 1 for ReenGAGE), 5 seeds, d = 20 and 40."""
    for method, level in levels.items():
        c = None if method == "dqn_her" else 1.0
        for dim in (20, 40):
            for seed in range(report.MIN_SEEDS):
                top = level + 0.01 * seed
                _write_run(root, method, c, dim, seed, [0.0, top / 2, top])
    curves = aggregate_runs(root, "bit_flip")
    selection = select_cells(curves)
    stats = compute_stats(curves, selection, baseline="dqn_her", reps=50, seed=0)
    return Experiment("bit_flip", selection, stats, None, None, root / "bit_flip.png")


def _claim_five(text: str) -> str:
    return text.split("### Claim 5\n")[1].split("### Claim")[0]


def test_claim_five_decides_its_parts(tmp_path):
    levels = {"dqn_her": 0.2, "dqn_reengage_her_t0": 0.3, "dqn_reengage_her_t05": 0.8,
              "dqn_reengage_her_t1": 0.7, "dqn_reengage_her_both_t05": 0.4,
              "dqn_reengage_her_both_t1": 0.1}
    text = _claim_five(build_report([_bitflip_experiment(tmp_path / "runs", levels)],
                                    tmp_path / "report.md"))
    assert "**Verdict: supported**" in text
    for statement in ("the soft target on the gradient term only (τ = 0.5, 1) beats DQN+HER",
                      "τ = 0.5 and 1 beat τ = 0 (the hard max)",
                      "the soft target on both terms hurts"):
        assert statement in text
    assert text.count(": **supported**") == 3
    assert "d = 20: a minor gain (reported, no verdict) — see the table: **no verdict**" in text
    assert "DQN+ReenGAGE(α=1/d, τ=0.5, soft both)+HER" in text


def test_claim_five_can_fail(tmp_path):
    # The soft target on both terms above the gradient term only: that part is not supported,
    # and so is the claim; τ = 0 level with τ > 0: inconclusive.
    levels = {"dqn_her": 0.2, "dqn_reengage_her_t0": 0.8, "dqn_reengage_her_t05": 0.8,
              "dqn_reengage_her_t1": 0.8, "dqn_reengage_her_both_t05": 0.95,
              "dqn_reengage_her_both_t1": 0.95}
    text = _claim_five(build_report([_bitflip_experiment(tmp_path / "runs", levels)],
                                    tmp_path / "report.md"))
    assert "**Verdict: not supported**" in text
    assert "(below the gradient term only, same τ): **not supported**" in text
    assert "gradient term only: **inconclusive**" in text


def test_claim_five_not_run_without_a_bitflip_experiment(tmp_path):
    text = _claim_five(build_report([], tmp_path / "report.md"))
    assert f"**Verdict: {report.NOT_COVERED}**" in text
    assert text.count("(no BitFlip experiment in this run)") == 4
