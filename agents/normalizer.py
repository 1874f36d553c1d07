"""Running mean/std normaliser of network inputs, as OpenAI Baselines' HER uses it.

The robotics regime of the paper (docs/paper.md §4) normalises observations and goals
before both networks: `clip((clip(x, ±clip_input) − mean) / std, ±clip)` with
`std = sqrt(max(ε², E[x²] − E[x]²))`, ε = 0.01, clip = 5, clip_input = 200 (Baselines'
`clip_obs`). Its statistics grow from rollouts: after each batch of episodes, Baselines
draws as many transitions from those episodes as they hold, with HER-relabelled goals
(`her_statistics_sample`), and adds their observations and goals.

Two details follow Baselines on purpose: the count starts at one (its TensorFlow variable is
initialised with ones, so the first statistics are shrunk toward zero mean as by one phantom
zero sample), and the normaliser is a constant for the optimiser and for the goal gradients
(ReenGAGE differentiates through it, by `input_gradient`, but never into its statistics).
Sums are kept in float64 where Baselines keeps float32: the variance `E[x²] − E[x]²` over a
million samples cancels badly in float32, and nothing is gained by copying that.

Every tensor carries the member axis first, so each member of a population keeps its own
statistics, fed by its own episodes alone.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class RunningNormalizer(nn.Module):
    """Per-member running statistics of `size`-wide inputs `[members, n, size]`."""

    def __init__(self, members: int, size: int, eps: float = 0.01, clip: float = 5.0,
                 clip_input: float = 200.0):
        super().__init__()
        if eps <= 0 or clip <= 0 or clip_input <= 0:
            raise ValueError("eps, clip and clip_input must be positive")
        self.size, self.eps, self.clip, self.clip_input = size, eps, clip, clip_input
        f64 = torch.float64
        self.register_buffer("total", torch.zeros(members, size, dtype=f64))
        self.register_buffer("total_squares", torch.zeros(members, size, dtype=f64))
        self.register_buffer("count", torch.ones(members, 1, dtype=f64))  # Baselines: ones
        self.register_buffer("mean", torch.zeros(members, 1, size))
        self.register_buffer("std", torch.ones(members, 1, size))

    @torch.no_grad()
    def update(self, values: torch.Tensor) -> None:
        """Add `values` `[members, n, size]` (each member's own) and recompute mean and std."""
        if values.dim() != 3 or values.shape[0] != self.total.shape[0] \
                or values.shape[-1] != self.size:
            raise ValueError(f"expected [members={self.total.shape[0]}, n, {self.size}], "
                             f"got {tuple(values.shape)}")
        x = values.to(torch.float64).clamp(-self.clip_input, self.clip_input)
        self.total += x.sum(dim=1)
        self.total_squares += x.square().sum(dim=1)
        self.count += x.shape[1]
        mean = self.total / self.count
        variance = self.total_squares / self.count - mean.square()
        std = variance.clamp(min=self.eps ** 2).sqrt()
        self.mean.copy_(mean.unsqueeze(1))
        self.std.copy_(std.unsqueeze(1))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        x = values.clamp(-self.clip_input, self.clip_input)
        return ((x - self.mean) / self.std).clamp(-self.clip, self.clip)

    def input_gradient(self, values: torch.Tensor) -> torch.Tensor:
        """The diagonal of `∂ forward(x) / ∂ x` at `values`: `1/std` where the normalised
        value lies inside `[−clip, clip]`, 0 where it is clipped. The input clip is treated
        as Baselines treats it: applied to the data before the graph, so it passes the
        gradient (inputs beyond ±clip_input lie far outside any normalised clip anyway)."""
        normalised = (values.clamp(-self.clip_input, self.clip_input) - self.mean) / self.std
        inside = (normalised >= -self.clip) & (normalised <= self.clip)
        return inside.to(values.dtype) / self.std


def her_statistics_sample(
    achieved: np.ndarray,
    desired: np.ndarray,
    rngs: list[np.random.Generator],
    samples: int,
    relabel_probability: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which transitions of a batch of fresh episodes feed the normaliser, as Baselines'
    `store_episode` draws them with its HER sampler: `samples` per member, each from a
    uniform episode and step t < T, its goal replaced with probability `relabel_probability`
    by the achieved goal at a uniform later index in [t+1, T].

    `achieved` is `[members, episodes, T+1, goal_dim]`, `desired` `[members, episodes,
    goal_dim]`. Returns `(episode, step, goal)`: indices `[members, samples]` and goals
    `[members, samples, goal_dim]`; member m draws from `rngs[m]` alone."""
    members, episodes, t_plus_one, _ = achieved.shape
    T = t_plus_one - 1
    episode = np.empty((members, samples), np.int64)
    step = np.empty((members, samples), np.int64)
    goal = np.empty((members, samples, desired.shape[-1]), desired.dtype)
    for m, rng in enumerate(rngs):
        episode[m] = rng.integers(0, episodes, samples)
        step[m] = rng.integers(0, T, samples)
        relabel = rng.random(samples) < relabel_probability
        future = step[m] + 1 + (rng.random(samples) * (T - step[m])).astype(np.int64)
        goal[m] = desired[m, episode[m]]
        goal[m, relabel] = achieved[m, episode[m, relabel], future[relabel]]
    return episode, step, goal
