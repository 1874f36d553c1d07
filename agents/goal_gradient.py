"""ReenGAGE's critic step with its gradients written out, for ReLU ensemble MLPs.

`agents/losses.py` states the loss (PAPER.md §1) and lets autograd differentiate it: the
goal gradient ∇_g Q with a graph, then a double backward. This module computes the same
numbers in closed form, which spares the autograd engine's second-order graph and the
first layer's second-order products over inputs other than the goal. In an alternated A/B
(`results/reference/throughput/hand_gradients_ab/`) ReenGAGE trained 179 → 207 seed-steps/s
with one seed and 245 → 255 with ten. It is checked against the autograd path and against
finite differences in tests/test_goal_gradient.py.

The closed form. Write the critic as `z_i = h_{i-1} W_i + b_i`, `h_i = relu(z_i)` for the
hidden layers (h_0 is the input x = [s, g, a]) and `q = h_{n-1} · w_n + b_n`. With the
masks `m_i = [h_i > 0]`,

    u_{n-1} = m_{n-1} ⊙ w_nᵀ,   u_i = m_i ⊙ (u_{i+1} W_{i+1}ᵀ),   ∇_x q = u_1 W_1ᵀ,

and ∇_g q is the goal's columns of ∇_x q. The masks are piecewise constant, so the
derivative of a loss on ∇_g q reaches the weights only through the products in that chain
(never the biases), and it is added to the ordinary derivative of the TD term.
"""

from __future__ import annotations

import torch
from torch import nn

from .ensemble import EnsembleMLP
from .losses import goal_gradient_loss, td_loss

_relu_backward = torch.ops.aten.threshold_backward


def mlp_forward(net: EnsembleMLP, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The last layer's output (before any output activation) and `[x, h_1, …, h_{n-1}]`."""
    hidden = [x]
    for layer in net.layers[:-1]:
        x = torch.relu(layer(x))
        hidden.append(x)
    return net.layers[-1](x), hidden


def mlp_input_gradient(net: EnsembleMLP, hidden: list[torch.Tensor], grad_out: torch.Tensor
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`∂(Σ out · grad_out)/∂x` and the gradients at each hidden pre-activation `[u_1, …]`
    (for grad_out = 1 on a one-column output, these are the u_i of the module docstring)."""
    last = net.layers[-1]
    if last.out_features == 1:
        grad = grad_out * last.weight.transpose(1, 2)
    else:
        grad = torch.bmm(grad_out, last.weight.transpose(1, 2))
    masked: list[torch.Tensor] = [grad] * (len(net.layers) - 1)
    for i in range(len(net.layers) - 2, -1, -1):
        grad = _relu_backward(grad, hidden[i + 1], 0)
        masked[i] = grad
        grad = torch.bmm(grad, net.layers[i].weight.transpose(1, 2))
    return grad, masked


@torch.no_grad()
def target_and_goal_gradient(
    critic: EnsembleMLP,
    actor: EnsembleMLP,
    next_obs: torch.Tensor,
    goal: torch.Tensor,
    reward: torch.Tensor,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`T = R + γ Q'(s', π'(s', g), g)` and `∇_g T`, as
    `losses.td_target_and_goal_gradient(..., with_goal_gradient=True)` returns them: the
    gradient runs through the target critic directly and through the target action."""
    if not isinstance(actor.output_activation, nn.Tanh):
        raise ValueError("the hand-written target gradient assumes a tanh actor output")
    obs_dim, goal_dim = next_obs.shape[-1], goal.shape[-1]
    pre_action, actor_hidden = mlp_forward(actor, torch.cat([next_obs, goal], dim=-1))
    action = torch.tanh(pre_action)
    q_next, critic_hidden = mlp_forward(critic, torch.cat([next_obs, goal, action], dim=-1))
    dq_dx, _ = mlp_input_gradient(critic, critic_hidden, torch.ones_like(q_next))
    dq_dg = dq_dx[..., obs_dim:obs_dim + goal_dim]
    dq_dpre_action = dq_dx[..., obs_dim + goal_dim:] * (1 - action * action)
    through_action, _ = mlp_input_gradient(actor, actor_hidden, dq_dpre_action)
    dq_dg = dq_dg + through_action[..., obs_dim:obs_dim + goal_dim]
    return reward.unsqueeze(-1) + gamma * q_next, gamma * dq_dg


@torch.no_grad()
def critic_step_gradients(
    critic: EnsembleMLP,
    obs: torch.Tensor,
    goal: torch.Tensor,
    action: torch.Tensor,
    target: torch.Tensor,
    target_dq_dg: torch.Tensor,
    reward: torch.Tensor,
    c: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sets the critic's `.grad` to the gradient of `Σ_members (td_loss + c · goal-gradient
    loss)` and returns `(q, td_loss, goal-gradient loss)` per member, as the autograd path
    in `DDPG.update` computes them."""
    layers = critic.layers
    if len(layers) < 2 or layers[-1].out_features != 1:
        raise ValueError("the hand-written critic step needs a hidden layer and one output")
    obs_dim, goal_dim = obs.shape[-1], goal.shape[-1]
    batch = obs.shape[1]
    q, hidden = mlp_forward(critic, torch.cat([obs, goal, action], dim=-1))
    dq_dx, masked = mlp_input_gradient(critic, hidden, torch.ones_like(q))
    dq_dg = dq_dx[..., obs_dim:obs_dim + goal_dim]
    value_term = td_loss(q, target)
    gradient_term = goal_gradient_loss(dq_dg, target_dq_dg, reward)

    # Derivatives of the loss with respect to q and to ∇_g q (the means of losses.py).
    grad_q = (q - target) * (2.0 / (batch * q.shape[-1]))
    gate = -reward
    grad_dq_dg = (dq_dg - target_dq_dg) * (gate.unsqueeze(-1) * (2.0 * c / (goal_dim * batch)))

    n = len(layers)
    weight_grads: list[torch.Tensor] = [torch.empty(0)] * n  # filled from the last layer down
    bias_grads: list[torch.Tensor] = [torch.empty(0)] * n
    # The goal-gradient term: back along u_1 W_1ᵀ, u_i = m_i ⊙ (u_{i+1} W_{i+1}ᵀ), … to w_n.
    # Its weight gradients are kept as (left, right) factors so each can be accumulated
    # into the TD term's product for the same layer in one baddbmm.
    goal_rows = slice(obs_dim, obs_dim + goal_dim)
    first_layer_term = torch.bmm(grad_dq_dg.transpose(1, 2), masked[0])
    grad_u = torch.bmm(grad_dq_dg, layers[0].weight[:, goal_rows, :])
    factors: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n
    for i in range(1, n - 1):  # hidden-to-hidden layers
        grad_u = _relu_backward(grad_u, hidden[i], 0)
        factors[i] = (grad_u.transpose(1, 2), masked[i])
        grad_u = torch.bmm(grad_u, layers[i].weight)
    grad_u = _relu_backward(grad_u, hidden[n - 1], 0)
    last_layer_term = grad_u.sum(dim=1, keepdim=True).transpose(1, 2)

    # The TD term, as an ordinary backward; the one-column output is a product-and-sum.
    weight_grads[-1] = (hidden[-1] * grad_q).sum(dim=1, keepdim=True).transpose(1, 2)
    weight_grads[-1] = weight_grads[-1] + last_layer_term
    bias_grads[-1] = grad_q.sum(dim=1, keepdim=True)
    grad_h = grad_q * layers[-1].weight.transpose(1, 2)
    for i in range(n - 2, -1, -1):
        grad_z = _relu_backward(grad_h, hidden[i + 1], 0)
        weight_grads[i] = torch.bmm(hidden[i].transpose(1, 2), grad_z)
        if factors[i] is not None:
            left, right = factors[i]
            weight_grads[i] = torch.baddbmm(weight_grads[i], left, right)
        bias_grads[i] = grad_z.sum(dim=1, keepdim=True)
        if i > 0:
            grad_h = torch.bmm(grad_z, layers[i].weight.transpose(1, 2))
    weight_grads[0][:, goal_rows, :] += first_layer_term

    for layer, weight_grad, bias_grad in zip(layers, weight_grads, bias_grads, strict=True):
        layer.weight.grad, layer.bias.grad = weight_grad, bias_grad
    return q, value_term, gradient_term
