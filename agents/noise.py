"""Random draws inside a population's update, each member's from its own stream.

A learner whose update draws noise (SAC's sampled actions, TD3's target smoothing) must not
let one member's draws depend on the others', or a member of a population would stop
matching the same seed trained alone. `MemberNoise` keeps, per member, a seed taken from the
member's initialisation stream and one draw counter per purpose, as buffers: they move with
the learner, travel in its state_dict (so a run resumed from a checkpoint draws what the
uninterrupted run drew) and carry the member axis the policy files expect. Each draw
re-seeds one generator from (seed, purpose, counter), so nothing else needs saving.
"""

from __future__ import annotations

import torch
from torch import nn

_MASK64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """A 64-bit mixing function: nearby inputs give unrelated generator seeds."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class MemberNoise(nn.Module):
    """Standard normal draws `[members, *shape]` for `purposes` independent uses."""

    def __init__(self, generators: list[torch.Generator], purposes: int):
        """Takes one number from each member's generator (call it after the networks have
        drawn their initial weights, so those stay what they would be without it)."""
        super().__init__()
        seeds = [int(torch.randint(0, 2**62, (1,), generator=g)) for g in generators]
        self.register_buffer("seed", torch.tensor(seeds, dtype=torch.int64))
        self.register_buffer("draws", torch.zeros(len(seeds), purposes, dtype=torch.int64))
        self._generator = torch.Generator()

    def standard_normal(self, purpose: int, shape: tuple[int, ...],
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """`[members, *shape]` standard normals on the buffers' device; member m's from its
        seed and its count of earlier draws for `purpose`, which this draw advances."""
        members = self.seed.shape[0]
        out = torch.empty(members, *shape)
        seeds, draws = self.seed.tolist(), self.draws[:, purpose].tolist()
        for m in range(members):
            self._generator.manual_seed(splitmix64(seeds[m] ^ splitmix64(
                (purpose << 56) + draws[m])))
            torch.randn(shape, generator=self._generator, out=out[m])
        self.draws[:, purpose] += 1
        return out.to(device=self.seed.device, dtype=dtype)
