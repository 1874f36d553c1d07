"""PopulationAdam: Adam's rule, fused where exact per member, members independent."""

import copy

import pytest
import torch

from reengage.agents.optim import PopulationAdam, fills_fused_units

SHAPES = [(256, 256), (9, 256), (256, 20), (256, 3), (1, 256), (20,), (3,), (1,)]


def _steps(params: list[torch.Tensor], grads: list[list[torch.Tensor]], fused: bool) -> None:
    optimizer = PopulationAdam(params, lr=1e-2, fused=fused)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()


def _problem(members: int, steps: int = 20) -> tuple[list, list]:
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(members, *s, generator=generator) for s in SHAPES]
    grads = [[torch.randn(members, *s, generator=generator) for s in SHAPES]
             for _ in range(steps)]
    return params, grads


def test_only_whole_units_per_member_are_fused():
    assert fills_fused_units(torch.zeros(4, 256, 3))  # 768 floats per member
    assert fills_fused_units(torch.zeros(4, 16))
    assert not fills_fused_units(torch.zeros(4, 1, 3))
    assert not fills_fused_units(torch.zeros(4, 1, 20))
    assert fills_fused_units(torch.zeros(4, 1, 8, dtype=torch.float64))
    assert not fills_fused_units(torch.zeros(4, 256, 256).transpose(1, 2))


@pytest.mark.parametrize("threads", [1, 2])
def test_member_is_bitwise_equal_to_the_member_alone(threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        params, grads = _problem(members=7)
        population = [p.clone().requires_grad_(True) for p in params]
        _steps(population, grads, fused=True)
        for m in (0, 3, 6):
            alone = [p[m:m + 1].clone().requires_grad_(True) for p in params]
            _steps(alone, [[g[m:m + 1] for g in step] for step in grads], fused=True)
            for shape, p, q in zip(SHAPES, population, alone, strict=True):
                assert torch.equal(p.detach()[m:m + 1], q.detach()), (m, shape)
    finally:
        torch.set_num_threads(previous)


def test_fused_and_unfused_follow_the_same_rule():
    params, grads = _problem(members=3)
    fused = [p.clone().requires_grad_(True) for p in params]
    plain = [p.clone().requires_grad_(True) for p in params]
    reference = [p.clone().requires_grad_(True) for p in params]
    _steps(fused, grads, fused=True)
    _steps(plain, grads, fused=False)
    optimizer = torch.optim.Adam(reference, lr=1e-2, foreach=False)
    for step_grads in grads:
        for p, g in zip(reference, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
    for start, a, b, c in zip(params, fused, plain, reference, strict=True):
        assert not torch.equal(c, start)  # the steps moved it
        assert torch.equal(b, c)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_continues_identically():
    params, grads = _problem(members=2, steps=6)
    first = [p.clone().requires_grad_(True) for p in params]
    optimizer = PopulationAdam(first, lr=1e-2)
    for step_grads in grads[:3]:
        for p, g in zip(first, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
    second = [p.detach().clone().requires_grad_(True) for p in first]
    restored = PopulationAdam(second, lr=1e-2)
    # A deep copy, as a checkpoint is: load_state_dict keeps the tensors it is given.
    restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for step_grads in grads[3:]:
        for opt, ps in ((optimizer, first), (restored, second)):
            for p, g in zip(ps, step_grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not match"):
        PopulationAdam([torch.zeros(2, 16, requires_grad=True)], lr=1e-3).load_state_dict(
            optimizer.state_dict())
    with pytest.raises(ValueError, match="fused"):
        PopulationAdam(second, lr=1e-3, fused=False).load_state_dict(optimizer.state_dict())


def test_parameters_without_gradient_are_left_alone():
    used, unused = torch.ones(2, 16, requires_grad=True), torch.ones(2, 3, requires_grad=True)
    optimizer = PopulationAdam([used, unused], lr=0.1)
    used.grad = torch.ones(2, 16)
    optimizer.step()
    assert torch.equal(unused, torch.ones(2, 3))
    torch.testing.assert_close(used, torch.full((2, 16), 0.9))  # Adam's first step is lr
    assert optimizer.state[used]["step"] == 1 and optimizer.state[unused]["step"] == 0
    torch.testing.assert_close(optimizer.state[used]["exp_avg"], torch.full((2, 16), 0.1))
    optimizer.zero_grad()
    assert used.grad is None
