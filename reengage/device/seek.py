"""ContinuousSeek(d) as tensors `[members, copies, ...]` on any device.

The dynamics, reward, success flag and episode length are those of
envs/continuous_seek.py (imported constants, float32 throughout, so given the same goals
and actions the two give the same bits: tests/test_device_task.py). What differs is how an
episode starts: the numpy vector env resets on request or one step after its end (gymnasium's
next-step autoreset); here the caller, which knows the fixed episode length, calls `begin`,
and goals come from the member's counter stream keyed by episode number.
"""

from __future__ import annotations

import torch

from reengage.envs.continuous_seek import BOUND, EPISODE_STEPS, SUCCESS_RADIUS

from .streams import CounterStreams


def seek_reward(achieved: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """0 where the L-infinity distance is at most SUCCESS_RADIUS, else -1 (float32)."""
    distance = (achieved - goal).abs().amax(dim=-1)
    return (distance > SUCCESS_RADIUS).to(torch.float32).neg()


class SeekTask:
    """`copies` ContinuousSeek episodes for each of `members` learners, stepped together
    (reengage/device/task.py's DeviceTask)."""

    episode_steps = EPISODE_STEPS
    achieved_is_observation = True
    reward = staticmethod(seek_reward)

    def __init__(self, members: int, copies: int, dim: int, device: torch.device | str):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.members, self.copies, self.dim = members, copies, dim
        self.obs_dim = self.achieved_dim = self.action_dim = dim
        self.goal_shape = (dim,)
        shape = (members, copies)
        self.position = torch.zeros(*shape, dim, device=device)
        self.goal = torch.zeros(*shape, dim, device=device)
        self.elapsed = torch.zeros(shape, dtype=torch.int64, device=device)
        self.reached = torch.zeros(shape, dtype=torch.bool, device=device)

    def draw_goals(self, streams: CounterStreams, purpose: int,
                   counter: torch.Tensor) -> torch.Tensor:
        """Uniform goals in [-BOUND, BOUND]^d for every copy, as numpy's
        `uniform(-5, 5).astype(float32)` forms them (float64, then rounded)."""
        u = streams.uniform(purpose, counter, self.copies * self.dim)
        goal = (-BOUND + (2 * BOUND) * u).to(torch.float32)
        return goal.view(self.members, self.copies, self.dim)

    def begin(self, goal: torch.Tensor) -> None:
        """Start new episodes of every copy with `goal` `[members, copies, d]`."""
        self.goal.copy_(goal)
        self.position.zero_()
        self.elapsed.zero_()
        self.reached.zero_()

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move by the clipped action; `(reward, truncated)` `[members, copies]`."""
        moved = self.position + action.clamp(-1.0, 1.0)
        self.position.copy_(moved.clamp(-BOUND, BOUND))
        self.elapsed.add_(1)
        reward = seek_reward(self.position, self.goal)
        self.reached.logical_or_(reward == 0.0)
        return reward, self.elapsed >= EPISODE_STEPS

    def observation(self) -> dict[str, torch.Tensor]:
        """The numpy env's dict: observation and achieved goal are the position."""
        return {"observation": self.position, "achieved_goal": self.position,
                "desired_goal": self.goal}

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.position, self.goal, self.elapsed, self.reached]
