"""DDPG and Multi-ReenGAGE on goal sets, for a population of members (docs/paper.md §1).

The learner keeps the harness's interface: goals arrive flattened (`[M, n, n_max * 3]`,
rows `(b, x, y)`) and are reshaped here; rewards arrive per goal item (`[M, B, n_max]`,
the env's `item_reward` at s'), from which the scalar reward is derived. No HER.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .ddpg import per_member_settings
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
    """DeepSets actor-critic trained by DDPG's losses plus the optional gate-gradient term.
    Members may differ in learning rate and c (`member_lrs`, `member_cs`: a packed grid, as
    agents/ddpg.py's DDPG); each still equals the same seed trained alone, bitwise on the
    CPU."""

    def __init__(self, members: int, obs_dim: int, action_dim: int, n_max: int,
                 config: MultiGoalConfig, generators: list[torch.Generator],
                 member_lrs: Sequence[float] | None = None,
                 member_cs: Sequence[float] | None = None):
        super().__init__()
        lrs = per_member_settings("member_lrs", member_lrs, members, positive=True)
        cs = per_member_settings("member_cs", member_cs, members, positive=False)
        if cs is not None and 0.0 in cs and max(cs) > 0:
            raise ValueError(f"member_cs {cs} mixes c = 0 with c > 0: DDPG members (c = 0) "
                             "pack apart from Multi-ReenGAGE members")
        if lrs is not None and len(set(lrs)) > 1 and not config.fused_adam:
            raise ValueError("member_lrs that differ need fused_adam")
        self.config, self.n_max = config, n_max
        self.member_lrs: tuple[float, ...] = lrs or (config.lr,) * members
        self.member_cs: tuple[float, ...] = cs or (config.gate_coef,) * members
        # One c for every member stays a Python float (the loss multiplies by it as before
        # packing); per-member c become a float32 tensor on the update's device, made at
        # the first update there (an eager warm-up step before any CUDA graph capture). Not
        # a buffer: a policy file holds weights only.
        self._gate_coef: float | None = (self.member_cs[0] if len(set(self.member_cs)) == 1
                                         else None)
        self._member_gate_coef: dict[torch.device, torch.Tensor] = {}
        self.model = DeepSetsActorCritic(members, obs_dim, action_dim, n_max, generators,
                                         config.networks)
        self.target = self.model.make_target()
        lr = lrs or config.lr
        self.critic_optimizer = PopulationAdam(self.model.critic_parameters(), lr,
                                               config.fused_adam)
        self.actor_optimizer = PopulationAdam(self.model.actor_parameters(), lr,
                                              config.fused_adam)
        self._online = list(self.model.parameters())
        self._target = list(self.target.parameters())

    def _coefficient(self, device: torch.device) -> float | torch.Tensor:
        """c: one float for every member, or each member's `[M]` on `device`."""
        if self._gate_coef is not None:
            return self._gate_coef
        if device not in self._member_gate_coef:
            self._member_gate_coef[device] = torch.tensor(self.member_cs, dtype=torch.float32,
                                                          device=device)
        return self._member_gate_coef[device]

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
            self.config.gamma, self._coefficient(obs.device),
            self.config.through_target_actor,
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
