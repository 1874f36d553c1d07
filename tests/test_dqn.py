"""DQN+HER and DQN+ReenGAGE (docs/paper.md §1, discrete actions): the soft target, the loss
terms against finite differences, exploration, populations, and learning on BitFlip."""

import copy
import os
import runpy
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from reengage.agents.dqn import DQN, DQNConfig, soft_value
from reengage.cli import main
from reengage.config import ConfigError, TrainConfig, validate
from reengage.evaluate import evaluate_run
from reengage.registry import METHODS
from reengage.run import RunInterrupted, train

WALL_CLOCK = ["wall_time_s", "updates_per_s"]
SOFT_METHODS = ["dqn_reengage_her_t0", "dqn_reengage_her_t05", "dqn_reengage_her_t1",
                "dqn_reengage_her_both_t05", "dqn_reengage_her_both_t1",
                "dqn_reengage_her_boltzmann_t05", "dqn_reengage_her_boltzmann_t1"]


# -- the soft target ----------------------------------------------------------------------------
def test_soft_value_tends_to_the_hard_max_as_tau_goes_to_zero():
    torch.manual_seed(0)
    # Action values 0.5 apart in a random order, shifted row by row: no near-ties.
    levels = 0.5 * torch.argsort(torch.rand(3, 7, 5), dim=-1).double()
    q = (levels + torch.randn(3, 7, 1, dtype=torch.float64)).requires_grad_(True)
    hard = q.max(dim=-1, keepdim=True).values
    (hard_grad,) = torch.autograd.grad(hard.sum(), q)
    gaps = []
    for tau in (1.0, 0.1, 0.01, 0.001):
        soft = soft_value(q, tau)
        (soft_grad,) = torch.autograd.grad(soft.sum(), q)
        gaps.append(float((hard - soft).detach().abs().max()))
        assert (soft <= hard + 1e-12).all()  # a weighted mean never exceeds the max
        if tau <= 0.001:
            torch.testing.assert_close(soft, hard, rtol=0, atol=1e-6)
            torch.testing.assert_close(soft_grad, hard_grad, rtol=0, atol=1e-6)
    # The gap to the max shrinks with τ (to rounding once τ is far below the 0.5 spacing).
    assert gaps[0] > 0.1 and gaps[0] > gaps[1] > 1e-6 and gaps == sorted(gaps, reverse=True)
    # τ = 0 is the hard max itself, gradient (one-hot at the argmax) included.
    torch.testing.assert_close(soft_value(q, 0.0), hard, rtol=0, atol=0)
    assert torch.equal(hard_grad.sum(dim=-1), torch.ones(3, 7, dtype=torch.float64))


def test_soft_value_tends_to_the_mean_at_high_temperature():
    q = torch.tensor([[[0.0, 1.0, 5.0]]])
    torch.testing.assert_close(soft_value(q, 1e6), q.mean(dim=-1, keepdim=True), atol=1e-4,
                               rtol=0)


# -- one update against hand computation -------------------------------------------------------
def _learner(soft_target: str, temperature: float, c: float, members: int = 2,
             obs_dim: int = 6, goal_dim: int = 6) -> DQN:
    config = DQNConfig(goal_gradient_coef=c, soft_target=soft_target, temperature=temperature,
                       hidden=(32,), gamma=0.9)
    generators = [torch.Generator().manual_seed(10 + m) for m in range(members)]
    return DQN(members, obs_dim, goal_dim, goal_dim, config, generators).double()


def _batch(members: int = 2, batch: int = 16, dim: int = 6):
    g = torch.Generator().manual_seed(1)
    bits = lambda: torch.randint(0, 2, (members, batch, dim), generator=g).double()  # noqa: E731
    reward = -torch.ones(members, batch, dtype=torch.float64)
    reward[:, :4] = 0.0  # some successes: the gradient term's gate leaves them out
    action = torch.randint(0, dim, (members, batch, 1), generator=g).double()
    return {"obs": bits(), "action": action, "next_obs": bits(), "goal": bits(),
            "reward": reward}


def _goal_gradient(fn, goal: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central finite differences of `fn(goal) -> [M, B]` in every goal coordinate."""
    columns = []
    for i in range(goal.shape[-1]):
        step = torch.zeros_like(goal)
        step[..., i] = eps
        columns.append((fn(goal + step) - fn(goal - step)) / (2 * eps))
    return torch.stack(columns, dim=-1)


@pytest.mark.parametrize(("soft_target", "temperature"),
                         [("gradient", 0.0), ("gradient", 0.5), ("both", 1.0)])
def test_update_losses_match_finite_differences(soft_target, temperature):
    learner = _learner(soft_target, temperature, c=0.7)
    before = copy.deepcopy(learner)
    batch = _batch()
    out = learner.update(**batch)
    s, a, s2, g, r = (batch[k] for k in ("obs", "action", "next_obs", "goal", "reward"))
    gamma, index = 0.9, a.long()

    def student(goal):
        return before.values(before.q, s, goal).gather(-1, index).squeeze(-1)

    def teacher(goal):
        return soft_value(before.values(before.q_target, s2, goal), temperature).squeeze(-1)

    with torch.no_grad():
        q_next = before.values(before.q_target, s2, g)
        next_value = (q_next.max(dim=-1).values if soft_target == "gradient"
                      else soft_value(q_next, temperature).squeeze(-1))
        target = r + gamma * next_value
        value = F.smooth_l1_loss(student(g), target, reduction="none").mean(dim=1)
        delta = _goal_gradient(student, g) - gamma * _goal_gradient(teacher, g)
        gradient = (-r * delta.pow(2).mean(dim=-1)).mean(dim=1)
    torch.testing.assert_close(out["critic_loss"], value, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out["goal_grad_loss"], gradient, rtol=1e-5, atol=1e-9)
    assert (gradient > 0).all()
    # The update moved the online network, and the target network a τ-step toward it.
    assert not torch.equal(learner.q.layers[0].weight, before.q.layers[0].weight)
    assert not torch.equal(learner.q_target.layers[0].weight, before.q_target.layers[0].weight)


def test_soft_value_target_differs_from_the_hard_one_only_where_asked():
    batch = _batch()
    gradient_only = _learner("gradient", 1.0, c=0.0).update(**batch)["critic_loss"]
    hard = _learner("gradient", 0.0, c=0.0).update(**batch)["critic_loss"]
    both = _learner("both", 1.0, c=0.0).update(**batch)["critic_loss"]
    torch.testing.assert_close(gradient_only, hard, rtol=0, atol=0)
    assert not torch.allclose(both, hard)


def test_plain_dqn_has_no_gradient_term():
    out = _learner("gradient", 0.0, c=0.0).update(**_batch())
    assert torch.equal(out["goal_grad_loss"], torch.zeros(2, dtype=torch.float64))
    assert "actor_loss" not in out and out["q_mean"].shape == (2,)


# -- acting and exploring ---------------------------------------------------------------------
def _q_fixed(soft_target: str = "gradient", temperature: float = 0.0, epsilon: float = 0.2):
    """A one-member learner whose Q-values are [0, 1, 2, 0.5] whatever the input."""
    config = DQNConfig(hidden=(), soft_target=soft_target, temperature=temperature,
                       epsilon=epsilon)
    learner = DQN(1, 2, 2, 4, config, [torch.Generator().manual_seed(0)])
    with torch.no_grad():
        learner.q.layers[0].weight.zero_()
        learner.q.layers[0].bias.copy_(torch.tensor([[[0.0, 1.0, 2.0, 0.5]]]))
    return learner, torch.zeros(1, 4000, 2), torch.zeros(1, 4000, 2)


def test_act_is_greedy_and_exploration_is_epsilon_greedy():
    learner, obs, goal = _q_fixed(epsilon=0.2)
    assert (learner.act(obs[:, :3], goal[:, :3]) == 2).all()
    actions = learner.sample_actions(obs, goal, [np.random.default_rng(0)]).flatten().numpy()
    counts = np.bincount(actions.astype(int), minlength=4) / len(actions)
    # ε = 0.2 spread over 4 actions: 0.05 each, and the greedy one 0.8 + 0.05.
    np.testing.assert_allclose(counts, [0.05, 0.05, 0.85, 0.05], atol=0.02)


def test_boltzmann_actions_follow_the_softmax():
    learner, obs, goal = _q_fixed("both_boltzmann", temperature=0.5)
    actions = learner.sample_actions(obs, goal, [np.random.default_rng(1)]).flatten().numpy()
    counts = np.bincount(actions.astype(int), minlength=4) / len(actions)
    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0, 0.5]) / 0.5, dim=0).numpy()
    np.testing.assert_allclose(counts, expected, atol=0.025)
    assert counts[0] > 0  # unlike ε-greedy with ε = 0, every action is tried


def test_settings_are_checked():
    with pytest.raises(ValueError, match="soft_target"):
        DQNConfig(soft_target="value")
    with pytest.raises(ValueError, match="never explore"):
        DQNConfig(soft_target="both_boltzmann", temperature=0.0)


# -- the registry and the config checks ---------------------------------------------------------
def test_methods_fix_their_use_and_temperature(tmp_path, capsys):
    assert set(SOFT_METHODS) <= set(METHODS) and "dqn_her" in METHODS
    assert METHODS["dqn_reengage_her_t05"].label(0.5) == "DQN+ReenGAGE(α=0.5/d, τ=0.5)+HER"
    assert METHODS["dqn_reengage_her_boltzmann_t1"].label(1.0) == (
        "DQN+ReenGAGE(α=1/d, τ=1, soft both, Boltzmann)+HER")
    assert main(["train", "--env", "BitFlip", "--dim", "4", "--method",
                 "dqn_reengage_her_t05", "--c", "1", "--seeds", "0", "--steps", "40",
                 "--set", "temperature=2", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "temperature is fixed by the method's name" in capsys.readouterr().err


@pytest.mark.parametrize(("env", "method", "dim"), [("BitFlip", "ddpg_her", 4),
                                                     ("ContinuousSeek", "dqn_her", 4)])
def test_action_kinds_must_match(env, method, dim):
    with pytest.raises(ConfigError, match="actions"):
        validate(TrainConfig(env=env, dim=dim, method=method, seeds=[0], steps=40))


def test_steps_must_be_whole_episodes_of_d_flips():
    validate(TrainConfig(env="BitFlip", dim=7, method="dqn_her", seeds=[0], steps=70))
    with pytest.raises(ConfigError, match="multiple of the episode length"):
        validate(TrainConfig(env="BitFlip", dim=7, method="dqn_her", seeds=[0], steps=80))


# -- populations, end to end ----------------------------------------------------------------------
def _train_cli(out: Path, seeds: str, method: str, *extra: str) -> None:
    args = ["train", "--env", "BitFlip", "--dim", "6", "--method", method, "--seeds", seeds,
            "--steps", "480", "--learning-starts", "120", "--eval-every", "240",
            "--eval-episodes", "5", "--batch-size", "32", "--threads", "1",
            "--out", str(out), "--quiet", *extra]
    if method != "dqn_her":
        args += ["--c", "1.0"]
    assert main(args) == 0


def _progress(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=WALL_CLOCK)


CYCLES = ("--cycle-episodes", "4", "--cycle-updates", "10")


@pytest.mark.parametrize(("method", "extra"), [("dqn_reengage_her_t05", ()),
                                               ("dqn_reengage_her_boltzmann_t1", ()),
                                               ("dqn_reengage_her_t1", CYCLES)])
def test_population_member_equals_the_seed_alone(tmp_path, method, extra):
    _train_cli(tmp_path / "population", "0-2", method, *extra)
    _train_cli(tmp_path / "alone", "1", method, *extra)
    together = _progress(tmp_path / "population" / "seed1" / "progress.csv")
    alone = _progress(tmp_path / "alone" / "seed1" / "progress.csv")
    assert list(together["step"]) == [0, 240, 480]
    # Both runs trained (updates logged in two rows) with the gradient term on.
    assert together["critic_loss"].notna().sum() == 2
    assert (together["goal_grad_loss"].iloc[1:] > 0).all()
    pd.testing.assert_frame_equal(together, alone, check_exact=True)
    other = _progress(tmp_path / "population" / "seed0" / "progress.csv")
    assert not np.allclose(other["critic_loss"].iloc[1:], alone["critic_loss"].iloc[1:])


def test_dqn_her_learns_bitflip_d8(tmp_path):
    # Seeds 0 and 1 reached 1.00 by step 2000 (8000 steps, evaluated every 2000).
    args = ["train", "--env", "BitFlip", "--dim", "8", "--method", "dqn_her",
            "--seeds", "0,1", "--steps", "3000", "--learning-starts", "400",
            "--eval-every", "3000", "--eval-episodes", "100", "--batch-size", "128",
            "--gamma", "0.98", "--threads", "1", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    curves = [pd.read_csv(tmp_path / f"seed{s}" / "progress.csv") for s in (0, 1)]
    start = [c["success_rate"].iloc[0] for c in curves]
    final = [c["success_rate"].iloc[-1] for c in curves]
    # The untrained greedy policy rarely reaches one of 256 goals in 8 flips (uniformly random
    # flips reach it in 2.7 % of episodes).
    assert max(start) <= 0.1, start
    assert min(final) >= 0.6, final


def _config(method: str = "dqn_reengage_her_t05") -> TrainConfig:
    return TrainConfig(env="BitFlip", dim=6, method=method, seeds=[0, 2], steps=480,
                       c=None if method == "dqn_her" else 1.0, batch_size=32,
                       learning_starts=120, eval_every=120, eval_episodes=5, threads=1,
                       checkpoint_every=60)


@pytest.mark.parametrize("cycles", [0, 4])
def test_sigterm_then_resume_gives_identical_progress(tmp_path, cycles):
    config = replace(_config(), cycle_episodes=cycles, cycle_updates=10)
    train(config, tmp_path / "straight", progress=False)

    def interrupt(step: int, learner) -> None:
        if step >= 200:  # the loop finishes the episode, checkpoints and stops
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(RunInterrupted):
        train(config, tmp_path / "resumed", progress=False, step_hook=interrupt)
    assert not (tmp_path / "resumed" / "seed0" / "progress.csv").exists()
    records = train(config, tmp_path / "resumed", progress=False)
    # Per step, step 200 falls in the episode that ends at 204; in cycles, updates come only
    # at cycle ends (every 24 steps), the one at 216 first.
    stopped = 204 if cycles == 0 else 216
    assert records[0]["resume_count"] == 1 and records[0]["resumed"][0]["from_step"] == stopped
    for seed in (0, 2):
        straight = _progress(tmp_path / "straight" / f"seed{seed}" / "progress.csv")
        resumed = _progress(tmp_path / "resumed" / f"seed{seed}" / "progress.csv")
        pd.testing.assert_frame_equal(resumed, straight, check_exact=True)


def test_evaluate_reloads_the_policy_and_reproduces_the_last_evaluation(tmp_path):
    train(_config("dqn_her"), tmp_path, progress=False)
    scores = evaluate_run(tmp_path, evaluation="last")
    assert [s.directory.name for s in scores] == ["seed0", "seed2"]
    for score in scores:
        last = pd.read_csv(score.directory / "progress.csv").iloc[-1]
        assert (score.success_rate, score.mean_return) == (last["success_rate"],
                                                           last["mean_return"])
    # The trained greedy policies reach some goals; the untrained ones (step 0) reached none.
    assert max(score.success_rate for score in scores) > 0


def test_cycles_make_their_updates_at_the_end_of_each_cycle(tmp_path):
    """Andrychowicz et al.'s regime: after every 4 episodes (of 6 steps) 10 updates at once,
    once the 120 warm-up steps are over; without cycles, one update per step after them."""
    seen: dict[int, list[int]] = {0: [], 4: []}
    for cycles in seen:
        config = replace(_config("dqn_her"), cycle_episodes=cycles, cycle_updates=10,
                         checkpoint_every=0)
        train(config, tmp_path / f"cycles{cycles}", progress=False,
              step_hook=lambda step, learner, cycles=cycles: seen[cycles].append(step))
    assert seen[4] == [step for step in range(144, 481, 24) for _ in range(10)]
    assert seen[0] == list(range(121, 481))


@pytest.mark.parametrize(("changes", "option"), [({"cycle_episodes": -1}, "--cycle-episodes"),
                                                 ({"cycle_episodes": 4, "cycle_updates": 0},
                                                  "--cycle-updates")])
def test_bad_cycles_are_refused(changes, option):
    with pytest.raises(ConfigError, match=option):
        validate(replace(_config(), **changes))
    with pytest.raises(ConfigError, match="loop of its own"):
        validate(TrainConfig(env="ContinuousSeek", dim=2, method="sb3_ddpg_her", seeds=[0],
                             steps=100, cycle_episodes=4))


# -- the cost benchmark (benchmarks/bitflip_throughput.py) ---------------------------------------
BENCH = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "bitflip_throughput.py"))


def test_benchmark_alternates_and_takes_costs_repeat_by_repeat():
    assert BENCH["Setting"](dim=8, warmup=100).block == 128  # a whole cycle of 16 episodes
    setting = BENCH["Setting"](dim=8, warmup=100, cycle_episodes=0)
    assert setting.block == 104  # whole episodes of 8 steps
    rounds = BENCH["plan"](["dqn_her", "dqn_reengage_her_t05"], [1, 2], 300, 2, setting)
    assert [(t["contender"], t["population"]) for t in rounds[1]][-1] == ("dqn_her", 1)
    assert {t["steps"] for r in rounds for t in r} == {312}  # 300 rounded to whole blocks
    # ReenGAGE takes 1.5x DQN's time per step in repeat 0 and 2x in repeat 1.
    seconds = {("dqn_her", 0): 2.0, ("dqn_her", 1): 1.0, ("dqn_reengage_her_t05", 0): 3.0,
               ("dqn_reengage_her_t05", 1): 2.0}
    results = [(t, {"seconds": seconds[t["contender"], t["repeat"]] * t["population"],
                    "load_avg_1m": 0.5}) for r in rounds for t in r]
    records = {(r["contender"], r["population"]): r
               for r in BENCH["aggregate"](results, setting)}
    cost = records["dqn_reengage_her_t05", 2]
    assert cost["cost_ratio_runs"] == pytest.approx([1.5, 2.0])
    assert cost["cost_ratio_median"] == pytest.approx(1.75)
    assert records["dqn_her", 1]["seed_steps_per_s_runs"] == pytest.approx([156.0, 312.0])
    assert "cost_ratio_median" not in records["dqn_her", 1]
