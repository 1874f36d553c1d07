"""DriveSeek and NoisySeek (envs/multi_goal.py) as tensors `[members, copies, ...]` on any
device, for the device-resident loop (reengage/device/task.py's DeviceTask).

Dynamics, reward, success flag, observation and episode length are those of the numpy cores
(imported constants; heading and motion in float64, positions in float32, as there).
Given the same goal sets, actions and noise values the two agree up to the last bit of
float64 `cos`, `sin` and `sqrt`, which torch's CPU kernels do not always round as numpy does
(tests/test_device_goal_sets.py measures and bounds it). A float64 difference of an ulp
changes the float32 position only when it straddles a float32 rounding boundary, and
neither task feeds its position back into anything but the position, so such a difference
never grows.

Goal sets are drawn from counter streams (reengage/device/streams.py) with fixed-shape
tensor ops only: no host reads, no data-dependent shapes, so a draw can be captured in a
CUDA graph. They follow the numpy samplers' laws, not their random streams. The packed
layout is `pack_goal_set`'s: present rows `(1, x, y)` first, sorted by x then y, padding
rows zero.
"""

from __future__ import annotations

import math

import torch

from reengage.envs.multi_goal import (
    CENTRE_SIGMA,
    CLUSTER_P,
    CLUSTER_SIGMA,
    EPISODE_STEPS,
    GRID,
    STEER_RATE,
    TORUS,
)

from .streams import CounterStreams, below

CELLS = TORUS * TORUS
"""DriveSeek's goal cells, enumerated row-major: cell i is (i // TORUS - GRID,
i % TORUS - GRID), so increasing i is the packed order (x, then y)."""
_CELL_BITS = 9
"""Low bits of a DriveSeek sort key that hold the cell index (2^9 = 512 > 441 cells)."""

CLUSTER_CAP = 256
"""Most NoisySeek clusters a draw can have (shapes must be fixed). Geometric(0.15) exceeds
it with probability 0.85^256 ≈ 8e-19, so the cap never binds in practice; in fact the
inversion from a 53-bit uniform cannot give more than 227 clusters, a tail of 0.85^227 ≈
1e-16 that the uniform's resolution already cuts."""

KEY_OFFSET = 2**20
"""NoisySeek dedup keys encode a cell (x, y) as (x + KEY_OFFSET)·2·KEY_OFFSET + y +
KEY_OFFSET: nonnegative and ordered by x then y for |x|, |y| < KEY_OFFSET. No draw comes
near: the largest normal `streams.normal` can return is sqrt(−2 ln 2^−53) ≈ 8.58, so a
coordinate is at most (CENTRE_SIGMA + CLUSTER_SIGMA)·8.58 ≈ 103 in size. Beyond the bound,
keys of different cells could collide (merging them) or sort out of order."""
_KEY_SPAN = 2 * KEY_OFFSET
_SENTINEL = _KEY_SPAN * _KEY_SPAN
"""Key of an item slot beyond n': larger than every cell's key, so it sorts last."""


def item_reward(achieved: torch.Tensor, goal_set: torch.Tensor) -> torch.Tensor:
    """Per-item reward: 1 where a present item equals the achieved cell, else 0.

    `achieved` `[..., 2]`, `goal_set` `[..., n_max, 3]`, leading axes broadcast;
    `[..., n_max]` float32 (envs/multi_goal.py's `item_reward`, which Multi-ReenGAGE
    learns from)."""
    hit = (goal_set[..., 1:] == achieved.unsqueeze(-2)).all(dim=-1) & (goal_set[..., 0] != 0)
    return hit.to(torch.float32)


def multi_goal_reward(achieved: torch.Tensor, goal_set: torch.Tensor) -> torch.Tensor:
    """1 where the achieved cell is any present item, else 0: `[...]` float32."""
    return item_reward(achieved, goal_set).amax(dim=-1)


def _high32(bits: torch.Tensor) -> torch.Tensor:
    """The high half of 64-bit draws, as `CounterStreams.bits32` forms it."""
    return (bits >> 32) & 0xFFFFFFFF


def _gaussian(radius_u: torch.Tensor, angle_u: torch.Tensor) -> torch.Tensor:
    """Standard normals from uniforms in [0, 1) by Box-Muller, as `CounterStreams.normal`
    forms them (one draw call must serve several purposes, so it cannot call `normal`)."""
    radius = torch.sqrt(-2.0 * torch.log1p(-radius_u))
    return radius * torch.cos((2.0 * torch.pi) * angle_u)


def _pack(keep: torch.Tensor, x: torch.Tensor, y: torch.Tensor, n_max: int) -> torch.Tensor:
    """`[..., n_max, 3]` float32 goal sets from candidates `[..., L]` already in packed
    order: the kept ones move to the front as rows (1, x, y), the rest of the rows are zero.

    The kept candidates get rows 0, 1, … by a running count; the others are scattered into a
    spare row n_max, which is dropped (fixed shapes, no `nonzero`). At most n_max candidates
    may be kept; a further one would land in the spare row, never out of bounds."""
    row = torch.where(keep, keep.cumsum(dim=-1) - 1, n_max).clamp_(max=n_max)
    values = torch.stack([keep, x.expand_as(keep), y.expand_as(keep)], dim=-1)
    values = values.to(torch.float32) * keep.unsqueeze(-1)
    packed = torch.zeros(*keep.shape[:-1], n_max + 1, 3, device=keep.device)
    packed.scatter_(-2, row.unsqueeze(-1).expand(*row.shape, 3), values)
    return packed[..., :n_max, :].contiguous()


def draw_drive_seek_goals(streams: CounterStreams, purpose: int, counter: torch.Tensor,
                          copies: int, n_max: int) -> torch.Tensor:
    """`[members, copies, n_max, 3]` goal sets: n ~ U{1..n_max} distinct cells of
    [−GRID, GRID]², uniformly without replacement (`sample_drive_seek_goals`' law).

    Each cell gets a random sort key; the n cells with the smallest keys are a uniform
    n-subset. The key's low bits are replaced by the cell index so that keys are distinct
    and exactly n cells lie at or below the n-th smallest; this breaks ties of the top
    55 random bits (probability below 441²·2^−56 ≈ 3e−12 per draw) towards lower cells.
    """
    if not 1 <= n_max <= CELLS:
        raise ValueError(f"DriveSeek needs 1 <= n_max <= {CELLS}, got {n_max}")
    bits = streams.bits(purpose, counter, copies * (1 + CELLS)).view(-1, copies, 1 + CELLS)
    count = below(_high32(bits[..., 0]), n_max) + 1
    cell = torch.arange(CELLS, device=bits.device)
    keys = (bits[..., 1:] & -(1 << _CELL_BITS)) | cell
    nth_smallest = keys.sort(dim=-1).values.gather(-1, (count - 1).unsqueeze(-1))
    return _pack(keys <= nth_smallest, cell // TORUS - GRID, cell % TORUS - GRID, n_max)


def draw_noisy_seek_goals(streams: CounterStreams, purpose: int, counter: torch.Tensor,
                          copies: int, n_max: int) -> torch.Tensor:
    """`[members, copies, n_max, 3]` clustered goal sets with `sample_noisy_seek_goals`' law:
    n' ~ U{1..n_max} items; K ~ Geometric(CLUSTER_P) clusters (capped at CLUSTER_CAP) with
    weights w ~ Dirichlet(1, …, 1); each item picks its cluster independently with
    probabilities w (which is the split Multinomial(n', w)); centres N(0, CENTRE_SIGMA²) per
    coordinate, items centre + N(0, CLUSTER_SIGMA²), rounded half to even; duplicate cells
    merged (1 <= count <= n'). Every cluster up to the cap is drawn, used or not.
    """
    return _draw_noisy_seek(streams, purpose, counter, copies, n_max)[0]


def _draw_noisy_seek(streams: CounterStreams, purpose: int, counter: torch.Tensor,
                     copies: int, n_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`draw_noisy_seek_goals`, and n' `[members, copies]` (the tests' dedup statistics)."""
    if n_max < 1:
        raise ValueError(f"NoisySeek needs n_max >= 1, got {n_max}")
    cap = CLUSTER_CAP
    # One draw call per (purpose, counter), cut into consecutive fields per copy.
    widths = {"requested": 1, "clusters": 1, "weights": cap, "centres": 4 * cap,
              "choice": n_max, "offsets": 4 * n_max}
    u = streams.uniform(purpose, counter, copies * sum(widths.values()))
    fields = dict(zip(widths, u.view(-1, copies, sum(widths.values())).split(
        list(widths.values()), dim=-1), strict=True))
    requested = (fields["requested"] * n_max).long().clamp_(max=n_max - 1) + 1  # [M, C, 1]
    # Inversion: P(floor(log(1 − u) / log(1 − p)) >= k) = (1 − p)^k.
    clusters = (torch.log1p(-fields["clusters"]) / math.log1p(-CLUSTER_P)).floor() + 1
    clusters = clusters.clamp_(max=cap).long()
    # Dirichlet(1, …, 1) is normalised Exp(1) draws; choosing by the unnormalised cumulative
    # sum needs no division. Weights of clusters k >= K are zero, so none is chosen.
    present = torch.arange(cap, device=u.device) < clusters
    cumulative = torch.where(present, -torch.log1p(-fields["weights"]), 0.0).cumsum(dim=-1)
    target = fields["choice"] * cumulative[..., -1:]
    # u·total may round up to total; the clamp keeps the choice among the K clusters.
    chosen = torch.searchsorted(cumulative, target, right=True)
    chosen = torch.minimum(chosen, clusters - 1)
    centre_u = fields["centres"].unflatten(-1, (2, cap, 2))
    centres = CENTRE_SIGMA * _gaussian(centre_u[..., 0, :, :], centre_u[..., 1, :, :])
    offset_u = fields["offsets"].unflatten(-1, (2, n_max, 2))
    offsets = CLUSTER_SIGMA * _gaussian(offset_u[..., 0, :, :], offset_u[..., 1, :, :])
    centre = centres.gather(-2, chosen.unsqueeze(-1).expand(*chosen.shape, 2))
    cells = torch.round(centre + offsets).long()  # [M, C, n_max, 2]
    # Dedup with fixed shapes: sort keys that order cells by x then y, keep the first of
    # each run of equal keys; slots beyond n' carry the sentinel and sort last.
    key = (cells[..., 0] + KEY_OFFSET) * _KEY_SPAN + cells[..., 1] + KEY_OFFSET
    valid = torch.arange(n_max, device=u.device) < requested
    key = torch.where(valid, key, _SENTINEL).sort(dim=-1).values
    first = torch.ones_like(key, dtype=torch.bool)
    first[..., 1:] = key[..., 1:] != key[..., :-1]
    keep = first & (key != _SENTINEL)
    goals = _pack(keep, key // _KEY_SPAN - KEY_OFFSET, key % _KEY_SPAN - KEY_OFFSET, n_max)
    return goals, requested.squeeze(-1)


class _GoalSetTask:
    """What DriveSeek and NoisySeek share: a position in the plane, a goal set, the reward
    of the achieved cell rint(position), and the episode bookkeeping. Every tensor is
    allocated here and written in place afterwards (a CUDA graph holds their addresses)."""

    episode_steps = EPISODE_STEPS
    achieved_dim = 2
    achieved_is_observation = False
    reward = staticmethod(multi_goal_reward)
    item_reward = staticmethod(item_reward)

    def __init__(self, members: int, copies: int, n_max: int, device: torch.device | str):
        self.members, self.copies, self.n_max = members, copies, n_max
        self.goal_shape = (n_max, 3)
        shape = (members, copies)
        self.position = torch.zeros(*shape, 2, device=device)
        self.goal_set = torch.zeros(*shape, n_max, 3, device=device)
        self.elapsed = torch.zeros(shape, dtype=torch.int64, device=device)
        self.reached = torch.zeros(shape, dtype=torch.bool, device=device)

    def begin(self, goal: torch.Tensor) -> None:
        """Start new episodes of every copy at the origin with goal sets `goal`."""
        self.goal_set.copy_(goal)
        self.position.zero_()
        self.elapsed.zero_()
        self.reached.zero_()

    def _arrive(self, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the float64 `position` as float32 (round to nearest, as numpy's astype)
        and score it; `(reward, truncated)`."""
        self.position.copy_(position)
        self.elapsed.add_(1)
        reward = multi_goal_reward(self.achieved_goal(), self.goal_set)
        self.reached.logical_or_(reward == 1.0)
        return reward, self.elapsed >= EPISODE_STEPS

    def achieved_goal(self) -> torch.Tensor:
        """The cell rint(position) (torch.round rounds halves to even, as rint)."""
        return torch.round(self.position)

    def observation_vector(self) -> torch.Tensor:
        raise NotImplementedError

    def observation(self) -> dict[str, torch.Tensor]:
        """The numpy env's dict; `desired_goal` is the goal set `[..., n_max, 3]`."""
        return {"observation": self.observation_vector(), "achieved_goal": self.achieved_goal(),
                "desired_goal": self.goal_set}

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.position, self.goal_set, self.elapsed, self.reached]


class DriveSeekTask(_GoalSetTask):
    """`copies` DriveSeek episodes for each of `members` learners: a car at unit speed on
    the torus, steered by a ∈ [−1, 1] (envs/multi_goal.py's DriveSeekCore)."""

    obs_dim = 4
    action_dim = 1

    def __init__(self, members: int, copies: int, n_max: int, device: torch.device | str):
        if not 1 <= n_max <= CELLS:
            raise ValueError(f"DriveSeek needs 1 <= n_max <= {CELLS}, got {n_max}")
        super().__init__(members, copies, n_max, device)
        self.heading = torch.zeros(members, copies, dtype=torch.float64, device=device)

    def draw_goals(self, streams: CounterStreams, purpose: int,
                   counter: torch.Tensor) -> torch.Tensor:
        return draw_drive_seek_goals(streams, purpose, counter, self.copies, self.n_max)

    def begin(self, goal: torch.Tensor) -> None:
        super().begin(goal)
        self.heading.zero_()

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Steer by the clipped action, then drive one unit and wrap around the torus."""
        steer = action[..., 0].to(torch.float64).clamp(-1.0, 1.0)
        self.heading.add_(STEER_RATE * steer)
        velocity = torch.stack([torch.cos(self.heading), torch.sin(self.heading)], dim=-1)
        half = TORUS / 2
        # torch.remainder, like np.mod, takes the sign of the divisor (where it gives -0.0
        # for np.mod's 0.0, subtracting half makes the two equal).
        wrapped = torch.remainder(self.position + velocity + half, TORUS) - half
        return self._arrive(wrapped)

    def observation_vector(self) -> torch.Tensor:
        """(position, cos θ, sin θ) float32."""
        trig = torch.stack([torch.cos(self.heading), torch.sin(self.heading)], dim=-1)
        return torch.cat([self.position, trig.to(torch.float32)], dim=-1)

    def state_tensors(self) -> list[torch.Tensor]:
        return [*super().state_tensors(), self.heading]


class NoisySeekTask(_GoalSetTask):
    """`copies` NoisySeek episodes for each of `members` learners: a point in the plane
    moved by the action (rescaled to norm <= 1) plus N(0, noise_sigma²) per coordinate
    (envs/multi_goal.py's NoisySeekCore).

    Step k's noise is `streams.normal(purpose, moves, copies·2)` with `moves` the task's
    move counter, which every step advances and `begin` leaves alone (a caller that wants
    an episode's noise keyed by the episode sets it, as the evaluator does)."""

    obs_dim = 2
    action_dim = 2

    def __init__(self, members: int, copies: int, n_max: int, device: torch.device | str,
                 streams: CounterStreams, purpose: int, noise_sigma: float = 1.0):
        if n_max < 1:
            raise ValueError(f"NoisySeek needs n_max >= 1, got {n_max}")
        super().__init__(members, copies, n_max, device)
        self.streams, self.purpose, self.noise_sigma = streams, purpose, noise_sigma
        self.moves = torch.zeros((), dtype=torch.int64, device=device)

    def draw_goals(self, streams: CounterStreams, purpose: int,
                   counter: torch.Tensor) -> torch.Tensor:
        return draw_noisy_seek_goals(streams, purpose, counter, self.copies, self.n_max)

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move by the rescaled action plus motion noise."""
        action = action.to(torch.float64)
        # The norm as numpy's linalg.norm forms it, sqrt of the sum of squares (not hypot).
        norm = (action * action).sum(dim=-1, keepdim=True).sqrt()
        noise = self.streams.normal(self.purpose, self.moves, self.copies * 2)
        self.moves.add_(1)
        noise = noise.view(self.members, self.copies, 2)
        step = action / norm.clamp(min=1.0) + self.noise_sigma * noise
        return self._arrive(self.position + step)

    def observation_vector(self) -> torch.Tensor:
        """The position (float32); a copy, as the numpy core's, so that a caller that keeps
        observations does not see them move."""
        return self.position.clone()

    def state_tensors(self) -> list[torch.Tensor]:
        return [*super().state_tensors(), self.moves]
