"""ContinuousSeek(d): reach a random point of [-5, 5]^d in 10 unit steps (docs/paper.md §2).

One batched core steps any number of copies with array operations; the single env and
the native vector env are two thin faces of it, so they cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from .vector import BatchedCore, CoreVectorEnv

BOUND = 5.0
SUCCESS_RADIUS = 0.1
EPISODE_STEPS = 10


def continuous_seek_reward(achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
    """0 where the L-infinity distance is at most 0.1, else -1; vectorised over leading axes."""
    distance = np.max(np.abs(np.asarray(achieved_goal) - np.asarray(desired_goal)), axis=-1)
    return np.where(distance <= SUCCESS_RADIUS, 0.0, -1.0).astype(np.float32)


def goal_space(dim: int) -> spaces.Dict:
    box = spaces.Box(-BOUND, BOUND, shape=(dim,), dtype=np.float32)
    return spaces.Dict({"observation": box, "achieved_goal": box, "desired_goal": box})


class ContinuousSeekCore(BatchedCore):
    """State of n copies: positions and goals (besides the shared counters and streams)."""

    def __init__(self, dim: int, num_copies: int):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        super().__init__(num_copies)
        self.dim = dim
        self.position = np.zeros((num_copies, dim), dtype=np.float32)
        self.goal = np.zeros((num_copies, dim), dtype=np.float32)

    def reset_copies(self, mask: np.ndarray) -> None:
        # Goals are drawn copy by copy so that each copy's stream depends on its seed alone.
        for i in np.flatnonzero(mask):
            self.goal[i] = self.rngs[i].uniform(-BOUND, BOUND, self.dim).astype(np.float32)
        self.position[mask] = 0.0
        self.elapsed[mask] = 0
        self.reached[mask] = False

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        self.position = np.clip(self.position + action, -BOUND, BOUND).astype(np.float32)
        self.elapsed += 1
        reward = continuous_seek_reward(self.position, self.goal)
        self.reached |= reward == 0.0
        truncated = self.elapsed >= EPISODE_STEPS
        return reward, truncated

    def observation(self) -> dict[str, np.ndarray]:
        return {
            "observation": self.position.copy(),
            "achieved_goal": self.position.copy(),
            "desired_goal": self.goal.copy(),
        }


class ContinuousSeekEnv(gym.Env):
    """Single-copy face. The 10-step limit comes from the registered TimeLimit wrapper."""

    metadata = {"render_modes": []}

    def __init__(self, dim: int = 5):
        self.dim = dim
        self.core = ContinuousSeekCore(dim, 1)
        self.observation_space = goal_space(dim)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(dim,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.core.seed([seed])
        self.core.reset_copies(np.ones(1, dtype=bool))
        return self._obs(), {"is_success": False}

    def step(self, action):
        reward, _ = self.core.step(np.asarray(action)[None])
        info = {"is_success": bool(self.core.reached[0])}
        return self._obs(), float(reward[0]), False, False, info

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        return continuous_seek_reward(achieved_goal, desired_goal)

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.core.observation().items()}


class ContinuousSeekVectorEnv(CoreVectorEnv):
    """Native vector face: S copies stepped with array operations, next-step autoreset."""

    def __init__(self, num_envs: int, dim: int = 5, **kwargs: Any):
        self.num_envs = num_envs
        self.dim = dim
        self.core = ContinuousSeekCore(dim, num_envs)
        self.single_observation_space = goal_space(dim)
        self.single_action_space = spaces.Box(-1.0, 1.0, shape=(dim,), dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._init_autoreset()

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        return continuous_seek_reward(achieved_goal, desired_goal)
