"""One grid cell's resolved configuration, and the checks that refuse bad input early.

`validate` judges the configuration alone, so `reengage train` and `reengage check-config`
(which runs it on every job a workflow config plans) cannot disagree; `check_machine` and
`check_out_dir` judge it against the machine that is about to run it.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any

from reengage.agents.replay import HER_FUTURES, HER_RELABELS

from .registry import ENVS, METHODS, ROBOTICS_ENVS, ROBOTICS_METHODS, EnvSpec, Method

INPUT_LAYOUTS = ("sb3", "obs_goal")
"""What the networks see: `sb3` is (achieved goal, desired goal, observation), the dict keys
in sorted order as Stable-Baselines3's MultiInputPolicy concatenates them and the paper's
runs saw them; `obs_goal` is (observation, desired goal), this harness's inputs before."""

TRAINING_LOOPS = ("numpy", "device")
"""Which loop trains a population: `numpy` (reengage/run.py: environments in numpy, the
networks on --device) or `device` (reengage/device: task, replay, exploration and
evaluation as tensors on --device, captured as CUDA graphs on a GPU; its random streams
differ from the numpy loop's, so one seed gives different curves in the two)."""
MATMUL_PRECISIONS = {"float32": "highest", "tf32": "high"}
"""`--matmul-precision` -> torch.set_float32_matmul_precision's setting. tf32 lets CUDA run
float32 matrix products as TF32 on Ampere and later GPUs (PyTorch 1.7-1.11, the paper's,
did by default; benchmarks/tf32.py measures its error in the goal gradient and its speed);
it changes nothing on a CPU."""
DEVICE_LOOP_ENVS = ("ContinuousSeek", "DriveSeek", "NoisySeek")
DEVICE_LOOP_METHODS = ("ddpg_her", "reengage_her", "ddpg", "multi_reengage")
"""What the device loop trains so far (reengage/device/driver.py refuses the rest)."""


class ConfigError(ValueError):
    """Bad user input. `option` names the offending flag or key path."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option, self.message = option, message


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
    cycle_episodes: int = 0
    cycle_updates: int = 40
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
    loop: str = "numpy"
    matmul_precision: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_RANGE = re.compile(r"^(\d+)-(\d+)$")
_CUDA_DEVICE = re.compile(r"^cuda(:\d+)?$")


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


def from_arguments(args: Any) -> TrainConfig:
    """The TrainConfig of parsed `reengage train` options (an argparse Namespace); check-config
    builds every job's configuration from its command through here too."""
    return TrainConfig(
        env=args.env, dim=args.dim, method=args.method, seeds=parse_seeds(args.seeds),
        steps=args.steps, c=args.c, batch_size=args.batch_size, lr=args.lr,
        eval_every=args.eval_every, eval_episodes=args.eval_episodes,
        learning_starts=args.learning_starts, cycle_episodes=args.cycle_episodes,
        cycle_updates=args.cycle_updates, buffer_size=args.buffer_size,
        her_k=args.her_k, her_future=args.her_future, her_relabel=args.her_relabel,
        inputs=args.inputs, gamma=args.gamma, tau=args.tau, action_noise=args.action_noise,
        threads=args.threads, device=args.device, checkpoint_every=args.checkpoint_every,
        loop=args.loop, matmul_precision=args.matmul_precision,
        extra=parse_settings(args.settings),
    )


# DDPG settings that only the Baselines HER loop serves, with the value that is inert in
# `reengage train`: there a normaliser would never be fed (identity statistics, inputs
# silently clipped at ±5) and targets never stepped.
_BASELINES_LOOP_ONLY = {"normalize_inputs": False, "normalized_goal_gradient": False,
                        "target_update_every_step": True}


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError naming the first offending option. A robotics env
    (ROBOTICS_ENVS) is judged by the Baselines regime's rules
    (reengage.baselines_her.baselines_config)."""
    if cfg.env not in ENVS and cfg.env not in ROBOTICS_ENVS:
        raise ConfigError("--env", f"unknown env {cfg.env!r}; choose from "
                          f"{', '.join([*ENVS, *ROBOTICS_ENVS])}")
    if cfg.method not in METHODS:
        raise ConfigError("--method", f"unknown method {cfg.method!r}; choose from "
                          f"{', '.join(METHODS)} or register one in a plugin (--plugin)")
    if cfg.env in ROBOTICS_ENVS:
        _validate_robotics(cfg)
        return
    check_pairing(ENVS[cfg.env], METHODS[cfg.method])
    for option, value in float_options(cfg):
        if value is not None and not math.isfinite(value):
            raise ConfigError(option, f"must be a finite number (got {value})")
    if cfg.dim < 1:
        raise ConfigError("--dim", f"must be an integer >= 1 (got {cfg.dim})")
    _check_c(cfg)
    episode = ENVS[cfg.env].steps_at(cfg.dim)
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
    if cfg.cycle_episodes < 0:
        raise ConfigError("--cycle-episodes", f"must be >= 0 (0: one update per env step; "
                          f"got {cfg.cycle_episodes})")
    if cfg.cycle_updates < 1:
        raise ConfigError("--cycle-updates", f"must be a positive integer (got "
                          f"{cfg.cycle_updates})")
    if cfg.cycle_episodes and METHODS[cfg.method].runner is not None:
        raise ConfigError("--cycle-episodes", f"{cfg.method} trains in a loop of its own, "
                          "which has no cycles")
    for key, inert in _BASELINES_LOOP_ONLY.items():
        if key in cfg.extra and cfg.extra[key] != inert:
            raise ConfigError("--set", f"{key}={cfg.extra[key]} needs the Baselines HER loop, "
                              "which feeds the normaliser and steps the targets once per "
                              f"cycle; reengage train runs it on {', '.join(ROBOTICS_ENVS)} "
                              f"only (got {cfg.env})")
    if not cfg.lr > 0:
        raise ConfigError("--lr", f"must be > 0 (got {cfg.lr})")
    if cfg.her_k < 0:
        raise ConfigError("--her-k", f"must be >= 0 (got {cfg.her_k})")
    for option, value, allowed in (("--her-future", cfg.her_future, HER_FUTURES),
                                   ("--her-relabel", cfg.her_relabel, HER_RELABELS),
                                   ("--inputs", cfg.inputs, INPUT_LAYOUTS),
                                   ("--loop", cfg.loop, TRAINING_LOOPS),
                                   ("--matmul-precision", cfg.matmul_precision,
                                    tuple(MATMUL_PRECISIONS))):
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
    if cfg.device not in ("auto", "cpu") and not _CUDA_DEVICE.match(cfg.device):
        raise ConfigError("--device", f"must be auto, cpu or cuda[:N] (got {cfg.device!r})")
    if not cfg.seeds:
        raise ConfigError("--seeds", "no seed given")
    if cfg.loop == "device":
        from .device.driver import check_supported  # torch: device-loop runs only

        check_supported(cfg)


def _validate_robotics(cfg: TrainConfig) -> None:
    """The checks of `validate` that hold for every loop, then the Baselines regime's."""
    if cfg.method not in ROBOTICS_METHODS:
        raise ConfigError("--method", f"{cfg.env} trains in the Baselines regime, which runs "
                          f"{', '.join(ROBOTICS_METHODS)} (got {cfg.method})")
    for option, value in float_options(cfg):
        if value is not None and not math.isfinite(value):
            raise ConfigError(option, f"must be a finite number (got {value})")
    _check_c(cfg)
    if not cfg.seeds:
        raise ConfigError("--seeds", "no seed given")
    if cfg.batch_size < 1:
        raise ConfigError("--batch-size", f"must be a positive integer (got {cfg.batch_size})")
    if not cfg.lr > 0:
        raise ConfigError("--lr", f"must be > 0 (got {cfg.lr})")
    if cfg.checkpoint_every < 0:
        raise ConfigError("--checkpoint-every",
                          f"must be >= 0 (0 disables checkpoints), got {cfg.checkpoint_every}")
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError("--threads", f"must be >= 1 (got {cfg.threads})")
    if cfg.device not in ("auto", "cpu") and not _CUDA_DEVICE.match(cfg.device):
        raise ConfigError("--device", f"must be auto, cpu or cuda[:N] (got {cfg.device!r})")
    if cfg.loop != "numpy":
        raise ConfigError("--loop", f"{cfg.env} trains in the Baselines regime's own loop "
                          f"(got --loop {cfg.loop})")
    from .baselines_her import baselines_config  # torch and the learner: robotics runs only

    baselines_config(cfg)


def _check_c(cfg: TrainConfig) -> None:
    if METHODS[cfg.method].takes_c:
        if cfg.c is None:
            raise ConfigError("--c", f"method {cfg.method} needs --c (a number >= 0)")
        if cfg.c < 0:
            raise ConfigError("--c", f"must be >= 0 (got {cfg.c})")
    elif cfg.c is not None:
        raise ConfigError("--c", f"method {cfg.method} takes no --c")


def option_name(field_name: str) -> str:
    """The `reengage train` flag of a TrainConfig field: `action_noise` -> `--action-noise`."""
    return "--" + field_name.replace("_", "-")


def float_options(cfg: TrainConfig) -> list[tuple[str, float | None]]:
    """Every float field as (flag, value); read from the dataclass so that a float option
    added later is checked as well."""
    return [(option_name(f.name), getattr(cfg, f.name)) for f in fields(cfg)
            if "float" in str(f.type)]


def _goal_sets(env: EnvSpec) -> bool:
    # The registry's goal-set tasks are those whose --dim is n_max, the number of goal slots.
    return env.dim_kwarg == "n_max"


def _envs_with_goal_sets(wanted: bool) -> str:
    return ", ".join(name for name, env in ENVS.items() if _goal_sets(env) == wanted)


def check_pairing(env: EnvSpec, method: Method) -> None:
    """Refuse a method on a task it cannot learn: the registry's flags say what each needs."""
    if method.baselines_only:
        raise ConfigError("--method", f"{method.name} runs on the robotics envs only "
                          f"({', '.join(ROBOTICS_ENVS)}): its σ² weights are the variances of "
                          f"the Baselines regime's input normaliser, which {env.name}'s loop "
                          "does not have")
    if method.item_rewards and not _goal_sets(env):
        raise ConfigError("--env", f"{method.name} learns from one reward per goal of a goal "
                          f"set and runs on {_envs_with_goal_sets(True)} (got {env.name}, "
                          "which has a single goal)")
    if method.needs_goal_sets and not _goal_sets(env):
        raise ConfigError("--env", f"{method.name} acts on the goal slots of a goal set and "
                          f"runs on {_envs_with_goal_sets(True)} (got {env.name}, which has "
                          "a single goal)")
    if method.discrete_actions != env.discrete_actions:
        kinds = {True: "discrete actions", False: "continuous actions"}
        raise ConfigError("--env", f"{method.name} acts with {kinds[method.discrete_actions]} "
                          f"and {env.name} takes {kinds[env.discrete_actions]}")
    if method.her and _goal_sets(env):
        raise ConfigError("--env", f"{method.name} relabels goals with HER, which needs a "
                          f"single goal, and runs on {_envs_with_goal_sets(False)} (got "
                          f"{env.name}, which has goal sets)")


FLOAT32_BYTES = 4
EVAL_COPY_BYTES = 512
"""Per evaluation episode, beyond its arrays: its copy of the env keeps a numpy Generator of
its own (about 900 bytes with numpy 2.x, by tracemalloc and by resident memory; about half
is counted, so that the estimate stays a lower bound)."""


@cache
def _widths_at(env_name: str, dim: int) -> tuple[int, int, int, int]:
    import gymnasium as gym

    import reengage.envs  # noqa: F401  (registers the environment ids)

    spec = ENVS[env_name]
    env = gym.make(spec.gym_id, **{spec.dim_kwarg: dim})
    space = env.observation_space
    widths = (space["observation"].shape[-1], space["achieved_goal"].shape[-1],
              math.prod(space["desired_goal"].shape), math.prod(env.action_space.shape))
    env.close()
    return widths


def space_widths(env_name: str, dim: int) -> tuple[int, int, int, int]:
    """(observation, achieved goal, desired goal, action) widths of a task at `dim`, as the
    replay stores them. Spaces of a huge `dim` would themselves take gigabytes, so the widths
    are extrapolated from dim 1 and 2: every task's widths are affine in --dim (d
    coordinates, or a (gate, x, y) row per goal slot)."""
    one, two = _widths_at(env_name, 1), _widths_at(env_name, 2)
    return tuple(a + (b - a) * (dim - 1) for a, b in zip(one, two, strict=True))


def replay_bytes_per_member(cfg: TrainConfig) -> int:
    """What EpisodeReplay allocates per member (run.json's `replay_bytes_per_member`):
    whole episodes of T+1 observations and achieved goals, T actions, one desired goal."""
    spec, method = ENVS[cfg.env], METHODS[cfg.method]
    obs, achieved, goal, action = space_widths(cfg.env, cfg.dim)
    steps = spec.steps_at(cfg.dim)
    capacity = cfg.buffer_size if method.trains else steps  # a fixed policy keeps one episode
    episodes = max(1, capacity // steps)
    stored_achieved = 0 if spec.achieved_in_obs else achieved  # then a view of the observation
    per_episode = (steps + 1) * (obs + stored_achieved) + steps * action + goal
    return episodes * per_episode * FLOAT32_BYTES


def evaluation_bytes_per_member(cfg: TrainConfig) -> int:
    """A lower bound of the evaluator's memory: it steps every episode at once, one env copy
    per episode."""
    widths = space_widths(cfg.env, cfg.dim)
    return cfg.eval_episodes * (EVAL_COPY_BYTES + sum(widths) * FLOAT32_BYTES)


_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory_bytes() -> int | None:
    """Physical memory, or the container's (cgroup) limit where that is lower; None where the
    platform does not say."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    for path in _CGROUP_LIMITS:
        try:
            total = min(total, int(Path(path).read_text()))
        except (OSError, ValueError):  # absent, or "max": no limit
            continue
    return total


def _size(n: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    exponent = min(int(math.log(max(n, 1), 1024)), len(units) - 1)
    return f"{n / 1024 ** exponent:.1f} {units[exponent]}"


def robotics_replay_bytes(cfg: TrainConfig) -> int:
    """What a robotics member's replay holds once full: its workers' buffers of whole
    episodes (reengage/baselines_her.py allocates no more than the run stores)."""
    from .baselines_her import baselines_config

    base = baselines_config(cfg)
    obs, achieved, goal, action = ROBOTICS_ENVS[cfg.env].widths or (0, 0, 0, 0)
    steps = base.episode_steps()
    episodes = max(1, base.worker_capacity() // steps) * base.workers
    return episodes * ((steps + 1) * (obs + achieved) + steps * action + goal) * FLOAT32_BYTES


def memory_needed(cfg: TrainConfig) -> tuple[int, int, int]:
    """(seeds held at once, replay bytes per seed, evaluation bytes per seed): a lower bound
    of what a run allocates, which grows with --buffer-size, --eval-episodes, --dim, --seeds
    (on a robotics env: with the buffers its run fills, and --seeds)."""
    if cfg.env in ROBOTICS_ENVS:
        return len(cfg.seeds), robotics_replay_bytes(cfg), 0
    # A runner of its own (Stable-Baselines3) trains the seeds one after another.
    members = 1 if METHODS[cfg.method].runner is not None else len(cfg.seeds)
    return members, replay_bytes_per_member(cfg), evaluation_bytes_per_member(cfg)


def _largest_cause(cfg: TrainConfig) -> str:
    """The option that, back at its default (one seed, d = 1), shrinks the need the most."""
    defaults = {"--buffer-size": {"buffer_size": TrainConfig.buffer_size},
                "--eval-episodes": {"eval_episodes": TrainConfig.eval_episodes},
                "--dim": {"dim": 1}, "--seeds": {"seeds": cfg.seeds[:1]}}

    def need(option: str) -> int:
        members, replay, evaluation = memory_needed(replace(cfg, **defaults[option]))
        return members * (replay + evaluation)

    return min(defaults, key=need)


def check_memory(cfg: TrainConfig, available: int | None = None) -> None:
    """Refuse, before anything is allocated, a run whose replay and evaluation alone need more
    memory than this machine has: numpy would fail after seconds of work, or, under Linux's
    overcommit, the run would be killed once the buffer fills, hours in."""
    if cfg.loop == "device" and _training_device(cfg).startswith("cuda"):
        return  # replay and evaluation live on the GPU: check_device_memory judges them
    available = machine_memory_bytes() if available is None else available
    if available is None:
        return
    members, replay, evaluation = memory_needed(cfg)
    needed = members * (replay + evaluation)
    if needed <= available:
        return
    if cfg.env in ROBOTICS_ENVS:
        raise ConfigError("--seeds", f"this run needs at least {_size(needed)} of memory and "
                          f"this machine has {_size(available)}: {members} seed(s) at once x "
                          f"replay {_size(replay)} (every worker's buffer as the run fills "
                          "it); lower --seeds, --steps or --set buffer_size")
    raise ConfigError(_largest_cause(cfg), f"this run needs at least {_size(needed)} of memory "
                      f"and this machine has {_size(available)}: {members} seed(s) at once x "
                      f"(replay {_size(replay)} + evaluation {_size(evaluation)}) at --dim "
                      f"{cfg.dim}; lower --buffer-size, --eval-episodes, --dim or --seeds")


DDPG_DEFAULT_HIDDEN = (256, 256)
"""agents/ddpg.py DDPGConfig.hidden (kept here so a config check needs no torch import)."""
NETWORK_COPIES = 5
"""Copies of every online weight a DDPG-family learner keeps: the weight, its target, its
gradient and Adam's two moments."""


def network_bytes_per_member(cfg: TrainConfig) -> int:
    """A lower bound of what one member's actor and critic hold on the device loop's device
    (weights, targets, gradients, Adam moments; not the update's activations). The inputs
    are the networks' (reengage/device/driver.py): achieved goal (under `inputs: sb3`),
    observation and desired goal, and the action for the critic."""
    obs, achieved, goal, action = space_widths(cfg.env, cfg.dim)
    state = obs + (achieved if cfg.inputs == "sb3" else 0)

    def weights(width_in: int, hidden: tuple[int, ...], width_out: int) -> int:
        widths = (width_in, *hidden, width_out)
        return sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False))

    if METHODS[cfg.method].item_rewards:  # the DeepSets actor-critic of agents/deepsets.py
        from reengage.agents.deepsets import DeepSetsConfig

        nets = DeepSetsConfig(**cfg.extra.get("networks", {}))
        item = 2  # a goal row is (b, x, y): the encoder sees the item (x, y)
        encoder = weights(state + item, (nets.encoder_hidden,) * 2, nets.embedding)
        per_copy = (encoder * (1 if nets.share_encoder else 2)
                    + weights(nets.embedding + state + action, (nets.head_hidden,), 1)
                    + weights(nets.embedding + state, (nets.head_hidden,), action))
    else:
        hidden = tuple(cfg.extra.get("hidden", DDPG_DEFAULT_HIDDEN))
        per_copy = (weights(state + goal, hidden, action)
                    + weights(state + goal + action, hidden, 1))
    return NETWORK_COPIES * per_copy * FLOAT32_BYTES


def _training_device(cfg: TrainConfig) -> str:
    """`--device` as training will resolve it (auto: cuda when present)."""
    if cfg.device != "auto":
        return cfg.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cuda_free_bytes(device: str) -> int | None:
    """Free memory of CUDA `device` now (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(device.partition(":")[2] or 0)
    return int(torch.cuda.mem_get_info(index)[0])


def check_device_memory(cfg: TrainConfig, available: int | None = None) -> None:
    """The device loop keeps the whole population on its device: refuse, before anything is
    allocated there, a population whose replay and networks alone exceed the device's free
    memory, saying how many members would fit. Only for `loop: device` on CUDA (on the CPU,
    `check_memory` judges the host's memory)."""
    device = _training_device(cfg)
    if cfg.loop != "device" or not device.startswith("cuda"):
        return
    available = cuda_free_bytes(device) if available is None else available
    if available is None:
        return
    replay, networks = replay_bytes_per_member(cfg), network_bytes_per_member(cfg)
    members = len(cfg.seeds)
    needed = members * (replay + networks)
    if needed <= available:
        return
    fit = available // (replay + networks)
    raise ConfigError("--seeds", f"{members} members need at least {_size(needed)} on "
                      f"{device} and it has {_size(available)} free: replay "
                      f"{_size(replay)} + networks {_size(networks)} per member, so at most "
                      f"{fit} fit; split --seeds over several runs, or lower --buffer-size "
                      "(it need not exceed --steps)")


def check_device(device: str) -> None:
    """Refuse a CUDA device this machine does not have (torch would fail mid-setup)."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        why = ("this torch is built without CUDA" if torch.version.cuda is None
               else "no CUDA device is visible")
        raise ConfigError("--device", f"{device}: {why} (torch {torch.__version__}); use "
                          "--device cpu or auto")
    index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
    if index >= count:
        raise ConfigError("--device", f"{device}: this machine has {count} CUDA device(s)")


def check_machine(cfg: TrainConfig) -> None:
    """What depends on the machine that runs `cfg`, not on `cfg` alone: kept out of `validate`,
    so that a workflow config is judged the same on a login node as on the cluster."""
    check_device(cfg.device)
    check_memory(cfg)
    check_device_memory(cfg)


def check_out_dir(out: Path) -> None:
    """Refuse an output folder that cannot be created or written, before anything is: a
    hidden folder is made and removed where the first file would go, since permission bits
    do not tell (root, read-only mounts, /proc)."""
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError("--out", f"cannot create {out}: {existing} is not a directory")
    try:
        probe = tempfile.mkdtemp(prefix=".reengage-write-check-", dir=existing)
    except OSError as error:
        raise ConfigError("--out", f"cannot write under {existing}: {error.strerror}") from None
    os.rmdir(probe)
