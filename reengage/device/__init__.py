"""Device-resident training (docs/design.md "On a GPU"): the task, the replay buffer with HER
sampling, exploration and evaluation as tensors on one device, composed with the
population learner (agents/ddpg.py) by a short driver that reads the device only at log
points and, on CUDA, replays each step as a CUDA graph.

One job per module: `streams` (per-member counter-based random numbers), `seek`
(ContinuousSeek), `replay` (episode buffer, HER `future`), `evaluator`, `logger`, `graphs`
(eager or captured steps), `driver` (`train_on_device`).
"""

from .driver import train_on_device

__all__ = ["train_on_device"]
