"""The learner of Propositions 1 and 2: the optimal Q-function's closed form with an unknown
orthogonal matrix as its only parameter (docs/paper.md §3).

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

Training (`ClosedFormLearner`): `Ũ = B·exp(K(p))`, `K(p)` skew-symmetric from the
`d(d-1)/2` free parameters `p`, so every iterate is exactly orthogonal. The base `B` is the
*spectral start* (`spectral_start`): the polar factor of the loss's negative gradient at
`Ũ = 0`, i.e. one projected-gradient step from the origin of the ambient matrix space,
also by autograd. From there full-batch L-BFGS refines `p`. Why not a random start:
from a Haar-random `Ũ` first-order training crawls wherever the needed rotation is close
to π (the gradient vanishes like sin θ) and the exponential chart never leaves the start's
component of O(d); in trials (d ≤ 16) a few hundred L-BFGS or a few thousand Adam steps
were then needed even far above the identifiability bound, so what was measured was the
step budget, not the loss. The spectral start reads the same loss, so it has the same
information per tuple as the loss itself. Every tensor has a leading member axis, so one
backward pass trains many independent estimates (seeds, buffer sizes); losses are summed
over members and L-BFGS keeps per-member curvature pairs and step lengths, so member m's
trajectory depends on member m's data alone.

Everything here is torch and knows nothing of the environments (docs/design.md): the reward
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
        return Transitions(*(x.index_select(0, members)[:, :stop] for x in self.fields()))

    def fields(self) -> tuple[torch.Tensor, ...]:
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
    trained by full-batch L-BFGS (per-member history and Armijo backtracking) on their
    own fixed buffers.

    L-BFGS rather than Adam: near the identifiability bound the loss is ill-conditioned and
    Adam needed thousands of steps where L-BFGS needs tens. It is written out (batched over
    members) rather than `torch.optim.LBFGS`, whose single line search would couple the
    members, and so that finished members can be dropped mid-training (`keep`).
    """

    def __init__(self, model: RotationQ, base: torch.Tensor, history: int = 10):
        if base.dim() != 3 or base.shape[-2:] != (model.dim, model.dim):
            raise ValueError(f"base must be [M, {model.dim}, {model.dim}], got {tuple(base.shape)}")
        self.model = model
        self.history = history
        self.base = base.detach().clone()
        self.params = base.new_zeros(base.shape[0], tangent_dimension(model.dim))
        self.target_rotation = self.rotation()
        self._loss: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None
        self._pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def rotation(self, params: torch.Tensor | None = None) -> torch.Tensor:
        """The estimates `Ũ`, `[M, d, d]` (at the current parameters unless given)."""
        params = self.params if params is None else params
        return self.base @ torch.linalg.matrix_exp(skew(params, self.model.dim))

    def policy(self, goal: torch.Tensor) -> torch.Tensor:
        """`π_Ũ(g)` of every member for goals `[M, N, d]`."""
        return self.model.policy(self.rotation().detach(), goal)

    def sync_target(self) -> None:
        """`Ū ← Ũ`. For this model class the target is the same function of `g` for every
        orthogonal `Ū` (`gᵀŪŪᵀg = ‖g‖²`), so the sync schedule cannot matter; the copy is
        kept because the losses under test are defined with it."""
        self.target_rotation = self.rotation().detach()

    def loss_and_grad(
        self, kind: LossKind, batch: Transitions, weights: torch.Tensor, params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member losses `[M]` and their gradients `[M, P]` at `params`."""
        params = params.detach().requires_grad_(True)
        losses = member_losses(
            kind, self.model, self.rotation(params), self.target_rotation, batch, weights
        )
        (grad,) = torch.autograd.grad(losses.sum(), params)
        return losses.detach(), grad

    def step(
        self, kind: LossKind, batch: Transitions, weights: torch.Tensor, backtracks: int = 12
    ) -> torch.Tensor:
        """One L-BFGS iteration of every member on its buffer (`weights [M, N]`, rows
        summing to 1, mask unused tuples). Returns the losses after the step; a member
        whose line search finds no decrease keeps its parameters (it has converged).
        The buffer must stay the same from step to step (L-BFGS keeps the last loss and
        gradient and its curvature pairs); `keep` slices all of them consistently."""
        if self._loss is None or self._grad is None:
            self._loss, self._grad = self.loss_and_grad(kind, batch, weights, self.params)
        loss, grad = self._loss, self._grad
        direction = -self._inverse_hessian_times(grad)
        slope = (grad * direction).sum(-1)
        # A member with no descent direction left (roundoff) falls back to steepest descent.
        uphill = slope >= 0
        direction = torch.where(uphill[:, None], -grad, direction)
        slope = torch.where(uphill, -(grad * grad).sum(-1), slope)
        step = torch.ones_like(loss)
        accepted = torch.zeros_like(loss, dtype=torch.bool)
        new_params, new_loss, new_grad = self.params, loss, grad
        for _ in range(backtracks):
            trial = self.params + step[:, None] * direction
            trial_loss, trial_grad = self.loss_and_grad(kind, batch, weights, trial)
            # Armijo, with a roundoff allowance so that converged members are not stuck.
            ok = ~accepted & (trial_loss <= loss + 1e-4 * step * slope + 1e-13 * loss.abs())
            new_params = torch.where(ok[:, None], trial, new_params)
            new_loss = torch.where(ok, trial_loss, new_loss)
            new_grad = torch.where(ok[:, None], trial_grad, new_grad)
            accepted |= ok
            if accepted.all():
                break
            step = torch.where(accepted, step, step * 0.25)
        s, y = new_params - self.params, new_grad - grad
        curvature = (s * y).sum(-1)
        usable = accepted & (curvature > 1e-12 * s.norm(dim=-1) * y.norm(dim=-1))
        rho = torch.where(usable, 1.0 / torch.where(usable, curvature, 1.0), 0.0)
        self._pairs = [*self._pairs, (s, y, rho)][-self.history :]
        self.params, self._loss, self._grad = new_params, new_loss, new_grad
        self.sync_target()
        return new_loss

    def _inverse_hessian_times(self, grad: torch.Tensor) -> torch.Tensor:
        """The two-loop recursion, per member; pairs with `rho = 0` are inert."""
        q = grad.clone()
        alphas = []
        for s, y, rho in reversed(self._pairs):
            alpha = rho * (s * q).sum(-1)
            q -= alpha[:, None] * y
            alphas.append(alpha)
        scale = torch.full_like(grad[:, 0], 0.1) / grad.norm(dim=-1).clamp_min(1e-300)
        for _, y, rho in self._pairs:  # latest usable pair sets the initial scaling
            scale = torch.where(rho > 0, 1.0 / (rho * (y * y).sum(-1)).clamp_min(1e-300), scale)
        q *= scale[:, None]
        for (s, y, rho), alpha in zip(self._pairs, reversed(alphas), strict=True):
            beta = rho * (y * q).sum(-1)
            q += (alpha - beta)[:, None] * s
        return q

    def keep(self, mask: torch.Tensor) -> None:
        """Drop the members where `mask` is False, with their state and history."""
        index = mask.nonzero().squeeze(-1)

        def take(x: torch.Tensor) -> torch.Tensor:
            return x.index_select(0, index)

        self.base, self.params = take(self.base), take(self.params)
        self.target_rotation = take(self.target_rotation)
        if self._loss is not None and self._grad is not None:
            self._loss, self._grad = take(self._loss), take(self._grad)
        self._pairs = [(take(s), take(y), take(rho)) for s, y, rho in self._pairs]


def spectral_start(
    kind: LossKind, model: RotationQ, batch: Transitions, weights: torch.Tensor
) -> torch.Tensor:
    """Start points `[M, d, d]` in O(d): the polar factor of `-∇_Ũ loss` at `Ũ = 0`.

    Q is linear in `Ũ`, so that gradient is (minus) the back-projection of the data onto
    matrices: for `td` it averages `(gᵀUa) g aᵀ`, whose mean is `U/d²`, from one scalar
    per tuple; for `gradient` it is `U Σ a aᵀ` (up to scale), which is exactly `U` after
    the polar step once the actions span R^d. The target at `Ũ = 0` uses `Ū = I`: any
    orthogonal `Ū` gives the same target.
    """
    members, dim = batch.goal.shape[0], model.dim
    origin = batch.goal.new_zeros(members, dim, dim, requires_grad=True)
    target = torch.eye(dim, dtype=batch.goal.dtype).expand(members, dim, dim)
    losses = member_losses(kind, model, origin, target, batch, weights)
    (grad,) = torch.autograd.grad(losses.sum(), origin)
    left, _, right = torch.linalg.svd(-grad)
    return left @ right


def residual_jacobian(
    kind: LossKind, model: RotationQ, rotation: torch.Tensor, batch: Transitions
) -> torch.Tensor:
    """The linear system a loss induces around `rotation` (the true `U`), by autograd.

    Returns `J [N, k, P]`: the derivative of tuple n's `k` residuals (`k = 1` for `td`,
    `d` for `gradient`) along the `P = d(d-1)/2` tangent directions `U·K(p)` of O(d) at
    `U` (the chart `U(I + K(p))` has the same derivative at `p = 0` as `U exp(K(p))` and
    avoids one matrix exponential per tuple). The loss's Hessian there is `JᵀJ` (up to
    scale), so `rank J[:n]` counts the directions the first `n` tuples pin down, and `U`
    is locally identifiable once it reaches `P`. `rotation` is `[d, d]`; `batch` has a
    single member (`[1, N, ...]`).
    """
    n, dim = batch.state.shape[1], model.dim
    # One member per tuple, so a single backward pass yields one Jacobian row per tuple.
    per_tuple = Transitions(*(x[0].unsqueeze(1) for x in batch.fields()))
    params = rotation.new_zeros(n, tangent_dimension(dim), requires_grad=True)
    base = rotation.expand(n, dim, dim)
    online = base + base @ skew(params, dim)
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


class RankTracker:
    """`rank J[:n]` for every prefix n of a stream of tuples' Jacobian blocks `[k, P]`.

    Each tuple's rows are orthogonalised against the span found so far (twice, for
    stability) and their singular directions above `rtol` times the rows' own norm join
    the basis. Blocks of tuples are first projected against the old basis in one matrix
    product, so the cost is that of a blocked Gram-Schmidt even for thousands of tuples.
    """

    def __init__(self, width: int, rtol: float = 1e-8):
        self.width, self.rtol = width, rtol
        self.basis: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return 0 if self.basis is None else self.basis.shape[0]

    @property
    def full(self) -> bool:
        return self.rank == self.width

    def add(self, jacobian: torch.Tensor) -> list[int]:
        """Feed tuples `[n, k, P]`; returns the rank after each (stops once full)."""
        if self.basis is None:
            self.basis = jacobian.new_zeros(0, self.width)
        old = self.basis
        norms = jacobian.flatten(1).norm(dim=-1)
        flat = jacobian.reshape(-1, self.width)
        for _ in range(2):
            flat = flat - (flat @ old.mT) @ old
        # New directions go into a preallocated block: growing it by concatenation
        # copied up to P x P numbers per tuple.
        fresh = jacobian.new_zeros(self.width - old.shape[0], self.width)
        found = 0
        ranks: list[int] = []
        for rows, norm in zip(flat.view_as(jacobian), norms, strict=True):
            if old.shape[0] + found == self.width:
                break
            span = fresh[:found]
            for _ in range(2):
                rows = rows - (rows @ span.mT) @ span
            _, values, right = torch.linalg.svd(rows, full_matrices=False)
            new = right[values > self.rtol * norm]
            fresh[found : found + len(new)] = new
            found += len(new)
            ranks.append(old.shape[0] + found)
        self.basis = torch.cat([old, fresh[:found]])
        return ranks


def rank_profile(jacobian: torch.Tensor, rtol: float = 1e-8) -> list[int]:
    """`rank J[:n]` for n = 1..N of a Jacobian `[N, k, P]` (see `RankTracker`)."""
    tracker = RankTracker(jacobian.shape[-1], rtol)
    ranks = tracker.add(jacobian)
    return ranks + [tracker.rank] * (jacobian.shape[0] - len(ranks))


def tangent_dimension(dim: int) -> int:
    """`dim O(d) = d(d-1)/2`: how many scalar facts pin down `U` locally."""
    return dim * (dim - 1) // 2


def identifiability_bound(kind: LossKind, dim: int) -> int:
    """Informative tuples needed for full rank with actions in general position: `d(d-1)/2`
    for `td` (one equation each), `d-1` for `gradient` (tuple j adds `d-j` new ones)."""
    return tangent_dimension(dim) if kind == "td" else max(dim - 1, 1)
