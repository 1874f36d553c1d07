"""DDPG and Multi-ReenGAGE on goal sets, for a population of members (docs/paper.md §1).

The learner keeps the harness's interface: goals arrive flattened (`[M, n, n_max * 3]`,
rows `(b, x, y)`) and are reshaped here; rewards arrive per goal item (`[M, B, n_max]`,
the env's `item_reward` at s'), from which the scalar reward is derived. No HER.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .deepsets import DeepSetsActorCritic, DeepSetsConfig
from .multi_goal_loss import multi_goal_actor_loss, multi_goal_critic_loss
from .optim import PopulationAdam


@dataclass
class MultiGoalConfig:
    """Hyperparameters of one DDPG / Multi-ReenGAGE population (docs/paper.md §4)."""

    gamma: float = 0.95
    tau: float = 0.005
    lr: float = 1e-3
    gate_coef: float = 0.0
    """Multi-ReenGAGE's c (α = c/n_max); 0 is plain DDPG."""
    through_target_actor: bool = True
    """Differentiate the target through π' (the paper); False blocks it (the release)."""
    networks: DeepSetsConfig = field(default_factory=DeepSetsConfig)
    fused_adam: bool = True
    """Use PyTorch's fused Adam where it is exact per member (agents/optim.py)."""


class MultiGoalDDPG(nn.Module):
    """DeepSets actor-critic trained by DDPG's losses plus the optional gate-gradient term."""

    def __init__(self, members: int, obs_dim: int, action_dim: int, n_max: int,
                 config: MultiGoalConfig, generators: list[torch.Generator]):
        super().__init__()
        self.config, self.n_max = config, n_max
        self.model = DeepSetsActorCritic(members, obs_dim, action_dim, n_max, generators,
                                         config.networks)
        self.target = self.model.make_target()
        self.critic_optimizer = PopulationAdam(self.model.critic_parameters(), config.lr,
                                               config.fused_adam)
        self.actor_optimizer = PopulationAdam(self.model.actor_parameters(), config.lr,
                                              config.fused_adam)
        self._online = list(self.model.parameters())
        self._target = list(self.target.parameters())

    def _goal_set(self, goal: torch.Tensor) -> torch.Tensor:
        return goal.reshape(*goal.shape[:-1], self.n_max, 3)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.model.act(obs, self._goal_set(goal))

    def update(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor,
               goal: torch.Tensor, reward: torch.Tensor) -> dict[str, torch.Tensor]:
        goal_set = self._goal_set(goal)
        critic = multi_goal_critic_loss(
            self.model, self.target, obs, action, next_obs, goal_set, reward,
            self.config.gamma, self.config.gate_coef, self.config.through_target_actor,
        )
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic.loss.backward()
        self.critic_optimizer.step()

        # Only the actor's weights need gradients here (the critic's are not its to move).
        actor_loss, actor_term = multi_goal_actor_loss(self.model, obs, goal_set)
        actor_params = self.model.actor_parameters()
        grads = torch.autograd.grad(actor_loss, actor_params)
        for p, grad in zip(actor_params, grads, strict=True):
            p.grad = grad
        self.actor_optimizer.step()

        with torch.no_grad():
            torch._foreach_lerp_(self._target, self._online, self.config.tau)
        return {"critic_loss": critic.value_term, "goal_grad_loss": critic.gate_term,
                "actor_loss": actor_term, "q_mean": critic.q_mean}
