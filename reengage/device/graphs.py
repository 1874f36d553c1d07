"""Run a step function eagerly, or on CUDA as a CUDA graph captured once per mode.

A step function here takes only a hashable `mode` (which phase of training: random
actions or the policy, with or without an update; the host knows it from its step count)
and works on tensors it owns: fixed shapes, state updated in place, masks instead of
branches on device values, no host copies. Such a function can be captured once and
replayed with whatever the tensors then hold, so there is nothing to re-capture as the
buffer fills or episodes end. On the CPU the same function simply runs.

On CUDA, each mode runs `warmup` times eagerly on a side stream first (lazy state such as
optimiser moments, cuBLAS workspaces and compiled kernels must exist before capture; these
are real training steps, not throw-away ones), then is captured with `torch.cuda.graph`
(all graphs share one memory pool: they replay one after another on one stream) and
replayed from then on. Capture records kernels without running them, so the step that
captures also replays once. Python side effects of the function happen only while it runs
eagerly or is captured; it must keep its state in tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch

WARMUP_STEPS = 3
"""Eager runs per mode before capture (PyTorch's CUDA graph notes use a few)."""


class StepGraphs:
    """`runner(mode)` runs `step(mode)`: eagerly off CUDA, else warm-up, capture, replay."""

    def __init__(self, step: Callable[[Any], None], device: torch.device,
                 warmup: int = WARMUP_STEPS, capture: bool = True):
        self.step, self.device, self.warmup = step, device, warmup
        self.capture = capture and device.type == "cuda"
        self.graphs: dict[Hashable, Any] = {}
        self.eager_runs: dict[Hashable, int] = {}
        self.captures = 0  # how many graphs were captured (tests: once per mode, ever)
        self._pool: Any = None
        self._stream: Any = None

    def __call__(self, mode: Hashable) -> None:
        if not self.capture:
            self.step(mode)
            return
        graph = self.graphs.get(mode)
        if graph is None:
            if self.eager_runs.get(mode, 0) < self.warmup:
                self._eager_on_side_stream(mode)
                return
            graph = self._capture(mode)
        graph.replay()

    def _eager_on_side_stream(self, mode: Hashable) -> None:
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            self.step(mode)
        torch.cuda.current_stream(self.device).wait_stream(self._stream)
        self.eager_runs[mode] = self.eager_runs.get(mode, 0) + 1

    def _capture(self, mode: Hashable) -> Any:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self.step(mode)
        if self._pool is None:
            self._pool = graph.pool()
        self.graphs[mode] = graph
        self.captures += 1
        return graph
