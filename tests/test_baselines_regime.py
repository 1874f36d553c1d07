"""The Baselines regime's ingredients in our DDPG (agents/ddpg.py, agents/losses.py,
reengage/baselines_her.py): clipped targets with zero goal gradient where clipped, the
normaliser in front of the networks with goal gradients taken through it (and σ²-weighted
for Normalized ReenGAGE), action L2, targets moved only by the loop, exploration, and the
settings the regime sets. Each is checked against an independent computation."""

import numpy as np
import pytest
import torch

from reengage.agents.ddpg import DDPG, DDPGConfig
from reengage.agents.losses import (
    clip_target,
    goal_gradient_loss,
    q_and_goal_gradient,
    td_target_and_goal_gradient,
)
from reengage.baselines_her import BaselinesConfig, explore

GAMMA = 0.9


# -- the clipped target's goal gradient -----------------------------------------------------
def test_clip_target_zeroes_the_gradient_of_clipped_samples_only():
    target = torch.tensor([[[-12.0], [-3.0], [0.5], [-10.0], [0.0]]])
    grad = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    clipped, clipped_grad = clip_target(target, grad, (-10.0, 0.0))
    assert clipped.flatten().tolist() == [-10.0, -3.0, 0.0, -10.0, 0.0]
    # Clipped below and above: zero; inside and exactly at a bound: unchanged.
    assert clipped_grad[0].tolist() == [[0, 0], [3, 4], [0, 0], [7, 8], [9, 10]]
    assert clip_target(target, None, (-10.0, 0.0))[1] is None


def _quadratic_case():
    """A target critic and actor whose goal gradients are known in closed form (as in
    tests/test_losses.py): Q'(s, g, a) = ½ gᵀWg + (gᵀv) s + u a, π'(s, g) = tanh(gᵀp + k s)."""
    rng = np.random.default_rng(3)
    M, B, D = 2, 40, 3
    W = rng.normal(size=(M, D, D))
    W = (W + np.swapaxes(W, 1, 2)) / 2
    t = {k: torch.tensor(v) for k, v in dict(
        W=W, v=rng.normal(size=(M, D)), u=rng.normal(size=M), p=rng.normal(size=(M, D)),
        k=rng.normal(size=M), next_obs=rng.normal(size=(M, B, 1)),
        goal=rng.normal(size=(M, B, D)), reward=rng.choice([-1.0, 0.0], size=(M, B))).items()}

    def q(obs, goal, action):
        quad = 0.5 * torch.einsum("mbi,mij,mbj->mb", goal, t["W"], goal)
        return (quad + (goal * t["v"][:, None]).sum(-1) * obs[..., 0]
                + t["u"][:, None] * action[..., 0]).unsqueeze(-1)

    def pi(obs, goal):
        return torch.tanh((goal * t["p"][:, None]).sum(-1)
                          + t["k"][:, None] * obs[..., 0]).unsqueeze(-1)

    def teacher(goal):
        return t["reward"].unsqueeze(-1) + GAMMA * q(t["next_obs"], goal, pi(t["next_obs"], goal))

    return t, q, pi, teacher


def test_clipped_teacher_gradient_equals_hand_computation_and_finite_differences():
    t, q, pi, teacher = _quadratic_case()
    target, grad = td_target_and_goal_gradient(q, pi, t["next_obs"], t["goal"], t["reward"],
                                               GAMMA, True)
    # Hand-computed ∇_g T = γ (W g + v s' + u (1 − tanh²) p).
    s2 = t["next_obs"][..., 0]
    z = (t["goal"] * t["p"][:, None]).sum(-1) + t["k"][:, None] * s2
    hand = GAMMA * (torch.einsum("mij,mbj->mbi", t["W"], t["goal"])
                    + t["v"][:, None] * s2[..., None]
                    + (t["u"][:, None] * (1 - torch.tanh(z) ** 2))[..., None] * t["p"][:, None])
    torch.testing.assert_close(grad, hand, rtol=1e-12, atol=1e-12)
    low, high = (float(x) for x in torch.quantile(target.flatten(), torch.tensor(
        [0.3, 0.7], dtype=target.dtype)))
    clipped, clipped_grad = clip_target(target, grad, (low, high))
    outside = ((target < low) | (target > high)).expand_as(grad)
    assert outside[..., 0].sum() >= 20 and (~outside[..., 0]).sum() >= 20  # both kinds
    torch.testing.assert_close(clipped_grad, torch.where(outside, 0.0, hand))
    # Finite differences of the clipped teacher, coordinate by coordinate.
    h = 1e-6
    for i in range(grad.shape[-1]):
        step = torch.zeros_like(t["goal"])
        step[..., i] = h
        up = teacher(t["goal"] + step).clamp(low, high)
        down = teacher(t["goal"] - step).clamp(low, high)
        torch.testing.assert_close(clipped_grad[..., i:i + 1], (up - down) / (2 * h),
                                   rtol=1e-5, atol=1e-6)


MEMBERS, BATCH, OBS, GOAL, ACTION = 2, 32, 5, 3, 2


def _learner(c=0.5, hand=True, **config):
    generators = [torch.Generator().manual_seed(20 + m) for m in range(MEMBERS)]
    learner = DDPG(MEMBERS, OBS, GOAL, ACTION,
                   DDPGConfig(goal_gradient_coef=c, hidden=(16, 16), hand_gradients=hand,
                              compile=False, **config), generators).double()
    with torch.no_grad():  # targets unlike the online networks, as after some training
        for p in [*learner.actor_target.parameters(), *learner.critic_target.parameters()]:
            p.add_(0.3 * torch.randn(p.shape, generator=generators[0], dtype=p.dtype))
    return learner


def _batch(seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)

    def x(k):
        return torch.randn(MEMBERS, BATCH, k, generator=g, dtype=torch.float64) * scale

    return dict(obs=x(OBS), action=x(ACTION).clamp(-1, 1), next_obs=x(OBS), goal=x(GOAL),
                reward=-(torch.rand(MEMBERS, BATCH, generator=g) < 0.7).double())


@pytest.mark.parametrize("hand", [True, False])
def test_a_wholly_clipped_target_leaves_a_zero_teacher_gradient_in_the_update(hand):
    """Every target lies below the range (100, 200), so the teacher's gradient is zero and
    the goal-gradient term is the student's own squared gradient: a learner that clamped
    only the value would report the difference to the unclipped teacher's gradient."""
    learner, b = _learner(hand=hand, target_clip=(100.0, 200.0)), _batch(1)
    _, dq_dg = q_and_goal_gradient(learner.critic, b["obs"], b["goal"], b["action"])
    _, unclipped = td_target_and_goal_gradient(learner.critic_target, learner.actor_target,
                                               b["next_obs"], b["goal"], b["reward"], 0.95, True)
    expected = goal_gradient_loss(dq_dg, torch.zeros_like(dq_dg), b["reward"]).detach()
    stale = goal_gradient_loss(dq_dg, unclipped, b["reward"]).detach()
    assert (expected - stale).abs().min() > 1e-4  # the two readings differ
    out = learner.update(**b)
    torch.testing.assert_close(out["goal_grad_loss"], expected, rtol=1e-10, atol=1e-12)


def test_without_a_goal_gradient_term_the_clip_changes_nothing_but_the_value():
    """DDPG (c = 0) with a target clip updates as before the gradient fix: the fix only
    touches the teacher's goal gradient, which DDPG does not compute."""
    learner, b = _learner(c=0.0, target_clip=(-1.0, 0.0)), _batch(2)
    with torch.no_grad():
        target, _ = td_target_and_goal_gradient(learner.critic_target, learner.actor_target,
                                                b["next_obs"], b["goal"], b["reward"], 0.95,
                                                False)
        q = learner.critic(b["obs"], b["goal"], b["action"])
    assert ((target < -1) | (target > 0)).any()
    out = learner.update(**b)
    torch.testing.assert_close(out["critic_loss"],
                               (q - target.clamp(-1, 0)).pow(2).mean(dim=(1, 2)))


# -- the normaliser in front of the networks --------------------------------------------------
def _normalised_learner(normalized_goal_gradient=False, **config):
    learner = _learner(normalize_inputs=True, normalized_goal_gradient=normalized_goal_gradient,
                       **config)
    g = torch.Generator().manual_seed(5)
    # Statistics from wide data, so that goals far out are clipped at ±5 and others not.
    learner.update_normalizer(torch.randn(MEMBERS, 500, OBS, generator=g).double() * 2 + 1,
                              torch.randn(MEMBERS, 500, GOAL, generator=g).double() * 0.3 - 0.5)
    return learner


def _through_normalizer(learner, net):
    """The network seen from the raw inputs, with autograd through the normaliser: what
    Baselines' graph differentiates (its goal placeholder is the raw goal)."""
    def raw(obs, goal, *rest):
        return net(learner.state_normalizer(obs), learner.goal_normalizer(goal), *rest)
    return raw


@pytest.mark.parametrize("hand", [True, False])
@pytest.mark.parametrize("normalized", [False, True])
def test_goal_gradients_are_taken_through_the_normaliser(normalized, hand):
    learner = _normalised_learner(normalized, hand=hand, target_clip=(-2.0, 0.0))
    b = _batch(3, scale=2.0)
    goal_normalizer = learner.goal_normalizer
    clipped = (goal_normalizer(b["goal"]).abs() == 5.0)
    assert clipped.any() and (~clipped).any()
    critic, critic_target, actor_target = (_through_normalizer(learner, net) for net in (
        learner.critic, learner.critic_target, learner.actor_target))
    _, dq_dg = q_and_goal_gradient(critic, b["obs"], b["goal"], b["action"])
    target, target_grad = td_target_and_goal_gradient(critic_target, actor_target,
                                                      b["next_obs"], b["goal"], b["reward"],
                                                      0.95, True)
    outside = (target < -2) | (target > 0)
    assert outside.any() and (~outside).any()  # some targets clipped, some not
    target_grad = torch.where(outside, 0.0, target_grad)
    assert (dq_dg[clipped] == 0).all() and (target_grad[clipped] == 0).all()
    squared = (dq_dg - target_grad).pow(2)
    if normalized:  # Normalized ReenGAGE: each coordinate's error times σ_i²
        squared = squared * goal_normalizer.std.pow(2)
    expected = (-b["reward"] * squared.mean(-1)).mean(1).detach()
    out = learner.update(**b)
    torch.testing.assert_close(out["goal_grad_loss"], expected, rtol=1e-10, atol=1e-12)
    assert expected.min() > 0


def test_the_normaliser_is_applied_to_acting_and_to_the_td_term():
    learner, b = _normalised_learner(), _batch(4)
    state_n, goal_n = learner.state_normalizer, learner.goal_normalizer
    assert not torch.allclose(state_n(b["obs"]), b["obs"])
    torch.testing.assert_close(learner.act(b["obs"], b["goal"]),
                               learner.actor(state_n(b["obs"]), goal_n(b["goal"])))
    with torch.no_grad():
        q = learner.critic(state_n(b["obs"]), goal_n(b["goal"]), b["action"])
    out = learner.update(**b)
    torch.testing.assert_close(out["q_mean"], q.mean(dim=(1, 2)))


def test_update_normalizer_needs_a_normaliser_and_normalized_weights_need_one_too():
    with pytest.raises(RuntimeError, match="no normaliser"):
        _learner().update_normalizer(torch.zeros(MEMBERS, 1, OBS), torch.zeros(MEMBERS, 1, GOAL))
    with pytest.raises(ValueError, match="needs normalize_inputs"):
        _learner(normalized_goal_gradient=True)


# -- action L2 and the target networks -------------------------------------------------------
@pytest.mark.parametrize("hand", [True, False])
def test_actor_term_and_its_gradient_carry_the_action_l2_penalty(hand):
    """With lr 0 the critic the actor step sees is the initial one, so the actor's loss and
    gradient can be recomputed beside it: −mean Q(ŝ, π(ŝ, ĝ), ĝ) + l2 · mean π² on the
    normalised inputs."""
    learner = _learner(c=0.0, hand=hand, action_l2=0.7, normalize_inputs=True, lr=0.0)
    b = _batch(5)
    learner.update_normalizer(b["obs"] * 3, b["goal"] * 3)
    obs, goal = learner.state_normalizer(b["obs"]), learner.goal_normalizer(b["goal"])
    params = list(learner.actor.parameters())
    pi = learner.actor(obs, goal)
    l2 = 0.7 * pi.pow(2).mean(dim=(1, 2))
    expected = -learner.critic(obs, goal, pi).mean(dim=(1, 2)) + l2
    expected_grads = torch.autograd.grad(expected.sum(), params)
    out = learner.update(**b)
    assert l2.min() > 1e-3  # the penalty is there to be seen
    torch.testing.assert_close(out["actor_loss"], expected.detach(), rtol=1e-10, atol=1e-12)
    for p, grad in zip(params, expected_grads, strict=True):
        torch.testing.assert_close(p.grad, grad, rtol=1e-9, atol=1e-12)


def test_targets_move_only_when_the_loop_asks_and_by_tau():
    learner, b = _learner(c=0.0, tau=0.05, target_update_every_step=False), _batch(6)
    before = [p.clone() for p in learner.critic_target.parameters()]
    learner.update(**b)
    for p, q in zip(learner.critic_target.parameters(), before, strict=True):
        assert torch.equal(p, q)
    online = [p.detach().clone() for p in learner.critic.parameters()]
    learner.update_targets()
    for p, q, o in zip(learner.critic_target.parameters(), before, online, strict=True):
        torch.testing.assert_close(p, 0.95 * q + 0.05 * o, rtol=1e-12, atol=1e-12)
        assert not torch.equal(p, q)


@pytest.mark.parametrize("hand", [True, False])
def test_simultaneous_steps_take_the_actor_gradient_from_the_critic_before_its_step(hand):
    """Baselines computes the critic's and the actor's gradients in one session run: the
    actor's step must be the one a learner whose critic did not move would take, the critic's
    the same as in the sequential order (it never reads the online actor)."""
    import copy

    b = _batch(7)
    simultaneous = _learner(hand=hand, simultaneous_steps=True)
    sequential = copy.deepcopy(simultaneous)
    sequential.config.simultaneous_steps = False
    frozen_critic = copy.deepcopy(sequential)
    frozen_critic.critic_optimizer.step = lambda: None  # its actor sees the critic as it was
    for learner in (simultaneous, sequential, frozen_critic):
        learner.update(**b)
    for p, q in zip(simultaneous.actor.parameters(), frozen_critic.actor.parameters(),
                    strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    for p, q in zip(simultaneous.critic.parameters(), sequential.critic.parameters(),
                    strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    assert not all(torch.equal(p, q) for p, q in zip(simultaneous.actor.parameters(),
                                                     sequential.actor.parameters(),
                                                     strict=True))
    assert BaselinesConfig().learner_config().simultaneous_steps


# -- the loop's settings and exploration ------------------------------------------------------
def test_the_regime_sets_baselines_learner_settings():
    cfg = BaselinesConfig(env="HandReach")
    learner = cfg.learner_config()
    assert cfg.episode_steps() == 50
    assert learner.gamma == pytest.approx(0.98)  # 1 − 1/T
    assert learner.target_clip == (pytest.approx(-50.0), 0.0)  # −1/(1−γ)
    assert learner.hidden == (256, 256, 256) and learner.lr == 1e-3
    assert learner.tau == pytest.approx(0.05)  # 1 − polyak
    assert learner.action_l2 == 1.0 and learner.normalize_inputs
    assert not learner.target_update_every_step
    assert (learner.normalizer_eps, learner.normalizer_clip,
            learner.normalizer_clip_input) == (0.01, 5.0, 200.0)
    assert learner.goal_gradient_coef == 0.0 and not learner.normalized_goal_gradient
    assert (cfg.epochs, cfg.cycles, cfg.batches, cfg.batch_size) == (50, 50, 40, 256)
    assert (cfg.random_eps, cfg.noise_eps, cfg.her_k) == (0.3, 0.2, 4)
    assert BaselinesConfig(c=1e-4, normalized_goal_gradient=True).learner_config() \
        .normalized_goal_gradient


def test_exploration_is_noise_then_clip_then_epsilon_random_actions():
    policy = np.full((20000, 3), 0.9)
    noisy = explore(policy, np.random.default_rng(0), 0.2, 0.0)
    assert noisy.max() == 1.0 and noisy.min() > -1.0
    unclipped = noisy[noisy[:, 0] < 1.0, 0]
    assert abs(np.std(explore(np.zeros((20000, 1)), np.random.default_rng(1), 0.2, 0.0))
               - 0.2) < 0.005
    assert unclipped.max() < 1.0
    mixed = explore(policy, np.random.default_rng(2), 0.0, 0.3)
    replaced = (mixed != 0.9).all(axis=1)
    assert abs(replaced.mean() - 0.3) < 0.01
    assert (mixed[~replaced] == 0.9).all()
    random_rows = mixed[replaced]
    assert random_rows.min() < -0.95 and random_rows.max() > 0.95  # uniform over [−1, 1]
    assert abs(random_rows.mean()) < 0.02


def test_c_is_the_release_grad_loss_weight():
    """The release's critic loss subtracts `w · reduce_mean(r · (∇_g target − ∇_g Q)²)`, the
    mean over batch *and* goal coordinates, with r ∈ {−1, 0}: that is `c · goal_gradient_loss`
    with c = w (so α = c/d), which BaselinesConfig passes on unchanged."""
    rng = np.random.default_rng(5)
    dq, target = (torch.tensor(rng.normal(size=(2, 30, 15))) for _ in range(2))
    reward = torch.tensor(rng.choice([-1.0, 0.0], size=(2, 30)))
    w = 1e-4
    release = [-w * float(torch.mean(reward[m][:, None] * (target[m] - dq[m]) ** 2))
               for m in range(2)]
    ours = (w * goal_gradient_loss(dq, target, reward)).tolist()
    np.testing.assert_allclose(ours, release, rtol=1e-12)
    assert BaselinesConfig(c=w).learner_config().goal_gradient_coef == w
