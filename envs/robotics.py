"""The paper's robotics tasks, from gymnasium-robotics (MuJoCo), made headless.

gymnasium-robotics registers its ids when it is imported, and importing it loads MuJoCo (and
prints a notice), so nothing imports it until a robotics task is made: the ids the harness
names (reengage/registry.py, ROBOTICS_ENVS) carry the `gymnasium_robotics:` prefix, which
makes gymnasium import that module first. The package is the optional `robotics` extra
(`pip install 'reengage[robotics]'`, which pins mujoco 3.11.0: later releases break
gymnasium-robotics 1.4.2's resets).

No rendering is ever asked for (`render_mode` stays None), so no display and no MUJOCO_GL
setting is needed.
"""

from __future__ import annotations

import importlib

import numpy as np

PACKAGE = "gymnasium_robotics"


def require_robotics() -> None:
    """Import gymnasium-robotics (registering its ids), or say how to install it."""
    try:
        importlib.import_module(PACKAGE)
    except ImportError as error:
        raise ImportError("the robotics tasks need gymnasium-robotics and mujoco 3.11.0: "
                          "pip install 'reengage[robotics]'") from error


def batched_reward(env: object, achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
    """`env.unwrapped.compute_reward` over any leading axes (`[..., goal_dim]` -> `[...]`):
    the robotics rewards are vectorised over one leading axis, so the others are folded
    into it."""
    compute = env.unwrapped.compute_reward  # type: ignore[attr-defined]
    width = achieved.shape[-1]
    reward = compute(achieved.reshape(-1, width), desired.reshape(-1, width), None)
    return np.asarray(reward, dtype=np.float32).reshape(achieved.shape[:-1])
