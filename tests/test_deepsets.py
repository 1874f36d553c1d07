"""DeepSets actor-critic and the Multi-ReenGAGE gate-gradient loss (docs/paper.md §1)."""

import math

import pytest
import torch
from torch import nn

from reengage.agents.deepsets import DeepSetsActorCritic, DeepSetsConfig, with_gate_leaf
from reengage.agents.multi_goal_loss import (
    gate_gradient_term,
    multi_goal_actor_loss,
    multi_goal_critic_loss,
    q_and_gate_gradient,
    teacher_and_gate_gradient,
)

OBS, ACT, N_MAX = 3, 2, 6


def make_model(members=1, seed=0, n_max=N_MAX, **config):
    config = DeepSetsConfig(embedding=3, encoder_hidden=8, head_hidden=8, **config)
    generators = [torch.Generator().manual_seed(seed + 100 * m) for m in range(members)]
    return DeepSetsActorCritic(members, OBS, ACT, n_max, generators, config).double()


def make_batch(members, batch, seed, counts=None, n_max=N_MAX):
    """Present rows first (as the envs emit them); at most one rewarded item per sample."""
    g = torch.Generator().manual_seed(seed)
    if counts is None:
        counts = torch.randint(0, n_max + 1, (members, batch), generator=g)
    rows = torch.arange(n_max)
    gates = (rows < counts.unsqueeze(-1)).double()
    items = torch.randint(-5, 6, (members, batch, n_max, 2), generator=g).double()
    goal_set = torch.cat([gates.unsqueeze(-1), items * gates.unsqueeze(-1)], dim=-1)
    hit = torch.randint(0, n_max, (members, batch), generator=g)
    item_reward = torch.nn.functional.one_hot(hit, n_max).double() * gates
    item_reward *= (torch.rand(members, batch, 1, generator=g) < 0.5).double()
    obs = torch.randn(members, batch, OBS, generator=g, dtype=torch.float64)
    next_obs = torch.randn(members, batch, OBS, generator=g, dtype=torch.float64)
    action = torch.rand(members, batch, ACT, generator=g, dtype=torch.float64) * 2 - 1
    return obs, action, next_obs, goal_set, item_reward


def critic_loss_and_grads(model, batch, gate_coef=2.0, through=True):
    target = model.make_target()
    with torch.no_grad():  # a target that differs from the online nets
        for p in target.parameters():
            p.mul_(0.9)
    model.zero_grad(set_to_none=True)
    loss = multi_goal_critic_loss(model, target, *batch, 0.9, gate_coef, through)
    loss.loss.backward()
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_skipping_padding_rows_is_exact():
    counts = torch.tensor([[0, 1, 6, 2, 3], [4, 4, 5, 1, 2]])  # members differ in counts
    batch = make_batch(2, 5, seed=1, counts=counts)
    results = []
    for skip in (True, False):
        model = make_model(members=2, skip_padding=skip)
        q, dq_db = q_and_gate_gradient(model, batch[0], batch[3], batch[1])
        loss, grads = critic_loss_and_grads(model, batch)
        results.append((q, dq_db, loss, grads))
    (q1, d1, l1, g1), (q2, d2, l2, g2) = results
    torch.testing.assert_close(q1, q2, rtol=0, atol=1e-12)
    torch.testing.assert_close(d1, d2, rtol=0, atol=1e-12)
    torch.testing.assert_close(l1.loss, l2.loss, rtol=1e-12, atol=0)
    assert g1.keys() == g2.keys()
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("skip", [True, False])
def test_gate_gradient_is_zero_at_padding_and_twice_the_weight_derivative(skip):
    model = make_model(skip_padding=skip)
    obs, action, _, goal_set, _ = make_batch(1, 4, seed=2)
    q, dq_db = q_and_gate_gradient(model, obs, goal_set, action)
    present = goal_set[..., 0] != 0
    assert (dq_db[~present] == 0).all()  # exactly zero, not merely small
    # Q depends on gate i through the weight w_i = b_i² of enc(s, g_i) in the pool, so at
    # b_i = 1: ∂Q/∂b_i = 2 ∂Q/∂w_i = 2 <∂Q/∂pooled, enc(s, g_i)> / n_max.
    pooled = model.pool(obs, goal_set).detach().requires_grad_(True)
    (dq_dpooled,) = torch.autograd.grad(model.q_from_pooled(pooled, obs, action).sum(), pooled)
    states = obs.unsqueeze(2).expand(-1, -1, N_MAX, -1)
    enc = model.critic_encoder.net(
        torch.cat([states, goal_set[..., 1:]], dim=-1).reshape(1, -1, OBS + 2)
    ).reshape(1, 4, N_MAX, -1)
    dq_dw = (dq_dpooled.unsqueeze(2) * enc).sum(-1) / N_MAX
    torch.testing.assert_close(dq_db[present], 2 * dq_dw[present], rtol=1e-10, atol=1e-12)


def test_population_member_matches_the_same_seed_alone():
    counts = torch.tensor([[1, 2, 0], [6, 6, 5]])  # member 1 forces padding picks on member 0
    pair = make_batch(2, 3, seed=3, counts=counts)
    alone = tuple(x[:1] for x in pair)
    loss2, grads2 = critic_loss_and_grads(make_model(members=2), pair)
    loss1, grads1 = critic_loss_and_grads(make_model(members=1), alone)
    torch.testing.assert_close(loss2.value_term[:1], loss1.value_term, rtol=1e-12, atol=0)
    torch.testing.assert_close(loss2.gate_term[:1], loss1.gate_term, rtol=1e-12, atol=0)
    for name, grad in grads1.items():
        torch.testing.assert_close(grads2[name][:1], grad, rtol=1e-10, atol=1e-14)


def test_actor_pools_with_the_critic_encoder_without_training_it():
    model = make_model()
    obs, _, _, goal_set, _ = make_batch(1, 4, seed=4)
    assert not {id(p) for p in model.critic_encoder.parameters()} & {
        id(p) for p in model.actor_parameters()
    }
    loss, per_member = multi_goal_actor_loss(model, obs, goal_set)
    loss.backward()
    assert all(p.grad is None for p in model.critic_encoder.parameters())
    assert all(p.grad is not None for p in model.actor_head.parameters())
    expected = -model.q(obs, goal_set, model.pi(obs, goal_set)).mean()
    torch.testing.assert_close(per_member, expected.reshape(1).detach())
    # The target actor pools with the *target* critic's encoder.
    target = model.make_target()
    with torch.no_grad():
        for p in target.critic_encoder.parameters():
            p.add_(1.0)
    assert not torch.equal(target.pi(obs, goal_set), model.pi(obs, goal_set))


def test_unshared_actor_encoder_is_trained_by_the_actor_loss():
    model = make_model(share_encoder=False)
    obs, _, _, goal_set, _ = make_batch(1, 4, seed=5)
    actor_ids = {id(p) for p in model.actor_parameters()}
    assert all(id(p) in actor_ids for p in model.actor_encoder.parameters())
    multi_goal_actor_loss(model, obs, goal_set)[0].backward()
    assert all(p.grad is not None for p in model.actor_encoder.parameters())
    assert all(p.grad is None for p in model.critic_encoder.parameters())


def test_target_gate_gradient_through_and_around_the_target_actor():
    model = make_model()
    _, _, next_obs, goal_set, item_reward = make_batch(1, 3, seed=6)
    goal_set[0, 0, :4, 0] = 1.0  # four present rows in sample 0
    gamma = 0.9

    def teacher(gates, fixed_action=None):
        gs = torch.cat([gates.unsqueeze(-1), goal_set[..., 1:]], dim=-1)
        action = model.pi(next_obs, gs) if fixed_action is None else fixed_action
        reward = (gates.pow(2) * item_reward).sum(-1, keepdim=True)
        return reward + gamma * model.q(next_obs, gs, action)

    value, through = teacher_and_gate_gradient(model, next_obs, goal_set, item_reward, gamma,
                                               True, through_target_actor=True)
    _, around = teacher_and_gate_gradient(model, next_obs, goal_set, item_reward, gamma,
                                          True, through_target_actor=False)
    torch.testing.assert_close(value, teacher(goal_set[..., 0]))
    eps = 1e-6
    for i in range(4):  # central differences at the present rows of sample 0
        up, down = goal_set[..., 0].clone(), goal_set[..., 0].clone()
        up[0, 0, i] += eps
        down[0, 0, i] -= eps
        numeric = (teacher(up) - teacher(down))[0, 0, 0] / (2 * eps)
        assert through[0, 0, i].item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-9)
        fixed = model.pi(next_obs, goal_set).detach()
        numeric = (teacher(up, fixed) - teacher(down, fixed))[0, 0, 0] / (2 * eps)
        assert around[0, 0, i].item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-9)
    assert not torch.allclose(through, around)
    present = goal_set[..., 0] != 0
    assert (through[~present] == 0).all() and (around[~present] == 0).all()


def _set(layer, weight, bias):
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float64).reshape(layer.weight.shape))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float64).reshape(layer.bias.shape))


@pytest.mark.parametrize("through", [True, False])
def test_loss_on_a_hand_worked_tiny_network(through):
    config = DeepSetsConfig(embedding=1, encoder_hidden=1, head_hidden=1)
    model = DeepSetsActorCritic(1, 1, 1, 2, [torch.Generator()], config).double()
    enc, head, actor = (model.critic_encoder.net.layers, model.critic_head.layers,
                        model.actor_head.layers)
    _set(enc[0], [0.0, 1.0, 0.0], [10.0])  # enc(s, (x, y)) = x + 10 (kept positive)
    _set(enc[1], [1.0], [0.0])
    _set(enc[2], [1.0], [0.0])
    _set(head[0], [1.0, 0.0, 1.0], [0.0])  # Q = 2 relu(pooled + a)
    _set(head[1], [2.0], [0.0])
    _set(actor[0], [1.0, 0.0], [0.0])  # π = tanh(0.1 relu(pooled))
    _set(actor[1], [0.1], [0.0])
    target = model.make_target()
    goal_set = torch.tensor([[[[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
                              [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]], dtype=torch.float64)
    item_reward = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    obs = torch.zeros(1, 2, 1, dtype=torch.float64)
    action = torch.full((1, 2, 1), 0.5, dtype=torch.float64)
    gamma, c = 0.5, 3.0
    loss = multi_goal_critic_loss(model, target, obs, action, obs, goal_set, item_reward,
                                  gamma, c, through)

    # Sample 0: pooled = (10 + 1) / 2 = 5.5, Q = 2 (5.5 + 0.5) = 12, ∂Q/∂b_0 = 2 · 11 = 22.
    # Target: π' = tanh(0.55), T = 1 + γ · 2 (5.5 + π'),
    # ∂T/∂b_0 = 2 R + γ · 2 · 11 · (1 + [through] 0.1 (1 - π'²)).
    # Sample 1 (all padding): Q = 2 · 0.5 = 1, T = γ · 2 · relu(0 + tanh 0) = 0.
    pi = math.tanh(0.55)
    t0 = 1 + gamma * 2 * (5.5 + pi)
    dt0 = 2 + gamma * 22 * (1 + (0.1 * (1 - pi**2) if through else 0.0))
    value_term = ((12 - t0) ** 2 + (1 - 0) ** 2) / 2
    gate_term = ((22 - dt0) ** 2 / 2 + 0.0) / 2  # mean over n_max = 2 gates, then batch
    assert loss.value_term.item() == pytest.approx(value_term, rel=1e-12)
    assert loss.gate_term.item() == pytest.approx(gate_term, rel=1e-12)
    assert loss.loss.item() == pytest.approx(value_term + c * gate_term, rel=1e-12)
    actor_loss, _ = multi_goal_actor_loss(model, obs, goal_set)
    assert actor_loss.item() == pytest.approx(-(2 * (5.5 + pi) + 2 * 0.0) / 2, rel=1e-12)


def test_zero_coefficient_is_plain_ddpg():
    model = make_model()
    batch = make_batch(1, 4, seed=7)
    loss, _ = critic_loss_and_grads(model, batch, gate_coef=0.0)
    assert loss.gate_term.item() == 0.0
    assert loss.loss.item() == pytest.approx(loss.value_term.item(), rel=1e-12)


class _GateTerm(nn.Module):
    """The gate term as a module, so gradcheck can vary network weights too."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, obs, goal_set, action, target_dq_db):
        _, dq_db = q_and_gate_gradient(self.model, obs, goal_set, action)
        return gate_gradient_term(dq_db, target_dq_db)


@pytest.mark.parametrize("skip", [True, False])
def test_gradcheck_gate_gradient_term(skip):
    model = make_model(skip_padding=skip)
    obs, action, _, goal_set, _ = make_batch(1, 3, seed=8)
    present = goal_set[..., 0] != 0
    target = torch.randn(1, 3, N_MAX, dtype=torch.float64) * present
    term = _GateTerm(model)
    names = ["model.critic_encoder.net.layers.1.weight", "model.critic_head.layers.0.weight"]
    params = dict(term.named_parameters())

    def by_weights(obs, target, w_encoder, w_head):
        weights = dict(zip(names, (w_encoder, w_head), strict=True))
        return torch.func.functional_call(term, weights, (obs, goal_set, action, target))

    inputs = [obs.requires_grad_(True), target.requires_grad_(True)]
    inputs += [params[n].detach().clone().requires_grad_(True) for n in names]
    assert torch.autograd.gradcheck(by_weights, inputs)

    # With respect to the gates themselves (padding targets are 0, as in training).
    items = goal_set[..., 1:]

    def by_gates(gates):
        q = model.q(obs.detach(), torch.cat([gates.unsqueeze(-1), items], -1), action)
        (dq_db,) = torch.autograd.grad(q.sum(), gates, create_graph=True)
        return gate_gradient_term(dq_db, target.detach())

    gates, _ = with_gate_leaf(goal_set)
    assert torch.autograd.gradcheck(by_gates, [gates])
