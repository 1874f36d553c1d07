"""Adam for population parameters: one fused kernel call per step, members independent.

PyTorch's fused Adam kernel does the whole update in one pass over memory, but two things
stand between it and a population of seeds:

* Exactness per member. The CPU kernel walks a tensor in 64-byte units (16 float32s) and
  treats the ragged end differently from full units, so an element's rounding depends on
  where it sits relative to those units. For an ensemble parameter `[members, ...]`, member
  i starts at offset `i · n`, `n` being the per-member size. When `n` fills whole units,
  every member's elements are processed exactly as in a tensor of that member alone. When
  it does not (an output bias of one or three numbers), the parameter is passed to the
  kernel as one view per member instead, each starting its own units. Either way member i
  stays bitwise equal to the seed trained alone (tests/test_optim.py, tests/test_train.py).
* Overhead. `torch.optim.Adam.step` spends about 0.3 ms per call in Python (hooks, state
  grouping, checks) around a kernel that takes less than that at 256-wide networks; with
  two optimisers per update that was about a tenth of a single seed's update. Here a step
  is one `_foreach_add_` and one `_fused_adam_` call.

The update rule is Adam's with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8, no weight
decay), checked against `torch.optim.Adam` in the tests. `fused=False` delegates to
`torch.optim.Adam(foreach=False)`, the per-tensor loop, for comparisons.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

FUSED_UNIT_BYTES = 64
"""The fused CPU kernel's work unit: one cache line."""

BETAS = (0.9, 0.999)
EPS = 1e-8


def fills_fused_units(parameter: torch.Tensor) -> bool:
    """True when each member's slice (`parameter[i]`) is a whole number of fused units and
    the tensor is contiguous, so member boundaries fall on unit boundaries."""
    unit = FUSED_UNIT_BYTES // parameter.element_size()
    return parameter.is_contiguous() and parameter[0].numel() % unit == 0


class PopulationAdam:
    """Adam over ensemble parameters `[members, ...]`, with the `torch.optim.Optimizer`
    methods the harness uses: `step`, `zero_grad`, `state_dict`, `load_state_dict`.

    State is created at the first step, on the parameters' device at that time, so the
    learner may be moved (`.to(device)`) after the optimiser is built but not after its
    first step, as with torch's Adam.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, fused: bool = True):
        self.params = list(params)
        self.lr = lr
        self._whole = [fills_fused_units(p) for p in self.params]
        self._steps: list[torch.Tensor] = []
        self._exp_avg: list[torch.Tensor] = []
        self._exp_avg_sq: list[torch.Tensor] = []
        # The kernel's tensor lists for (parameter, exp_avg, exp_avg_sq) of each parameter:
        # the tensor itself, or its per-member views. Built once with the state; only the
        # gradients are new each step.
        self._pieces: list[tuple[tuple[torch.Tensor, ...], ...]] = []
        self._unfused = None if fused else torch.optim.Adam(self.params, lr=lr, foreach=False)

    def _split(self, i: int, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (tensor,) if self._whole[i] else tuple(tensor.unbind(0))

    def _init_state(self) -> None:
        self._steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]
        self._exp_avg = [torch.zeros_like(p, memory_format=torch.contiguous_format)
                         for p in self.params]
        self._exp_avg_sq = [torch.zeros_like(p, memory_format=torch.contiguous_format)
                            for p in self.params]
        self._pieces = [tuple(self._split(i, t) for t in tensors) for i, tensors in
                        enumerate(zip(self.params, self._exp_avg, self._exp_avg_sq, strict=True))]

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step for every parameter that has a gradient."""
        if self._unfused is not None:
            self._unfused.step()
            return
        if not self._steps:
            self._init_state()
        params: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        exp_avgs: list[torch.Tensor] = []
        exp_avg_sqs: list[torch.Tensor] = []
        steps: list[torch.Tensor] = []
        stepped = []
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            stepped.append(self._steps[i])
            param_pieces, avg_pieces, sq_pieces = self._pieces[i]
            params.extend(param_pieces)
            exp_avgs.extend(avg_pieces)
            exp_avg_sqs.extend(sq_pieces)
            grads.extend(self._split(i, p.grad.contiguous()))
            steps.extend([self._steps[i]] * len(param_pieces))
        if not stepped:
            return
        torch._foreach_add_(stepped, 1)
        torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=self.lr,
                           beta1=BETAS[0], beta2=BETAS[1], weight_decay=0.0, eps=EPS,
                           amsgrad=False, maximize=False)

    @property
    def state(self) -> dict[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-parameter state as `torch.optim.Optimizer.state` shows it (`step`, `exp_avg`,
        `exp_avg_sq`); empty before the first step."""
        if self._unfused is not None:
            return dict(self._unfused.state)
        return {p: {"step": step, "exp_avg": m, "exp_avg_sq": v} for p, step, m, v in
                zip(self.params, self._steps, self._exp_avg, self._exp_avg_sq, strict=False)}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        if self._unfused is not None:
            return {"unfused": self._unfused.state_dict()}
        return {"steps": [float(s) for s in self._steps], "exp_avg": list(self._exp_avg),
                "exp_avg_sq": list(self._exp_avg_sq)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._unfused is not None:
            if "unfused" not in state_dict:
                raise ValueError("optimiser state is fused Adam's; this one is unfused")
            self._unfused.load_state_dict(state_dict["unfused"])
            return
        if "steps" not in state_dict:
            raise ValueError("optimiser state is not a fused PopulationAdam's")
        steps = state_dict["steps"]
        if not steps:  # saved before the first step
            self._steps = []
            return
        shapes = [tuple(p.shape) for p in self.params]
        if len(steps) != len(self.params) or [
                tuple(t.shape) for t in state_dict["exp_avg"]] != shapes:
            raise ValueError("optimiser state does not match these parameters")
        self._init_state()
        for i in range(len(self.params)):
            self._steps[i].fill_(steps[i])
            self._exp_avg[i].copy_(state_dict["exp_avg"][i])
            self._exp_avg_sq[i].copy_(state_dict["exp_avg_sq"][i])
