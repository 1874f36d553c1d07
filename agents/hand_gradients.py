"""The gradients of one DDPG(+ReenGAGE) update written out, for ReLU ensemble MLPs.

`agents/losses.py` states the losses (docs/paper.md §1) and `DDPG.update` can let autograd
differentiate them (`hand_gradients=False`): for ReenGAGE, the goal gradient ∇_g Q with a
graph and then a double backward. This module computes the same numbers in closed form,
which spares the autograd engine and its second-order graph, and skips products the step
does not need: input gradients over input columns nobody reads (the observation's, when
only ∇_g or ∇_a is wanted) and the first layer's second-order products over inputs other
than the goal. Checked against autograd and finite differences in
tests/test_hand_gradients.py; what each part gained is in README.md ("Performance").

The closed form. Write an MLP as `z_i = h_{i-1} W_i + b_i`, `h_i = relu(z_i)` for the
hidden layers (h_0 is the input x) and `q = h_{n-1} · w_n + b_n` for a one-column output.
With the masks `m_i = [h_i > 0]`,

    u_{n-1} = m_{n-1} ⊙ w_nᵀ,   u_i = m_i ⊙ (u_{i+1} W_{i+1}ᵀ),   ∇_x q = u_1 W_1ᵀ,

and ∇_g q is the goal's columns of ∇_x q. The masks are piecewise constant, so the
derivative of a loss on ∇_g q reaches the weights only through the products in that chain
(never the biases), and it is added to the ordinary derivative of the TD term.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .ensemble import EnsembleMLP
from .inputs import goal_columns, network_input
from .losses import goal_gradient_loss, td_loss

_relu_backward = torch.ops.aten.threshold_backward


def mlp_forward(net: EnsembleMLP, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The last layer's output (before any output activation) and `[x, h_1, …, h_{n-1}]`."""
    hidden = [x]
    for layer in net.layers[:-1]:
        x = torch.relu(layer(x))
        hidden.append(x)
    return net.layers[-1](x), hidden


def mlp_input_gradient(net: EnsembleMLP, hidden: list[torch.Tensor], grad_out: torch.Tensor,
                       columns: slice = slice(None)) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`∂(Σ out · grad_out)/∂x[..., columns]` and the gradients at each hidden pre-activation
    `[u_1, …]` (for grad_out = 1 on a one-column output, these are the u_i of the module
    docstring). Only the input columns asked for are computed."""
    last = net.layers[-1]
    if last.out_features == 1:
        grad = grad_out * last.weight.transpose(1, 2)
    else:
        grad = torch.bmm(grad_out, last.weight.transpose(1, 2))
    masked: list[torch.Tensor] = [grad] * (len(net.layers) - 1)
    for i in range(len(net.layers) - 2, -1, -1):
        grad = _relu_backward(grad, hidden[i + 1], 0)
        masked[i] = grad
        weight = net.layers[i].weight
        if i == 0:
            weight = weight[:, columns, :]
        if weight.shape[1] == 1:
            # One output column: product-and-sum, as in EnsembleLinear.forward, so that
            # the rounding does not depend on the number of members.
            grad = (grad * weight).sum(dim=-1, keepdim=True)
        else:
            grad = torch.bmm(grad, weight.transpose(1, 2))
    return grad, masked


def mlp_parameter_gradients(
    net: EnsembleMLP,
    hidden: list[torch.Tensor],
    grad_out: torch.Tensor,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Weight and bias gradients of `Σ out · grad_out`: an ordinary backward that stops at
    the first layer's weights (no input gradient)."""
    layers = net.layers
    n = len(layers)
    weight_grads: list[torch.Tensor] = [torch.empty(0)] * n  # filled from the last layer down
    bias_grads: list[torch.Tensor] = [torch.empty(0)] * n
    last = layers[-1]
    if last.out_features == 1:
        # Product-and-sum, not a one-column product: see EnsembleLinear.forward.
        weight_grads[-1] = (hidden[-1] * grad_out).sum(dim=1, keepdim=True).transpose(1, 2)
        grad_h = grad_out * last.weight.transpose(1, 2)
    else:
        weight_grads[-1] = torch.bmm(hidden[-1].transpose(1, 2), grad_out)
        grad_h = torch.bmm(grad_out, last.weight.transpose(1, 2))
    bias_grads[-1] = grad_out.sum(dim=1, keepdim=True)
    for i in range(n - 2, -1, -1):
        grad_z = _relu_backward(grad_h, hidden[i + 1], 0)
        weight_grads[i] = torch.bmm(hidden[i].transpose(1, 2), grad_z)
        bias_grads[i] = grad_z.sum(dim=1, keepdim=True)
        if i > 0:
            grad_h = torch.bmm(grad_z, layers[i].weight.transpose(1, 2))
    return weight_grads, bias_grads


def _set_gradients(net: EnsembleMLP, weight_grads: list[torch.Tensor],
                   bias_grads: list[torch.Tensor]) -> None:
    for layer, weight_grad, bias_grad in zip(net.layers, weight_grads, bias_grads, strict=True):
        layer.weight.grad, layer.bias.grad = weight_grad, bias_grad


def _require_tanh_actor(actor: EnsembleMLP) -> None:
    if not isinstance(actor.output_activation, nn.Tanh):
        raise ValueError("the hand-written gradients assume a tanh actor output")


@torch.no_grad()
def target_and_goal_gradient(
    critic: EnsembleMLP,
    actor: EnsembleMLP,
    next_obs: torch.Tensor,
    goal: torch.Tensor,
    reward: torch.Tensor,
    gamma: float,
    goal_at: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`T = R + γ Q'(s', π'(s', g), g)` and `∇_g T`, as
    `losses.td_target_and_goal_gradient(..., with_goal_gradient=True)` returns them: the
    gradient runs through the target critic directly and through the target action. The
    goal enters the inputs before state column `goal_at` (agents/inputs.py; default: after
    the state)."""
    _require_tanh_actor(actor)
    obs_dim, goal_dim = next_obs.shape[-1], goal.shape[-1]
    goal_at = obs_dim if goal_at is None else goal_at
    pre_action, actor_hidden = mlp_forward(actor, network_input(next_obs, goal, goal_at))
    action = torch.tanh(pre_action)
    q_next, critic_hidden = mlp_forward(critic, network_input(next_obs, goal, goal_at, action))
    # From the goal's first column on: the goal, the state after it, the action. The state
    # before the goal is skipped; the state after it (if any) is computed but not used.
    dq_dinputs, _ = mlp_input_gradient(critic, critic_hidden, torch.ones_like(q_next),
                                       slice(goal_at, None))
    dq_dg = dq_dinputs[..., :goal_dim]
    dq_dpre_action = dq_dinputs[..., goal_dim + obs_dim - goal_at:] * (1 - action * action)
    through_action, _ = mlp_input_gradient(actor, actor_hidden, dq_dpre_action,
                                           goal_columns(goal_at, goal_dim))
    dq_dg = dq_dg + through_action
    return reward.unsqueeze(-1) + gamma * q_next, gamma * dq_dg


def member_weights(cs: Sequence[float], goal_dim: int, batch: int, dtype: torch.dtype,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Per-member coefficients for `critic_step_gradients`: the factor `2c/(d·B)` by which it
    scales the gated goal-gradient error, one per member, `[members, 1, 1]`. Each is
    computed in Python floats as the one-coefficient path computes it, then rounded to
    `dtype` once, which is what multiplying a tensor of that dtype by the Python float
    does: a member of a population with per-member c then rounds exactly as a population
    with that c alone (tests/test_packed_learner.py). Computed here, outside any compiled
    graph: inductor may turn a division by a constant into a multiplication by its
    reciprocal (it does not on the CPU)."""
    factors = [2.0 * c / (goal_dim * batch) for c in cs]
    return torch.tensor(factors, dtype=dtype, device=device).view(-1, 1, 1)


@torch.no_grad()
def critic_step_gradients(
    critic: EnsembleMLP,
    obs: torch.Tensor,
    goal: torch.Tensor,
    action: torch.Tensor,
    target: torch.Tensor,
    target_dq_dg: torch.Tensor | None,
    reward: torch.Tensor,
    c: float | torch.Tensor,
    goal_at: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sets the critic's `.grad` to the gradient of `Σ_members (td_loss + c · goal-gradient
    loss)` and returns `(q, td_loss, goal-gradient loss)` per member, as the autograd path
    in `DDPG.update` computes them. With `target_dq_dg=None` (DDPG, c = 0) it is the TD
    term's ordinary backward and the goal-gradient loss is zero. `c` is one float for every
    member or, for members with their own c (a packed grid), the tensor `member_weights`
    makes for this batch. The goal enters the input before state column `goal_at` (default:
    after the state)."""
    layers = critic.layers
    if len(layers) < 2 or layers[-1].out_features != 1:
        raise ValueError("the hand-written critic step needs a hidden layer and one output")
    per_member = isinstance(c, torch.Tensor)
    if target_dq_dg is None and (per_member or c != 0):
        raise ValueError(f"c = {c} needs the target's goal gradient")
    obs_dim = obs.shape[-1]
    goal_at = obs_dim if goal_at is None else goal_at
    q, hidden = mlp_forward(critic, network_input(obs, goal, goal_at, action))
    value_term = td_loss(q, target)
    # The derivative of the TD term with respect to q (the mean of losses.td_loss).
    grad_q = (q - target) * (2.0 / (q.shape[1] * q.shape[-1]))
    if target_dq_dg is None:
        weight_grads, bias_grads = mlp_parameter_gradients(critic, hidden, grad_q)
        _set_gradients(critic, weight_grads, bias_grads)
        return q, value_term, torch.zeros(q.shape[0], dtype=q.dtype, device=q.device)

    goal_dim, batch = goal.shape[-1], obs.shape[1]
    goal_rows = goal_columns(goal_at, goal_dim)
    dq_dg, masked = mlp_input_gradient(critic, hidden, torch.ones_like(q), goal_rows)
    gradient_term = goal_gradient_loss(dq_dg, target_dq_dg, reward)
    gate = -reward
    weight = c if per_member else 2.0 * c / (goal_dim * batch)
    grad_dq_dg = (dq_dg - target_dq_dg) * (gate.unsqueeze(-1) * weight)

    # A one-output network's backward is its input-gradient chain scaled row by row: the
    # TD term's gradient at pre-activation i is grad_q ⊙ u_i, and the u_i are already here.
    # So the TD term needs no backward products of its own, and each layer's weight
    # gradient, TD and goal-gradient terms together, is one product `leftᵀ u_i`.
    # The goal-gradient term runs back along ∇_g q = u_1 W_1[goal]ᵀ,
    # u_i = m_i ⊙ (u_{i+1} W_{i+1}ᵀ), …, u_{n-1} = m_{n-1} ⊙ w_nᵀ; `grad_u` is its derivative
    # with respect to each u_i in turn (after the mask), which is what pairs with u_{i+1}.
    n = len(layers)
    weight_grads: list[torch.Tensor] = [torch.empty(0)] * n
    bias_grads: list[torch.Tensor] = [torch.empty(0)] * n
    left = hidden[0] * grad_q
    left[..., goal_rows] += grad_dq_dg
    grad_u = torch.bmm(grad_dq_dg, layers[0].weight[:, goal_rows, :])
    for i in range(n - 1):
        if i > 0:  # hidden-to-hidden layers
            grad_u = _relu_backward(grad_u, hidden[i], 0)
            left = torch.addcmul(grad_u, hidden[i], grad_q)
            grad_u = torch.bmm(grad_u, layers[i].weight)
        weight_grads[i] = torch.bmm(left.transpose(1, 2), masked[i])
        bias_grads[i] = (masked[i] * grad_q).sum(dim=1, keepdim=True)
    grad_u = _relu_backward(grad_u, hidden[n - 1], 0)
    last_left = torch.addcmul(grad_u, hidden[n - 1], grad_q)
    weight_grads[-1] = last_left.sum(dim=1, keepdim=True).transpose(1, 2)
    bias_grads[-1] = grad_q.sum(dim=1, keepdim=True)
    _set_gradients(critic, weight_grads, bias_grads)
    return q, value_term, gradient_term


@torch.no_grad()
def actor_step_gradients(
    actor: EnsembleMLP,
    critic: EnsembleMLP,
    obs: torch.Tensor,
    goal: torch.Tensor,
    action_l2: float = 0.0,
    goal_at: int | None = None,
) -> torch.Tensor:
    """Sets the actor's `.grad` to the gradient of `Σ_members actor_term` and returns the
    per-member `actor_term = −mean Q(s, π(s, g), g) + action_l2 · mean π²` (π before
    exploration noise), as the autograd path in `DDPG.update` computes it. The critic's
    gradient is taken with respect to the action's columns only and its weights get none.
    The goal enters the inputs before state column `goal_at` (default: after the state)."""
    _require_tanh_actor(actor)
    goal_at = obs.shape[-1] if goal_at is None else goal_at
    pre_action, actor_hidden = mlp_forward(actor, network_input(obs, goal, goal_at))
    pi = torch.tanh(pre_action)
    q, critic_hidden = mlp_forward(critic, network_input(obs, goal, goal_at, pi))
    batch = q.shape[1]
    actor_term = -q.mean(dim=(1, 2))
    action_columns = slice(obs.shape[-1] + goal.shape[-1], None)
    grad_pi, _ = mlp_input_gradient(critic, critic_hidden,
                                    torch.full_like(q, -1.0 / (batch * q.shape[-1])),
                                    action_columns)
    if action_l2 > 0:
        actor_term = actor_term + action_l2 * pi.pow(2).mean(dim=(1, 2))
        grad_pi = grad_pi + pi * (2.0 * action_l2 / (batch * pi.shape[-1]))
    grad_pre_action = grad_pi * (1 - pi * pi)
    weight_grads, bias_grads = mlp_parameter_gradients(actor, actor_hidden, grad_pre_action)
    _set_gradients(actor, weight_grads, bias_grads)
    return actor_term
