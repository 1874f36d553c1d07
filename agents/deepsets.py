"""DeepSets actor-critic for goal sets, with a member (population) axis (docs/paper.md §1, §4).

    pooled(s, g) = (1/n_max) · Σ_i b_i² · enc(s, g_i)
    Q(s, a, g)   = critic_head(pooled, s, a)
    π(s, g)      = tanh(actor_head(pooled, s))

A goal set is `[members, batch, n_max, 3]` with rows `(b, x, y)`: `b = goal_set[..., 0]`
is the gate, `goal_set[..., 1:]` the item. Pooling with `b²` keeps values unchanged for
`b ∈ {0, 1}` and makes `∂Q/∂b_i` exactly zero at padding rows. Gradients with respect to
the gates flow through `goal_set[..., 0]`, so a caller who wants `∂Q/∂b` builds the goal
set from a gate leaf (see `with_gate_leaf`). The item coordinates are detached on entry:
nothing needs their gradient, and leaving them attached would make `∂Q/∂b` backpropagate
through the whole encoder (the items share a tensor with the gates), which doubled the
cost of a Multi-ReenGAGE update.

The actor pools with the *critic's* encoder and does not train it (the encoder is trained
by the critic loss only), as the paper and the release do; `share_encoder=False` gives the
actor its own encoder, trained by the actor loss (the paper's ablation).

Cost: the encoder runs once per (sample, goal row), which dominates an update. Rows with
`b = 0` contribute exactly nothing (value and gate gradient), so with `skip_padding=True`
only the present rows are packed and encoded, and their weighted embeddings are summed
back per sample with `scatter_add`. Values, gate gradients and every weight gradient
(including those of the Multi-ReenGAGE term) equal the dense computation up to float
summation order. The one thing not reproduced is a second derivative with respect to a
padding gate itself, which no loss uses (b is data, not a parameter).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .ensemble import EnsembleMLP


@dataclass
class DeepSetsConfig:
    """Widths of the DeepSets actor-critic; defaults are the paper's (docs/paper.md §4)."""

    embedding: int = 20
    """Size of the per-goal embedding enc(s, g_i) and of the pooled vector."""
    encoder_hidden: int = 400
    """Width of the encoder's two hidden layers (ReLU)."""
    head_hidden: int = 400
    """Width of the single hidden layer of the critic and actor heads (ReLU)."""
    share_encoder: bool = True
    """The actor pools with the critic's encoder (not trained by the actor loss); False
    gives the actor its own encoder (ablation)."""
    skip_padding: bool = True
    """Encode only present rows (`b != 0`). Exact; False runs the dense computation."""


def with_gate_leaf(goal_set: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh gate leaf `b` (requires grad) and the goal set rebuilt from it, so that
    `torch.autograd.grad(q, b)` gives `∂Q/∂b` `[..., n_max]`."""
    gates = goal_set[..., 0].detach().clone().requires_grad_(True)
    return gates, torch.cat([gates.unsqueeze(-1), goal_set[..., 1:].detach()], dim=-1)


class GoalSetEncoder(nn.Module):
    """`(1/n_max) Σ_i b_i² enc(s, g_i)` with enc an MLP of two hidden layers."""

    def __init__(
        self,
        members: int,
        obs_dim: int,
        item_dim: int,
        n_max: int,
        embedding: int,
        hidden: int,
        skip_padding: bool = True,
    ):
        super().__init__()
        self.n_max, self.embedding, self.skip_padding = n_max, embedding, skip_padding
        self.net = EnsembleMLP(members, obs_dim + item_dim, (hidden, hidden), embedding)

    def reset_member(self, member: int, generator: torch.Generator) -> None:
        self.net.reset_member(member, generator)

    def forward(self, obs: torch.Tensor, goal_set: torch.Tensor) -> torch.Tensor:
        """obs `[M, B, obs]`, goal set `[M, B, n_max, 1 + item]` -> pooled `[M, B, E]`."""
        if self.skip_padding:
            return self._pool_present(obs, goal_set)
        members, batch, rows, _ = goal_set.shape
        states = obs.unsqueeze(2).expand(-1, -1, rows, -1)
        items = goal_set[..., 1:].detach()
        x = torch.cat([states, items], dim=-1).reshape(members, batch * rows, -1)
        emb = self.net(x).reshape(members, batch, rows, self.embedding)
        return (goal_set[..., :1].pow(2) * emb).sum(dim=2) / self.n_max

    def _pool_present(self, obs: torch.Tensor, goal_set: torch.Tensor) -> torch.Tensor:
        members, batch, rows, width = goal_set.shape
        gates = goal_set[..., 0].reshape(members, batch * rows)
        items = goal_set[..., 1:].detach().reshape(members, batch * rows, width - 1)
        present = gates.detach() != 0
        # Each member's present rows, in order, padded to the largest count among members.
        # Padding picks (rows with b = 0) add exact zeros, so member i's result depends on
        # member i's data alone.
        count = int(present.sum(dim=1).max())
        order = torch.argsort(present.to(torch.uint8), dim=1, descending=True, stable=True)
        order = order[:, :count]
        sample = torch.div(order, rows, rounding_mode="floor")
        states = obs.gather(1, sample.unsqueeze(-1).expand(-1, -1, obs.shape[-1]))
        picked_items = items.gather(1, order.unsqueeze(-1).expand(-1, -1, width - 1))
        emb = self.net(torch.cat([states, picked_items], dim=-1))
        weighted = gates.gather(1, order).unsqueeze(-1).pow(2) * emb
        pooled = weighted.new_zeros(members, batch, self.embedding)
        index = sample.unsqueeze(-1).expand(-1, -1, self.embedding)
        return pooled.scatter_add(1, index, weighted) / self.n_max


class DeepSetsActorCritic(nn.Module):
    """Critic, actor and their goal-set encoder(s) for a population of `members`.

    Keep the target as `copy.deepcopy(model)` (see `make_target`): the target actor then
    pools with the target critic's encoder, as the shared design requires. Train the
    critic with `critic_parameters()` and the actor with `actor_parameters()`.
    """

    def __init__(
        self,
        members: int,
        obs_dim: int,
        action_dim: int,
        n_max: int,
        generators: list[torch.Generator],
        config: DeepSetsConfig | None = None,
        item_dim: int = 2,
    ):
        super().__init__()
        if len(generators) != members:
            raise ValueError(f"need one generator per member ({members}), got {len(generators)}")
        config = config or DeepSetsConfig()
        self.config, self.members, self.n_max = config, members, n_max

        def encoder() -> GoalSetEncoder:
            return GoalSetEncoder(
                members, obs_dim, item_dim, n_max, config.embedding, config.encoder_hidden,
                config.skip_padding,
            )

        self.critic_encoder = encoder()
        self.critic_head = EnsembleMLP(
            members, config.embedding + obs_dim + action_dim, (config.head_hidden,), 1
        )
        self.actor_encoder = None if config.share_encoder else encoder()
        self.actor_head = EnsembleMLP(
            members, config.embedding + obs_dim, (config.head_hidden,), action_dim, nn.Tanh()
        )
        # Fixed order per member, so member i's initial weights depend on its generator only.
        for m, generator in enumerate(generators):
            for module in (self.critic_encoder, self.critic_head, self.actor_encoder,
                           self.actor_head):
                if module is not None:
                    module.reset_member(m, generator)

    def make_target(self) -> DeepSetsActorCritic:
        """A frozen copy to be tracked by Polyak averaging of `parameters()`."""
        return copy.deepcopy(self).requires_grad_(False)

    def critic_parameters(self) -> list[nn.Parameter]:
        """The critic optimiser's parameters: critic encoder and head."""
        return [*self.critic_encoder.parameters(), *self.critic_head.parameters()]

    def actor_parameters(self) -> list[nn.Parameter]:
        """The actor optimiser's parameters: actor head (and own encoder if unshared)."""
        encoder = [] if self.actor_encoder is None else list(self.actor_encoder.parameters())
        return [*encoder, *self.actor_head.parameters()]

    def pool(self, obs: torch.Tensor, goal_set: torch.Tensor) -> torch.Tensor:
        """The critic's pooled goal features `[M, B, E]`."""
        return self.critic_encoder(obs, goal_set)

    def actor_pool(
        self, obs: torch.Tensor, goal_set: torch.Tensor, critic_pooled: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The actor's pooled features: the critic's (reused if given) or its own encoder's."""
        if self.actor_encoder is not None:
            return self.actor_encoder(obs, goal_set)
        return self.pool(obs, goal_set) if critic_pooled is None else critic_pooled

    def q_from_pooled(
        self, pooled: torch.Tensor, obs: torch.Tensor, action: torch.Tensor
    ) -> torch.Tensor:
        """Critic head on given pooled features: `[M, B, 1]`."""
        return self.critic_head(torch.cat([pooled, obs, action], dim=-1))

    def pi_from_pooled(self, pooled: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Actor head on given pooled features: `[M, B, action]`."""
        return self.actor_head(torch.cat([pooled, obs], dim=-1))

    def q(self, obs: torch.Tensor, goal_set: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """`Q(s, a, g)` `[M, B, 1]`."""
        return self.q_from_pooled(self.pool(obs, goal_set), obs, action)

    def pi(self, obs: torch.Tensor, goal_set: torch.Tensor) -> torch.Tensor:
        """`π(s, g)` `[M, B, action]` in [-1, 1].

        With a shared encoder a loss built on this reaches the critic encoder's weights;
        train the actor with `multi_goal_actor_loss`, which pools without a graph.
        """
        return self.pi_from_pooled(self.actor_pool(obs, goal_set), obs)

    def q_of_policy(
        self, obs: torch.Tensor, goal_set: torch.Tensor, through_actor: bool = True
    ) -> torch.Tensor:
        """`Q(s, π(s, g), g)` `[M, B, 1]`, encoding the goal set once when it is shared.

        `through_actor=False` cuts the actor's dependence on the goal set (its pooled input
        is detached), so gradients with respect to the gates see only the critic's path,
        as in the authors' release.
        """
        pooled = self.pool(obs, goal_set)
        actor_pooled = self.actor_pool(obs, goal_set, pooled)
        if not through_actor:
            actor_pooled = actor_pooled.detach()
        return self.q_from_pooled(pooled, obs, self.pi_from_pooled(actor_pooled, obs))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, goal_set: torch.Tensor) -> torch.Tensor:
        """Deterministic actions `[M, n, action]` for acting in the environment."""
        return self.pi(obs, goal_set)
