"""Episode replay with HER `future` relabelling, as preallocated device tensors.

The semantics are agents/replay.py's `EpisodeReplay` (read its docstring): whole episodes
of T steps, T+1 observations and T actions each, the desired goal once per episode, a
transition sampleable once its episode is complete, `her_k` relabelled goals per real one
(probability k/(k+1), or exactly int(k/(k+1)·B) per batch), `her_future` next_to_final or
next_to_penultimate. What changes is where the state lives and how it moves:

* Every tensor is allocated once at its full size; inserting and sampling write into and
  gather from it with index tensors, so shapes never change as the buffer fills and no
  value is read back to the host (a CUDA graph can capture both).
* The ring has one slot more than its capacity: the episode being collected is written in
  place in slot `cursor`, and the complete episodes are the `size` slots before it, so the
  oldest complete episode stays sampleable until the new one is complete, as in the numpy
  buffer, without a staging copy.
* Ring position, fill and step within the episode are device scalars; completing an
  episode advances the ring with `torch.where` masks rather than a branch.
* Draws come from each member's counter stream (reengage/device/streams.py), keyed by the
  update count, with integer arithmetic for indices (the same bits on CPU and CUDA).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from reengage.agents.replay import HER_FUTURES, HER_RELABELS

from .streams import REPLAY, CounterStreams, below

TorchReward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DRAWS_PER_SAMPLE = 4
"""Episode, step, relabel flag, future offset."""


@dataclass
class DeviceBatch:
    """Tensors `[members, batch, ...]`, as agents/replay.py's `Batch`."""

    obs: torch.Tensor
    action: torch.Tensor
    next_obs: torch.Tensor
    goal: torch.Tensor
    reward: torch.Tensor
    relabelled: torch.Tensor
    achieved: torch.Tensor
    next_achieved: torch.Tensor
    future: torch.Tensor
    """The step whose achieved goal a relabelled goal is (for tests; meaningless where not
    relabelled)."""
    step: torch.Tensor
    """The transition's step within its episode."""


class DeviceEpisodeReplay:
    """Ring of complete episodes per member; the achieved goal is the observation's first
    `achieved_dim` entries (ContinuousSeek), so it is never stored twice."""

    def __init__(self, members: int, capacity_steps: int, episode_steps: int, obs_dim: int,
                 goal_dim: int, action_dim: int, reward_fn: TorchReward,
                 streams: CounterStreams, device: torch.device | str, her_k: int = 4,
                 achieved_dim: int | None = None, her_future: str = "next_to_final",
                 her_relabel: str = "probability"):
        if her_future not in HER_FUTURES:
            raise ValueError(f"unknown her_future {her_future!r}")
        if her_relabel not in HER_RELABELS:
            raise ValueError(f"unknown her_relabel {her_relabel!r}")
        achieved_dim = goal_dim if achieved_dim is None else achieved_dim
        if achieved_dim > obs_dim:
            raise ValueError("the achieved goal must lead the observation")
        if her_k > 0 and achieved_dim != goal_dim:
            raise ValueError("HER relabelling needs achieved and desired goals of one size")
        self.members, self.T = members, episode_steps
        self.capacity = max(1, capacity_steps // episode_steps)
        self.slots = self.capacity + 1
        self.reward_fn, self.streams = reward_fn, streams
        self.relabel_probability = her_k / (her_k + 1) if her_k > 0 else 0.0
        # A 32-bit draw below this is a relabel: P = threshold / 2^32 ≈ k/(k+1).
        self.relabel_threshold = int(self.relabel_probability * 2**32)
        self.final_goal = her_future == "next_to_final"
        self.exact_fraction = her_relabel == "exact"
        self.achieved_dim = achieved_dim
        shape = (members, self.slots)
        self.obs = torch.zeros(*shape, episode_steps + 1, obs_dim, device=device)
        self.actions = torch.zeros(*shape, episode_steps, action_dim, device=device)
        self.desired = torch.zeros(*shape, goal_dim, device=device)
        self.cursor = torch.zeros((), dtype=torch.int64, device=device)
        self.size = torch.zeros((), dtype=torch.int64, device=device)
        self.t = torch.zeros((), dtype=torch.int64, device=device)
        # Row views for gathers by flat index (allocated whole above, so views, not copies).
        self._obs_rows = self.obs.view(-1, obs_dim)
        self._action_rows = self.actions.view(-1, action_dim)
        self._desired_rows = self.desired.view(-1, goal_dim)
        self._member_slot = torch.arange(members, device=device) * self.slots

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.obs, self.actions, self.desired))

    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor the buffer mutates (tests check none is re-allocated)."""
        return [self.obs, self.actions, self.desired, self.cursor, self.size, self.t]

    def _rows(self, step: torch.Tensor) -> torch.Tensor:
        """`[members]` flat observation rows of (member, cursor slot, step)."""
        return (self._member_slot + self.cursor) * (self.T + 1) + step

    def start_episode(self, obs: torch.Tensor, desired: torch.Tensor) -> None:
        """The first observation `[members, obs_dim]` and desired goal of the episode now
        collected (in slot `cursor`)."""
        self.t.zero_()
        self._obs_rows.index_copy_(0, self._rows(self.t), obs)
        self._desired_rows.index_copy_(0, self._member_slot + self.cursor, desired)

    def add_step(self, action: torch.Tensor, next_obs: torch.Tensor) -> None:
        """Store one step `[members, ...]`; the episode's T-th step completes it."""
        slots = self._member_slot + self.cursor
        self._action_rows.index_copy_(0, slots * self.T + self.t, action)
        self._obs_rows.index_copy_(0, self._rows(self.t + 1), next_obs)
        self.t.add_(1)
        complete = self.t == self.T
        self.cursor.copy_(torch.where(complete, (self.cursor + 1) % self.slots, self.cursor))
        self.size.copy_(torch.where(complete, (self.size + 1).clamp(max=self.capacity),
                                    self.size))
        self.t.masked_fill_(complete, 0)

    def sample(self, batch_size: int, counter: torch.Tensor) -> DeviceBatch:
        """A batch per member, drawn with the member's stream at `counter` (a device
        int64 scalar: the caller's update count). Needs at least one complete episode
        (the caller knows when: `size` is not read here)."""
        M, B, T = self.members, batch_size, self.T
        draws = self.streams.bits32(REPLAY, counter, DRAWS_PER_SAMPLE * B).view(
            M, DRAWS_PER_SAMPLE, B)
        episode = below(draws[:, 0], self.size)
        last_step = T if self.final_goal else T - 1
        if self.exact_fraction:
            # SB3 relabels the first int(p·B) samples of a batch; samples are exchangeable.
            exact = torch.arange(B, device=draws.device) < int(self.relabel_probability * B)
            relabel = exact.expand(M, B)
        else:
            relabel = draws[:, 2] < self.relabel_threshold
        if self.final_goal:
            step = below(draws[:, 1], T)
        else:  # which samples are relabelled decides their step (never the last one)
            relabel = relabel & (last_step > 0)
            step = below(draws[:, 1], torch.where(relabel, last_step, T))
        # `future`: the achieved goal at the next state or a later one, up to index last_step.
        future = step + 1 + below(draws[:, 3], (last_step - step).clamp(min=0))
        slot = (self.cursor - self.size + episode) % self.slots + self._member_slot[:, None]
        first_obs = slot * (T + 1)
        now = (first_obs + step).flatten()
        obs = self._obs_rows.index_select(0, now).view(M, B, -1)
        next_obs = self._obs_rows.index_select(0, now + 1).view(M, B, -1)
        width = self.achieved_dim
        achieved, next_achieved = obs[..., :width], next_obs[..., :width]
        goal = self._desired_rows.index_select(0, slot.flatten()).view(M, B, -1)
        if self.relabel_probability:
            future_obs = self._obs_rows.index_select(0, (first_obs + future).flatten())
            goal = torch.where(relabel.unsqueeze(-1), future_obs.view(M, B, -1)[..., :width],
                               goal)
        else:
            relabel = torch.zeros_like(relabel)
        action = self._action_rows.index_select(0, (slot * T + step).flatten()).view(M, B, -1)
        return DeviceBatch(obs=obs, action=action, next_obs=next_obs, goal=goal,
                           reward=self.reward_fn(next_achieved, goal), relabelled=relabel,
                           achieved=achieved, next_achieved=next_achieved, future=future,
                           step=step)
