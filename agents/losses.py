"""Critic losses: DDPG's TD error and ReenGAGE's goal-gradient term (docs/paper.md §1).

Every function keeps the member axis: inputs are `[members, batch, ...]` and losses come
back per member (`[members]`), averaged over the batch. Summing them over members before
`backward` leaves member i's gradients a function of member i's data alone.

These are the definitions. DDPG's ReenGAGE step computes their gradients in closed form
by default (agents/hand_gradients.py, tested against autograd on these functions).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# q(obs, goal, action) -> [members, batch, 1]; pi(obs, goal) -> [members, batch, act]
QFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Policy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def td_target_and_goal_gradient(
    target_q: QFunction,
    target_pi: Policy,
    next_obs: torch.Tensor,
    goal: torch.Tensor,
    reward: torch.Tensor,
    gamma: float,
    with_goal_gradient: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher `T(s', g) = R + γ Q'(s', π'(s', g), g)` and, if asked, `∇_g T`.

    `∇_g T` runs through the target critic and through the target actor (the target
    action depends on g). It is a constant for the optimiser, so no second-order graph
    is built. For sparse rewards the reward's own gradient is zero wherever the
    ReenGAGE term is active (gate `w = -R`), so only `γ ∇_g Q'` remains.
    """
    if not with_goal_gradient:
        with torch.no_grad():
            q_next = target_q(next_obs, goal, target_pi(next_obs, goal))
            return reward.unsqueeze(-1) + gamma * q_next, None
    with torch.enable_grad():
        g = goal.detach().requires_grad_(True)
        q_next = target_q(next_obs, g, target_pi(next_obs, g))
        (dq_dg,) = torch.autograd.grad(q_next.sum(), g)
    return (reward.unsqueeze(-1) + gamma * q_next).detach(), gamma * dq_dg


def q_and_goal_gradient(
    q: QFunction, obs: torch.Tensor, goal: torch.Tensor, action: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`Q(s, a, g)` and `∇_g Q` with a graph, so the gradient term can be trained."""
    g = goal.detach().requires_grad_(True)
    value = q(obs, g, action)
    (dq_dg,) = torch.autograd.grad(value.sum(), g, create_graph=True)
    return value, dq_dg


def clip_target(
    target: torch.Tensor, target_dq_dg: torch.Tensor | None, bounds: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher clipped to `bounds` (robotics: `[−1/(1−γ), 0]`) and the goal gradient of
    that clipped value. A clipped sample's teacher is a constant bound, so its goal gradient
    is zero: the release differentiates the clipped target (`tf.clip_by_value`), and
    distilling the unclipped gradient there would ask the student's gradient to follow a
    value the student is not asked to match. At a bound itself the gradient passes, as
    `tf.clip_by_value` and `torch.clamp` both let it."""
    low, high = bounds
    clipped = target.clamp(low, high)
    if target_dq_dg is None:
        return clipped, None
    outside = (target < low) | (target > high)
    return clipped, target_dq_dg.masked_fill(outside, 0.0)


def td_loss(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared TD error per member: `[members]`."""
    return (value - target).pow(2).mean(dim=(1, 2))


def goal_gradient_loss(
    dq_dg: torch.Tensor, target_dq_dg: torch.Tensor, reward: torch.Tensor
) -> torch.Tensor:
    """ReenGAGE's term per member, before the coefficient c: `E[w · mean_i (Δ_i)^2]`.

    The mean over goal coordinates is the release's convention, so `c · loss` is the
    paper's `α = c/d` times the squared norm. The gate `w = -R` restricts the term to
    transitions with reward -1, where the reward's gradient is known to be zero.
    """
    gate = -reward
    squared = (dq_dg - target_dq_dg).pow(2).mean(dim=-1)
    return (gate * squared).mean(dim=1)
