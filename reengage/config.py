"""One grid cell's resolved configuration, and the checks that refuse bad input early."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from reengage.agents.replay import HER_FUTURES, HER_RELABELS

from .registry import ENVS, METHODS

INPUT_LAYOUTS = ("sb3", "obs_goal")
"""What the networks see: `sb3` is (achieved goal, desired goal, observation), the dict keys
in sorted order as Stable-Baselines3's MultiInputPolicy concatenates them and the paper's
runs saw them; `obs_goal` is (observation, desired goal), this harness's inputs before."""


class ConfigError(ValueError):
    """Bad user input. `option` names the offending flag or key path."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option


@dataclass
class TrainConfig:
    """A population of seeds trained on one (env, d, method, hyperparameters) cell."""

    env: str
    dim: int
    method: str
    seeds: list[int]
    steps: int
    c: float | None = None
    batch_size: int = 256
    lr: float = 1e-3
    eval_every: int = 2000
    eval_episodes: int = 50
    learning_starts: int = 1000
    buffer_size: int = 1_000_000
    her_k: int = 4
    her_future: str = "next_to_final"
    her_relabel: str = "probability"
    inputs: str = "sb3"
    gamma: float = 0.95
    tau: float = 0.005
    action_noise: float = 0.03
    threads: int | None = None
    device: str = "auto"
    checkpoint_every: int = 10_000
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_RANGE = re.compile(r"^(\d+)-(\d+)$")


def parse_seeds(text: str) -> list[int]:
    """`0-9`, `0,3,5` or a mix like `0-2,7`; duplicates are refused."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if part.isdigit():
            seeds.append(int(part))
        elif m := _RANGE.match(part):
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ConfigError("--seeds", f"range {part!r} is empty (end before start)")
            seeds.extend(range(lo, hi + 1))
        else:
            raise ConfigError(
                "--seeds", f"{text!r} is not a list or range of non-negative integers "
                "(e.g. 0-9 or 0,3,5)"
            )
    if len(set(seeds)) != len(seeds):
        raise ConfigError("--seeds", f"{text!r} names a seed twice")
    return seeds


def parse_settings(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs -> a nested dict of learner settings. Values are read as YAML
    (numbers, booleans, lists); dotted keys nest: `networks.encoder_hidden=64`."""
    import yaml

    settings: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key or not all(part.isidentifier() for part in key.split(".")):
            raise ConfigError("--set", f"{item!r} is not KEY=VALUE (e.g. hidden=[64,64])")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError("--set", f"{item!r}: value is not valid YAML") from error
        node = settings
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = tuple(value) if isinstance(value, list) else value
    return settings


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError naming the first offending option."""
    if cfg.env not in ENVS:
        raise ConfigError("--env", f"unknown env {cfg.env!r}; choose from {', '.join(ENVS)}")
    if cfg.method not in METHODS:
        raise ConfigError(
            "--method", f"unknown method {cfg.method!r}; choose from {', '.join(METHODS)}"
        )
    if cfg.dim < 1:
        raise ConfigError("--dim", f"must be an integer >= 1 (got {cfg.dim})")
    method = METHODS[cfg.method]
    if method.takes_c:
        if cfg.c is None:
            raise ConfigError("--c", f"method {cfg.method} needs --c (a number >= 0)")
        if cfg.c < 0:
            raise ConfigError("--c", f"must be >= 0 (got {cfg.c})")
    elif cfg.c is not None:
        raise ConfigError("--c", f"method {cfg.method} takes no --c")
    episode = ENVS[cfg.env].episode_steps
    if cfg.steps % episode != 0:
        raise ConfigError("--steps", f"must be a multiple of the episode length ({episode} for "
                          f"{cfg.env}), got {cfg.steps}")
    if cfg.checkpoint_every < 0:
        raise ConfigError("--checkpoint-every",
                          f"must be >= 0 (0 disables checkpoints), got {cfg.checkpoint_every}")
    for option, value in (("--steps", cfg.steps), ("--eval-every", cfg.eval_every),
                          ("--eval-episodes", cfg.eval_episodes),
                          ("--buffer-size", cfg.buffer_size)):
        if value < 1:
            raise ConfigError(option, f"must be a positive integer (got {value})")
    if cfg.batch_size < 1:
        raise ConfigError("--batch-size", f"must be a positive integer (got {cfg.batch_size})")
    if cfg.batch_size > cfg.buffer_size:
        raise ConfigError(
            "--batch-size",
            f"{cfg.batch_size} is larger than the replay buffer ({cfg.buffer_size} transitions)",
        )
    if cfg.learning_starts < 0:
        raise ConfigError("--learning-starts", f"must be >= 0 (got {cfg.learning_starts})")
    if not cfg.lr > 0:
        raise ConfigError("--lr", f"must be > 0 (got {cfg.lr})")
    if cfg.her_k < 0:
        raise ConfigError("--her-k", f"must be >= 0 (got {cfg.her_k})")
    for option, value, allowed in (("--her-future", cfg.her_future, HER_FUTURES),
                                   ("--her-relabel", cfg.her_relabel, HER_RELABELS),
                                   ("--inputs", cfg.inputs, INPUT_LAYOUTS)):
        if value not in allowed:
            raise ConfigError(option, f"must be one of {', '.join(allowed)} (got {value!r})")
    if not 0 <= cfg.gamma <= 1:
        raise ConfigError("--gamma", f"must be in [0, 1] (got {cfg.gamma})")
    if not 0 < cfg.tau <= 1:
        raise ConfigError("--tau", f"must be in (0, 1] (got {cfg.tau})")
    if cfg.action_noise < 0:
        raise ConfigError("--action-noise", f"must be >= 0 (got {cfg.action_noise})")
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError("--threads", f"must be >= 1 (got {cfg.threads})")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ConfigError("--device", f"must be auto, cpu or cuda[:N] (got {cfg.device!r})")
    if not cfg.seeds:
        raise ConfigError("--seeds", "no seed given")
