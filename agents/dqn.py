"""DQN for a population of members, with ReenGAGE's goal-gradient term through a soft target.

Reads top to bottom: the soft value, settings, the Q-network, acting and exploring, then one
update (teacher, student, target network). With discrete actions the teacher's value
`R + γ max_a Q'(s', a, g)` has no goal gradient to match where the argmax changes, so
ReenGAGE takes its gradient target from the soft value `Σ_a softmax(Q'/τ)_a Q'_a`
(docs/paper.md §1). The paper tried it in three uses, all here (`soft_target`):

* `gradient`: the soft value gives the gradient target only; the TD target keeps the max;
* `both`: the soft value is the TD target too;
* `both_boltzmann`: as `both`, and training actions are drawn from `softmax(Q/τ)` instead of
  ε-greedy.

The value term is a Huber loss, the gradient term a (gated) squared error, as in the paper.
The defaults are the bit-flipping settings of Andrychowicz et al. (2017): one hidden layer
of 256, Adam at 1e-3, γ = 0.98, ε = 0.2 random actions, target networks moved 5 % after
every 40 updates, which `tau` = 1 − 0.95^(1/40) spreads over each update.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .ensemble import EnsembleMLP
from .inputs import network_input
from .losses import goal_gradient_loss
from .optim import PopulationAdam

SOFT_TARGET_USES = ("gradient", "both", "both_boltzmann")


def soft_value(q: torch.Tensor, temperature: float) -> torch.Tensor:
    """`Σ_a softmax(q/τ)_a q_a` over the last axis, kept as a size-1 axis. τ = 0 is the
    hard max, whose gradient is that of the maximising action's value."""
    if temperature == 0:
        return q.max(dim=-1, keepdim=True).values
    weights = torch.softmax(q / temperature, dim=-1)
    return (weights * q).sum(dim=-1, keepdim=True)


@dataclass
class DQNConfig:
    """Hyperparameters of one DQN(+ReenGAGE) population."""

    gamma: float = 0.98
    """Discount factor."""
    tau: float = 1 - 0.95 ** (1 / 40)
    """Polyak coefficient: target ← (1 − τ)·target + τ·online after every update."""
    lr: float = 1e-3
    """Adam learning rate."""
    hidden: tuple[int, ...] = (256,)
    """Hidden widths of the Q-network (ReLU); one output per action."""
    epsilon: float = 0.2
    """Probability of a uniformly random training action (ε-greedy exploration)."""
    goal_gradient_coef: float = 0.0
    """ReenGAGE's c (α = c/d); 0 is plain DQN and skips the double backward."""
    soft_target: str = "gradient"
    """Where the soft value replaces the max: `gradient`, `both` or `both_boltzmann`."""
    temperature: float = 0.0
    """The soft value's τ; 0 is the hard max (and greedy Boltzmann actions)."""

    def __post_init__(self) -> None:
        if self.soft_target not in SOFT_TARGET_USES:
            raise ValueError(f"soft_target must be one of {', '.join(SOFT_TARGET_USES)}, "
                             f"got {self.soft_target!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.soft_target == "both_boltzmann" and self.temperature == 0:
            raise ValueError("Boltzmann actions at temperature 0 never explore")
        if not 0 <= self.epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")


class DQN(nn.Module):
    """A population of `members` DQN learners updated by one batched computation. Actions
    are indices in `[0, actions)`, handed over as one float column `[members, n, 1]`."""

    def __init__(
        self,
        members: int,
        obs_dim: int,
        goal_dim: int,
        actions: int,
        config: DQNConfig,
        generators: list[torch.Generator],
        goal_at: int | None = None,
    ):
        """`obs_dim` is the width of the state the learner is given; the goal enters the
        network's input before state column `goal_at` (default: after the whole state)."""
        super().__init__()
        if len(generators) != members:
            raise ValueError(f"need one generator per member ({members}), got {len(generators)}")
        if actions < 1:
            raise ValueError(f"DQN needs a discrete action space, got {actions} actions")
        self.config, self.members, self.actions = config, members, actions
        self.goal_at = obs_dim if goal_at is None else goal_at
        self.q = EnsembleMLP(members, obs_dim + goal_dim, config.hidden, actions)
        for m, generator in enumerate(generators):
            self.q.reset_member(m, generator)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizer = PopulationAdam(self.q.parameters(), config.lr)
        self._online = list(self.q.parameters())
        self._target = list(self.q_target.parameters())

    def values(self, net: EnsembleMLP, state: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Q of every action `[members, n, actions]`."""
        return net(network_input(state, goal, self.goal_at))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Greedy actions `[members, n, 1]` (ties to the lowest index)."""
        return self.values(self.q, obs, goal).argmax(dim=-1, keepdim=True).float()

    @torch.no_grad()
    def sample_actions(self, obs: torch.Tensor, goal: torch.Tensor,
                       rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        """Training actions `[members, n, 1]`: ε-greedy, or for `both_boltzmann` drawn from
        `softmax(Q/τ)`. Member m draws from `rngs[m]` alone, the same number of draws
        whatever it picks, so its actions do not depend on the population around it."""
        q = self.values(self.q, obs, goal)
        greedy = q.argmax(dim=-1).cpu().numpy()
        q = q.double().cpu().numpy()
        n = q.shape[1]
        chosen = np.empty((self.members, n), dtype=np.int64)
        for m, rng in enumerate(rngs):
            if self.config.soft_target == "both_boltzmann":
                logits = q[m] / self.config.temperature
                weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
                cdf = np.cumsum(weights / weights.sum(axis=-1, keepdims=True), axis=-1)
                draws = rng.random(n)
                chosen[m] = np.minimum((draws[:, None] > cdf).sum(axis=-1), self.actions - 1)
            else:
                explore, random = rng.random(n) < self.config.epsilon, rng.integers(
                    0, self.actions, n)
                chosen[m] = np.where(explore, random, greedy[m])
        return torch.as_tensor(chosen, dtype=torch.float32, device=obs.device).unsqueeze(-1)

    def update(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        next_obs: torch.Tensor,
        goal: torch.Tensor,
        reward: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """One gradient step for every member; returns per-member diagnostics `[members]`."""
        config = self.config
        c = config.goal_gradient_coef
        soft_td = config.soft_target != "gradient"

        # Teacher: the TD target, and for ReenGAGE the soft value's goal gradient, a
        # constant for the optimiser (no second-order graph through the target network).
        if c > 0:
            with torch.enable_grad():
                g = goal.detach().requires_grad_(True)
                q_next = self.values(self.q_target, next_obs, g)
                soft = soft_value(q_next, config.temperature)
                (soft_dg,) = torch.autograd.grad(soft.sum(), g)
            target_dq_dg = config.gamma * soft_dg
            q_next = q_next.detach()
        else:
            with torch.no_grad():
                q_next = self.values(self.q_target, next_obs, goal)
            target_dq_dg = None
        next_value = (soft_value(q_next, config.temperature) if soft_td
                      else q_next.max(dim=-1, keepdim=True).values)
        target = reward.unsqueeze(-1) + config.gamma * next_value

        # Student: Q of the action taken, and its goal gradient with a graph when trained.
        index = action.long()
        g = goal.detach().requires_grad_(c > 0)
        q = self.values(self.q, obs, g).gather(-1, index)
        if c > 0:
            (dq_dg,) = torch.autograd.grad(q.sum(), g, create_graph=True)
            gradient_term = goal_gradient_loss(dq_dg, target_dq_dg, reward)
        else:
            gradient_term = torch.zeros(self.members, dtype=q.dtype, device=q.device)
        value_term = F.smooth_l1_loss(q, target, reduction="none").mean(dim=(1, 2))
        self.optimizer.zero_grad(set_to_none=True)
        (value_term + c * gradient_term).sum().backward()
        self.optimizer.step()

        with torch.no_grad():
            torch._foreach_lerp_(self._target, self._online, config.tau)
        return {
            "critic_loss": value_term.detach(),
            "goal_grad_loss": gradient_term.detach(),
            "q_mean": q.detach().mean(dim=(1, 2)),
        }
