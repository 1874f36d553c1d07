"""Alternated A/B: the networks' ReLU as `torch.relu` against a custom autograd Function
whose backward takes the mask from a detached output, so that ReenGAGE's double backward
builds no zero gradient for the saved output (what `torch.relu`'s ThresholdBackwardBackward
does). Population-10 updates on ContinuousSeek d = 20 shapes, batch 256, 2x256 networks,
2 threads, for DDPG (c = 0) and ReenGAGE (c = 0.2). Run from the repository root:

    python results/reference/throughput/relu_ab/ab.py > results/reference/throughput/relu_ab/ab.txt
"""

import statistics
import time

import torch

import reengage.agents.ensemble as ensemble
from reengage.agents.ddpg import DDPG, DDPGConfig
from reengage.allocator import retain_freed_memory

POPULATION, DIM, BATCH, ROUNDS, CALLS = 10, 20, 256, 6, 50
torch.set_num_threads(2)
retain_freed_memory()


class MaskedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.relu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, y.detach(), 0)


def forward_with_masked_relu(self, x):
    for layer in self.layers[:-1]:
        x = MaskedReLU.apply(layer(x))
    x = self.layers[-1](x)
    return self.output_activation(x) if self.output_activation is not None else x


builtin_forward = ensemble.EnsembleMLP.forward
data = torch.Generator().manual_seed(0)


def batch():
    def x():
        return torch.rand(POPULATION, BATCH, DIM, generator=data) * 2 - 1
    return x(), x(), x(), x(), -(torch.rand(POPULATION, BATCH, generator=data) < 0.9).float()


batches = [batch() for _ in range(8)]
for c in (0.0, 0.2):
    agent = DDPG(POPULATION, DIM, DIM, DIM, DDPGConfig(goal_gradient_coef=c),
                 [torch.Generator().manual_seed(m) for m in range(POPULATION)])
    sides = {"torch.relu": builtin_forward, "MaskedReLU": forward_with_masked_relu}
    times = {name: [] for name in sides}
    for forward in sides.values():  # warm both
        ensemble.EnsembleMLP.forward = forward
        for i in range(10):
            agent.update(*batches[i % 8])
    for _ in range(ROUNDS):
        for name, forward in sides.items():
            ensemble.EnsembleMLP.forward = forward
            start = time.perf_counter()
            for i in range(CALLS):
                agent.update(*batches[i % 8])
            times[name].append((time.perf_counter() - start) / CALLS * 1e3)
    ensemble.EnsembleMLP.forward = builtin_forward
    for name, t in times.items():
        print(f"c = {c}: {name:10s} median {statistics.median(t):6.2f} ms per update, "
              f"rounds {[round(x, 2) for x in t]}")
