"""What every native vector env of this package shares: per-copy seeding on reset, the
next-step autoreset flag, and checkpointable state. A subclass owns a batched `core`
(arrays over copies, one RNG per copy) and implements `step`."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv


class BatchedCore:
    """The state every task's core keeps per copy: step counters, success flags and one
    random stream each (so a copy's episodes depend on its own seed alone). Subclasses add
    their arrays; every numpy array attribute is part of the checkpointed state."""

    def __init__(self, num_copies: int):
        self.num_copies = num_copies
        self.elapsed = np.zeros(num_copies, dtype=np.int64)
        self.reached = np.zeros(num_copies, dtype=bool)
        self.rngs = [np.random.default_rng() for _ in range(num_copies)]

    def seed(self, seeds: list[int | None]) -> None:
        for i, seed in enumerate(seeds):
            if seed is not None:
                self.rngs[i] = np.random.default_rng(seed)

    def get_state(self) -> dict[str, Any]:
        arrays = {k: v.copy() for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        return {**arrays, "rngs": [rng.bit_generator.state for rng in self.rngs]}

    def set_state(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if key != "rngs":
                setattr(self, key, np.array(value, copy=True))
        for rng, rng_state in zip(self.rngs, state["rngs"], strict=True):
            rng.bit_generator.state = rng_state


class CoreVectorEnv(VectorEnv):
    """Base of the native vector faces. The core provides `seed(list)`, `reset_copies(mask)`,
    `observation()`, `reached`, `get_state()` and `set_state(state)`; `step` below also
    needs `step(actions) -> (reward, truncated)` (a face whose core differs, as the goal-set
    tasks' does, overrides it)."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}
    core: Any

    def _init_autoreset(self) -> None:
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """`seed=[s_0, ..., s_{S-1}]` seeds copy i with s_i; an int seeds copy i with
        seed + i; None continues every copy's stream."""
        if isinstance(seed, int):
            seed = [seed + i for i in range(self.num_envs)]
        if seed is not None:
            if len(seed) != self.num_envs:
                raise ValueError(f"expected {self.num_envs} seeds, got {len(seed)}")
            self.core.seed(list(seed))
        self.core.reset_copies(np.ones(self.num_envs, dtype=bool))
        self._needs_reset[:] = False
        return self.core.observation(), {"is_success": self.core.reached.copy()}

    def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray,
                                                  np.ndarray, np.ndarray, dict[str, Any]]:
        resetting = self._needs_reset.copy()
        # A copy whose episode ended last step starts a new one instead: it still takes its
        # action on the old state, which is then replaced, so the new episode does not
        # depend on that action, and the step earns nothing.
        reward, truncated = self.core.step(actions)
        if resetting.any():
            self.core.reset_copies(resetting)
            reward[resetting] = 0.0
            truncated[resetting] = False
        self._needs_reset = truncated.copy()
        terminated = np.zeros(self.num_envs, dtype=bool)
        info = {"is_success": self.core.reached.copy()}
        return self.core.observation(), reward, terminated, truncated, info

    def get_state(self) -> dict[str, Any]:
        """Everything that determines the copies' future, for checkpoints."""
        return {**self.core.get_state(), "needs_reset": self._needs_reset.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self._needs_reset = np.array(state.pop("needs_reset"), copy=True)
        self.core.set_state(state)
