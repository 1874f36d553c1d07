"""SAC for a population of members, with ReenGAGE's goal-gradient term as an option.

The algorithm is Stable-Baselines3's SAC with its defaults, which the paper's SAC runs used
(docs/paper.md §1 "Variants in the appendix", §4): twin critics and their target copies (no
target actor: the next action is sampled from the online actor), a squashed Gaussian actor
whose log-std is clamped to [-20, 2], and the entropy coefficient learned from log α = 0
(α = 1) towards a target entropy of −action_dim. One update, in Stable-Baselines3's order:
sample the policy on the batch, step α (the step's losses use α from before it), step the
critics on `r + γ (min_i Q'_i(s', a') − α log π(a'|s'))`, step the actor on
`α log π(a|s) − min_i Q_i(s, a)` with the updated critics, then move the targets.

ReenGAGE adds, for each critic, `c · E[w · mean_j (∂Q_i/∂g_j − ∂T/∂g_j)²]` (w = −R), and
halves the sum over critics as Stable-Baselines3 halves the TD terms (the authors' release
does the same). The teacher's goal gradient `∂T/∂g` runs through the reparameterised sample
`a' = tanh(μ(s', g) + σ(s', g)·ε)` (ε held fixed) and through the entropy bonus
`−α log π(a'|s', g)`: both depend on g.

Random draws (the policy's samples) come from `MemberNoise` (agents/noise.py): each member's
from its own seed, so a member of a population is the same seed trained alone, and a
resumed run draws what the uninterrupted run drew.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from .ensemble import EnsembleMLP
from .inputs import network_input
from .losses import goal_gradient_loss, td_loss
from .noise import MemberNoise
from .optim import PopulationAdam

# SB3's SquashedDiagGaussianDistribution: the epsilon inside log(1 − tanh(u)² + ε).
SQUASH_EPSILON = 1e-6
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
# Draw purposes: one counter each, so exploration never shifts the updates' noise.
UPDATE_DRAWS, EXPLORATION_DRAWS = 0, 1


@dataclass
class SACConfig:
    """Hyperparameters of one SAC(+ReenGAGE) population."""

    gamma: float = 0.95
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target critics."""
    lr: float = 1e-3
    """Adam learning rate of actor, critics and the entropy coefficient (SB3 shares one)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the actor and of each critic (ReLU)."""
    goal_gradient_coef: float = 0.0
    """ReenGAGE's c (α = c/d); 0 is plain SAC and builds no goal gradients."""
    log_std_bounds: tuple[float, float] = (-20.0, 2.0)
    """Clamp of the actor's log-std (Stable-Baselines3's LOG_STD_MIN, LOG_STD_MAX)."""
    initial_log_alpha: float = 0.0
    """log of the entropy coefficient at the start (SB3's `ent_coef="auto"`: α = 1)."""
    target_entropy: float | None = None
    """Entropy the coefficient is tuned towards; None is SB3's default, −action_dim."""
    fused_adam: bool = True
    """Use PyTorch's fused Adam where it is exact per member (agents/optim.py)."""


class SAC(nn.Module):
    """A population of `members` SAC learners updated by one batched computation."""

    def __init__(
        self,
        members: int,
        obs_dim: int,
        goal_dim: int,
        action_dim: int,
        config: SACConfig,
        generators: list[torch.Generator],
        goal_at: int | None = None,
    ):
        """Arguments as for `reengage.agents.ddpg.DDPG`: the desired goal enters every
        network's input before state column `goal_at` (default: after the whole state)."""
        super().__init__()
        if len(generators) != members:
            raise ValueError(f"need one generator per member ({members}), got {len(generators)}")
        goal_at = obs_dim if goal_at is None else goal_at
        if not 0 <= goal_at <= obs_dim:
            raise ValueError(f"goal_at must be in [0, {obs_dim}], got {goal_at}")
        self.config, self.members, self.goal_at = config, members, goal_at
        self.action_dim = action_dim
        self.target_entropy = (-float(action_dim) if config.target_entropy is None
                               else float(config.target_entropy))
        # One output layer for the mean and the log-std: the same function and the same
        # initial distribution as SB3's two heads (nn.Linear's bound depends on fan-in only).
        self.actor = EnsembleMLP(members, obs_dim + goal_dim, config.hidden, 2 * action_dim)
        self.critics = nn.ModuleList(
            EnsembleMLP(members, obs_dim + goal_dim + action_dim, config.hidden, 1)
            for _ in range(2))
        for m, generator in enumerate(generators):
            self.actor.reset_member(m, generator)
            for critic in self.critics:
                critic.reset_member(m, generator)
        self.critics_target = copy.deepcopy(self.critics).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.full((members, 1), float(config.initial_log_alpha)))
        self.noise = MemberNoise(generators, purposes=2)
        fused = config.fused_adam
        self.actor_optimizer = PopulationAdam(self.actor.parameters(), config.lr, fused)
        self.critic_optimizer = PopulationAdam(self.critics.parameters(), config.lr, fused)
        self.alpha_optimizer = PopulationAdam([self.log_alpha], config.lr, fused)
        self._online = list(self.critics.parameters())
        self._target = list(self.critics_target.parameters())

    # -- networks ------------------------------------------------------------------------
    def gaussian(self, obs: torch.Tensor, goal: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The actor's mean and clamped log-std, each `[members, n, action_dim]`."""
        out = self.actor(network_input(obs, goal, self.goal_at))
        mean, log_std = out.split(self.action_dim, dim=-1)
        return mean, log_std.clamp(*self.config.log_std_bounds)

    def sample(self, obs: torch.Tensor, goal: torch.Tensor, noise: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reparameterised action `tanh(μ + σ·noise)` and its log-density `[members,
        n]` under the squashed Gaussian (SB3's formula, its ε inside the log)."""
        mean, log_std = self.gaussian(obs, goal)
        action = torch.tanh(mean + log_std.exp() * noise)
        # N(μ, σ) at μ + σ·noise is −noise²/2 − log σ − log √(2π): written with the noise
        # directly, so a gradient at fixed noise needs no cancellation of (x − μ)/σ.
        log_prob = (-0.5 * noise.pow(2) - log_std - _HALF_LOG_2PI).sum(dim=-1)
        log_prob = log_prob - torch.log(1 - action.pow(2) + SQUASH_EPSILON).sum(dim=-1)
        return action, log_prob

    def q_values(self, critics: nn.ModuleList, obs: torch.Tensor, goal: torch.Tensor,
                 action: torch.Tensor) -> list[torch.Tensor]:
        """Each critic's `Q(s, a, g)`, `[members, n, 1]`."""
        x = network_input(obs, goal, self.goal_at, action)
        return [critic(x) for critic in critics]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Deterministic actions `tanh(μ)`, `[members, n, action_dim]` (evaluation)."""
        return torch.tanh(self.gaussian(obs, goal)[0])

    @torch.no_grad()
    def explore(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Sampled actions, as SB3's SAC acts while it trains."""
        noise = self.noise.standard_normal(EXPLORATION_DRAWS, (obs.shape[1], self.action_dim),
                                          self.log_alpha.dtype)
        return self.sample(obs, goal, noise)[0]

    # -- the teacher ---------------------------------------------------------------------
    def soft_target(self, next_obs: torch.Tensor, goal: torch.Tensor, reward: torch.Tensor,
                    noise: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """`T(s', g) = R + γ (min_i Q'_i(s', a', g) − α log π(a'|s', g))`, `[members, n]`,
        with `a'` the online actor's sample at `noise`; differentiable in `goal`."""
        next_action, next_log_prob = self.sample(next_obs, goal, noise)
        q1, q2 = self.q_values(self.critics_target, next_obs, goal, next_action)
        soft_value = torch.min(q1, q2).squeeze(-1) - alpha * next_log_prob
        return reward + self.config.gamma * soft_value

    def target_and_goal_gradient(self, next_obs: torch.Tensor, goal: torch.Tensor,
                                 reward: torch.Tensor, noise: torch.Tensor,
                                 alpha: torch.Tensor, with_goal_gradient: bool = True
                                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher and, if asked, `∇_g T` through the sampled action and the entropy
        term (the sparse reward's own gradient is zero where the term is gated on); both
        constants for the optimiser."""
        if not with_goal_gradient:
            with torch.no_grad():
                return self.soft_target(next_obs, goal, reward, noise, alpha), None
        with torch.enable_grad():
            g = goal.detach().requires_grad_(True)
            target = self.soft_target(next_obs, g, reward, noise, alpha)
            (dt_dg,) = torch.autograd.grad(target.sum(), g)
        return target.detach(), dt_dg

    # -- one update ----------------------------------------------------------------------
    def update(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        next_obs: torch.Tensor,
        goal: torch.Tensor,
        reward: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """One gradient step for every member; returns per-member diagnostics `[members]`."""
        c = self.config.goal_gradient_coef
        batch = obs.shape[1]
        noise = self.noise.standard_normal(UPDATE_DRAWS, (2, batch, self.action_dim),
                                          self.log_alpha.dtype)
        noise_now, noise_next = noise[:, 0], noise[:, 1]

        # The policy on the batch; its graph serves the α step and the actor step.
        action_pi, log_prob = self.sample(obs, goal, noise_now)
        alpha = self.log_alpha.detach().exp()  # [members, 1]: this update's α, before its step
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean(dim=1)
        self.alpha_optimizer.zero_grad(set_to_none=True)
        alpha_loss.sum().backward()
        self.alpha_optimizer.step()

        # Critics: regress on the soft teacher and, for ReenGAGE, on its goal gradient.
        target, target_dt_dg = self.target_and_goal_gradient(
            next_obs, goal, reward, noise_next, alpha, with_goal_gradient=c > 0)
        self.critic_optimizer.zero_grad(set_to_none=True)
        g = goal.detach().requires_grad_(True) if c > 0 else goal
        qs = self.q_values(self.critics, obs, g, action)
        value_term = 0.5 * sum(td_loss(q, target.unsqueeze(-1)) for q in qs)
        if c > 0:
            gradients = [torch.autograd.grad(q.sum(), g, create_graph=True)[0] for q in qs]
            gradient_term = 0.5 * sum(goal_gradient_loss(dq_dg, target_dt_dg, reward)
                                      for dq_dg in gradients)
        else:
            gradient_term = torch.zeros_like(value_term)
        (value_term + c * gradient_term).sum().backward()
        self.critic_optimizer.step()

        # Actor: the updated critics judge the sampled action (SB3's order).
        q1_pi, q2_pi = self.q_values(self.critics, obs, goal, action_pi)
        actor_term = (alpha * log_prob - torch.min(q1_pi, q2_pi).squeeze(-1)).mean(dim=1)
        actor_params = list(self.actor.parameters())
        grads = torch.autograd.grad(actor_term.sum(), actor_params)
        for p, grad in zip(actor_params, grads, strict=True):
            p.grad = grad
        self.actor_optimizer.step()

        with torch.no_grad():
            torch._foreach_lerp_(self._target, self._online, self.config.tau)
        return {
            "critic_loss": value_term.detach(),
            "goal_grad_loss": gradient_term.detach(),
            "actor_loss": actor_term.detach(),
            "q_mean": torch.stack([q.detach().mean(dim=(1, 2)) for q in qs]).mean(dim=0),
            "ent_coef": alpha.squeeze(-1),
        }
