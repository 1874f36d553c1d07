"""The Perfect Greedy Agent, NoisySeek's hand-written baseline (docs/paper.md §2).

It steps toward the nearest present goal at full speed: a unit step, or exactly the
remaining distance when the goal is closer than 1 (so it parks on a goal once there,
up to the motion noise). It knows the dynamics but plans one goal at a time, so a learner
that weighs clusters of goals against distance can beat it.

Like every learner here it never imports envs: it acts on observation arrays (the goal
set as `[..., n_max, 3]` rows `(b, x, y)`), batched over copies.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch


def greedy_action(position: np.ndarray, goal_set: np.ndarray) -> np.ndarray:
    """Actions `[..., 2]` for positions `[..., 2]` and goal sets `[..., n_max, 3]`.

    "Nearest" is the Euclidean distance from the continuous position to the (integer)
    goal cell. Ties go to the first row of the goal set, which is deterministic because
    present rows are sorted (x, then y). A goal set with no present row gives action 0.
    """
    position = np.asarray(position, dtype=np.float64)
    goal_set = np.asarray(goal_set, dtype=np.float64)
    offset = goal_set[..., 1:] - position[..., None, :]
    distance = np.where(goal_set[..., 0] != 0, np.linalg.norm(offset, axis=-1), np.inf)
    nearest = np.argmin(distance, axis=-1)
    direction = np.take_along_axis(offset, nearest[..., None, None], axis=-2)[..., 0, :]
    gap = np.take_along_axis(distance, nearest[..., None], axis=-1)
    # Full speed: rescale to unit length when farther than 1, else land exactly on the goal.
    # With no present goal the gap is infinite and the action comes out as 0.
    return (direction / np.maximum(gap, 1.0)).astype(np.float32)


def greedy_policy(observation: dict[str, np.ndarray]) -> np.ndarray:
    """`greedy_action` on a (batched) dict observation: position = `observation[..., :2]`."""
    return greedy_action(observation["observation"][..., :2], observation["desired_goal"])


class VectorEnvLike(Protocol):
    """What `greedy_mean_return` needs: gymnasium's vector env API."""

    num_envs: int
    metadata: dict[str, Any]

    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[Any, dict]: ...

    def step(self, actions: np.ndarray) -> tuple[Any, Any, Any, Any, dict]: ...


def greedy_mean_return(
    env: VectorEnvLike, episodes: int = 1000, seed: int | list[int] | None = None
) -> tuple[float, float]:
    """Mean episode return of the greedy agent and its standard error.

    Every copy runs the same number of whole episodes (`ceil(episodes / num_envs)`), so the
    estimate uses at least `episodes` episodes and favours no copy. With gymnasium's
    NEXT_STEP autoreset (our native vector envs) the step after an episode's end only
    resets that copy; its reward is not part of any episode and is skipped. Under
    SAME_STEP autoreset every step belongs to an episode.
    """
    mode = env.metadata.get("autoreset_mode", "NextStep")
    next_step = getattr(mode, "value", mode) == "NextStep"
    rounds = -(-episodes // env.num_envs)
    obs, _ = env.reset(seed=seed)
    running = np.zeros(env.num_envs)
    finished = np.zeros(env.num_envs, dtype=np.int64)
    resetting = np.zeros(env.num_envs, dtype=bool)
    returns: list[float] = []
    while (finished < rounds).any():
        obs, reward, terminated, truncated, _ = env.step(greedy_policy(obs))
        counted = ~resetting if next_step else np.ones(env.num_envs, dtype=bool)
        running += np.where(counted, reward, 0.0)
        done = (np.asarray(terminated) | np.asarray(truncated)) & counted
        for i in np.flatnonzero(done):
            if finished[i] < rounds:
                returns.append(float(running[i]))
            finished[i] += 1
            running[i] = 0.0
        resetting = done if next_step else resetting
    values = np.asarray(returns)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


class GreedyLearner:
    """The greedy agent behind the harness's learner interface: it acts on flattened goal
    sets `[M, n, n_max * 3]` and never trains (its method is registered with trains=False).
    The position is the observation's first two entries, which start at state column
    `position_at` (after the achieved cell when the state leads with it)."""

    def __init__(self, n_max: int, position_at: int = 0):
        self.n_max, self.position_at = n_max, position_at

    def act(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        goal_set = goal.reshape(*goal.shape[:-1], self.n_max, 3)
        position = obs[..., self.position_at:self.position_at + 2]
        action = greedy_action(position.cpu().numpy(), goal_set.cpu().numpy())
        return torch.as_tensor(action, device=obs.device)

    def update(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        raise RuntimeError("the greedy agent does not train")
