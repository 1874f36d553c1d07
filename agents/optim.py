"""Adam for population parameters, fused wherever that keeps members independent.

PyTorch's fused Adam is much faster on CPU than its per-tensor loop (one pass over memory
instead of about ten, and no Python per tensor), but it is not exact per element in the
way a population needs: the CPU kernel walks a tensor in 64-byte units (16 float32s) and
handles the ragged end differently from full units, so an element's rounding depends on
where it sits relative to those units. For an ensemble parameter `[members, ...]`, member
i starts at offset `i · n` where `n` is the per-member size. When `n` fills whole units,
every member's elements are processed exactly as they would be in a tensor of that member
alone, so the population member stays bitwise equal to the seed trained alone
(tests/test_optim.py, tests/test_train.py). When it does not (an output bias of one or
three numbers, for instance), the parameter goes to the ordinary per-tensor Adam. Those
tensors are tiny, so almost all of the work is fused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

FUSED_UNIT_BYTES = 64
"""The fused CPU kernel's work unit: one cache line."""


def fills_fused_units(parameter: torch.Tensor) -> bool:
    """True when each member's slice (`parameter[i]`) is a whole number of fused units and
    the tensor is contiguous, so member boundaries fall on unit boundaries."""
    unit = FUSED_UNIT_BYTES // parameter.element_size()
    return parameter.is_contiguous() and parameter[0].numel() % unit == 0


class PopulationAdam(torch.optim.Optimizer):
    """Adam (PyTorch's defaults besides `lr`) over ensemble parameters `[members, ...]`.

    Two inner optimisers: fused Adam for the parameters that `fills_fused_units`, the
    per-tensor Adam for the rest. Both follow the same update rule; only the kernel
    differs. `state_dict()` holds both inner states.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, fused: bool = True):
        params = list(params)
        super().__init__(params, {"lr": lr})
        fast = [p for p in params if fused and fills_fused_units(p)]
        fast_ids = {id(p) for p in fast}
        rest = [p for p in params if id(p) not in fast_ids]
        self.parts: list[torch.optim.Adam] = []
        if fast:
            self.parts.append(torch.optim.Adam(fast, lr=lr, fused=True))
        if rest:
            self.parts.append(torch.optim.Adam(rest, lr=lr, foreach=False))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: D102
        if closure is not None:
            raise ValueError("PopulationAdam takes no closure")
        for part in self.parts:
            part.step()

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: D102
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        parts = state_dict.get("parts")
        if parts is None or len(parts) != len(self.parts):
            raise ValueError("optimiser state does not match this PopulationAdam's layout")
        for part, state in zip(self.parts, parts, strict=True):
            part.load_state_dict(state)
