"""The environments of Propositions 1 and 2 (docs/paper.md §3): reach along an unknown rotation.

The agent moves with `s' = s + U a`, `‖a‖₂ ≤ 1`, for an orthogonal `U` it does not know, and
is paid `R(s, g) = gᵀs`. The optimal policy is `Uᵀg/‖g‖₂`, so learning to act *is* learning
`U`; the two propositions count how many transitions each critic loss needs to pin `U`
down (`~d²/2` for the TD loss, `~d` for ReenGAGE's goal-gradient loss). The harness
measures that count in `reengage.theory`.

Choices the paper leaves open, made here once for every user of these tasks:

* `U` is the task's unknown, not an episode variable: it is drawn Haar-uniformly on the
  orthogonal group O(d) (QR of a Gaussian matrix with the sign fix) from `rotation_seed`
  when the env is built, and stays fixed across episodes and reset seeds, so there is
  something to learn across episodes. Another `rotation_seed` is another task.
* Goals are uniform on the unit sphere: the reward of one optimal step is then exactly 1,
  and the goal's length (which does not change the optimal policy) carries no signal.
* RotationReach starts at the origin. TwoPhaseRotation starts at `(s¹, s²) = (e, 0)` with
  `e` uniform on the unit sphere: a start with `s¹ = s² = 0` would stay at the origin
  forever, and with `s¹ ≠ 0` the first step is already an informative one.
* Observation bounds: `‖s‖₂` grows by at most 1 per step (by at most 1 per two steps in
  TwoPhaseRotation), so every coordinate stays within `±(1 + EPISODE_STEPS)` over the
  registered 20-step episodes. The box says so; the dynamics are never clipped (the
  propositions need them linear), so an unwrapped env stepped beyond 20 steps without a
  reset can leave the box. Goals share the box so that achieved goals are valid desired
  goals (HER relabelling).
* The action space is the box `[-1, 1]^d`, the bounding box of the unit ball; actions
  longer than 1 are rescaled to length 1 (direction kept).
* Everything is float64, so the theory measurements are not limited by float32 rounding.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

EPISODE_STEPS = 20
BOUND = 1.0 + EPISODE_STEPS


def haar_orthogonal(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-uniform element of O(dim): QR of a Gaussian matrix, signs fixed by diag(R).

    Without the sign fix QR's convention biases the distribution (Mezzadri 2007).
    """
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def unit_sphere(rng: np.random.Generator, size: tuple[int, ...], dim: int) -> np.ndarray:
    """Points uniform on the unit sphere of R^dim (normalised Gaussians)."""
    x = rng.standard_normal((*size, dim))
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def project_to_unit_ball(action: np.ndarray) -> np.ndarray:
    """Rescale actions longer than 1 to length 1; shorter ones pass unchanged."""
    action = np.asarray(action, dtype=np.float64)
    norm = np.linalg.norm(action, axis=-1, keepdims=True)
    return action / np.maximum(norm, 1.0)


def linear_reward(achieved_goal: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
    """`R = gᵀs`, vectorised over leading axes."""
    return np.sum(np.asarray(achieved_goal) * np.asarray(desired_goal), axis=-1)


def rotation_reach_step(state: np.ndarray, action: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Proposition 1's dynamics `s' = s + U a` (a rescaled into the unit ball), any leading axes."""
    return state + project_to_unit_ball(action) @ rotation.T


def two_phase_step(state: np.ndarray, action: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Proposition 2's dynamics on `state = (s¹, s²)`, any leading axes.

    If `s¹ ≠ 0`: `(s¹', s²') = (0, s¹ + U a)`; else `(s¹', s²') = (s², 0)` (action ignored).
    """
    dim = rotation.shape[0]
    first, second = state[..., :dim], state[..., dim:]
    moving = np.any(first != 0.0, axis=-1, keepdims=True)
    moved = first + project_to_unit_ball(action) @ rotation.T
    new_first = np.where(moving, 0.0, second)
    new_second = np.where(moving, moved, 0.0)
    return np.concatenate([new_first, new_second], axis=-1)


def _box(dim: int) -> spaces.Box:
    return spaces.Box(-BOUND, BOUND, shape=(dim,), dtype=np.float64)


class _RotationEnvBase(gym.Env):
    """Shared face of both tasks; subclasses define the state layout and the step."""

    metadata = {"render_modes": []}
    state_factor = 1

    def __init__(self, dim: int = 4, rotation_seed: int = 0):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.rotation_seed = rotation_seed
        self._rotation = haar_orthogonal(dim, np.random.default_rng(rotation_seed))
        self.observation_space = spaces.Dict(
            {
                "observation": _box(self.state_factor * dim),
                "achieved_goal": _box(dim),
                "desired_goal": _box(dim),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(dim,), dtype=np.float64)
        self.state = np.zeros(self.state_factor * dim)
        self.goal = np.zeros(dim)

    @property
    def rotation(self) -> np.ndarray:
        """The unknown `U` (a copy): what the theory experiment compares the learner with."""
        return self._rotation.copy()

    def transition(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        """The dynamics as a pure function, vectorised over leading axes."""
        raise NotImplementedError

    def start_state(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def achieved(self, state: np.ndarray) -> np.ndarray:
        """The part of the state the reward reads (`s`, or `s¹` in TwoPhaseRotation)."""
        return state[..., : self.dim]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state = self.start_state(self.np_random)
        self.goal = unit_sphere(self.np_random, (), self.dim)
        return self._obs(), {}

    def step(self, action):
        self.state = self.transition(self.state, np.asarray(action, dtype=np.float64))
        reward = float(linear_reward(self.achieved(self.state), self.goal))
        return self._obs(), reward, False, False, {}

    def compute_reward(self, achieved_goal, desired_goal, info=None) -> np.ndarray:
        return linear_reward(achieved_goal, desired_goal)

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "observation": self.state.copy(),
            "achieved_goal": self.achieved(self.state).copy(),
            "desired_goal": self.goal.copy(),
        }


class RotationReachEnv(_RotationEnvBase):
    """Proposition 1: `s' = s + U a`, reward `gᵀs'`, start at the origin."""

    def transition(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        return rotation_reach_step(state, action, self._rotation)

    def start_state(self, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(self.dim)


class TwoPhaseRotationEnv(_RotationEnvBase):
    """Proposition 2: state `(s¹, s²)`, reward `gᵀs¹'`; moves happen on `s¹ ≠ 0` steps only.

    A move parks the new position in `s²` (reward 0), the next step brings it back to `s¹`
    (reward `gᵀs²`), so only the tuples with `s¹ ≠ 0` carry information about `U`.
    """

    state_factor = 2

    def transition(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        return two_phase_step(state, action, self._rotation)

    def start_state(self, rng: np.random.Generator) -> np.ndarray:
        return np.concatenate([unit_sphere(rng, (), self.dim), np.zeros(self.dim)])
