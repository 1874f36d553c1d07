"""Multi-ReenGAGE: DDPG's critic loss plus a gate-gradient term (docs/paper.md §1).

With goal sets of gated items and `R = Σ_i b_i² R_item(s', g_i)`, the teacher
`T(s', g) = R + γ Q'(s', π'(s', g), g)` has the gate gradient

    ∂T/∂b_i = 2 b_i R_item(s', g_i) + γ ∂Q'(s', π'(s', g), g)/∂b_i,

which at `b ∈ {0, 1}` is the paper's `2 R_item + γ ∂Q'/∂b_i` (and 0 at padding rows). The
critic loss per member is

    value_term + c · gate_term,   gate_term = E_batch[ mean_{i ≤ n_max} (∂Q/∂b_i − ∂T/∂b_i)² ]

The mean runs over all n_max gates (padding rows contribute 0 − 0), which is the
release's `gradient_reg · mse(...).mean()`. So `c · mean_i` is `(c/n_max) · Σ_i`: the
paper's label `Multi-ReenGAGE(α = c/n_max)` with `c ∈ {5, 10, 20}` puts `α` on the
*squared norm*, exactly as ContinuousSeek's `α = c/d` does (docs/paper.md §1). Pass `c` here,
not `α`. There is no reward gating (the reward's gradient is explicit), and no terminal
flags: every episode ends by time limit only, so the target always bootstraps.

Every loss keeps the member axis: per-member values `[M]` are batch means, and the scalar
to minimise is their sum, so member i's gradients depend on member i's data alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .deepsets import DeepSetsActorCritic, with_gate_leaf


@dataclass
class CriticLoss:
    """`loss` is the scalar to backpropagate; the rest are detached, per member `[M]`."""

    loss: torch.Tensor
    value_term: torch.Tensor
    gate_term: torch.Tensor
    q_mean: torch.Tensor


def teacher_and_gate_gradient(
    target: DeepSetsActorCritic,
    next_obs: torch.Tensor,
    goal_set: torch.Tensor,
    item_reward: torch.Tensor,
    gamma: float,
    with_gate_gradient: bool,
    through_target_actor: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher `T` `[M, B, 1]` and, if asked, `∂T/∂b` `[M, B, n_max]`.

    `item_reward` `[M, B, n_max]` is `R_item(s', g_i)` (the env's `item_reward` on the
    next achieved goal); the scalar reward is derived from it, so the value and gradient
    targets cannot disagree. `∂T/∂b` is a constant for the optimiser: it is taken with
    a first-order graph only (the target network's weights do not require grad, so that
    graph covers the gate path alone). `through_target_actor=False` drops the path
    through `π'`, as the authors' release does.
    """
    if not with_gate_gradient:
        with torch.no_grad():
            reward = (goal_set[..., 0].pow(2) * item_reward).sum(dim=-1, keepdim=True)
            return reward + gamma * target.q_of_policy(next_obs, goal_set), None
    with torch.enable_grad():
        gates, gated = with_gate_leaf(goal_set)
        reward = (gates.pow(2) * item_reward).sum(dim=-1, keepdim=True)
        teacher = reward + gamma * target.q_of_policy(next_obs, gated, through_target_actor)
        (dt_db,) = torch.autograd.grad(teacher.sum(), gates)
    return teacher.detach(), dt_db


def q_and_gate_gradient(
    model: DeepSetsActorCritic, obs: torch.Tensor, goal_set: torch.Tensor, action: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`Q(s, a, g)` `[M, B, 1]` and `∂Q/∂b` `[M, B, n_max]` with a graph, so the gate term
    can be trained. Zero exactly at padding rows (`b = 0`)."""
    gates, gated = with_gate_leaf(goal_set)
    value = model.q(obs, gated, action)
    (dq_db,) = torch.autograd.grad(value.sum(), gates, create_graph=True)
    return value, dq_db


def gate_gradient_term(dq_db: torch.Tensor, target_dq_db: torch.Tensor) -> torch.Tensor:
    """`E_batch mean_i (∂Q/∂b_i − ∂T/∂b_i)²` per member `[M]`, before the coefficient c."""
    return (dq_db - target_dq_db).pow(2).mean(dim=(1, 2))


def multi_goal_critic_loss(
    model: DeepSetsActorCritic,
    target: DeepSetsActorCritic,
    obs: torch.Tensor,
    action: torch.Tensor,
    next_obs: torch.Tensor,
    goal_set: torch.Tensor,
    item_reward: torch.Tensor,
    gamma: float,
    gate_coef: float | torch.Tensor,
    through_target_actor: bool = True,
) -> CriticLoss:
    """DDPG's critic loss plus `gate_coef · gate_term` (Multi-ReenGAGE when `gate_coef > 0`).

    Shapes: obs/next_obs `[M, B, obs]`, action `[M, B, act]`, goal_set `[M, B, n_max, 3]`
    (the same set for s and s'), item_reward `[M, B, n_max]`. `gate_coef = 0` is plain
    DDPG and skips every gate gradient. A tensor `gate_coef` `[M]` gives each member its own
    c (a packed population; all > 0, which is not checked here: reading a device tensor
    would break a CUDA graph's capture).
    """
    use_gates = isinstance(gate_coef, torch.Tensor) or gate_coef > 0
    teacher, target_dq_db = teacher_and_gate_gradient(
        target, next_obs, goal_set, item_reward, gamma, use_gates, through_target_actor
    )
    if use_gates:
        value, dq_db = q_and_gate_gradient(model, obs, goal_set, action)
        gate_term = gate_gradient_term(dq_db, target_dq_db)
    else:
        value = model.q(obs, goal_set, action)
        gate_term = value.new_zeros(value.shape[0])
    value_term = (value - teacher).pow(2).mean(dim=(1, 2))
    return CriticLoss(
        loss=(value_term + gate_coef * gate_term).sum(),
        value_term=value_term.detach(),
        gate_term=gate_term.detach(),
        q_mean=value.detach().mean(dim=(1, 2)),
    )


def multi_goal_actor_loss(
    model: DeepSetsActorCritic,
    obs: torch.Tensor,
    goal_set: torch.Tensor,
    critic_pooled: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DDPG's actor loss `-Q(s, π(s, g), g)`: (scalar to minimise, per-member `[M]`).

    The critic's pooled features are computed without a graph: the shared encoder is
    trained by the critic loss only, and the critic's weights are not the actor's to
    move (step only `model.actor_parameters()`). Pass `critic_pooled` (detached) to reuse
    the critic loss's encoding of `s` and save one encoder pass, at the price of pooling
    with the encoder from before the critic's step.
    """
    if critic_pooled is None:
        with torch.no_grad():
            critic_pooled = model.pool(obs, goal_set)
    actor_pooled = model.actor_pool(obs, goal_set, critic_pooled)
    action = model.pi_from_pooled(actor_pooled, obs)
    per_member = -model.q_from_pooled(critic_pooled, obs, action).mean(dim=(1, 2))
    return per_member.sum(), per_member.detach()
