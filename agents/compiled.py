"""`torch.compile` for the hand-written gradient functions, with a way back to eager.

The functions of agents/hand_gradients.py are first-order, side-effect-light tensor code
(no autograd graph), which inductor fuses well: the masks, bias sums and activations run
inside fewer passes over the activations. Compilation happens at the first call in each
process (seconds; `DDPG.prepare` makes that call before training) and needs a working C++
compiler on CPU (Triton on a GPU); where it fails, the learner warns once and carries on
with the eager function, which computes the same loss. Compiled and eager results differ
only in float32 rounding, and a population member still equals its seed alone bitwise
(tests/test_hand_gradients.py, tests/test_compiled.py), also in a packed population, whose
per-member c enter as a tensor made outside the graph (`hand_gradients.member_weights`,
tests/test_packed_learner.py).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch

# Dynamo keys its cache on a function's code, which every learner of a process shares, and
# each learner adds entries for its own shapes and constants. Past the default limit of 8
# it would run further learners eagerly without a word, and eager rounds differently (a
# population member would then no longer equal its seed alone). One learner per process,
# as training runs, needs one entry per function; a test suite or a notebook sweep more.
RECOMPILE_LIMIT = 256


def compile_or_eager(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` (a `torch.no_grad` function) compiled for fixed shapes; the eager
    `function` if compiling fails."""
    dynamo_config = torch._dynamo.config
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    dynamo_config.accumulated_recompile_limit = max(
        dynamo_config.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)
    # Compile the undecorated body and enter no_grad outside it: every no_grad-decorated
    # function shares the decorator's code object, on which dynamo would otherwise key all
    # of them (and soon hit its recompile limit).
    compiled = torch.compile(inspect.unwrap(function), dynamic=False)
    current = [compiled]

    def call(*args: Any) -> Any:
        if current[0] is function:
            return function(*args)
        try:
            with torch.no_grad():
                return current[0](*args)
        except Exception as error:  # noqa: BLE001  (any backend failure: no compiler, …)
            warnings.warn(f"torch.compile of {function.__name__} failed, running it eagerly "
                          f"({type(error).__name__}: {str(error).splitlines()[0][:200]})",
                          RuntimeWarning, stacklevel=2)
            current[0] = function
            return function(*args)

    return call
