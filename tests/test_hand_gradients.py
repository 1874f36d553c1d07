"""The hand-written critic and actor steps (agents/hand_gradients.py) against autograd on the
losses as agents/losses.py and DDPG.update state them (for ReenGAGE, autograd's double
backward), and against finite differences."""

import pytest
import torch

from reengage.agents.ddpg import DDPG, DDPGConfig
from reengage.agents.hand_gradients import (
    actor_step_gradients,
    critic_step_gradients,
    target_and_goal_gradient,
)
from reengage.agents.losses import (
    goal_gradient_loss,
    q_and_goal_gradient,
    td_loss,
    td_target_and_goal_gradient,
)

MEMBERS, BATCH, OBS, ACTION = 2, 12, 3, 2


def _learner(hidden, goal_dim, hand_gradients=True, c=0.7, goal_at=None, **config):
    generators = [torch.Generator().manual_seed(10 + m) for m in range(MEMBERS)]
    learner = DDPG(MEMBERS, OBS, goal_dim, ACTION,
                   DDPGConfig(goal_gradient_coef=c, hidden=hidden,
                              hand_gradients=hand_gradients, **config), generators,
                   goal_at=goal_at).double()
    with torch.no_grad():  # targets unlike the online networks, as after some training
        for p in list(learner.actor_target.parameters()) + list(learner.critic_target.parameters()):
            p.add_(0.2 * torch.randn(p.shape, generator=generators[0], dtype=p.dtype))
    return learner


def _batch(goal_dim, seed=0):
    g = torch.Generator().manual_seed(seed)

    def x(k):
        return torch.randn(MEMBERS, BATCH, k, generator=g, dtype=torch.float64)

    return dict(obs=x(OBS), action=x(ACTION).clamp(-1, 1), next_obs=x(OBS), goal=x(goal_dim),
                reward=-(torch.rand(MEMBERS, BATCH, generator=g) < 0.7).double())


CASES = [((16, 16), 3), ((8, 7, 6), 1), ((5,), 4)]
# Where the goal enters the input (agents/inputs.py): after the state (the `obs_goal`
# layout), inside it (as `sb3` puts it after the achieved goal), or first.
GOAL_AT = [None, 2, 0]


@pytest.mark.parametrize("hidden,goal_dim", CASES)
@pytest.mark.parametrize("goal_at", GOAL_AT)
def test_target_and_its_goal_gradient_equal_autograds(goal_at, hidden, goal_dim):
    learner, b = _learner(hidden, goal_dim, goal_at=goal_at), _batch(goal_dim)
    expected = td_target_and_goal_gradient(learner.critic_target, learner.actor_target,
                                           b["next_obs"], b["goal"], b["reward"], 0.9, True)
    got = target_and_goal_gradient(learner.critic_target.net, learner.actor_target.net,
                                   b["next_obs"], b["goal"], b["reward"], 0.9, goal_at)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert got[1].abs().max() > 1e-3  # a gradient that is there to compare


def _autograd_critic_gradients(learner, b, target, target_dq_dg, c):
    q, dq_dg = q_and_goal_gradient(learner.critic, b["obs"], b["goal"], b["action"])
    value, term = td_loss(q, target), goal_gradient_loss(dq_dg, target_dq_dg, b["reward"])
    params = list(learner.critic.parameters())
    return q, value, term, torch.autograd.grad((value + c * term).sum(), params)


@pytest.mark.parametrize("hidden,goal_dim", CASES)
@pytest.mark.parametrize("goal_at", GOAL_AT)
def test_critic_step_gradients_equal_autograds_double_backward(goal_at, hidden, goal_dim):
    learner, b = _learner(hidden, goal_dim, goal_at=goal_at), _batch(goal_dim, seed=1)
    target, target_dq_dg = td_target_and_goal_gradient(
        learner.critic_target, learner.actor_target, b["next_obs"], b["goal"], b["reward"],
        0.95, True)
    q, value, term, expected = _autograd_critic_gradients(learner, b, target, target_dq_dg, 0.7)
    assert term.min() > 0  # the goal-gradient term is active for every member
    got = critic_step_gradients(learner.critic.net, b["obs"], b["goal"], b["action"], target,
                                target_dq_dg, b["reward"], 0.7, goal_at)
    for e, g in zip((q, value, term), got, strict=True):
        torch.testing.assert_close(g, e.detach(), rtol=1e-12, atol=1e-12)
    for p, e in zip(learner.critic.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hidden,goal_dim", CASES)
@pytest.mark.parametrize("goal_at", GOAL_AT)
def test_ddpg_critic_step_gradients_equal_autograds(goal_at, hidden, goal_dim):
    """Without the goal-gradient term (c = 0) the step is the TD loss's ordinary backward."""
    learner = _learner(hidden, goal_dim, c=0.0, goal_at=goal_at)
    b = _batch(goal_dim, seed=3)
    target = torch.randn(MEMBERS, BATCH, 1, dtype=torch.float64)
    q = learner.critic(b["obs"], b["goal"], b["action"])
    value = td_loss(q, target)
    expected = torch.autograd.grad(value.sum(), list(learner.critic.parameters()))
    got = critic_step_gradients(learner.critic.net, b["obs"], b["goal"], b["action"], target,
                                None, b["reward"], 0.0, goal_at)
    for e, g in zip((q, value, torch.zeros(MEMBERS)), got, strict=True):
        torch.testing.assert_close(g, e.detach().to(g.dtype), rtol=1e-12, atol=1e-12)
    for p, e in zip(learner.critic.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="goal gradient"):
        critic_step_gradients(learner.critic.net, b["obs"], b["goal"], b["action"], target,
                              None, b["reward"], 0.7)


@pytest.mark.parametrize("action_l2", [0.0, 0.5])
@pytest.mark.parametrize("hidden,goal_dim", CASES)
@pytest.mark.parametrize("goal_at", GOAL_AT)
def test_actor_step_gradients_equal_autograds(goal_at, hidden, goal_dim, action_l2):
    learner, b = _learner(hidden, goal_dim, goal_at=goal_at), _batch(goal_dim, seed=4)
    pi = learner.actor(b["obs"], b["goal"])
    expected_term = (-learner.critic(b["obs"], b["goal"], pi).mean(dim=(1, 2))
                     + action_l2 * pi.pow(2).mean(dim=(1, 2)))
    expected = torch.autograd.grad(expected_term.sum(), list(learner.actor.parameters()))
    term = actor_step_gradients(learner.actor.net, learner.critic.net, b["obs"], b["goal"],
                                action_l2, goal_at)
    torch.testing.assert_close(term, expected_term.detach(), rtol=1e-12, atol=1e-12)
    for p, e in zip(learner.actor.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in learner.critic.parameters())  # the critic gets none


def _assert_gradients_match_finite_differences(net, loss):
    """`loss()` sets `net`'s `.grad` and returns the loss; central differences of the loss
    in about 7 entries of every parameter must equal those gradients."""
    loss()
    analytic = {name: p.grad.clone() for name, p in net.named_parameters()}
    eps = 1e-6
    checked = 0
    for name, p in net.named_parameters():
        flat = p.data.view(-1)
        for index in range(0, flat.numel(), max(1, flat.numel() // 7)):
            original = float(flat[index])
            flat[index] = original + eps
            up = loss()
            flat[index] = original - eps
            down = loss()
            flat[index] = original
            numeric = (up - down) / (2 * eps)
            assert analytic[name].view(-1)[index].item() == pytest.approx(numeric, rel=1e-5,
                                                                         abs=1e-7), name
            checked += 1
    assert checked > 30


@pytest.mark.parametrize("goal_at", [None, 2])
def test_actor_step_gradients_match_finite_differences(goal_at):
    learner, b = _learner((6, 5), 2, goal_at=goal_at), _batch(2, seed=5)
    net = learner.actor.net

    def loss():
        term = actor_step_gradients(net, learner.critic.net, b["obs"], b["goal"], 0.3, goal_at)
        return float(term.sum())

    _assert_gradients_match_finite_differences(net, loss)


@pytest.mark.parametrize("goal_at", [None, 2])
def test_critic_step_gradients_match_finite_differences(goal_at):
    learner, b = _learner((6, 5), 2, goal_at=goal_at), _batch(2, seed=2)
    target = torch.randn(MEMBERS, BATCH, 1, dtype=torch.float64)
    target_dq_dg = torch.randn(MEMBERS, BATCH, 2, dtype=torch.float64)
    net = learner.critic.net

    def loss():
        _, value, term = critic_step_gradients(net, b["obs"], b["goal"], b["action"], target,
                                               target_dq_dg, b["reward"], 0.7, goal_at)
        return float((value + 0.7 * term).sum())

    _assert_gradients_match_finite_differences(net, loss)


@pytest.mark.parametrize("goal_at", [None, 2])
@pytest.mark.parametrize("c", [0.0, 0.7])
def test_update_with_hand_gradients_matches_the_autograd_update(c, goal_at, monkeypatch):
    config = dict(target_clip=(-5.0, 0.0), action_l2=0.5)
    by_hand = _learner((16, 16), 3, hand_gradients=True, c=c, goal_at=goal_at, **config)
    # The path is chosen at construction, so the autograd learner is built as one (same
    # seeds, hence the same weights) rather than copied and edited.
    by_autograd = _learner((16, 16), 3, hand_gradients=False, c=c, goal_at=goal_at, **config)
    for mine, theirs in zip(by_hand.parameters(), by_autograd.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    # Spies prove each learner ran its own path: the closed form once per update for one,
    # never for the other (which must then have taken autograd's).
    calls = {"hand": 0}
    for learner in (by_hand, by_autograd):
        step = learner._critic_step

        def spy(*args, _step=step, **kwargs):
            calls["hand"] += 1
            return _step(*args, **kwargs)

        monkeypatch.setattr(learner, "_critic_step", spy)
    for step in range(2):
        b = _batch(3, seed=10 + step)
        before = calls["hand"]
        out_hand = by_hand.update(**b)
        assert calls["hand"] == before + 1
        out_auto = by_autograd.update(**b)
        assert calls["hand"] == before + 1
        for key in out_auto:
            torch.testing.assert_close(out_hand[key], out_auto[key], rtol=1e-10, atol=1e-12)
    # Adam's first moments are linear in the gradients, so they compare the gradients seen.
    hand_states = [*by_hand.critic_optimizer.state.values(),
                   *by_hand.actor_optimizer.state.values()]
    auto_states = [*by_autograd.critic_optimizer.state.values(),
                   *by_autograd.actor_optimizer.state.values()]
    assert len(hand_states) == 2 * len(by_hand.critic.net.layers) * 2
    for hand_state, auto_state in zip(hand_states, auto_states, strict=True):
        torch.testing.assert_close(hand_state["exp_avg"], auto_state["exp_avg"],
                                   rtol=1e-9, atol=1e-12)


def test_a_critic_without_hidden_layers_uses_autograd():
    learner = _learner((), 2)
    out = learner.update(**_batch(2))
    assert torch.isfinite(out["goal_grad_loss"]).all()
    with pytest.raises(ValueError, match="hidden layer"):
        critic_step_gradients(learner.critic.net, *(torch.zeros(MEMBERS, BATCH, k)
                                                    for k in (OBS, 2, ACTION)),
                              torch.zeros(MEMBERS, BATCH, 1), torch.zeros(MEMBERS, BATCH, 2),
                              torch.zeros(MEMBERS, BATCH), 0.7)


@pytest.mark.parametrize("sb3_inputs", [True, False])
@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("c", [0.0, 0.3])
@pytest.mark.parametrize("goal_dim", [1, 3])
def test_population_member_update_equals_the_seed_alone_bitwise(goal_dim, c, compiled,
                                                                 sb3_inputs):
    """With a one-dimensional goal some products of the closed form have a single row or a
    single inner term; a member must still round exactly as it does alone (float32). The
    networks' input widths are 16 (actor) and 18 (critic): at some small widths (6, 8 or
    10, say) the BLAS weight-gradient product `xᵀ·grad` of the first layer rounds
    differently with the number of members, in the autograd path as much as in this one.
    `sb3_inputs` puts the goal after a leading achieved goal of the state, as `inputs: sb3`
    does (same widths)."""
    members, batch, action_dim = 5, 64, 2
    obs_dim = 16 - goal_dim

    def population(seeds):
        return DDPG(len(seeds), obs_dim, goal_dim, action_dim,
                    DDPGConfig(goal_gradient_coef=c, hidden=(16, 16), compile=compiled),
                    [torch.Generator().manual_seed(s) for s in seeds],
                    goal_at=goal_dim if sb3_inputs else None)

    together, alone = population(range(members)), population([2])
    g = torch.Generator().manual_seed(9)
    batch_data = dict(
        obs=torch.randn(members, batch, obs_dim, generator=g),
        action=torch.rand(members, batch, action_dim, generator=g) * 2 - 1,
        next_obs=torch.randn(members, batch, obs_dim, generator=g),
        goal=torch.randn(members, batch, goal_dim, generator=g),
        reward=-(torch.rand(members, batch, generator=g) < 0.7).float())
    for _ in range(2):
        out_together = together.update(**batch_data)
        out_alone = alone.update(**{k: v[2:3] for k, v in batch_data.items()})
        for key in out_alone:
            assert torch.equal(out_together[key][2:3], out_alone[key]), key
    for p, q in zip(together.parameters(), alone.parameters(), strict=True):
        assert torch.equal(p[2:3], q)
        if q.grad is not None:
            assert torch.equal(p.grad[2:3], q.grad)


def test_the_goal_gradient_is_taken_with_respect_to_the_desired_goal_alone():
    """Under `inputs: sb3` on ContinuousSeek the state leads with the achieved goal, equal in
    value to the observation and of the goal's size: ∇_g must be the desired goal's columns,
    not the achieved goal's (which the same values sit in)."""
    goal_dim = 3
    learner = DDPG(MEMBERS, 2 * goal_dim, goal_dim, ACTION,
                   DDPGConfig(goal_gradient_coef=0.7, hidden=(16, 16)),
                   [torch.Generator().manual_seed(m) for m in range(MEMBERS)],
                   goal_at=goal_dim).double()
    g = torch.Generator().manual_seed(3)
    position = torch.randn(MEMBERS, BATCH, goal_dim, generator=g, dtype=torch.float64)
    state = torch.cat([position, position], dim=-1)  # (achieved goal, observation)
    goal = torch.randn(MEMBERS, BATCH, goal_dim, generator=g, dtype=torch.float64)
    reward = -torch.ones(MEMBERS, BATCH, dtype=torch.float64)
    _, dq_dg = target_and_goal_gradient(learner.critic_target.net, learner.actor_target.net,
                                        state, goal, reward, 1.0, goal_at=goal_dim)

    def target(achieved, desired):
        s = torch.cat([achieved, position], dim=-1)
        return learner.critic_target(s, desired, learner.actor_target(s, desired)).sum()

    by_desired, by_achieved = torch.autograd.functional.jacobian(target, (position, goal))[::-1]
    torch.testing.assert_close(dq_dg, by_desired, rtol=1e-12, atol=1e-12)
    assert (dq_dg - by_achieved).abs().max() > 1e-3  # the two columns really differ
