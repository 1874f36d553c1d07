"""BitFlip(d): turn d random bits into a random target, one flip per step (docs/paper.md §2).

Andrychowicz et al. (2017)'s motivating task: the state and the goal are drawn uniformly
from {0,1}^d, an action flips one bit, the reward is 0 when the state equals the goal and -1
otherwise, and an episode lasts d steps (it does not end at the goal: success means the goal
was reached at least once). Bits travel as float32 0/1 so that every learner and the replay
treat them as they treat any goal coordinate (ReenGAGE differentiates with respect to them).

As for ContinuousSeek, one batched core steps any number of copies and the single env and
the native vector env are two thin faces of it. The episode length is d, so both faces end
episodes themselves (the registered id has no TimeLimit, whose length would be fixed).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from .vector import BatchedCore, CoreVectorEnv


def bitflip_reward(achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
    """0 where every bit matches, else -1; vectorised over leading axes."""
    equal = np.all(np.asarray(achieved_goal) == np.asarray(desired_goal), axis=-1)
    return np.where(equal, 0.0, -1.0).astype(np.float32)


def goal_space(dim: int) -> spaces.Dict:
    bits = spaces.Box(0.0, 1.0, shape=(dim,), dtype=np.float32)
    return spaces.Dict({"observation": bits, "achieved_goal": bits, "desired_goal": bits})


class BitFlipCore(BatchedCore):
    """State of n copies: bits and goals (besides the shared counters and streams)."""

    def __init__(self, dim: int, num_copies: int):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        super().__init__(num_copies)
        self.dim = dim
        self.bits = np.zeros((num_copies, dim), dtype=np.float32)
        self.goal = np.zeros((num_copies, dim), dtype=np.float32)

    def reset_copies(self, mask: np.ndarray) -> None:
        # Copy by copy, so that each copy's stream depends on its seed alone.
        for i in np.flatnonzero(mask):
            self.bits[i] = self.rngs[i].integers(0, 2, self.dim)
            self.goal[i] = self.rngs[i].integers(0, 2, self.dim)
        self.elapsed[mask] = 0
        self.reached[mask] = False

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The training loop hands actions over as float columns; an index is exact in them.
        index = np.asarray(action).reshape(self.num_copies).astype(np.int64)
        if ((index < 0) | (index >= self.dim)).any():
            raise ValueError(f"actions must be bit indices in [0, {self.dim}), got {index}")
        rows = np.arange(self.num_copies)
        self.bits[rows, index] = 1.0 - self.bits[rows, index]
        self.elapsed += 1
        reward = bitflip_reward(self.bits, self.goal)
        self.reached |= reward == 0.0
        return reward, self.elapsed >= self.dim

    def observation(self) -> dict[str, np.ndarray]:
        return {
            "observation": self.bits.copy(),
            "achieved_goal": self.bits.copy(),
            "desired_goal": self.goal.copy(),
        }


class BitFlipEnv(gym.Env):
    """Single-copy face: `gym.make("reengage/BitFlip-v0", dim=d)`; truncates after d steps."""

    metadata = {"render_modes": []}

    def __init__(self, dim: int = 8):
        self.dim = dim
        self.core = BitFlipCore(dim, 1)
        self.observation_space = goal_space(dim)
        self.action_space = spaces.Discrete(dim)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.core.seed([seed])
        self.core.reset_copies(np.ones(1, dtype=bool))
        return self._obs(), {"is_success": False}

    def step(self, action):
        reward, truncated = self.core.step(np.asarray(action)[None])
        info = {"is_success": bool(self.core.reached[0])}
        return self._obs(), float(reward[0]), False, bool(truncated[0]), info

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        return bitflip_reward(achieved_goal, desired_goal)

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.core.observation().items()}


class BitFlipVectorEnv(CoreVectorEnv):
    """Native vector face: S copies flipped with array operations, next-step autoreset.
    Actions are one bit index per copy (`[S]` or `[S, 1]`)."""

    def __init__(self, num_envs: int, dim: int = 8, **kwargs: Any):
        self.num_envs = num_envs
        self.dim = dim
        self.core = BitFlipCore(dim, num_envs)
        self.single_observation_space = goal_space(dim)
        self.single_action_space = spaces.Discrete(dim)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._init_autoreset()

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        return bitflip_reward(achieved_goal, desired_goal)
