"""Device-resident training (docs/design.md "On a GPU"): the task, the replay buffer with HER
sampling, exploration and evaluation as tensors on one device, composed with the
population learner (agents/ddpg.py, agents/multi_goal.py) by a short driver that reads the
device only at log points and, on CUDA, replays each step as a CUDA graph.

One job per module: `streams` (per-member counter-based random numbers), `task` (what a
task provides, and which trains which env), `seek` (ContinuousSeek), `goal_sets` (DriveSeek
and NoisySeek), `replay` (episode buffer, HER `future`), `evaluator`, `logger`, `graphs`
(eager or captured steps), `pack` (which grid cells train as one population), `driver`
(`train_on_device`, `train_pack`).
"""

from .driver import train_on_device, train_pack
from .pack import PackedCell

__all__ = ["PackedCell", "train_on_device", "train_pack"]
