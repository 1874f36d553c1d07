"""Deterministic evaluation episodes on the device: every member's `episodes` copies of the
task stepped together with the policy's actions, no noise, results left on the device.

Evaluation `k`'s goals come from the member's EVALUATION stream at counter k (a device
scalar advanced here), so each evaluation sees fresh goals, and a member's goals depend on
its seed alone, as the numpy loop's evaluator seeds each copy from the member's stream. A
task with motion noise (NoisySeek) has its move counter set to k·T first, so evaluation k's
noise, too, is a function of k alone: a checkpoint need not hold the evaluation task, and
`reengage evaluate` can replay any evaluation of a run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .streams import EVALUATION, CounterStreams
from .task import DeviceTask

Policy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StateOf = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


class DeviceEvaluator:
    """`__call__(policy)` fills `successes` and `return_sums` `[members]` in place (static
    outputs, so a captured evaluation can be replayed): sums over the member's episodes,
    whole numbers in float32 (exact), which the logger divides on the host in float64 as
    the numpy loop's means are taken."""

    def __init__(self, task: DeviceTask, streams: CounterStreams, state_of: StateOf):
        self.task, self.streams, self.state_of = task, streams, state_of
        device = task.reached.device
        self.count = torch.zeros((), dtype=torch.int64, device=device)
        self.episodes = task.copies
        self.successes = torch.zeros(task.members, device=device)
        self.return_sums = torch.zeros(task.members, device=device)

    def __call__(self, policy: Policy) -> None:
        task = self.task
        task.begin(task.draw_goals(self.streams, EVALUATION, self.count))
        moves = getattr(task, "moves", None)
        if moves is not None:
            moves.copy_(self.count * task.episode_steps)
        returns = torch.zeros(task.members, task.copies, device=self.count.device)
        for _ in range(task.episode_steps):
            obs, goal = self.state_of(task.observation())
            reward, _ = task.step(policy(obs, goal))
            returns += reward
        self.successes.copy_(task.reached.to(torch.float32).sum(dim=1))
        self.return_sums.copy_(returns.sum(dim=1))
        self.count.add_(1)
