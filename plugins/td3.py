"""TD3+HER, added by the README's recipe ("Adding your method as a new column"): one module
that registers a method, named under a config's `plugins`, and nothing in the core changed.

TD3 (Fujimoto et al. 2018) with Stable-Baselines3's defaults: twin critics regressed on the
smaller target value, the target action smoothed with Gaussian noise (σ 0.2, clipped to
±0.5), and the actor and every target network updated on every second update. It explores
as DDPG does here, with the loop's Gaussian action noise, and sees the same inputs.

    plugins: [plugins.td3]
    experiments:
      continuous_seek:
        methods:
          - name: ddpg_her
          - name: td3_her      # the new column
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from reengage.agents.ensemble import EnsembleMLP
from reengage.agents.inputs import network_input
from reengage.agents.losses import td_loss
from reengage.agents.noise import MemberNoise
from reengage.agents.optim import PopulationAdam
from reengage.registry import LearnerSpec, Method, register_method


@dataclass
class TD3Config:
    """Hyperparameters of one TD3 population (Stable-Baselines3's TD3 defaults)."""

    gamma: float = 0.95
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target actor and critics."""
    lr: float = 1e-3
    """Adam learning rate of actor and critics."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the actor and of each critic (ReLU)."""
    policy_delay: int = 2
    """The actor and the targets move on every `policy_delay`-th update."""
    target_noise: float = 0.2
    """Standard deviation of the target policy smoothing noise."""
    target_noise_clip: float = 0.5
    """The smoothing noise is clipped to ±this."""
    fused_adam: bool = True
    """Use PyTorch's fused Adam where it is exact per member."""


class TD3(nn.Module):
    """A population of TD3 learners; every weight has a leading member axis."""

    def __init__(self, spec: LearnerSpec, config: TD3Config):
        super().__init__()
        members, goal_dim, action_dim = spec.members, spec.goal_dim, spec.action_dim
        self.config, self.members = config, members
        self.goal_at = spec.obs_dim if spec.goal_at is None else spec.goal_at
        self.action_dim = action_dim
        inputs = spec.obs_dim + goal_dim
        self.actor = EnsembleMLP(members, inputs, config.hidden, action_dim, nn.Tanh())
        self.critics = nn.ModuleList(
            EnsembleMLP(members, inputs + action_dim, config.hidden, 1) for _ in range(2))
        for m, generator in enumerate(spec.generators):
            self.actor.reset_member(m, generator)
            for critic in self.critics:
                critic.reset_member(m, generator)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critics_target = copy.deepcopy(self.critics).requires_grad_(False)
        self.noise = MemberNoise(spec.generators, purposes=1)
        # Counted per member (all equal) so that it travels with the learner's state_dict.
        self.register_buffer("updates", torch.zeros(members, dtype=torch.int64))
        self.register_buffer("last_actor_loss", torch.zeros(members))
        fused = config.fused_adam
        self.actor_optimizer = PopulationAdam(self.actor.parameters(), config.lr, fused)
        self.critic_optimizer = PopulationAdam(self.critics.parameters(), config.lr, fused)
        self._online = [*self.actor.parameters(), *self.critics.parameters()]
        self._target = [*self.actor_target.parameters(), *self.critics_target.parameters()]

    def _q(self, critics: nn.ModuleList, obs: torch.Tensor, goal: torch.Tensor,
           action: torch.Tensor) -> list[torch.Tensor]:
        x = network_input(obs, goal, self.goal_at, action)
        return [critic(x) for critic in critics]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Deterministic actions `[members, n, action_dim]`."""
        return self.actor(network_input(obs, goal, self.goal_at))

    def update(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor,
               goal: torch.Tensor, reward: torch.Tensor) -> dict[str, torch.Tensor]:
        """One critic step for every member, and on every `policy_delay`-th update an actor
        step and the target updates; per-member diagnostics `[members]`."""
        config = self.config
        self.updates += 1
        with torch.no_grad():
            smoothing = self.noise.standard_normal(0, tuple(action.shape[1:]), action.dtype)
            smoothing = (config.target_noise * smoothing).clamp(-config.target_noise_clip,
                                                                config.target_noise_clip)
            next_action = (self.actor_target(network_input(next_obs, goal, self.goal_at))
                           + smoothing).clamp(-1.0, 1.0)
            q1, q2 = self._q(self.critics_target, next_obs, goal, next_action)
            target = reward.unsqueeze(-1) + config.gamma * torch.min(q1, q2)
        self.critic_optimizer.zero_grad(set_to_none=True)
        qs = self._q(self.critics, obs, goal, action)
        value_term = sum(td_loss(q, target) for q in qs)  # SB3's TD3 sums the critics' MSEs
        value_term.sum().backward()
        self.critic_optimizer.step()

        if int(self.updates[0]) % config.policy_delay == 0:
            pi = self.actor(network_input(obs, goal, self.goal_at))
            actor_term = -self._q(self.critics[:1], obs, goal, pi)[0].mean(dim=(1, 2))
            actor_params = list(self.actor.parameters())
            grads = torch.autograd.grad(actor_term.sum(), actor_params)
            for p, grad in zip(actor_params, grads, strict=True):
                p.grad = grad
            self.actor_optimizer.step()
            self.last_actor_loss.copy_(actor_term.detach())
            with torch.no_grad():
                torch._foreach_lerp_(self._target, self._online, config.tau)
        return {
            "critic_loss": value_term.detach(),
            "actor_loss": self.last_actor_loss.clone(),  # the latest actor step's
            "q_mean": qs[0].detach().mean(dim=(1, 2)),
        }


def build(spec: LearnerSpec) -> TD3:
    """A TD3 population; `spec.extra` (`--set`) may override any TD3Config field."""
    return TD3(spec, TD3Config(gamma=spec.gamma, tau=spec.tau, lr=spec.lr, **spec.extra))


register_method(Method(
    name="td3_her", build=build, takes_c=False, her=True, label=lambda c: "TD3+HER",
    description="TD3 (twin critics, target smoothing, delayed actor) with HER future "
    "relabelling (k = 4): a baseline column added as a plugin",
))
