"""Packed grids at the learner level: one DDPG population whose members differ in learning
rate and ReenGAGE's c. What is proven: member i of a packed population is bitwise equal
(weights, target weights, diagnostics) to the same seed trained in a population of its own
with scalar lr = lr_i and c = c_i, on every path the update takes on the toy tasks (closed
form eager and compiled, autograd) and in PopulationAdam alone; that both the packed and the
all-equal optimiser paths run; that lr and c really act per member; and that the
combinations the learner cannot keep exact are refused."""

import copy
import warnings

import pytest
import torch

from reengage.agents import hand_gradients
from reengage.agents.ddpg import DDPG, DDPGConfig
from reengage.agents.optim import PopulationAdam, fills_fused_units
from reengage.registry import LearnerSpec, build_ddpg

LRS = (1e-3, 3e-3, 1e-3)
CS = (0.1, 0.3, 0.2)
# Per member: 64 numbers (whole fused units), 20 (a unit and a ragged end), 3 and 1 (an
# output bias: less than one unit).
SHAPES = [(16, 4), (20,), (3,), (1,)]


def _adam_problem(members, steps=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(members, *s, generator=g) for s in SHAPES]
    grads = [[torch.randn(members, *s, generator=g) for s in SHAPES] for _ in range(steps)]
    return params, grads


def _run_adam(params, grads, lr, fused=True):
    params = [p.clone().requires_grad_(True) for p in params]
    optimizer = PopulationAdam(params, lr, fused=fused)
    for step_grads in grads:
        for p, grad in zip(params, step_grads, strict=True):
            p.grad = grad.clone()
        optimizer.step()
    return [p.detach() for p in params], optimizer


class _KernelCalls:
    """Records, for every `torch._fused_adam_` call, its rate and its parameter tensors."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[float, list[torch.Tensor]]] = []
        kernel = torch._fused_adam_

        def spy(params, *args, lr, **kwargs):
            self.calls.append((lr, list(params)))
            return kernel(params, *args, lr=lr, **kwargs)

        monkeypatch.setattr(torch, "_fused_adam_", spy)


@pytest.mark.parametrize("threads", [1, 2])
def test_adam_member_with_its_own_rate_equals_the_member_alone_bitwise(threads, monkeypatch):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert fills_fused_units(torch.zeros(3, *SHAPES[0]))
        assert not any(fills_fused_units(torch.zeros(3, *s)) for s in SHAPES[1:])
        params, grads = _adam_problem(members=3)
        kernel = _KernelCalls(monkeypatch)
        packed, optimizer = _run_adam(params, grads, list(LRS))
        assert optimizer.member_lrs == LRS and optimizer.lr is None
        # The packed path: one call per distinct rate and step, each over the per-member
        # views of the members that have the rate (members 0 and 2 share 1e-3).
        assert [lr for lr, _ in kernel.calls] == [1e-3, 3e-3] * len(grads)
        for lr, tensors in kernel.calls:
            count = 2 if lr == 1e-3 else 1
            assert [t.shape for t in tensors] == [s for s in SHAPES for _ in range(count)]
        for m, lr in enumerate(LRS):
            kernel.calls.clear()
            alone, _ = _run_adam([p[m:m + 1] for p in params],
                                 [[g[m:m + 1] for g in step] for step in grads], lr)
            # Alone, the unpacked path: one call, the unit-filling parameter whole.
            assert len(kernel.calls) == len(grads)
            assert kernel.calls[0][1][0].shape == (1, *SHAPES[0])
            for shape, p, q in zip(SHAPES, packed, alone, strict=True):
                assert torch.equal(p[m:m + 1], q), (m, shape)
    finally:
        torch.set_num_threads(previous)


def test_adam_rates_act_per_member():
    """Members with the same start and gradients end where their rates take them: 0 and 2
    (equal rates) together, 1 apart."""
    params, grads = _adam_problem(members=1)
    same = [p.expand(3, *p.shape[1:]).contiguous() for p in params]
    same_grads = [[g.expand(3, *g.shape[1:]).contiguous() for g in step] for step in grads]
    packed, _ = _run_adam(same, same_grads, LRS)
    for p in packed:
        assert torch.equal(p[0], p[2])
        assert not torch.equal(p[0], p[1])


def test_adam_with_equal_per_member_rates_keeps_the_single_rate_path(monkeypatch):
    params, grads = _adam_problem(members=3)
    kernel = _KernelCalls(monkeypatch)
    by_sequence, optimizer = _run_adam(params, grads, [2e-3] * 3)
    assert optimizer.lr == 2e-3 and optimizer.member_lrs == (2e-3,) * 3
    assert len(kernel.calls) == len(grads)  # one call per step, the big parameter whole
    assert kernel.calls[0][1][0].shape == (3, *SHAPES[0])
    by_float, optimizer = _run_adam(params, grads, 2e-3)
    assert optimizer.member_lrs == (2e-3,) * 3
    for p, q in zip(by_sequence, by_float, strict=True):
        assert torch.equal(p, q)
    _, optimizer = _run_adam(params, grads, (2e-3,) * 3, fused=False)
    assert optimizer.lr == 2e-3


def test_adam_refuses_rates_it_cannot_apply():
    params = [torch.zeros(3, 4, requires_grad=True)]
    with pytest.raises(ValueError, match="unfused path .* has one learning rate"):
        PopulationAdam(params, LRS, fused=False)
    with pytest.raises(ValueError, match="2 per-member learning rates"):
        PopulationAdam(params, LRS[:2])
    with pytest.raises(ValueError, match="positive"):
        PopulationAdam(params, (1e-3, 0.0, 1e-3))


def test_adam_packed_state_dict_round_trip_continues_identically():
    params, grads = _adam_problem(members=3, steps=6)

    def step(optimizer, ps, step_grads):
        for p, g in zip(ps, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()

    first = [p.clone().requires_grad_(True) for p in params]
    optimizer = PopulationAdam(first, LRS)
    for step_grads in grads[:3]:
        step(optimizer, first, step_grads)
    second = [p.detach().clone().requires_grad_(True) for p in first]
    restored = PopulationAdam(second, LRS)
    restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    # The format is the single-rate one: a single-rate optimiser reads it.
    PopulationAdam([p.clone() for p in second], 1e-3).load_state_dict(optimizer.state_dict())
    for step_grads in grads[3:]:
        step(optimizer, first, step_grads)
        step(restored, second, step_grads)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_a_float32_tensor_times_a_python_float_rounds_the_float_to_float32_first():
    """The premise of per-member c: multiplying by the Python float equals multiplying by
    that float rounded once to float32, which `hand_gradients.member_weights` (and a float32
    tensor of c) hold; computing in float64 and rounding the product would not be."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4096, generator=g) * 10
    cs = [0.1, 0.3, 0.2, 1 / 3, 0.7, 0.123456789, 2.5]
    weights = hand_gradients.member_weights(cs, 3, 16, torch.float32)
    assert weights.shape == (len(cs), 1, 1)
    in_float64 = 0
    for c, weight in zip(cs, weights.flatten(), strict=True):
        factor = 2.0 * c / (3 * 16)
        assert torch.equal(x * factor, x * weight)
        assert torch.equal(x * c, x * torch.tensor(c, dtype=torch.float32))
        in_float64 += int(((x.double() * factor).float() != x * factor).sum())
    assert in_float64 > 0


# DDPG: small networks, the `sb3` layout (state = achieved goal then observation, the goal
# entering after the achieved goal).
OBS, GOAL, ACTION, BATCH, GOAL_AT, UPDATES = 6, 3, 2, 16, 3, 5
PATHS = {"closed_form": dict(hand_gradients=True, compile=False),
         "compiled": dict(hand_gradients=True, compile=True),
         "autograd": dict(hand_gradients=False, compile=False)}


def _ddpg(seeds, lr=1e-3, c=0.0, path="closed_form", member_lrs=None, member_cs=None,
          **config):
    learner = DDPG(len(seeds), OBS, GOAL, ACTION,
                   DDPGConfig(lr=lr, goal_gradient_coef=c, hidden=(32, 32), **PATHS[path],
                              **config),
                   [torch.Generator().manual_seed(s) for s in seeds], goal_at=GOAL_AT,
                   member_lrs=member_lrs, member_cs=member_cs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a compiled fall-back to eager warns
        learner.prepare(BATCH)
    return learner


def _batches(members, seed=7):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(UPDATES):
        position = torch.randn(members, BATCH, GOAL, generator=g)
        next_position = torch.randn(members, BATCH, GOAL, generator=g)
        out.append(dict(
            obs=torch.cat([position, position], dim=-1),
            action=torch.rand(members, BATCH, ACTION, generator=g) * 2 - 1,
            next_obs=torch.cat([next_position, next_position], dim=-1),
            goal=torch.randn(members, BATCH, GOAL, generator=g),
            reward=-(torch.rand(members, BATCH, generator=g) < 0.7).float()))
    return out


def _train(learner, batches):
    return [{k: v.clone() for k, v in learner.update(**b).items()} for b in batches]


def _assert_members_equal_alone(packed, alones, batches):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a compiled fall-back to eager warns
        packed_out = _train(packed, batches)
        for m, alone in enumerate(alones):
            alone_out = _train(alone, [{k: v[m:m + 1] for k, v in b.items()} for b in batches])
            for step, (together, by_itself) in enumerate(zip(packed_out, alone_out,
                                                             strict=True)):
                for key in by_itself:
                    assert torch.equal(together[key][m:m + 1], by_itself[key]), (m, step, key)
            for (name, p), q in zip(packed.named_parameters(), alone.parameters(), strict=True):
                assert torch.equal(p[m:m + 1], q), (m, name)
            for p, q in zip(packed.actor_target.parameters(), alone.actor_target.parameters(),
                            strict=True):
                assert torch.equal(p[m:m + 1], q), m
            for p, q in zip(packed.critic_target.parameters(),
                            alone.critic_target.parameters(), strict=True):
                assert torch.equal(p[m:m + 1], q), m
    return packed_out


@pytest.mark.parametrize("path", [
    "closed_form", pytest.param("compiled", marks=pytest.mark.slow), "autograd"])
def test_packed_reengage_member_equals_its_cell_alone_bitwise(path, monkeypatch):
    packed = _ddpg(range(3), path=path, member_lrs=LRS, member_cs=CS)
    assert packed.member_lrs == LRS and packed.member_cs == CS and packed.use_goal_gradient
    assert packed.critic_optimizer.member_lrs == LRS
    alones = [_ddpg([m], lr=LRS[m], c=CS[m], path=path) for m in range(3)]
    # The closed form runs on its paths and not on autograd's.
    calls = {"hand": 0}
    step = packed._critic_step

    def spy(*args):
        calls["hand"] += 1
        return step(*args)

    monkeypatch.setattr(packed, "_critic_step", spy)
    out = _assert_members_equal_alone(packed, alones, _batches(3))
    assert calls["hand"] == (0 if path == "autograd" else UPDATES)
    assert (out[-1]["goal_grad_loss"] > 0).all()


@pytest.mark.parametrize("path", ["closed_form", "autograd"])
def test_packed_ddpg_members_with_their_own_rates_equal_their_cells_alone(path):
    packed = _ddpg(range(3), path=path, c=0.5, member_lrs=LRS, member_cs=(0.0,) * 3)
    assert not packed.use_goal_gradient
    alones = [_ddpg([m], lr=LRS[m], path=path) for m in range(3)]
    out = _assert_members_equal_alone(packed, alones, _batches(3))
    assert (out[-1]["goal_grad_loss"] == 0).all()


def test_per_member_c_reaches_the_update():
    """Same seed and data for every member: the members with equal c (0 and 2) stay equal,
    the one with its own c does not, and neither does a population that ignored c."""
    for path in ("closed_form", "autograd"):
        learner = _ddpg([0, 0, 0], path=path, member_cs=(0.1, 0.9, 0.1))
        ignored = _ddpg([0, 0, 0], path=path, c=0.1)
        batches = [{k: v[:1].expand(3, *v.shape[1:]).contiguous() for k, v in b.items()}
                   for b in _batches(1)]
        _train(learner, batches)
        _train(ignored, batches)
        for p, q in zip(learner.critic.parameters(), ignored.critic.parameters(), strict=True):
            assert torch.equal(p[0], p[2]) and torch.equal(p[0], q[0])
        assert any(not torch.equal(p[0], p[1]) for p in learner.critic.parameters()), path


def test_packed_members_equal_their_cells_alone_through_the_input_normaliser():
    """The robotics setting (normaliser, Normalized ReenGAGE) takes per-member c through its
    autograd critic step."""
    config = dict(normalize_inputs=True, normalized_goal_gradient=True)
    packed = _ddpg(range(3), member_lrs=LRS, member_cs=CS, **config)
    alones = [_ddpg([m], lr=LRS[m], c=CS[m], **config) for m in range(3)]
    g = torch.Generator().manual_seed(3)
    state, goal = torch.randn(3, 40, OBS, generator=g) * 2, torch.randn(3, 40, GOAL, generator=g)
    packed.update_normalizer(state, goal)
    for m, alone in enumerate(alones):
        alone.update_normalizer(state[m:m + 1], goal[m:m + 1])
    _assert_members_equal_alone(packed, alones, _batches(3))


def test_build_ddpg_passes_a_packed_spec_to_the_learner():
    spec = LearnerSpec(members=3, obs_dim=OBS, goal_dim=GOAL, action_dim=ACTION, lr=1e-3,
                       gamma=0.95, tau=0.005, c=None,
                       generators=[torch.Generator().manual_seed(m) for m in range(3)],
                       extra=dict(hidden=(32, 32), compile=False), goal_at=GOAL_AT,
                       member_lrs=LRS, member_cs=CS)
    learner = build_ddpg(spec)
    assert learner.member_lrs == LRS and learner.member_cs == CS
    assert learner.actor_optimizer.member_lrs == LRS
    plain = build_ddpg(LearnerSpec(**{**spec.__dict__, "member_lrs": None, "member_cs": None}))
    assert plain.member_lrs == (1e-3,) * 3 and plain.member_cs == (0.0,) * 3


def test_packs_the_learner_cannot_keep_exact_are_refused():
    def build(**kwargs):
        return DDPG(3, OBS, GOAL, ACTION, DDPGConfig(hidden=(32, 32), compile=False,
                                                      **kwargs.pop("config", {})),
                    [torch.Generator().manual_seed(m) for m in range(3)], **kwargs)

    with pytest.raises(ValueError, match=r"pack DDPG members \(c = 0\) apart from ReenGAGE "
                                         r"members.*double backward.*bitwise equal to DDPG"):
        build(member_cs=(0.0, 0.3, 0.2))
    with pytest.raises(ValueError, match="member_lrs needs one value per member"):
        build(member_lrs=LRS[:2])
    with pytest.raises(ValueError, match="member_cs needs one value per member"):
        build(member_cs=CS + (0.4,))
    with pytest.raises(ValueError, match="member_lrs must be finite and > 0"):
        build(member_lrs=(1e-3, -1e-3, 1e-3))
    with pytest.raises(ValueError, match="member_cs must be finite and ≥ 0"):
        build(member_cs=(0.1, -0.3, 0.2))
    with pytest.raises(ValueError, match="need fused_adam"):
        build(member_lrs=LRS, config=dict(fused_adam=False))
    build(member_lrs=(1e-3,) * 3, config=dict(fused_adam=False))  # one rate: fine unfused
