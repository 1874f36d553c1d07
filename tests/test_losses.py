"""ReenGAGE's goal-gradient term against a hand-computed case, and gradcheck."""

import numpy as np
import torch

from reengage.agents.ddpg import DDPG, DDPGConfig
from reengage.agents.losses import (
    goal_gradient_loss,
    q_and_goal_gradient,
    td_target_and_goal_gradient,
)

GAMMA = 0.9


def _quadratic_critic(W, v, u):
    """q(s, g, a) = ½ gᵀWg + (gᵀv)·s + u·a per member: ∇_g q = W g + v s (W symmetric)."""
    def q(obs, goal, action):
        quad = 0.5 * torch.einsum("mbi,mij,mbj->mb", goal, W, goal)
        return (quad + (goal * v[:, None, :]).sum(-1) * obs[..., 0]
                + u[:, None] * action[..., 0]).unsqueeze(-1)
    return q


def _tanh_actor(p, k):
    def pi(obs, goal):
        return torch.tanh((goal * p[:, None, :]).sum(-1) + k[:, None] * obs[..., 0]).unsqueeze(-1)
    return pi


def _case(dtype=torch.float64):
    rng = np.random.default_rng(0)
    M, B, D = 2, 5, 3

    def sym(x):
        return (x + np.swapaxes(x, -1, -2)) / 2

    arrays = dict(
        W=sym(rng.normal(size=(M, D, D))), v=rng.normal(size=(M, D)), u=rng.normal(size=M),
        Wt=sym(rng.normal(size=(M, D, D))), vt=rng.normal(size=(M, D)), ut=rng.normal(size=M),
        p=rng.normal(size=(M, D)), k=rng.normal(size=M),
        obs=rng.normal(size=(M, B, 1)), next_obs=rng.normal(size=(M, B, 1)),
        action=rng.normal(size=(M, B, 1)), goal=rng.normal(size=(M, B, D)),
        reward=rng.choice([-1.0, 0.0], size=(M, B)),
    )
    return arrays, {k: torch.tensor(v, dtype=dtype) for k, v in arrays.items()}


def _hand_computed_loss(a):
    """The same quantity in numpy, from the closed-form gradients."""
    s, s2, g, r = a["obs"][..., 0], a["next_obs"][..., 0], a["goal"], a["reward"]
    grad_q = np.einsum("mij,mbj->mbi", a["W"], g) + a["v"][:, None, :] * s[..., None]
    z = np.einsum("mbi,mi->mb", g, a["p"]) + a["k"][:, None] * s2
    grad_target = GAMMA * (
        np.einsum("mij,mbj->mbi", a["Wt"], g) + a["vt"][:, None, :] * s2[..., None]
        + (a["ut"][:, None] * (1 - np.tanh(z) ** 2))[..., None] * a["p"][:, None, :]
    )
    return (-r * ((grad_q - grad_target) ** 2).mean(-1)).mean(-1)


def test_goal_gradient_loss_matches_hand_computation():
    arrays, t = _case()
    target_q = _quadratic_critic(t["Wt"], t["vt"], t["ut"])
    _, target_grad = td_target_and_goal_gradient(
        target_q, _tanh_actor(t["p"], t["k"]), t["next_obs"], t["goal"], t["reward"],
        GAMMA, with_goal_gradient=True)
    assert not target_grad.requires_grad  # a constant: no second-order graph was built
    _, dq_dg = q_and_goal_gradient(_quadratic_critic(t["W"], t["v"], t["u"]),
                                   t["obs"], t["goal"], t["action"])
    loss = goal_gradient_loss(dq_dg, target_grad, t["reward"])
    np.testing.assert_allclose(loss.detach().numpy(), _hand_computed_loss(arrays), rtol=1e-10)
    assert loss.shape == (2,)


def test_target_gradient_runs_through_the_target_actor():
    _, t = _case()
    target_q = _quadratic_critic(t["Wt"], t["vt"], t["ut"])
    args = (t["next_obs"], t["goal"], t["reward"], GAMMA, True)
    _, through = td_target_and_goal_gradient(target_q, _tanh_actor(t["p"], t["k"]), *args)
    _, blocked = td_target_and_goal_gradient(
        target_q, lambda s, g: _tanh_actor(t["p"], t["k"])(s, g.detach()), *args)
    assert not torch.allclose(through, blocked)


def test_gradcheck_through_the_double_backward():
    _, t = _case()
    target_grad = torch.randn(t["goal"].shape, dtype=torch.float64)

    def loss_of_critic_weights(W, v):
        _, dq_dg = q_and_goal_gradient(_quadratic_critic(W, v, t["u"]), t["obs"], t["goal"],
                                       t["action"])
        return goal_gradient_loss(dq_dg, target_grad, t["reward"])

    W = t["W"].clone().requires_grad_(True)
    v = t["v"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(loss_of_critic_weights, (W, v))


def _ddpg(members, c, seed=0):
    generators = [torch.Generator().manual_seed(seed + m) for m in range(members)]
    return DDPG(members, 3, 2, 2, DDPGConfig(goal_gradient_coef=c, hidden=(16, 16)), generators)


def _batch(members, seed):
    g = torch.Generator().manual_seed(seed)
    return dict(obs=torch.randn(members, 8, 3, generator=g),
                action=torch.rand(members, 8, 2, generator=g) * 2 - 1,
                next_obs=torch.randn(members, 8, 3, generator=g),
                goal=torch.randn(members, 8, 2, generator=g),
                reward=-(torch.rand(members, 8, generator=g) > 0.3).float())


def test_member_updates_depend_on_own_data_only():
    for c in (0.0, 0.5):
        a, b = _ddpg(2, c), _ddpg(2, c)
        for step in range(3):
            batch_a, batch_b = _batch(2, step), _batch(2, step)
            other = _batch(2, 100 + step)
            for key in batch_b:  # member 1 sees different data in b
                batch_b[key][1] = other[key][1]
            a.update(**batch_a)
            b.update(**batch_b)
        pairs = list(zip(a.parameters(), b.parameters(), strict=True))
        for pa, pb in pairs:
            torch.testing.assert_close(pa[0], pb[0], rtol=0, atol=0)
        assert any(not torch.equal(pa[1], pb[1]) for pa, pb in pairs)


def test_goal_gradient_term_changes_the_update_only_when_c_positive():
    plain, reengage = _ddpg(1, 0.0), _ddpg(1, 1.0)
    out_plain = plain.update(**_batch(1, 3))
    out = reengage.update(**_batch(1, 3))
    assert out_plain["goal_grad_loss"].item() == 0.0
    assert out["goal_grad_loss"].item() > 0.0
    torch.testing.assert_close(out["critic_loss"], out_plain["critic_loss"])  # same start
    # Adam's first step is ±lr whatever the gradient's size, so compare its first moments.
    w_plain = plain.critic.net.layers[0].weight
    w_reengage = reengage.critic.net.layers[0].weight
    m_plain = plain.critic_optimizer.state[w_plain]["exp_avg"]
    m_reengage = reengage.critic_optimizer.state[w_reengage]["exp_avg"]
    assert not torch.allclose(m_plain, m_reengage)
