"""DriveSeek and NoisySeek: many simultaneous sparse goals (docs/paper.md §2).

A goal is a *set*: a fixed `(n_max, 3)` float32 array of rows `(b, x, y)`. Present rows
(`b = 1`) come first, sorted lexicographically by x then y; the remaining rows are padding
`(0, 0, 0)`. Present-first is what lets the DeepSets learner skip padding rows exactly
(agents/deepsets.py). The `desired_goal` observation is this array *shaped* `(n_max, 3)`,
not flattened, because every consumer (reward, greedy agent, DeepSets) wants the rows.

The achieved goal is `round(pos)` (numpy's `rint`, halves to even), a 2-D integer cell
stored as float32. The reward is 1 when the achieved cell equals any present item, else 0;
goals are never consumed, so an agent parked on a goal collects 1 per step and the episode
return (goal-steps) is at most 40. `info["is_success"]` = a goal was reached at least once
during the episode.

As in envs/continuous_seek.py, one batched core steps any number of copies with array
operations and the single env and native vector env are two thin faces of it. Each copy
owns a `numpy.random.Generator`, used (in this order) for its goal sets and, in NoisySeek,
for its motion noise, so a copy's stream depends on its seed alone and copy i of a vector
env reproduces a single env reset with the same seed.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from .vector import BatchedCore, CoreVectorEnv

EPISODE_STEPS = 40
MAX_GOALS = 200
"""The paper's n_max; the goal count is drawn from U{1..n_max}, so a reduced config with a
smaller n_max also has fewer goals per episode (the release uses one number for both)."""

GRID = 10
"""DriveSeek's goal cells are the integers of [-GRID, GRID]^2 (21 x 21 = 441 cells)."""
TORUS = 2 * GRID + 1
STEER_RATE = 0.5

CLUSTER_P = 0.15
CENTRE_SIGMA = 10.0
CLUSTER_SIGMA = 2.0


def item_reward(achieved_goal: np.ndarray, goal_set: np.ndarray) -> np.ndarray:
    """Per-item reward `R_item`: 1 where a present item equals the achieved cell, else 0.

    `achieved_goal` is `[..., 2]`, `goal_set` is `[..., n_max, 3]`; leading axes broadcast
    (e.g. achieved `[E, T, 2]` with goal sets `[E, 1, n_max, 3]`). Returns float32
    `[..., n_max]`. Multi-ReenGAGE needs this, not just the summed reward, because the
    reward's gate gradient is `2 · R_item` (docs/paper.md §1).
    """
    achieved = np.asarray(achieved_goal)[..., None, :]
    goal_set = np.asarray(goal_set)
    hit = (goal_set[..., 1:] == achieved).all(axis=-1) & (goal_set[..., 0] != 0)
    return hit.astype(np.float32)


def multi_goal_reward(achieved_goal: np.ndarray, goal_set: np.ndarray) -> np.ndarray:
    """1 where the achieved cell is any present item, else 0: `[...]` float32.

    Items are distinct, so this equals `Σ_i b_i² R_item`, the form Multi-ReenGAGE uses.
    """
    return item_reward(achieved_goal, goal_set).max(axis=-1)


def pack_goal_set(items: np.ndarray, n_max: int) -> np.ndarray:
    """Distinct integer cells `[n, 2]` -> the `(n_max, 3)` array: present rows first, sorted
    lexicographically by x then y, padding rows zero. More than n_max items is an error."""
    items = np.asarray(items, dtype=np.float32).reshape(-1, 2)
    if len(items) > n_max:
        raise ValueError(f"{len(items)} items do not fit n_max={n_max}")
    # np.lexsort sorts by its *last* key first. The release passes (x, y), i.e. sorts by y
    # first; we sort by x first as docs/paper.md says. Order is irrelevant to a DeepSets network.
    items = items[np.lexsort((items[:, 1], items[:, 0]))]
    goal_set = np.zeros((n_max, 3), dtype=np.float32)
    goal_set[: len(items), 0] = 1.0
    goal_set[: len(items), 1:] = items
    return goal_set


def sample_drive_seek_goals(rng: np.random.Generator, n_max: int = MAX_GOALS) -> np.ndarray:
    """`n ~ U{1..n_max}` distinct cells of `[-10, 10]^2`, drawn without replacement.

    The draws mirror the release (`integers`, then `choice` over the 441 cells in row-major
    order without shuffling), so n_max may not exceed 441.
    """
    if not 1 <= n_max <= TORUS * TORUS:
        raise ValueError(f"DriveSeek needs 1 <= n_max <= {TORUS * TORUS}, got {n_max}")
    count = int(rng.integers(1, n_max + 1))
    cells = np.argwhere(np.ones((TORUS, TORUS), dtype=bool)) - GRID
    items = rng.choice(cells, size=count, replace=False, shuffle=False)
    return pack_goal_set(items, n_max)


def sample_noisy_seek_goals(rng: np.random.Generator, n_max: int = MAX_GOALS) -> np.ndarray:
    """Clustered goals: docs/paper.md §2, with the choices the paper leaves open taken from the
    release (`noisy_seek.py`):

    * `n' ~ U{1..n_max}` items before de-duplication; clusters `n_c ~ Geometric(0.15)`
      (support 1, 2, ...); weights `w ~ Dirichlet(1, ..., 1)`.
    * The n' items are split across clusters by one multinomial draw `Multinomial(n', w)`,
      so a cluster may get no items (its centre is still drawn, keeping the stream aligned).
    * Each cluster: centre `~ N(0, 10²)` per coordinate, items `centre + N(0, 2²)`, rounded
      with `rint` (halves to even).
    * Duplicate cells are merged, so the count is `1 <= n <= n'`: duplicates are *not*
      redrawn, and clustered items collide often (tight clusters of many items lose most of
      them). The count is clipped to n_max, which with `n' <= n_max` never binds.
    """
    requested = int(rng.integers(1, n_max + 1))
    clusters = int(rng.geometric(CLUSTER_P))
    sizes = rng.multinomial(requested, rng.dirichlet(np.ones(clusters)))
    items = []
    for size in sizes:
        centre = rng.normal(0.0, CENTRE_SIGMA, size=2)
        items.append(np.rint(centre + rng.normal(0.0, CLUSTER_SIGMA, size=(size, 2))))
    unique = np.unique(np.concatenate(items), axis=0)[:n_max]
    return pack_goal_set(unique, n_max)


class MultiGoalCore(BatchedCore):
    """State of n copies: positions, goal sets, step counters, success flags, one RNG each.

    Subclasses define the motion (`_move`), the goal sampler and the observation vector.
    """

    obs_dim: int

    def __init__(self, num_copies: int, n_max: int):
        super().__init__(num_copies)
        self.n_max = n_max
        self.position = np.zeros((num_copies, 2), dtype=np.float32)
        self.goal_set = np.zeros((num_copies, n_max, 3), dtype=np.float32)

    def sample_goal_set(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def reset_copies(self, mask: np.ndarray) -> None:
        # Copy by copy, so that each copy's stream depends on its seed alone.
        for i in np.flatnonzero(mask):
            self.goal_set[i] = self.sample_goal_set(self.rngs[i])
        self.position[mask] = 0.0
        self.elapsed[mask] = 0
        self.reached[mask] = False

    def _move(self, action: np.ndarray, active: np.ndarray) -> None:
        raise NotImplementedError

    def step(self, action: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Advance the `active` copies only (the others are about to reset and must not draw
        motion noise, or the vector env's streams would drift from single envs')."""
        self._move(np.asarray(action, dtype=np.float64).reshape(self.num_copies, -1), active)
        self.elapsed[active] += 1
        reward = multi_goal_reward(self.achieved_goal(), self.goal_set)
        reward[~active] = 0.0
        self.reached |= reward == 1.0
        return reward

    def achieved_goal(self) -> np.ndarray:
        return np.rint(self.position)

    def observation_vector(self) -> np.ndarray:
        raise NotImplementedError

    def observation(self) -> dict[str, np.ndarray]:
        return {
            "observation": self.observation_vector(),
            "achieved_goal": self.achieved_goal(),
            "desired_goal": self.goal_set.copy(),
        }


class DriveSeekCore(MultiGoalCore):
    """A car at unit speed on the 21 x 21 torus, steered by `a ∈ [-1, 1]`: `θ += 0.5 a`,
    `pos += (cos θ, sin θ)`, `pos = (pos + 10.5) mod 21 - 10.5`. Starts at 0 heading 0.

    Actions are clipped to the action space (the release relied on its learner to clip).
    The heading is kept in float64 and the position in float32, as in the release; the
    observation `(pos, cos θ, sin θ)` is float32.
    """

    obs_dim = 4

    def __init__(self, num_copies: int, n_max: int):
        super().__init__(num_copies, n_max)
        self.heading = np.zeros(num_copies, dtype=np.float64)

    def sample_goal_set(self, rng: np.random.Generator) -> np.ndarray:
        return sample_drive_seek_goals(rng, self.n_max)

    def reset_copies(self, mask: np.ndarray) -> None:
        super().reset_copies(mask)
        self.heading[mask] = 0.0

    def _move(self, action: np.ndarray, active: np.ndarray) -> None:
        steer = np.clip(action[active, 0], -1.0, 1.0)
        heading = self.heading[active] + STEER_RATE * steer
        velocity = np.stack([np.cos(heading), np.sin(heading)], axis=-1)
        half = TORUS / 2
        wrapped = np.mod(self.position[active] + velocity + half, TORUS) - half
        self.heading[active] = heading
        self.position[active] = wrapped.astype(np.float32)

    def observation_vector(self) -> np.ndarray:
        trig = np.stack([np.cos(self.heading), np.sin(self.heading)], axis=-1)
        return np.concatenate([self.position, trig.astype(np.float32)], axis=-1)


class NoisySeekCore(MultiGoalCore):
    """A point in the unbounded plane: `a` rescaled to norm ≤ 1, then
    `pos += a + N(0, σ²)` per coordinate (σ = 1 in the paper). Starts at 0.

    The action space is the box [-1, 1]^2, but the dynamics only rescale by the norm (no
    per-coordinate clip), so any a ∈ R^2 is accepted, as the paper states.
    """

    obs_dim = 2

    def __init__(self, num_copies: int, n_max: int, noise_sigma: float = 1.0):
        super().__init__(num_copies, n_max)
        self.noise_sigma = noise_sigma

    def sample_goal_set(self, rng: np.random.Generator) -> np.ndarray:
        return sample_noisy_seek_goals(rng, self.n_max)

    def _move(self, action: np.ndarray, active: np.ndarray) -> None:
        step = action / np.maximum(np.linalg.norm(action, axis=-1, keepdims=True), 1.0)
        for i in np.flatnonzero(active):
            step[i] += self.rngs[i].normal(0.0, self.noise_sigma, size=2)
        self.position[active] = (self.position[active] + step[active]).astype(np.float32)

    def observation_vector(self) -> np.ndarray:
        return self.position.copy()


def _observation_space(core_cls: type[MultiGoalCore], n_max: int) -> spaces.Dict:
    if core_cls is DriveSeekCore:
        half = TORUS / 2
        obs = spaces.Box(
            np.array([-half, -half, -1.0, -1.0], np.float32),
            np.array([half, half, 1.0, 1.0], np.float32),
            dtype=np.float32,
        )
        achieved = spaces.Box(-GRID, GRID, shape=(2,), dtype=np.float32)
        bound = float(GRID)
    else:
        obs = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        achieved = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        bound = np.inf
    low = np.tile(np.array([0.0, -bound, -bound], np.float32), (n_max, 1))
    high = np.tile(np.array([1.0, bound, bound], np.float32), (n_max, 1))
    desired = spaces.Box(low, high, dtype=np.float32)
    return spaces.Dict({"observation": obs, "achieved_goal": achieved, "desired_goal": desired})


def _action_space(core_cls: type[MultiGoalCore]) -> spaces.Box:
    dim = 1 if core_cls is DriveSeekCore else 2
    return spaces.Box(-1.0, 1.0, shape=(dim,), dtype=np.float32)


class _MultiGoalEnv(gym.Env):
    """Single-copy face. The 40-step limit comes from the registered TimeLimit wrapper."""

    metadata = {"render_modes": []}
    core_cls: type[MultiGoalCore]

    def __init__(self, n_max: int = MAX_GOALS, **core_kwargs: Any):
        self.n_max = n_max
        self.core = self.core_cls(1, n_max, **core_kwargs)
        self.observation_space = _observation_space(self.core_cls, n_max)
        self.action_space = _action_space(self.core_cls)

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.core.seed([seed])
        self.core.reset_copies(np.ones(1, dtype=bool))
        return self._obs(), {"is_success": False}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        reward = self.core.step(np.asarray(action)[None], np.ones(1, dtype=bool))
        info = {"is_success": bool(self.core.reached[0])}
        return self._obs(), float(reward[0]), False, False, info

    def compute_reward(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any = None
    ) -> np.ndarray:
        """Vectorised over leading axes: achieved `[..., 2]`, desired `[..., n_max, 3]`."""
        return multi_goal_reward(achieved_goal, desired_goal)

    def item_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        """`R_item` `[..., n_max]`; see the module-level `item_reward`."""
        return item_reward(achieved_goal, desired_goal)

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.core.observation().items()}


class _MultiGoalVectorEnv(CoreVectorEnv):
    """Native vector face: S copies stepped with array operations, next-step autoreset.

    `reset(seed=[s_0, ..., s_{S-1}])` seeds copy i with s_i; an int seeds copy i with seed+i.
    Episodes are truncated after `max_episode_steps` (40); there are no terminal states.
    """

    core_cls: type[MultiGoalCore]

    def __init__(
        self,
        num_envs: int,
        n_max: int = MAX_GOALS,
        max_episode_steps: int = EPISODE_STEPS,
        **core_kwargs: Any,
    ):
        # gymnasium.make_vec passes the registered max_episode_steps; the vector face
        # enforces it itself (there is no TimeLimit wrapper around a native vector env).
        self.num_envs, self.n_max = num_envs, n_max
        self.max_episode_steps = max_episode_steps
        self.core = self.core_cls(num_envs, n_max, **core_kwargs)
        self.single_observation_space = _observation_space(self.core_cls, n_max)
        self.single_action_space = _action_space(self.core_cls)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._init_autoreset()

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        resetting = self._needs_reset.copy()
        # Copies that ended last step start a new episode instead of moving.
        reward = self.core.step(actions, ~resetting)
        if resetting.any():
            self.core.reset_copies(resetting)
        truncated = (self.core.elapsed >= self.max_episode_steps) & ~resetting
        self._needs_reset = truncated.copy()
        terminated = np.zeros(self.num_envs, dtype=bool)
        info = {"is_success": self.core.reached.copy()}
        return self.core.observation(), reward, terminated, truncated, info

    def compute_reward(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any = None
    ) -> np.ndarray:
        return multi_goal_reward(achieved_goal, desired_goal)

    def item_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
        return item_reward(achieved_goal, desired_goal)


class DriveSeekEnv(_MultiGoalEnv):
    """DriveSeek, single copy: `gym.make("reengage/DriveSeek-v0", n_max=200)`."""

    core_cls = DriveSeekCore


class DriveSeekVectorEnv(_MultiGoalVectorEnv):
    """DriveSeek, S copies: `gym.make_vec("reengage/DriveSeek-v0", num_envs=S,
    vectorization_mode="vector_entry_point", n_max=200)`."""

    core_cls = DriveSeekCore


class NoisySeekEnv(_MultiGoalEnv):
    """NoisySeek, single copy; `noise_sigma` (default 1) scales the motion noise."""

    core_cls = NoisySeekCore


class NoisySeekVectorEnv(_MultiGoalVectorEnv):
    """NoisySeek, S copies stepped together; `noise_sigma` as in `NoisySeekEnv`."""

    core_cls = NoisySeekCore
