"""Ensemble layers: member i of a population computes exactly what it computes alone."""

import pytest
import torch

from reengage.agents.ensemble import EnsembleMLP


@pytest.mark.parametrize("out_features", [1, 3, 20])
def test_member_output_and_gradients_bitwise_equal_alone(out_features):
    torch.set_num_threads(1)
    generators = [torch.Generator().manual_seed(s) for s in (0, 1, 2)]
    together = EnsembleMLP(3, 9, (256, 256), out_features)
    alone = EnsembleMLP(1, 9, (256, 256), out_features)
    for m, g in enumerate(generators):
        together.reset_member(m, g)
    alone.reset_member(0, torch.Generator().manual_seed(1))
    x = torch.randn(3, 64, 9)
    y, y1 = together(x), alone(x[1:2])
    assert torch.equal(y[1], y1[0])
    y.pow(2).sum().backward()
    y1.pow(2).sum().backward()
    for p, p1 in zip(together.parameters(), alone.parameters(), strict=True):
        assert torch.equal(p.grad[1], p1.grad[0])


def test_members_initialised_from_their_own_generator():
    net = EnsembleMLP(2, 4, (8,), 2)
    net.reset_member(0, torch.Generator().manual_seed(7))
    net.reset_member(1, torch.Generator().manual_seed(7))
    first = net.layers[0].weight
    assert torch.equal(first[0], first[1])
    net.reset_member(1, torch.Generator().manual_seed(8))
    assert not torch.equal(first[0], first[1])
