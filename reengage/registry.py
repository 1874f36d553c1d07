"""Names the harness knows: environments and methods.

A method is a registered name -> builder. Adding a baseline is one module that calls
`register_method` and one config line naming it (see the README's worked example).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class EnvSpec:
    """How to build one of the paper's environments for a given goal dimension."""

    name: str
    gym_id: str
    episode_steps: int | None
    """Steps per episode; None where an episode lasts `--dim` steps (BitFlip: d flips)."""
    dim_kwarg: str | None = "dim"
    """The env's constructor argument that `--dim` sets: the goal dimension, or for the
    goal-set tasks n_max, the number of goal slots (the dimension of the gate vector); None
    where the goal's width is fixed (the robotics tasks)."""
    vectorization_mode: str = "vector_entry_point"
    achieved_in_obs: bool = False
    """The achieved goal is the observation's leading entries: the replay stores it once."""
    discrete_actions: bool = False
    """Actions are indices of a `Discrete` space, not vectors of a box."""
    widths: tuple[int, int, int, int] | None = None
    """(observation, achieved goal, desired goal, action) widths of a task whose goal has a
    fixed width (the robotics tasks; tests/test_robotics.py checks them against the envs), so
    that the CLI can check `--dim` and memory without loading MuJoCo."""

    def steps_at(self, dim: int) -> int:
        """Steps per episode at `--dim` = `dim`."""
        return dim if self.episode_steps is None else self.episode_steps


ENVS: dict[str, EnvSpec] = {
    "ContinuousSeek": EnvSpec("ContinuousSeek", "reengage/ContinuousSeek-v0", 10,
                              achieved_in_obs=True),
    "DriveSeek": EnvSpec("DriveSeek", "reengage/DriveSeek-v0", 40, dim_kwarg="n_max"),
    "NoisySeek": EnvSpec("NoisySeek", "reengage/NoisySeek-v0", 40, dim_kwarg="n_max"),
    "BitFlip": EnvSpec("BitFlip", "reengage/BitFlip-v0", None, achieved_in_obs=True,
                       discrete_actions=True),
}

# The gymnasium-robotics tasks (envs/robotics.py; goals of fixed width: HandReach 15, the
# block 7, FetchReach 3, so no `dim_kwarg`, and `--dim` must be that width). `reengage train`
# trains them in the Baselines regime (reengage/baselines_her.py), whatever the loop of the
# toy tasks would do, hence a table of their own. The id's module prefix makes gymnasium
# import gymnasium-robotics on demand. Episode lengths are the ids' time limits: the block's
# is 100 steps, not 50.
ROBOTICS_ENVS: dict[str, EnvSpec] = {
    name: EnvSpec(name, f"gymnasium_robotics:{gym_id}", steps, dim_kwarg=None,
                  vectorization_mode="sync", widths=widths)
    for name, gym_id, steps, widths in (
        ("HandReach", "HandReach-v3", 50, (63, 15, 15, 20)),
        ("HandManipulateBlockRotateXYZ", "HandManipulateBlockRotateXYZ-v1", 100,
         (61, 7, 7, 20)),
        ("FetchReach", "FetchReach-v4", 50, (10, 3, 3, 4)),
    )
}
ROBOTICS_METHODS = ("ddpg_her", "reengage_her", "reengage_her_normalized")
"""The methods the Baselines regime trains on ROBOTICS_ENVS (whatever their `build`)."""


@dataclass(frozen=True)
class LearnerSpec:
    """Everything a method's builder may need; builders ignore what they do not use."""

    members: int
    obs_dim: int
    goal_dim: int
    action_dim: int
    lr: float
    gamma: float
    tau: float
    c: float | None
    generators: list[torch.Generator]
    extra: dict[str, Any] = field(default_factory=dict)
    achieved_dim: int = 0
    """The state's leading columns that hold the achieved goal (0 when the state is the
    observation alone): the state a learner is given is `(achieved goal, observation)` under
    `inputs: sb3` and the observation under `inputs: obs_goal`. `obs_dim` is its width."""
    goal_at: int | None = None
    """Where a network that takes the goal beside the state puts it: before state column
    `goal_at` (`achieved_dim` under `inputs: sb3`, giving Stable-Baselines3's order), or
    after the whole state when None (agents/inputs.py)."""
    action_count: int = 0
    """With discrete actions, how many there are (0 for a box): the loop then hands the
    learner each action as its index in one float column (`action_dim` 1)."""
    member_lrs: tuple[float, ...] | None = None
    """Per-member learning rates of a packed population (one holding a slice of a grid:
    members that differ in lr and c), one per member; None: every member uses `lr`.
    `build_ddpg` and `build_multi_goal` take them."""
    member_cs: tuple[float, ...] | None = None
    """Per-member c of a packed population, one per member, all 0 (DDPG) or all > 0
    (ReenGAGE); None: every member uses `c`. `build_ddpg` and `build_multi_goal` take
    them."""


class Learner(Protocol):
    """What the training loop calls. Tensors carry the member axis first. A learner may
    also define `prepare(batch_size)`, which the loop calls once before training, after
    moving the learner to its device (DDPG compiles its update there), and
    `explore(obs, goal)`, which the loop then calls instead of `act` while training (SAC
    samples its stochastic policy there; `act` stays the deterministic evaluation policy), or
    `sample_actions(obs, goal, rngs)`, training actions drawn with member m's exploration
    stream `rngs[m]` that the loop adds no noise to (DQN's ε-greedy on discrete actions)."""

    def act(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor: ...

    def update(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        next_obs: torch.Tensor,
        goal: torch.Tensor,
        reward: torch.Tensor,
    ) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class Method:
    """A learner family under one name: how to build it and how to label its curves."""

    name: str
    build: Callable[[LearnerSpec], Learner]
    takes_c: bool
    her: bool
    label: Callable[[float | None], str]
    description: str = ""
    item_rewards: bool = False
    """The learner takes one reward per goal item `[M, B, n_max]` (goal-set tasks)."""
    needs_goal_sets: bool = False
    """Runs on goal-set tasks only, although it takes no per-item rewards (the greedy
    agent reads the goal slots)."""
    trains: bool = True
    """False for fixed policies (the greedy agent): no replay, no updates."""
    discrete_actions: bool = False
    """Acts with indices of a `Discrete` action space (DQN); runs only on such tasks."""
    baselines_only: bool = False
    """Exists only in the Baselines regime of the robotics tasks (it needs that loop's input
    normaliser): refused on the toy tasks."""
    runner: Callable[[Any, Path, bool], list[dict[str, Any]]] | None = None
    """A training loop of the method's own, for an independent implementation that does not
    fit the population interface (Stable-Baselines3): `runner(cfg, out, progress)` trains
    every seed of the TrainConfig `cfg` and writes the same `out/seed<k>/progress.csv` and
    `run.json` as the population loop; `build` is then never called."""


METHODS: dict[str, Method] = {}


def register_method(method: Method, replace: bool = False) -> Method:
    if method.name in METHODS and not replace:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def build_ddpg(spec: LearnerSpec) -> Learner:
    """DDPG(+ReenGAGE when c > 0); `spec.extra` may override any DDPGConfig field. A packed
    spec's `member_lrs` and `member_cs` give members their own lr and c."""
    from reengage.agents.ddpg import DDPG, DDPGConfig

    config = DDPGConfig(
        gamma=spec.gamma, tau=spec.tau, lr=spec.lr,
        goal_gradient_coef=spec.c or 0.0, **spec.extra,
    )
    return DDPG(spec.members, spec.obs_dim, spec.goal_dim, spec.action_dim, config,
                spec.generators, goal_at=spec.goal_at, member_lrs=spec.member_lrs,
                member_cs=spec.member_cs)


def build_sac(spec: LearnerSpec) -> Learner:
    """SAC(+ReenGAGE when c > 0); `spec.extra` may override any SACConfig field."""
    from reengage.agents.sac import SAC, SACConfig

    config = SACConfig(gamma=spec.gamma, tau=spec.tau, lr=spec.lr,
                       goal_gradient_coef=spec.c or 0.0, **spec.extra)
    return SAC(spec.members, spec.obs_dim, spec.goal_dim, spec.action_dim, config,
               spec.generators, goal_at=spec.goal_at)


def build_multi_goal(spec: LearnerSpec) -> Learner:
    """DDPG or Multi-ReenGAGE (c > 0) with the DeepSets actor-critic; `spec.extra` may set
    `networks` (a dict of DeepSetsConfig fields) and `through_target_actor`."""
    from reengage.agents.deepsets import DeepSetsConfig
    from reengage.agents.multi_goal import MultiGoalConfig, MultiGoalDDPG

    extra = dict(spec.extra)
    networks = DeepSetsConfig(**extra.pop("networks", {}))
    config = MultiGoalConfig(gamma=spec.gamma, tau=spec.tau, lr=spec.lr,
                             gate_coef=spec.c or 0.0, networks=networks, **extra)
    n_max = spec.goal_dim // 3
    return MultiGoalDDPG(spec.members, spec.obs_dim, spec.action_dim, n_max, config,
                         spec.generators, member_lrs=spec.member_lrs,
                         member_cs=spec.member_cs)


def build_dqn(spec: LearnerSpec, **fixed: Any) -> Learner:
    """DQN(+ReenGAGE when c > 0) on discrete actions; `spec.extra` may set any DQNConfig
    field except those the method's name `fixed` (the soft target's use and τ)."""
    from reengage.agents.dqn import DQN, DQNConfig

    clash = sorted(set(fixed) & set(spec.extra))
    if clash:
        raise TypeError(f"{', '.join(clash)} is fixed by the method's name")
    config = DQNConfig(gamma=spec.gamma, tau=spec.tau, lr=spec.lr,
                       goal_gradient_coef=spec.c or 0.0, **fixed, **spec.extra)
    return DQN(spec.members, spec.obs_dim, spec.goal_dim, spec.action_count, config,
               spec.generators, goal_at=spec.goal_at)


def build_greedy(spec: LearnerSpec) -> Learner:
    from reengage.agents.greedy import GreedyLearner

    return GreedyLearner(n_max=spec.goal_dim // 3, position_at=spec.achieved_dim)


def _no_builder(spec: LearnerSpec) -> Learner:
    raise TypeError("this method trains in a loop of its own (a runner, or the Baselines "
                    "regime of the robotics tasks), not as a population learner")


def _run_sb3(cfg: Any, out: Path, progress: bool) -> list[dict[str, Any]]:
    from reengage.sb3_control import train_population

    return train_population(cfg, out, progress)


def _format_c(c: float | None) -> str:
    return f"{c:g}"


register_method(Method(
    name="ddpg_her", build=build_ddpg, takes_c=False, her=True,
    label=lambda c: "DDPG+HER", description="DDPG with HER future relabelling (k = 4)",
))
register_method(Method(
    name="reengage_her", build=build_ddpg, takes_c=True, her=True,
    label=lambda c: f"ReenGAGE(α={_format_c(c)}/d)+HER",
    description="DDPG+HER plus the goal-gradient term with α = c/d",
))
register_method(Method(
    name="reengage_her_normalized", build=_no_builder, takes_c=True, her=True,
    baselines_only=True,
    label=lambda c: f"Normalized ReenGAGE(α={_format_c(c)}/d)+HER",
    description="ReenGAGE+HER with each goal coordinate's squared gradient error weighted by "
    "σ_i², the variance of the input normaliser's goal statistics (robotics tasks only: the "
    "normaliser exists in the Baselines regime alone)",
))
register_method(Method(
    name="sac_her", build=build_sac, takes_c=False, her=True,
    label=lambda c: "SAC+HER",
    description="SAC (twin critics, entropy coefficient tuned as Stable-Baselines3's "
    "defaults) with HER future relabelling (k = 4)",
))
register_method(Method(
    name="reengage_sac_her", build=build_sac, takes_c=True, her=True,
    label=lambda c: f"ReenGAGE(α={_format_c(c)}/d)+SAC+HER",
    description="SAC+HER plus the goal-gradient term with α = c/d, its target differentiated "
    "through the sampled next action and the entropy bonus",
))
register_method(Method(
    name="ddpg", build=build_multi_goal, takes_c=False, her=False, item_rewards=True,
    label=lambda c: "DDPG", description="DDPG with the DeepSets actor-critic (goal sets)",
))
register_method(Method(
    name="multi_reengage", build=build_multi_goal, takes_c=True, her=False, item_rewards=True,
    label=lambda c: f"Multi-ReenGAGE(α={_format_c(c)}/n_max)",
    description="DDPG plus the gate-gradient term with α = c/n_max (goal sets)",
))
register_method(Method(
    name="greedy", build=build_greedy, takes_c=False, her=False, trains=False,
    needs_goal_sets=True,
    label=lambda c: "Perfect greedy agent",
    description="steps toward the nearest present goal (NoisySeek); no training",
))
register_method(Method(
    name="sb3_ddpg_her", build=_no_builder, takes_c=False, her=True, runner=_run_sb3,
    label=lambda c: "SB3 DDPG+HER",
    description="Stable-Baselines3's DDPG+HER on the same env, cell, seeds and evaluation "
    "schedule: an independent implementation as a control column",
))
register_method(Method(
    name="dqn_her", build=build_dqn, takes_c=False, her=True, discrete_actions=True,
    label=lambda c: "DQN+HER",
    description="DQN with HER future relabelling (k = 4), Andrychowicz et al. 2017 (BitFlip)",
))
# DQN+ReenGAGE: max_a is not differentiable, so the goal-gradient target comes from the soft
# value Σ_a softmax(Q'/τ)_a Q'_a (docs/paper.md §1), used for the gradient term only, for
# both terms, or for both terms and Boltzmann exploration. The workflow tells variants of a
# method apart by c alone, so each use and τ is a method of its own. τ = 0 is the hard max,
# the same for every use but the Boltzmann one (whose τ = 0 would never explore): one name.
_SOFT_USES = {"": ("gradient", ""), "_both": ("both", ", soft both"),
              "_boltzmann": ("both_boltzmann", ", soft both, Boltzmann")}


def _register_dqn_reengage() -> None:
    for suffix, (use, words) in _SOFT_USES.items():
        for name, tau in (("0", 0.0), ("05", 0.5), ("1", 1.0)):
            if use != "gradient" and tau == 0.0:
                continue
            register_method(Method(
                name=f"dqn_reengage_her{suffix}_t{name}",
                build=lambda spec, use=use, tau=tau: build_dqn(spec, soft_target=use,
                                                                temperature=tau),
                takes_c=True, her=True, discrete_actions=True,
                label=lambda c, tau=tau, words=words: (
                    f"DQN+ReenGAGE(α={_format_c(c)}/d, τ={tau:g}{words})+HER"),
                description=f"DQN+HER plus the goal-gradient term with α = c/d, soft target "
                            f"({use}) at τ = {tau:g}",
            ))


_register_dqn_reengage()
