"""Per-member random streams that live on the device and need no generator object.

Draw `j` of member `m` for purpose `p` at counter `c` is output number `c·2^32 + j` of
SplitMix64 seeded with `key[m, p]`: SplitMix64 is itself counter-based (its state `i` is
`seed + i·γ`, its output the mixing function of that state), so any output is one mix of
one product away, and the blocks of 2^32 outputs that different counters own never overlap.
Why not one `torch.Generator` per member:

* A population draws for all members in one kernel instead of one launch per member and
  draw (1000 members × 4 draws a step would be 4000 launches).
* Nothing is consumed, so a draw needs no state to advance: the counters are the step,
  episode and update counts the loop keeps anyway, as device tensors. A CUDA graph
  replays the same kernels with the counters it finds, so no generator has to be
  registered with the graph (`CUDAGraph.register_generator_state`) and no Philox offset
  has to be threaded through the capture.
* Member m's numbers depend on its seed alone, whatever the population, and integer
  arithmetic makes them the same bits on the CPU and on CUDA.

Arithmetic is on int64 tensors: multiplication and addition wrap modulo 2^64 as the
unsigned algorithm needs; right shifts are arithmetic in torch, so they are masked to be
logical. `splitmix64` of agents/noise.py is the reference the tests compare against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

GOALS, EXPLORATION, REPLAY, EVALUATION, MOTION, EVALUATION_MOTION = range(6)
"""Purposes: each member has one independent key per purpose. MOTION and
EVALUATION_MOTION are a noisy task's motion noise in training and in evaluation episodes.
SeedSequence states are prefix-stable, so adding purposes kept the first four keys."""
PURPOSES = 6
SPAWN_KEY = 5
"""The member seed's SeedSequence child these keys come from: children 0-4 are the numpy
loop's streams (reengage/run.py `MemberStreams`), so the initial weights, drawn from
child 4 as there, are the same networks in both loops."""

_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_2_POW_M53 = 2.0 ** -53


def _signed(value: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


GAMMA, MIX1, MIX2 = _signed(_GAMMA), _signed(_MIX1), _signed(_MIX2)
BLOCK = 2**32
"""Outputs per counter value: counter c owns outputs c·2^32 … c·2^32 + 2^32 − 1."""
BLOCK_GAMMA = _signed(BLOCK * _GAMMA)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's `>>` keeps the sign)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function on int64 tensors (wrapping arithmetic)."""
    x = (x ^ _shift_right(x, 30)) * MIX1
    x = (x ^ _shift_right(x, 27)) * MIX2
    return x ^ _shift_right(x, 31)


def member_keys(seeds: Sequence[int]) -> torch.Tensor:
    """`[members, PURPOSES]` int64 keys, each member's from its seed alone."""
    keys = [np.random.SeedSequence(seed, spawn_key=(SPAWN_KEY,)).generate_state(
        PURPOSES, np.uint64) for seed in seeds]
    return torch.tensor([[_signed(int(k)) for k in row] for row in keys], dtype=torch.int64)


class CounterStreams:
    """Random numbers `[members, n]` for every member at once, keyed by purpose and counter."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str):
        self.keys = member_keys(seeds).to(device)
        self.members = len(seeds)

    def bits(self, purpose: int, counter: torch.Tensor, n: int) -> torch.Tensor:
        """`[members, n]` 64-bit draws (int64 bits), n ≤ 2^32. `counter` is a device int64
        tensor of shape [] or [members]; the same (purpose, counter) gives the same numbers."""
        if n > BLOCK:
            raise ValueError(f"at most {BLOCK} draws per counter, asked for {n}")
        # State of output i is key + (i + 1)·γ, as splitmix64 advances before it mixes.
        start = self.keys[:, purpose] + counter * BLOCK_GAMMA
        index = torch.arange(1, n + 1, dtype=torch.int64, device=self.keys.device) * GAMMA
        return mix64(start.unsqueeze(-1) + index)

    def bits32(self, purpose: int, counter: torch.Tensor, n: int) -> torch.Tensor:
        """`[members, n]` integers in [0, 2^32) (the high half of `bits`)."""
        return _shift_right(self.bits(purpose, counter, n), 32)

    def uniform(self, purpose: int, counter: torch.Tensor, n: int) -> torch.Tensor:
        """`[members, n]` float64 uniforms in [0, 1) with 53 random bits."""
        return _shift_right(self.bits(purpose, counter, n), 11).double() * _2_POW_M53

    def normal(self, purpose: int, counter: torch.Tensor, n: int) -> torch.Tensor:
        """`[members, n]` float64 standard normals (Box-Muller on two uniforms each)."""
        u = self.uniform(purpose, counter, 2 * n)
        radius = torch.sqrt(-2.0 * torch.log1p(-u[:, :n]))  # 1 - u in (0, 1]: log is finite
        return radius * torch.cos((2.0 * torch.pi) * u[:, n:])


def below(bits32: torch.Tensor, bound: torch.Tensor | int) -> torch.Tensor:
    """Integers in [0, bound) from 32-bit draws by multiply-and-shift (bias below
    bound / 2^32); `bound` may be a device tensor, so no host value is needed."""
    return (bits32 * bound) >> 32
