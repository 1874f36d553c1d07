"""What the device loop needs of a task, and which task class trains which env.

A task steps `copies` episodes for each of `members` learners together, as tensors
`[members, copies, ...]` on one device. Episodes have a fixed length (`episode_steps`) and
start in lockstep: the caller, which counts steps on the host, calls `begin` with goals from
`draw_goals`, so no task ever reads a device value to decide anything. Randomness comes only
from counter streams (reengage/device/streams.py): goals from the stream and counter the
caller names; motion noise, where the task has any (NoisySeek), from the stream purpose the
task was built with, at a move counter `moves` (an int64 scalar tensor, one more each step,
among its `state_tensors`) that the evaluator sets at each evaluation's start.

Rewards: `reward(achieved, goal)` is the scalar reward of achieved goals `[..., achieved]`
under goals `[..., *goal_shape]` (the env's `compute_reward`); goal-set tasks also have
`item_reward(achieved, goal)` `[..., n_max]`, what Multi-ReenGAGE learns from.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .streams import CounterStreams


class DeviceTask(Protocol):
    members: int
    copies: int
    episode_steps: int
    obs_dim: int
    """Width of `observation()["observation"]`."""
    achieved_dim: int
    action_dim: int
    goal_shape: tuple[int, ...]
    """One goal's shape: `(d,)`, or `(n_max, 3)` for a goal set."""
    achieved_is_observation: bool
    """The achieved goal is the observation itself (ContinuousSeek), so a buffer stores it
    once; otherwise it is stored beside the observation."""
    reached: torch.Tensor
    """`[members, copies]` bool: a goal was reached during the current episode."""

    def draw_goals(self, streams: CounterStreams, purpose: int,
                   counter: torch.Tensor) -> torch.Tensor:
        """`[members, copies, *goal_shape]` float32 goals from `streams` at `counter`."""
        ...

    def begin(self, goal: torch.Tensor) -> None:
        """Start new episodes of every copy with `goal`."""
        ...

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply `action` `[members, copies, action_dim]`; `(reward, truncated)`
        `[members, copies]` (float32, bool)."""
        ...

    def observation(self) -> dict[str, torch.Tensor]:
        """`observation`, `achieved_goal`, `desired_goal`, as the numpy env's dict."""
        ...

    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor the task mutates in place (a checkpoint holds them)."""
        ...

    @staticmethod
    def reward(achieved: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        ...


def make_task(env: str, members: int, copies: int, dim: int, device: torch.device | str,
              streams: CounterStreams, motion: int) -> DeviceTask:
    """The task `env` at `--dim` `dim` (ContinuousSeek's d, a goal-set task's n_max);
    `motion` is the stream purpose of its motion noise, where it has any."""
    if env == "ContinuousSeek":
        from .seek import SeekTask

        return SeekTask(members, copies, dim, device)
    if env == "DriveSeek":
        from .goal_sets import DriveSeekTask

        return DriveSeekTask(members, copies, dim, device)
    if env == "NoisySeek":
        from .goal_sets import NoisySeekTask

        return NoisySeekTask(members, copies, dim, device, streams, motion)
    raise ValueError(f"the device loop has no task {env!r}")
