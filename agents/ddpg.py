"""DDPG for a population of members, with ReenGAGE's goal-gradient term as an option.

Reads top to bottom: networks, acting, then one update (critic, actor, targets). The
defaults are the paper's ContinuousSeek settings (docs/paper.md §4), which match
Stable-Baselines3's DDPG (TD3 with one critic, no target smoothing, policy delay 1).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from . import hand_gradients
from .compiled import compile_or_eager
from .ensemble import EnsembleMLP
from .inputs import network_input
from .losses import (
    clip_target,
    goal_gradient_loss,
    q_and_goal_gradient,
    td_loss,
    td_target_and_goal_gradient,
)
from .normalizer import RunningNormalizer
from .optim import PopulationAdam


@dataclass
class DDPGConfig:
    """Hyperparameters of one DDPG(+ReenGAGE) population."""

    gamma: float = 0.95
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient: target ← (1 − τ)·target + τ·online after every update."""
    lr: float = 1e-3
    """Adam learning rate of actor and critic."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of actor and critic MLPs (ReLU)."""
    goal_gradient_coef: float = 0.0
    """ReenGAGE's c (α = c/d); 0 is plain DDPG and skips the double backward entirely."""
    action_l2: float = 0.0
    """Penalty on the squared pre-noise action in the actor loss (robotics setting)."""
    target_clip: tuple[float, float] | None = None
    """Clip the TD target to this range (robotics: [−1/(1−γ), 0]); where a sample's target
    is clipped, its goal gradient is zero (agents/losses.py `clip_target`)."""
    target_update_every_step: bool = True
    """Polyak-average the targets after every update (Stable-Baselines3, the paper's toy
    tasks); false leaves it to the training loop, which calls `update_targets` (Baselines:
    once per cycle of updates, with τ = 1 − polyak)."""
    normalize_inputs: bool = False
    """Baselines' running mean/std normaliser in front of both networks, one for the state
    and one for the goal (agents/normalizer.py); the training loop feeds their statistics
    through `update_normalizer`. ReenGAGE's goal gradients are then taken with respect to
    the goal itself, through the normaliser, as the release's `gradher` takes them."""
    normalizer_eps: float = 0.01
    """Smallest standard deviation of the normaliser (Baselines' `norm_eps`)."""
    normalizer_clip: float = 5.0
    """Normalised inputs are clipped to ±this (Baselines' `norm_clip`)."""
    normalizer_clip_input: float = 200.0
    """Raw inputs are clipped to ±this before normalising (Baselines' `clip_obs`)."""
    simultaneous_steps: bool = False
    """Take the actor's gradient from the critic as it was before this update's critic step
    (Baselines computes both gradients in one session run, then applies both); false steps
    the critic first and the actor against the updated critic, as Stable-Baselines3 does.
    The critic's step never reads the online actor, so only the actor's step differs."""
    normalized_goal_gradient: bool = False
    """Normalized ReenGAGE (docs/paper.md §1, the release's `gradher_normalized`): each goal
    coordinate's squared gradient error is multiplied by σ_i², the goal normaliser's
    variance; needs `normalize_inputs`."""
    fused_adam: bool = True
    """Use PyTorch's fused Adam where it is exact per member (agents/optim.py)."""
    hand_gradients: bool = True
    """Critic and actor steps from the closed-form gradients of agents/hand_gradients.py;
    false differentiates the losses with autograd (for ReenGAGE a double backward): the same
    numbers up to rounding, slower."""
    compile: bool = True
    """Compile the hand-written gradient functions with `torch.compile` (agents/compiled.py):
    4-9 % faster training of a population after a one-off compilation of 2-10 s when
    training starts (`DDPG.prepare`); where compiling fails it warns and runs eagerly.
    Applies only to the hand-written path (`hand_gradients`)."""


class _GoalConditioned(nn.Module):
    """Wraps an ensemble MLP so it takes (state, goal[, action]) as separate tensors, which
    is what lets the losses differentiate with respect to the goal alone. The goal enters
    the input at column `goal_at` of the state (agents/inputs.py)."""

    def __init__(self, net: EnsembleMLP, goal_at: int):
        super().__init__()
        self.net, self.goal_at = net, goal_at

    def forward(self, state: torch.Tensor, goal: torch.Tensor, *rest: torch.Tensor
                ) -> torch.Tensor:
        return self.net(network_input(state, goal, self.goal_at, *rest))


def per_member_settings(name: str, values: Sequence[float] | None, members: int,
                positive: bool) -> tuple[float, ...] | None:
    """`values` as a tuple of floats, checked: one per member, finite, positive (or not
    negative)."""
    if values is None:
        return None
    values = tuple(float(v) for v in values)
    if len(values) != members:
        raise ValueError(f"{name} needs one value per member ({members}), got {len(values)}")
    if not all(math.isfinite(v) and (v > 0 if positive else v >= 0) for v in values):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '≥ 0'}, "
                         f"got {values}")
    return values


class DDPG(nn.Module):
    """A population of `members` DDPG learners updated by one batched computation. Members
    may differ in learning rate and ReenGAGE's c (`member_lrs`, `member_cs`: a packed grid,
    one population holding a slice of a hyperparameter grid); each member still equals,
    bitwise on the CPU, the same seed trained in a population of its own lr and c."""

    def __init__(
        self,
        members: int,
        obs_dim: int,
        goal_dim: int,
        action_dim: int,
        config: DDPGConfig,
        generators: list[torch.Generator],
        goal_at: int | None = None,
        member_lrs: Sequence[float] | None = None,
        member_cs: Sequence[float] | None = None,
    ):
        """`obs_dim` is the width of the state the learner is given; the desired goal enters
        the networks' input before state column `goal_at` (default: after the whole state).
        With the state `(achieved goal, observation)` and `goal_at` = the achieved goal's
        width, the input is Stable-Baselines3's `(achieved, desired, observation)`.

        `member_lrs` and `member_cs` give each member its own learning rate and c (None:
        every member has the config's `lr`, `goal_gradient_coef`). The c of one population
        are all 0 or all > 0: DDPG members are packed apart from ReenGAGE members."""
        super().__init__()
        if len(generators) != members:
            raise ValueError(f"need one generator per member ({members}), got {len(generators)}")
        lrs = per_member_settings("member_lrs", member_lrs, members, positive=True)
        cs = per_member_settings("member_cs", member_cs, members, positive=False)
        if cs is not None and 0.0 in cs and max(cs) > 0:
            raise ValueError(
                f"member_cs {cs} mixes c = 0 with c > 0: pack DDPG members (c = 0) apart from "
                "ReenGAGE members, because c = 0 inside a ReenGAGE pack would pay the double "
                "backward and would not be bitwise equal to DDPG alone")
        if lrs is not None and len(set(lrs)) > 1 and not config.fused_adam:
            raise ValueError("member_lrs that differ need fused_adam: the unfused optimiser "
                             "has one learning rate for every member")
        goal_at = obs_dim if goal_at is None else goal_at
        if not 0 <= goal_at <= obs_dim:
            raise ValueError(f"goal_at must be in [0, {obs_dim}], got {goal_at}")
        if config.normalized_goal_gradient and not config.normalize_inputs:
            raise ValueError("normalized_goal_gradient needs normalize_inputs")
        self.config, self.members, self.goal_at = config, members, goal_at
        self.member_lrs: tuple[float, ...] = lrs or (config.lr,) * members
        """Each member's learning rate."""
        self.member_cs: tuple[float, ...] = cs or (config.goal_gradient_coef,) * members
        """Each member's ReenGAGE coefficient c."""
        self.use_goal_gradient = all(c > 0 for c in self.member_cs)
        """ReenGAGE's goal-gradient term is trained (every c > 0); false is plain DDPG."""
        # One c for every member is a Python float, as before packing; per-member c become
        # tensors made at the first update of each shape (`_coefficient`).
        self._c: float | None = self.member_cs[0] if len(set(self.member_cs)) == 1 else None
        self._member_c: dict[tuple, torch.Tensor] = {}
        self.state_normalizer: RunningNormalizer | None = None
        self.goal_normalizer: RunningNormalizer | None = None
        if config.normalize_inputs:
            settings = (config.normalizer_eps, config.normalizer_clip,
                        config.normalizer_clip_input)
            self.state_normalizer = RunningNormalizer(members, obs_dim, *settings)
            self.goal_normalizer = RunningNormalizer(members, goal_dim, *settings)
        actor = EnsembleMLP(members, obs_dim + goal_dim, config.hidden, action_dim, nn.Tanh())
        critic = EnsembleMLP(members, obs_dim + goal_dim + action_dim, config.hidden, 1)
        for m, generator in enumerate(generators):
            actor.reset_member(m, generator)
            critic.reset_member(m, generator)
        self.actor = _GoalConditioned(actor, goal_at)
        self.critic = _GoalConditioned(critic, goal_at)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        fused = config.fused_adam
        lr = lrs or config.lr
        self.actor_optimizer = PopulationAdam(self.actor.parameters(), lr, fused)
        self.critic_optimizer = PopulationAdam(self.critic.parameters(), lr, fused)
        self._online = list(self.actor.parameters()) + list(self.critic.parameters())
        self._target = list(self.actor_target.parameters()) + list(
            self.critic_target.parameters()
        )
        steps = (hand_gradients.target_and_goal_gradient, hand_gradients.critic_step_gradients,
                 hand_gradients.actor_step_gradients)
        self._by_hand = config.hand_gradients and len(config.hidden) > 0
        self._compiled = config.compile and self._by_hand
        if self._compiled:
            steps = tuple(compile_or_eager(step) for step in steps)
        self._target_and_goal_gradient, self._critic_step, self._actor_step = steps
        self._dims = (obs_dim, goal_dim, action_dim)

    def prepare(self, batch_size: int) -> None:
        """Compile the update's gradient functions now, for batches of `batch_size`, so the
        one-off cost falls before training rather than inside its first update. Runs them on
        a zero batch of the training shapes and discards the gradients: weights and
        optimiser state are untouched. Call it after moving the learner to its device."""
        if not self._compiled:
            return
        parameter = next(self.parameters())
        obs_dim, goal_dim, action_dim = self._dims

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(self.members, batch_size, *shape, dtype=parameter.dtype,
                               device=parameter.device)

        obs, goal, reward = zeros(obs_dim), zeros(goal_dim), zeros()
        c = self._coefficient(obs, closed_form=True)
        target, target_dq_dg = zeros(1), None
        if self.use_goal_gradient:
            target, target_dq_dg = self._target_and_goal_gradient(
                self.critic_target.net, self.actor_target.net, obs, goal, reward,
                self.config.gamma, self.goal_at)
        self._critic_step(self.critic.net, obs, goal, zeros(action_dim), target, target_dq_dg,
                          reward, c, self.goal_at)
        self._actor_step(self.actor.net, self.critic.net, obs, goal, self.config.action_l2,
                         self.goal_at)
        for p in self.parameters():
            p.grad = None

    def _coefficient(self, obs: torch.Tensor, closed_form: bool) -> float | torch.Tensor:
        """c as this update's critic step takes it: the float every member shares or, per
        member, for the closed form its factors `2c/(d·B)` (`hand_gradients.member_weights`)
        and for autograd c itself `[members]`, each rounded once to the networks' dtype as
        the float would be: so member i rounds as a population with c_i alone does."""
        if self._c is not None:
            return self._c
        batch = obs.shape[1] if closed_form else 0
        key = (closed_form, batch, obs.dtype, obs.device)
        if key not in self._member_c:
            if closed_form:
                value = hand_gradients.member_weights(self.member_cs, self._dims[1], batch,
                                                      obs.dtype, obs.device)
            else:
                value = torch.tensor(self.member_cs, dtype=obs.dtype, device=obs.device)
            self._member_c[key] = value
        return self._member_c[key]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Deterministic actions `[members, n, action_dim]`."""
        if self.state_normalizer is not None and self.goal_normalizer is not None:
            obs, goal = self.state_normalizer(obs), self.goal_normalizer(goal)
        return self.actor(obs, goal)

    def update_normalizer(self, state: torch.Tensor, goal: torch.Tensor) -> None:
        """Add states and goals `[members, n, ...]` to the normalisers' statistics (each
        member its own); the training loop calls it after each batch of episodes."""
        if self.state_normalizer is None or self.goal_normalizer is None:
            raise RuntimeError("this learner has no normaliser (normalize_inputs is off)")
        self.state_normalizer.update(state)
        self.goal_normalizer.update(goal)

    @torch.no_grad()
    def update_targets(self) -> None:
        """One Polyak step of the target networks toward the online ones (by τ)."""
        torch._foreach_lerp_(self._target, self._online, self.config.tau)

    def _normalized(self, obs: torch.Tensor, next_obs: torch.Tensor, goal: torch.Tensor,
                    with_goal_gradient: bool) -> tuple[torch.Tensor, torch.Tensor,
                                                       torch.Tensor, torch.Tensor | None]:
        """The networks' inputs and, when the goal gradient is to be taken through the
        normaliser, the factor `∂ĝ/∂g` (times σ for Normalized ReenGAGE) that turns a
        gradient with respect to the normalised goal into the one the loss wants. It is the
        same factor for the student and the teacher (one goal), so it scales their
        difference; None where no factor applies (no normaliser, or c = 0)."""
        if self.state_normalizer is None or self.goal_normalizer is None:
            return obs, next_obs, goal, None
        scale = None
        if with_goal_gradient:
            scale = self.goal_normalizer.input_gradient(goal)
            if self.config.normalized_goal_gradient:
                scale = scale * self.goal_normalizer.std
        normalize = self.state_normalizer
        return normalize(obs), normalize(next_obs), self.goal_normalizer(goal), scale

    def _actor_update(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Actor: ascend Q (minus the action L2 term); only the actor's weights need
        gradients here. Returns the actor loss per member."""
        if self._by_hand:
            actor_term = self._actor_step(
                self.actor.net, self.critic.net, obs, goal, self.config.action_l2,
                self.goal_at,
            )
        else:
            pi = self.actor(obs, goal)
            actor_term = -self.critic(obs, goal, pi).mean(dim=(1, 2))
            if self.config.action_l2 > 0:
                actor_term = actor_term + self.config.action_l2 * pi.pow(2).mean(dim=(1, 2))
            actor_params = list(self.actor.parameters())
            grads = torch.autograd.grad(actor_term.sum(), actor_params)
            for p, grad in zip(actor_params, grads, strict=True):
                p.grad = grad
        self.actor_optimizer.step()
        return actor_term

    def update(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        next_obs: torch.Tensor,
        goal: torch.Tensor,
        reward: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """One gradient step for every member; returns per-member diagnostics `[members]`.
        With `normalize_inputs`, states and goals are the raw ones: they are normalised
        here."""
        use_goal_gradient = self.use_goal_gradient
        obs, next_obs, goal, goal_scale = self._normalized(obs, next_obs, goal,
                                                           use_goal_gradient)
        if self.config.simultaneous_steps:
            actor_term = self._actor_update(obs, goal)

        # Critic: regress on the teacher's value and, for ReenGAGE, on its goal gradient.
        by_hand = self._by_hand
        if by_hand and use_goal_gradient:
            target, target_dq_dg = self._target_and_goal_gradient(
                self.critic_target.net, self.actor_target.net, next_obs, goal, reward,
                self.config.gamma, self.goal_at,
            )
        else:
            target, target_dq_dg = td_target_and_goal_gradient(
                self.critic_target, self.actor_target, next_obs, goal, reward,
                self.config.gamma, use_goal_gradient,
            )
        if self.config.target_clip is not None:
            target, target_dq_dg = clip_target(target, target_dq_dg, self.config.target_clip)
        self.critic_optimizer.zero_grad(set_to_none=True)
        # The closed form has no per-coordinate weights for the gradient term; a goal seen
        # through the normaliser needs them, so that critic step goes through autograd.
        if by_hand and goal_scale is None:
            q, value_term, gradient_term = self._critic_step(
                self.critic.net, obs, goal, action, target, target_dq_dg, reward,
                self._coefficient(obs, closed_form=True), self.goal_at,
            )
        else:
            if use_goal_gradient:
                q, dq_dg = q_and_goal_gradient(self.critic, obs, goal, action)
                if goal_scale is not None:
                    dq_dg, target_dq_dg = dq_dg * goal_scale, target_dq_dg * goal_scale
                gradient_term = goal_gradient_loss(dq_dg, target_dq_dg, reward)
            else:
                q = self.critic(obs, goal, action)
                gradient_term = torch.zeros(self.members, dtype=q.dtype, device=q.device)
            value_term = td_loss(q, target)
            c = self._coefficient(obs, closed_form=False)
            (value_term + c * gradient_term).sum().backward()
        self.critic_optimizer.step()
        if not self.config.simultaneous_steps:
            actor_term = self._actor_update(obs, goal)

        if self.config.target_update_every_step:
            self.update_targets()
        return {
            "critic_loss": value_term.detach(),
            "goal_grad_loss": gradient_term.detach(),
            "actor_loss": actor_term.detach(),
            "q_mean": q.detach().mean(dim=(1, 2)),
        }
