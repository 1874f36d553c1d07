"""The learner of Propositions 1 and 2: the optimal Q-function's closed form with an unknown
orthogonal matrix as its only parameter (PAPER.md §3).

For an estimate `Ũ` of the task's rotation the model class is

    Prop. 1:  Q_Ũ(s, a, g) = gᵀ(s + Ũa)/(1-γ) + γ‖g‖₂/(1-γ)²
    Prop. 2:  Q_Ũ(s, a, g) = γ gᵀ(s¹ + Ũa)/(1-γ²) + γ³‖g‖₂/(1-γ²)²   if s¹ ≠ 0
                           = gᵀs²/(1-γ²) + γ²‖g‖₂/(1-γ²)²           if s¹ = 0
    both:     π_Ũ(g) = Ũᵀg/‖g‖₂

so fitting Q recovers the optimal policy exactly when it recovers `U`. The two critic
losses are built here *by autograd from that closed form*, exactly as a ReenGAGE agent
builds them from its network (no hand-simplified residuals), so the theory experiment
tests the losses the agents use:

* `td`: `(Q_Ũ(s,a,g) - [R(s',g) + γ Q_Ū(s', π_Ū(g), g)])²`, the target held constant;
* `gradient`: ReenGAGE's term alone, `mean_i (∂_g Q_Ũ(s,a,g) - ∂_g [R(s',g) + γ Q_Ū(s',
  π_Ū(g), g)])_i²`; the target gradient goes through the target policy and includes the
  reward's own gradient (`∂_g gᵀs¹' = s¹'`, not zero on RotationReach). Only `∂_g Q`
  keeps its graph (double backprop); the target gradient is a constant.

`Ũ = B·exp(K(p))` with `K(p)` skew-symmetric from the `d(d-1)/2` free parameters `p` and a
fixed base `B`: the exponential covers the connected component of `B` in O(d) and no
other, so a learner that must search all of O(d) runs one member per component (base
`B` and `B` with one column negated). Every tensor has a leading member axis, so one
backward pass trains many independent estimates (seeds, components, buffer sizes);
losses are summed over members, so member m's gradient depends on member m's data alone.

Everything here is torch and knows nothing of the environments (DESIGN.md): the reward
`gᵀs¹'` is part of the model class the propositions define.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

LossKind = Literal["td", "gradient"]
LOSS_KINDS: tuple[LossKind, ...] = ("td", "gradient")


@dataclass(frozen=True)
class Transitions:
    """A replay buffer with a member axis: `[members, N, features]`, one goal per tuple."""

    state: torch.Tensor
    action: torch.Tensor
    goal: torch.Tensor
    next_state: torch.Tensor

    def select(self, members: torch.Tensor, size: int | None = None) -> Transitions:
        """Rows `members` (an index tensor), truncated to the first `size` tuples."""
        stop = self.state.shape[1] if size is None else size
        return Transitions(
            *(x.index_select(0, members)[:, :stop] for x in self._fields())
        )

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return (self.state, self.action, self.goal, self.next_state)


@dataclass(frozen=True)
class RotationQ:
    """The closed-form model class of Proposition 1 (`two_phase=False`) or 2 (`True`)."""

    dim: int
    two_phase: bool = False
    gamma: float = 0.95

    def policy(self, rotation: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """`π_Ũ(g) = Ũᵀg/‖g‖₂` for rotation `[M, d, d]` and goals `[M, N, d]`."""
        return (goal @ rotation) / goal.norm(dim=-1, keepdim=True)

    def reward(self, next_state: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """`R(s', g) = gᵀs¹'` (`s¹ = s` on RotationReach), differentiable in `g`."""
        return (goal * next_state[..., : self.dim]).sum(-1)

    def value(
        self,
        rotation: torch.Tensor,
        state: torch.Tensor,
        action: torch.Tensor,
        goal: torch.Tensor,
    ) -> torch.Tensor:
        """`Q_Ũ(s, a, g)`, shape `[M, N]`."""
        gamma, d = self.gamma, self.dim
        goal_norm = goal.norm(dim=-1)
        first = state[..., :d]
        moved = (goal * (first + action @ rotation.mT)).sum(-1)
        if not self.two_phase:
            return moved / (1 - gamma) + gamma * goal_norm / (1 - gamma) ** 2
        horizon = 1 - gamma**2
        moving = gamma * moved / horizon + gamma**3 * goal_norm / horizon**2
        waiting = (goal * state[..., d:]).sum(-1) / horizon + gamma**2 * goal_norm / horizon**2
        return torch.where((first != 0).any(-1), moving, waiting)

    def target(
        self, target_rotation: torch.Tensor, next_state: torch.Tensor, goal: torch.Tensor
    ) -> torch.Tensor:
        """The teacher `R(s', g) + γ Q_Ū(s', π_Ū(g), g)` (no terminals: time limits only)."""
        action = self.policy(target_rotation, goal)
        return self.reward(next_state, goal) + self.gamma * self.value(
            target_rotation, next_state, action, goal
        )


def skew(params: torch.Tensor, dim: int) -> torch.Tensor:
    """The skew-symmetric matrices `[M, d, d]` whose upper triangles are `params [M, P]`."""
    rows, cols = torch.triu_indices(dim, dim, offset=1)
    upper = params.new_zeros(*params.shape[:-1], dim, dim)
    upper[..., rows, cols] = params
    return upper - upper.mT


def td_residual(
    model: RotationQ, rotation: torch.Tensor, target_rotation: torch.Tensor, batch: Transitions
) -> torch.Tensor:
    """`Q_Ũ(s,a,g) - T(s',g)` per tuple, `[M, N]`; the target carries no gradient."""
    with torch.no_grad():
        target = model.target(target_rotation, batch.next_state, batch.goal)
    return model.value(rotation, batch.state, batch.action, batch.goal) - target


def gradient_residual(
    model: RotationQ, rotation: torch.Tensor, target_rotation: torch.Tensor, batch: Transitions
) -> torch.Tensor:
    """`∂_g Q_Ũ(s,a,g) - ∂_g T(s',g)` per tuple, `[M, N, d]`, both by autograd.

    `∂_g Q` keeps its graph (the loss is minimised through it); `∂_g T` is taken through
    the target policy and the reward, then detached: no second-order graph for it.
    """
    goal = batch.goal.detach().requires_grad_(True)
    q = model.value(rotation, batch.state, batch.action, goal)
    (grad_q,) = torch.autograd.grad(q.sum(), goal, create_graph=True)
    with torch.enable_grad():
        target_goal = batch.goal.detach().requires_grad_(True)
        target = model.target(target_rotation.detach(), batch.next_state, target_goal)
        (grad_target,) = torch.autograd.grad(target.sum(), target_goal)
    return grad_q - grad_target


def member_losses(
    kind: LossKind,
    model: RotationQ,
    rotation: torch.Tensor,
    target_rotation: torch.Tensor,
    batch: Transitions,
    weights: torch.Tensor,
) -> torch.Tensor:
    """Per-member mean loss `[M]`; `weights [M, N]` (rows summing to 1) mask unused tuples.

    The gradient term averages over goal coordinates, as the release does (α = c/d).
    """
    if kind == "td":
        squared = td_residual(model, rotation, target_rotation, batch).square()
    elif kind == "gradient":
        squared = gradient_residual(model, rotation, target_rotation, batch).square().mean(-1)
    else:
        raise ValueError(f"unknown loss {kind!r}; expected one of {LOSS_KINDS}")
    return (weights * squared).sum(-1)


class ClosedFormLearner:
    """`M` independent estimates `Ũ_m = B_m exp(K(p_m))`, each with a target copy `Ū_m`,
    trained by full-batch Adam on their own fixed buffers.

    The optimiser is written out (a few lines) rather than `torch.optim.Adam` so that
    finished members can be dropped mid-training (`keep`) with their moments: the cost
    of a training round then follows the members still learning.
    """

    def __init__(self, model: RotationQ, base: torch.Tensor):
        if base.shape[-2:] != (model.dim, model.dim):
            raise ValueError(f"base must be [M, {model.dim}, {model.dim}], got {tuple(base.shape)}")
        self.model = model
        self.base = base.detach().clone()
        size = model.dim * (model.dim - 1) // 2
        self.params = base.new_zeros(base.shape[0], size, requires_grad=True)
        self._first_moment = torch.zeros_like(self.params)
        self._second_moment = torch.zeros_like(self.params)
        self._steps = 0
        self.target_rotation = self.rotation().detach()

    @property
    def members(self) -> int:
        return self.base.shape[0]

    def rotation(self) -> torch.Tensor:
        """The current estimates `Ũ`, `[M, d, d]`."""
        return self.base @ torch.linalg.matrix_exp(skew(self.params, self.model.dim))

    def policy(self, goal: torch.Tensor) -> torch.Tensor:
        """`π_Ũ(g)` of every member for goals `[M, N, d]`."""
        return self.model.policy(self.rotation().detach(), goal)

    def sync_target(self) -> None:
        """`Ū ← Ũ`. For this model class the target is the same function of `g` for every
        orthogonal `Ū` (`gᵀŪŪᵀg = ‖g‖²`), so how often it is synced does not matter; it
        is kept because the losses under test are defined with it."""
        self.target_rotation = self.rotation().detach()

    def step(
        self,
        kind: LossKind,
        batch: Transitions,
        weights: torch.Tensor,
        lr: float | torch.Tensor,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-12,
    ) -> torch.Tensor:
        """One full-batch Adam step of every member; returns the losses before the step."""
        losses = member_losses(
            kind, self.model, self.rotation(), self.target_rotation, batch, weights
        )
        (grad,) = torch.autograd.grad(losses.sum(), self.params)
        self._steps += 1
        beta1, beta2 = betas
        with torch.no_grad():
            self._first_moment.lerp_(grad, 1 - beta1)
            self._second_moment.lerp_(grad.square(), 1 - beta2)
            m_hat = self._first_moment / (1 - beta1**self._steps)
            v_hat = self._second_moment / (1 - beta2**self._steps)
            self.params -= lr * m_hat / (v_hat.sqrt() + eps)
        self.sync_target()
        return losses.detach()

    def keep(self, mask: torch.Tensor) -> None:
        """Drop the members where `mask` is False (parameters, moments and targets)."""
        index = mask.nonzero().squeeze(-1)
        self.base = self.base.index_select(0, index)
        self.params = self.params.detach().index_select(0, index).requires_grad_(True)
        self._first_moment = self._first_moment.index_select(0, index)
        self._second_moment = self._second_moment.index_select(0, index)
        self.target_rotation = self.target_rotation.index_select(0, index)


def residual_jacobian(
    kind: LossKind, model: RotationQ, rotation: torch.Tensor, batch: Transitions
) -> torch.Tensor:
    """The linear system a loss induces around `rotation` (the true `U`), by autograd.

    Returns `J [N, k, P]`: the derivative of tuple n's `k` residuals (`k = 1` for `td`,
    `d` for `gradient`) along the `P = d(d-1)/2` tangent directions `U·exp(K(p))` of
    O(d) at `p = 0`. The loss's Hessian there is `JᵀJ` (up to scale), so `rank J[:n]` is
    how many directions the first `n` tuples pin down; `U` is locally identifiable
    exactly when the rank reaches `P`. `batch` has a single member (`[1, N, ...]`).
    """
    n, dim = batch.state.shape[1], model.dim
    # One member per tuple, so a single backward pass yields one Jacobian row per tuple.
    per_tuple = Transitions(*(x[0].unsqueeze(1) for x in batch._fields()))
    params = rotation.new_zeros(n, dim * (dim - 1) // 2, requires_grad=True)
    base = rotation.expand(n, dim, dim)
    online = base @ torch.linalg.matrix_exp(skew(params, dim))
    target = base.detach()
    if kind == "td":
        residual = td_residual(model, online, target, per_tuple)
        (rows,) = torch.autograd.grad(residual.sum(), params)
        return rows.unsqueeze(1)
    residual = gradient_residual(model, online, target, per_tuple)
    columns = [
        torch.autograd.grad(residual[..., i].sum(), params, retain_graph=i + 1 < dim)[0]
        for i in range(dim)
    ]
    return torch.stack(columns, dim=1)


def tangent_dimension(dim: int) -> int:
    """`dim O(d) = d(d-1)/2`: how many scalar facts pin down `U` locally."""
    return dim * (dim - 1) // 2


def identifiability_bound(kind: LossKind, dim: int) -> float:
    """Tuples needed to reach full rank with actions in general position (Prop. 1):
    `d(d-1)/2` for `td` (one equation each), `d-1` for `gradient` (tuple j adds `d-j`)."""
    return float(tangent_dimension(dim)) if kind == "td" else float(max(dim - 1, 1))


__all__ = [
    "LOSS_KINDS",
    "ClosedFormLearner",
    "LossKind",
    "RotationQ",
    "Transitions",
    "gradient_residual",
    "identifiability_bound",
    "member_losses",
    "residual_jacobian",
    "skew",
    "tangent_dimension",
    "td_residual",
]

