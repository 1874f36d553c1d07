"""Episode replay with HER `future` relabelling at sample time, for a population.

Storage is by whole episodes of fixed length T, one ring per member:
observations and achieved goals have T+1 entries per episode (so a next observation is
never stored twice), actions T, and the desired goal is stored once per episode. A
transition becomes sampleable when its episode is complete, because its future is then
known. Every member samples with its own generator, so member i's batches depend on
member i's seed alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RewardFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
HER_FUTURES = ("next_to_final", "next_to_penultimate")
"""Which later states HER `future` draws a relabelled goal from (see EpisodeReplay)."""
HER_RELABELS = ("probability", "exact")
"""How many samples of a batch get a relabelled goal (see EpisodeReplay)."""


@dataclass
class Batch:
    """Arrays of shape [members, batch, ...]; `relabelled` marks HER goals."""

    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    goal: np.ndarray
    reward: np.ndarray
    relabelled: np.ndarray
    achieved: np.ndarray
    """The achieved goal at `obs` (the networks may see it: `inputs: sb3`)."""
    next_achieved: np.ndarray
    """The achieved goal at `next_obs`, from which the reward was computed."""


class EpisodeReplay:
    """Ring buffer of complete episodes for `members` learners trained in lockstep.

    `her_k` relabelled goals per real one gives a relabelling probability k/(k+1)
    (0.8 for k = 4), as Stable-Baselines3's HerReplayBuffer does; `her_relabel="exact"`
    relabels exactly int(k/(k+1)·B) samples of each batch, as SB3 itself does, instead of
    each sample with that probability. `her_future` says which later states a relabelled
    goal comes from: `next_to_final` (SB3 2.x) any state after the transition's, the
    episode's final one included; `next_to_penultimate` (SB3 1.3, the paper's release)
    never the final state, so an episode's last transition is never relabelled.
    `achieved_dim` differs from `goal_dim` only where a goal is a set (HER is then off).
    `achieved_in_obs` says the achieved goal is the observation's first `achieved_dim`
    entries (ContinuousSeek): it is then a view of the stored observations, not a second
    copy.
    """

    def __init__(
        self,
        members: int,
        capacity_steps: int,
        episode_steps: int,
        obs_dim: int,
        goal_dim: int,
        action_dim: int,
        reward_fn: RewardFn,
        rngs: list[np.random.Generator],
        her_k: int = 4,
        achieved_dim: int | None = None,
        achieved_in_obs: bool = False,
        her_future: str = "next_to_final",
        her_relabel: str = "probability",
    ):
        if len(rngs) != members:
            raise ValueError(f"need one generator per member ({members}), got {len(rngs)}")
        self.members, self.T = members, episode_steps
        self.capacity = max(1, capacity_steps // episode_steps)
        self.reward_fn, self.rngs = reward_fn, rngs
        self.relabel_probability = her_k / (her_k + 1) if her_k > 0 else 0.0
        if her_future not in HER_FUTURES:
            raise ValueError(f"unknown her_future {her_future!r}")
        if her_relabel not in HER_RELABELS:
            raise ValueError(f"unknown her_relabel {her_relabel!r}")
        self.final_goal = her_future == "next_to_final"
        self.exact_fraction = her_relabel == "exact"
        achieved_dim = goal_dim if achieved_dim is None else achieved_dim
        if self.relabel_probability and achieved_dim != goal_dim:
            raise ValueError("HER relabelling needs achieved and desired goals of one size")
        shape = (members, self.capacity)
        self.obs = np.zeros((*shape, episode_steps + 1, obs_dim), np.float32)
        if achieved_in_obs and achieved_dim > obs_dim:
            raise ValueError("the achieved goal cannot be longer than the observation")
        self.actions = np.zeros((*shape, episode_steps, action_dim), np.float32)
        self.desired = np.zeros((*shape, goal_dim), np.float32)
        # The episode being collected lives apart until it is complete.
        self._obs = np.zeros((members, episode_steps + 1, obs_dim), np.float32)
        if achieved_in_obs:
            self.achieved = self.obs[..., :achieved_dim]
            self._achieved = self._obs[..., :achieved_dim]
        else:
            self.achieved = np.zeros((*shape, episode_steps + 1, achieved_dim), np.float32)
            self._achieved = np.zeros((members, episode_steps + 1, achieved_dim), np.float32)
        self._actions = np.zeros((members, episode_steps, action_dim), np.float32)
        self._desired = np.zeros((members, goal_dim), np.float32)
        # One row per stored vector, for sampling by flat row index. The arrays were just
        # allocated whole, so these reshapes are views, never copies.
        self._obs_rows = self.obs.reshape(-1, obs_dim)
        self._achieved_rows = None if achieved_in_obs else self.achieved.reshape(-1, achieved_dim)
        self._action_rows = self.actions.reshape(-1, action_dim)
        self._desired_rows = self.desired.reshape(-1, goal_dim)
        self._t = 0
        self.cursor = 0
        self.size = 0

    @property
    def transitions(self) -> int:
        """Sampleable transitions per member."""
        return self.size * self.T

    @property
    def nbytes(self) -> int:
        arrays = (self.obs, self.achieved, self.actions, self.desired)
        return sum(a.nbytes for a in arrays if a.base is None)  # a view owns no memory

    def start_episode(self, obs: np.ndarray, achieved: np.ndarray, desired: np.ndarray) -> None:
        self._obs[:, 0], self._achieved[:, 0], self._desired[:] = obs, achieved, desired
        self._t = 0

    def add_step(self, action: np.ndarray, next_obs: np.ndarray, next_achieved: np.ndarray) -> None:
        t = self._t
        if t >= self.T:
            raise RuntimeError("episode already has T steps; call start_episode")
        self._actions[:, t] = action
        self._obs[:, t + 1], self._achieved[:, t + 1] = next_obs, next_achieved
        self._t = t + 1
        if self._t == self.T:
            self._commit()

    def _commit(self) -> None:
        c = self.cursor
        self.obs[:, c], self.achieved[:, c] = self._obs, self._achieved
        self.actions[:, c], self.desired[:, c] = self._actions, self._desired
        self.cursor = (c + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def state_dict(self) -> dict[str, object]:
        """The stored episodes (only the filled part) and ring position, for checkpoints.
        Taken between episodes, so the episode being collected is not part of it."""
        if 0 < self._t < self.T:
            raise RuntimeError("checkpoint the replay between episodes, not inside one")
        n = self.size
        state = {
            "obs": self.obs[:, :n], "actions": self.actions[:, :n],
            "desired": self.desired[:, :n], "cursor": self.cursor, "size": self.size,
        }
        if self.achieved.base is None:
            state["achieved"] = self.achieved[:, :n]
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        n = int(state["size"])  # type: ignore[arg-type]
        if n > self.capacity:
            raise ValueError(f"checkpoint holds {n} episodes, capacity is {self.capacity}")
        for name in ("obs", "achieved", "actions", "desired"):
            if name in state:
                getattr(self, name)[:, :n] = state[name]
        self.cursor, self.size, self._t = int(state["cursor"]), n, 0  # type: ignore[arg-type]

    def sample(self, batch_size: int) -> Batch:
        if self.size == 0:
            raise RuntimeError("no complete episode stored yet")
        M, B, T = self.members, batch_size, self.T
        episode = np.empty((M, B), np.int64)
        step = np.empty((M, B), np.int64)
        relabel = np.empty((M, B), bool)
        uniform = np.empty((M, B))
        p = self.relabel_probability
        # SB3 relabels the first int(p·B) samples of a batch; samples are exchangeable.
        exact = np.arange(B) < int(p * B)
        # Without the final state a one-step episode has no future to relabel with.
        last_step = T if self.final_goal else T - 1
        for m, rng in enumerate(self.rngs):
            episode[m] = rng.integers(0, self.size, B)
            if self.final_goal:
                step[m] = rng.integers(0, T, B)
                relabel[m] = exact if self.exact_fraction else rng.random(B) < p
            else:  # draws in another order: which samples are relabelled decides their step
                relabel[m] = exact if self.exact_fraction else rng.random(B) < p
                relabel[m] &= last_step > 0
                step[m] = rng.integers(0, np.where(relabel[m], last_step, T))
            uniform[m] = rng.random(B)
        # `future`: the achieved goal at the next state or a later one of the episode, up to
        # the final state (index T) or the one before it (T - 1).
        future = step + 1 + np.floor(uniform * np.maximum(last_step - step, 0)).astype(np.int64)
        # Gathers go through flat row indices into 2-D views: `take` on rows is several
        # times faster than indexing with three index arrays, most of all on a full buffer.
        episode += np.arange(M)[:, None] * self.capacity  # now counted across members
        first_obs = episode * (T + 1)
        now = first_obs + step
        obs_rows = self._obs_rows
        obs, next_obs = obs_rows.take(now, axis=0), obs_rows.take(now + 1, axis=0)
        if self._achieved_rows is None:  # the achieved goal leads the observation
            width = self.achieved.shape[-1]
            achieved, next_achieved = obs[..., :width], next_obs[..., :width]
            future_achieved = obs_rows.take(first_obs + future, axis=0)[..., :width]
        else:
            achieved = self._achieved_rows.take(now, axis=0)
            next_achieved = self._achieved_rows.take(now + 1, axis=0)
            future_achieved = self._achieved_rows.take(first_obs + future, axis=0)
        goal = self._desired_rows.take(episode, axis=0)
        if self.relabel_probability:
            goal = np.where(relabel[..., None], future_achieved, goal)
        return Batch(
            obs=obs,
            action=self._action_rows.take(episode * T + step, axis=0),
            next_obs=next_obs,
            goal=goal,
            reward=self.reward_fn(next_achieved, goal).astype(np.float32),
            relabelled=relabel,
            achieved=achieved,
            next_achieved=next_achieved,
        )
