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
* Per-member learning rates (a packed grid: one population holding members of several
  grid cells). The kernel takes one rate per call, so with rates that differ every
  parameter is passed as per-member views, which start their own units as above, and the
  members are grouped by rate: one call per distinct rate with the views of the members
  that have it. A member's views meet the kernel exactly as the member's tensors alone
  would, with its own rate, so it still equals the seed trained alone with that rate
  (tests/test_packed_learner.py). Equal rates keep the single call and whole tensors.
* Overhead. `torch.optim.Adam.step` spends about 0.3 ms per call in Python (hooks, state
  grouping, checks) around a kernel that takes less than that at 256-wide networks; with
  two optimisers per update that was about a tenth of a single seed's update. Here a step
  is one `_foreach_add_` and one `_fused_adam_` call.

The update rule is Adam's with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8, no weight
decay), checked against `torch.optim.Adam` in the tests. `fused=False` delegates to
`torch.optim.Adam(foreach=False)`, the per-tensor loop, for comparisons.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float | Sequence[float],
                 fused: bool = True):
        """`lr` is one learning rate for every member, or a sequence of one per member (the
        leading size of every parameter). Per-member rates that differ need `fused`."""
        self.params = list(params)
        if isinstance(lr, int | float):
            rates = None
        else:
            rates = tuple(float(rate) for rate in lr)
            sizes = {p.shape[0] if p.dim() else None for p in self.params}
            if sizes != {len(rates)}:
                raise ValueError(f"{len(rates)} per-member learning rates for parameters with "
                                 f"{sorted(sizes, key=str)} members")
            if not all(rate > 0 for rate in rates):
                raise ValueError(f"learning rates must be positive, got {rates}")
        packed = rates is not None and len(set(rates)) > 1
        if packed and not fused:
            raise ValueError("the unfused path (fused=False) has one learning rate for every "
                             "member; per-member rates that differ need the fused optimiser")
        members = self.params[0].shape[0] if self.params and self.params[0].dim() else 1
        self.member_lrs: tuple[float, ...] = rates or (float(lr),) * members
        """Each member's learning rate."""
        self.lr: float | None = None if packed else self.member_lrs[0]
        """The learning rate of every member; None when the members' rates differ."""
        # Packed: (rate, the members that have it), in order of first appearance: one kernel
        # call each, over per-member views of every parameter.
        groups: dict[float, list[int]] = {}
        for m, rate in enumerate(self.member_lrs):
            groups.setdefault(rate, []).append(m)
        self._groups = list(groups.items()) if packed else []
        self._whole = [not packed and fills_fused_units(p) for p in self.params]
        self._steps: list[torch.Tensor] = []
        self._exp_avg: list[torch.Tensor] = []
        self._exp_avg_sq: list[torch.Tensor] = []
        # The kernel's tensor lists for (parameter, exp_avg, exp_avg_sq) of each parameter:
        # the tensor itself, or its per-member views. Built once with the state; only the
        # gradients are new each step.
        self._pieces: list[tuple[tuple[torch.Tensor, ...], ...]] = []
        self._unfused = None if fused else torch.optim.Adam(self.params, lr=self.lr,
                                                             foreach=False)

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
        if self._groups:
            self._step_packed()
            return
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
        self._fused_adam(params, grads, exp_avgs, exp_avg_sqs, steps, self.lr)

    def _step_packed(self) -> None:
        """Per-member rates that differ: one kernel call per rate, over the per-member views
        of the members that have it."""
        with_grad = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not with_grad:
            return
        torch._foreach_add_([self._steps[i] for i in with_grad], 1)
        grads = {i: self.params[i].grad.contiguous().unbind(0) for i in with_grad}
        for rate, members in self._groups:
            params, grad_pieces, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for i in with_grad:
                param_pieces, avg_pieces, sq_pieces = self._pieces[i]
                params.extend(param_pieces[m] for m in members)
                grad_pieces.extend(grads[i][m] for m in members)
                exp_avgs.extend(avg_pieces[m] for m in members)
                exp_avg_sqs.extend(sq_pieces[m] for m in members)
                steps.extend([self._steps[i]] * len(members))
            self._fused_adam(params, grad_pieces, exp_avgs, exp_avg_sqs, steps, rate)

    @staticmethod
    def _fused_adam(params: list[torch.Tensor], grads: list[torch.Tensor],
                    exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
                    steps: list[torch.Tensor], lr: float | None) -> None:
        torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr,
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
