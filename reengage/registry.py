"""Names the harness knows: environments and methods.

A method is a registered name -> builder. Adding a baseline is one module that calls
`register_method` and one config line naming it (see the README's worked example).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class EnvSpec:
    """How to build one of the paper's environments for a given goal dimension."""

    name: str
    gym_id: str
    episode_steps: int
    vectorization_mode: str = "vector_entry_point"
    takes_dim: bool = True
    fixed_dim: int | None = None


ENVS: dict[str, EnvSpec] = {
    "ContinuousSeek": EnvSpec("ContinuousSeek", "reengage/ContinuousSeek-v0", 10),
}


@dataclass(frozen=True)
class LearnerSpec:
    """Everything a method's builder may need; builders ignore what they do not use."""

    members: int
    obs_dim: int
    goal_dim: int
    action_dim: int
    lr: float
    gamma: float
    tau: float
    action_noise: float
    c: float | None
    generators: list[torch.Generator]
    extra: dict[str, Any] = field(default_factory=dict)


class Learner(Protocol):
    """What the training loop calls. Tensors carry the member axis first."""

    def act(self, obs: torch.Tensor, goal: torch.Tensor) -> torch.Tensor: ...

    def update(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        next_obs: torch.Tensor,
        goal: torch.Tensor,
        reward: torch.Tensor,
    ) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class Method:
    """A learner family under one name: how to build it and how to label its curves."""

    name: str
    build: Callable[[LearnerSpec], Learner]
    takes_c: bool
    her: bool
    label: Callable[[float | None], str]
    description: str = ""


METHODS: dict[str, Method] = {}


def register_method(method: Method, replace: bool = False) -> Method:
    if method.name in METHODS and not replace:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def build_ddpg(spec: LearnerSpec) -> Learner:
    """DDPG(+ReenGAGE when c > 0); `spec.extra` may override any DDPGConfig field."""
    from reengage.agents.ddpg import DDPG, DDPGConfig

    config = DDPGConfig(
        gamma=spec.gamma, tau=spec.tau, lr=spec.lr, action_noise=spec.action_noise,
        goal_gradient_coef=spec.c or 0.0, **spec.extra,
    )
    return DDPG(spec.members, spec.obs_dim, spec.goal_dim, spec.action_dim, config,
                spec.generators)


def _format_c(c: float | None) -> str:
    return f"{c:g}"


register_method(Method(
    name="ddpg_her", build=build_ddpg, takes_c=False, her=True,
    label=lambda c: "DDPG+HER", description="DDPG with HER future relabelling (k = 4)",
))
register_method(Method(
    name="reengage_her", build=build_ddpg, takes_c=True, her=True,
    label=lambda c: f"ReenGAGE(α={_format_c(c)}/d)+HER",
    description="DDPG+HER plus the goal-gradient term with α = c/d",
))
