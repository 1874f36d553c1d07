"""Ensemble layers: every weight has a leading member axis, so one batched matrix product
trains a whole population of seeds (`torch.baddbmm` over members).

Inputs are `[members, batch, features]`. Member i's outputs depend on member i's weights
and inputs alone, which is what lets a population member match the same seed run alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class EnsembleLinear(nn.Module):
    """`y[m] = x[m] @ W[m] + b[m]` for every member m in one batched product."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features))

    def reset_member(self, member: int, generator: torch.Generator) -> None:
        """PyTorch's nn.Linear default initialisation, drawn from the member's own stream."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            w = torch.rand(self.in_features, self.out_features, generator=generator)
            b = torch.rand(1, self.out_features, generator=generator)
            self.weight[member].copy_(w.mul_(2 * bound).sub_(bound))
            self.bias[member].copy_(b.mul_(2 * bound).sub_(bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.out_features == 1:
            # A one-column product goes to a matrix-vector kernel whose rounding depends on
            # the number of members; a product-and-sum does not, which keeps member i
            # bitwise equal to the same seed trained alone.
            return (x * self.weight.transpose(1, 2)).sum(dim=-1, keepdim=True) + self.bias
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """ReLU MLP with a member axis; `output_activation` applies to the last layer."""

    def __init__(
        self,
        members: int,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        output_activation: nn.Module | None = None,
    ):
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(
            EnsembleLinear(members, a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.output_activation = output_activation

    def reset_member(self, member: int, generator: torch.Generator) -> None:
        for layer in self.layers:
            layer.reset_member(member, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        x = self.layers[-1](x)
        return self.output_activation(x) if self.output_activation is not None else x
