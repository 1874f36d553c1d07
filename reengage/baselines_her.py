"""The Baselines HER regime (Plappert et al. 2018) as a configuration of our DDPG learner: the
robotics tasks' training loop (docs/paper.md §4), run by `reengage train` on the robotics
envs (reengage.registry.ROBOTICS_ENVS) and by `python -m reengage.baselines_her`.

Where the toy tasks train one gradient step per env step, Baselines trains in epochs of
cycles: each cycle runs one episode in each env (ε-random actions, else the policy plus
Gaussian noise), stores them, feeds the normaliser with HER-relabelled samples of those
episodes, then takes `batches` gradient steps and one Polyak step of the targets
(τ = 1 − polyak). Each epoch ends with deterministic test episodes whose success is
`is_success` at their last step. The learner is agents/ddpg.py with 3×256 networks, action
L2, the running normaliser, targets clipped to [−1/(1−γ), 0] (zero goal gradient where
clipped) and γ = 1 − 1/T; the actor's and the critic's gradients both come from the weights
before the update, as Baselines computes them in one session run. The networks see
(observation, goal), as Baselines builds them.
ReenGAGE's `c` is the release's `grad_loss_weight`: its loss subtracts
`w · reduce_mean(r · (∇_g target − ∇_g Q)²)` over batch and goal coordinates with r ∈ {−1, 0},
which is `c · E[−r · mean_i Δ_i²]` (agents/losses.py `goal_gradient_loss`), i.e. α = c/d.

**A member is one whole Baselines run of `workers` MPI workers** (the paper: 19 workers × 2
envs), in one process and without MPI:

* Envs: `workers × envs_per_worker` per member, all stepped through one gymnasium vector env
  (`sync`, or `async`: a process per env). Env k of a member belongs to worker
  k // envs_per_worker.
* Replay: each worker keeps its own buffer of `buffer_size` transitions (Baselines' buffer is
  per MPI process), fed by its own envs.
* Gradients: Baselines' MpiAdam combines the workers' gradients, each from a batch of 256 of
  its own buffer. Here each worker draws exactly `batch_size` samples from its own buffer,
  with a random stream of its own, and the member takes one step on the mean loss over the
  `workers × batch_size` rows: the gradient of that mean is the mean of the per-worker
  gradients, exactly (float rounding aside). A stratified sample rather than `workers ×
  batch_size` draws from a union buffer because that is what Baselines computes and it
  costs the same; a union buffer would draw a multinomial number of rows per worker (256 on
  average) instead of exactly 256. MpiAdam sums rather than averages the workers' gradients
  (`scale_grad_by_procs=False`); Adam's step is invariant to that factor but for its ε
  (1e-8, against gradients of order 1e-3), so the mean is used.
* Normaliser: one per member, fed by all its workers. Each worker draws as many HER samples
  of its own new episodes as they hold steps (Baselines' `store_episode`), with its own
  stream. Baselines then averages sums and counts over the workers (MPI Allreduce / W) on
  top of a count that starts at one; pooled sums with a count that starts at `workers` give
  the same mean and variance, so the member's normaliser count starts there.
* Test: `workers × envs_per_worker × test_rollouts` deterministic episodes per test, their
  mean success (Baselines averages the workers' test success, which all count the same
  number of episodes).
* Exploration noise is drawn member by member from the member's own stream.

Every member has its own random streams, derived from its seed alone, so member i of a
population behaves as seed i run alone. **Env seeding**: every rollout and every test round
re-seeds each env from the member's episode (or test) stream. A gymnasium-robotics episode
depends on its reset seed and actions alone, not on the episodes before it
(tests/test_robotics.py checks it for each task), so a checkpoint needs no simulator state
and a resumed run equals an uninterrupted one bitwise (tests/test_robotics_train.py).

**Runs** (`train_robotics`, what `reengage train` calls): `--steps` counts a member's env
steps, epochs × cycles × workers × envs_per_worker × T; tests run every `--eval-every` steps
(whole epochs) and before training; checkpoints go at epoch boundaries every
`--checkpoint-every` steps rounded up to whole epochs, and at the end of the cycle in flight
when SIGTERM/SIGINT arrives (then `RunInterrupted`); re-running the same command resumes.
Each seed writes `seed<k>/progress.csv` (reengage/progress.py's columns plus `epoch`) and
`run.json` (reengage.run.seed_record's shape, plus a `baselines` block of the resolved
settings); no `policy.pt` (the normaliser and the robotics env are not part of the policy
file's format; run.json says `"policy": null`). A member whose losses or parameters stop
being finite is recorded as diverged at that step, as the population loop does; it keeps
being stepped with the others (its non-finite actions replaced by zeros, so its simulator
stays finite) and its later rows are written as missing.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from reengage.agents.ddpg import DDPG, DDPGConfig
from reengage.agents.normalizer import her_statistics_sample
from reengage.agents.replay import EpisodeReplay
from reengage.envs.robotics import batched_reward, require_robotics

from .checkpoint import as_numpy, load_checkpoint, remove_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig
from .paths import checkpoint_path, member_dir, seeds_text
from .progress import (
    PROGRESS_COLUMNS,
    PROGRESS_NAME,
    RUNNING,
    LiveProgress,
    ProgressListener,
    active_listeners,
    atomic_write,
    progress_csv,
)
from .registry import ROBOTICS_ENVS, ROBOTICS_METHODS
from .run import RunInterrupted, first_non_finite, learner_optimizers, seed_record

LOSSES = ("critic_loss", "goal_grad_loss", "actor_loss", "q_mean")
COLUMNS = [*PROGRESS_COLUMNS, "epoch"]
"""progress.csv's columns for the robotics runs: the usual ones, then the epoch of the row."""


@dataclass
class BaselinesConfig:
    """One population of Baselines HER runs. Defaults are Baselines' robotics settings; a
    member is one run of `workers` workers (the module's docstring)."""

    env: str = "HandReach"
    """A key of reengage.registry.ROBOTICS_ENVS."""
    seeds: list[int] = field(default_factory=lambda: [0])
    c: float = 0.0
    """ReenGAGE's weight: the release's `grad_loss_weight`, α = c/d; 0 is DDPG+HER."""
    normalized_goal_gradient: bool = False
    """Normalized ReenGAGE: each goal coordinate's squared error times σ_i²."""
    epochs: int = 50
    cycles: int = 50
    """Cycles per epoch."""
    batches: int = 40
    """Gradient steps per cycle."""
    batch_size: int = 256
    """Samples per worker per gradient step; a step sees `workers × batch_size` rows."""
    workers: int = 1
    """Baselines workers (MPI processes) per member; the paper ran 19."""
    envs_per_worker: int = 2
    """Envs of each worker, one episode each per cycle (Baselines' `--num_env`,
    `rollout_batch_size`)."""
    test_rollouts: int = 10
    """Test rounds per test; each runs one deterministic episode in every test env
    (`workers × envs_per_worker` of them)."""
    test_every: int = 1
    """Epochs between tests (Baselines tests after every epoch)."""
    buffer_size: int = 1_000_000
    """Replay capacity of each worker in transitions (Baselines' is per process)."""
    lr: float = 1e-3
    """Adam learning rate of actor and critic."""
    polyak: float = 0.95
    hidden: tuple[int, ...] = (256, 256, 256)
    action_l2: float = 1.0
    random_eps: float = 0.3
    """Probability that an action is replaced by a uniform random one."""
    noise_eps: float = 0.2
    """Standard deviation of the Gaussian action noise (actions in [−1, 1])."""
    her_k: int = 4
    gamma: float | None = None
    """None: 1 − 1/T."""
    clip_return: bool = True
    """Clip targets to [−1/(1−γ), 0]."""
    norm_eps: float = 0.01
    norm_clip: float = 5.0
    clip_obs: float = 200.0
    vectorization_mode: str = "sync"
    """How each member's envs step: `sync`, or `async` (a process per env)."""
    device: str = "cpu"
    threads: int | None = 1
    """torch's intra-op threads; 1 by default: the networks are small, and on a busy machine
    a second thread mostly waits for a core (None: torch's default)."""
    compile: bool = True
    """Compile the learner's closed-form update (agents/compiled.py)."""

    @property
    def envs_per_member(self) -> int:
        return self.workers * self.envs_per_worker

    def discount(self) -> float:
        return self.gamma if self.gamma is not None else 1.0 - 1.0 / self.episode_steps()

    def episode_steps(self) -> int:
        return ROBOTICS_ENVS[self.env].steps_at(0)  # fixed by the id's time limit

    def epoch_steps(self) -> int:
        """A member's env steps per epoch: cycles × workers × envs_per_worker × T."""
        return self.cycles * self.envs_per_member * self.episode_steps()

    def worker_capacity(self) -> int:
        """Transitions each worker's buffer is allocated for: `buffer_size`, or fewer when
        the whole run stores fewer (the ring then never wraps, with either size)."""
        stored = self.epochs * self.cycles * self.envs_per_worker * self.episode_steps()
        return min(self.buffer_size, stored)

    def learner_config(self) -> DDPGConfig:
        gamma = self.discount()
        return DDPGConfig(
            gamma=gamma, tau=1.0 - self.polyak, lr=self.lr, hidden=tuple(self.hidden),
            goal_gradient_coef=self.c, action_l2=self.action_l2,
            target_clip=(-1.0 / (1.0 - gamma), 0.0) if self.clip_return else None,
            target_update_every_step=False, simultaneous_steps=True, normalize_inputs=True,
            normalizer_eps=self.norm_eps, normalizer_clip=self.norm_clip,
            normalizer_clip_input=self.clip_obs,
            normalized_goal_gradient=self.normalized_goal_gradient, compile=self.compile,
        )

    def check(self) -> None:
        """Raise ConfigError (named by its `--set` key) for a setting out of range."""
        for key in ("epochs", "cycles", "batches", "batch_size", "workers", "envs_per_worker",
                    "test_rollouts", "test_every", "buffer_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"--set {key}", f"must be a positive integer (got {value!r})")
        if self.her_k < 0:
            raise ConfigError("--set her_k", f"must be >= 0 (got {self.her_k})")
        for key in ("polyak", "random_eps"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"--set {key}", f"must be in [0, 1] (got {getattr(self, key)})")
        for key in ("action_l2", "noise_eps"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"--set {key}", f"must be >= 0 (got {getattr(self, key)})")
        for key in ("norm_eps", "norm_clip", "clip_obs"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"--set {key}", f"must be > 0 (got {getattr(self, key)})")
        if self.gamma is not None and not 0 <= self.gamma < 1:
            raise ConfigError("--set gamma", f"must be in [0, 1) (got {self.gamma})")
        if self.vectorization_mode not in ("sync", "async"):
            raise ConfigError("--set vectorization_mode", "must be sync or async (got "
                              f"{self.vectorization_mode!r})")
        if not all(isinstance(w, int) and w > 0 for w in self.hidden):
            raise ConfigError("--set hidden", f"must be a list of positive widths (got "
                              f"{list(self.hidden)!r})")


SETTINGS = ("workers", "envs_per_worker", "cycles", "batches", "test_rollouts", "polyak",
            "hidden", "action_l2", "random_eps", "noise_eps", "clip_return", "norm_eps",
            "norm_clip", "clip_obs", "vectorization_mode", "buffer_size", "her_k", "gamma",
            "compile")
"""The BaselinesConfig fields `reengage train --set` may set on a robotics env; the others
come from its flags (--lr, --batch-size, --c, --steps, --eval-every, --seeds, --threads,
--device) or from the method (Normalized ReenGAGE)."""

# Flags of the toy tasks' loop that mean nothing in the Baselines regime (or that a `--set`
# key means there), with their defaults. A robotics run refuses any other value, so that
# none silently means something. --buffer-size and --her-k mean what `--set buffer_size` and
# `--set her_k` do and are taken; --eval-episodes is taken when it equals the test's count.
_TOY_ONLY = {
    "learning_starts": ("--learning-starts", "Baselines has no warm-up of random steps"),
    "cycle_episodes": ("--cycle-episodes", "the cycles are --set cycles (episodes per cycle: "
                       "workers × envs_per_worker)"),
    "cycle_updates": ("--cycle-updates", "the updates per cycle are --set batches"),
    "her_future": ("--her-future", "Baselines' future includes the final state"),
    "her_relabel": ("--her-relabel", "Baselines relabels each sample with probability "
                    "k/(k+1)"),
    "inputs": ("--inputs", "the networks see (observation, goal), as Baselines builds them"),
    "gamma": ("--gamma", "γ = 1 − 1/T unless --set gamma=..."),
    "tau": ("--tau", "targets move once per cycle by 1 − polyak: --set polyak=..."),
    "action_noise": ("--action-noise", "exploration is --set noise_eps and random_eps"),
}


def epoch_text(epoch: int, steps: int) -> str:
    """`95000 (one epoch)` / the nearest multiples of `epoch` around `steps`."""
    below = max(epoch, steps // epoch * epoch)
    above = below if below >= steps else below + epoch
    choices = sorted({below, above})
    return " or ".join(map(str, choices))


def baselines_config(cfg: TrainConfig) -> BaselinesConfig:
    """The BaselinesConfig a `reengage train` configuration of a robotics env means; raises
    ConfigError (exit status 2 at the CLI) naming the offending option and the valid values.
    Run by reengage.config.validate, so check-config judges workflow jobs the same way."""
    if cfg.method not in ROBOTICS_METHODS:
        raise ConfigError("--method", f"{cfg.method} does not train on the robotics envs; "
                          f"{cfg.env} takes {', '.join(ROBOTICS_METHODS)}")
    spec = ROBOTICS_ENVS[cfg.env]
    goal = spec.widths[2] if spec.widths else None
    if cfg.dim != goal:
        raise ConfigError("--dim", f"must be {cfg.env}'s goal dimension, {goal} (got {cfg.dim})")
    defaults = TrainConfig(env=cfg.env, dim=cfg.dim, method=cfg.method, seeds=cfg.seeds,
                           steps=cfg.steps)
    for key, (option, why) in _TOY_ONLY.items():
        if getattr(cfg, key) != getattr(defaults, key):
            raise ConfigError(option, f"is a setting of the toy tasks' loop and {cfg.env} "
                              f"trains in the Baselines regime ({why}); leave it at its "
                              f"default, {getattr(defaults, key)!r}")
    unknown = sorted(set(cfg.extra) - set(SETTINGS))
    if unknown:
        raise ConfigError("--set", f"not a setting of the Baselines regime: "
                          f"{', '.join(unknown)} (it takes {', '.join(SETTINGS)})")
    settings = dict(cfg.extra)
    for key, option in (("buffer_size", "--buffer-size"), ("her_k", "--her-k")):
        given = getattr(cfg, key)
        if key in settings and given != getattr(defaults, key) and given != settings[key]:
            raise ConfigError(option, f"{given} contradicts --set {key}={settings[key]}")
        settings.setdefault(key, given)
    if isinstance(settings.get("hidden"), int):
        settings["hidden"] = (settings["hidden"],)
    try:
        base = BaselinesConfig(
            env=cfg.env, seeds=list(cfg.seeds), c=float(cfg.c or 0.0),
            normalized_goal_gradient=cfg.method == "reengage_her_normalized",
            batch_size=cfg.batch_size, lr=cfg.lr,
            device="cpu" if cfg.device == "auto" else cfg.device,
            threads=cfg.threads if cfg.threads is not None else BaselinesConfig.threads,
            **settings)
    except TypeError as error:
        raise ConfigError("--set", str(error)) from None
    base.check()
    epoch = base.epoch_steps()
    shape = (f"one epoch is {epoch} env steps per seed ({base.cycles} cycles × "
             f"{base.workers} workers × {base.envs_per_worker} envs × T = "
             f"{base.episode_steps()})")
    if cfg.steps < 1 or cfg.steps % epoch:
        raise ConfigError("--steps", f"must be a positive multiple of one epoch: {shape}; "
                          f"got {cfg.steps}, nearest valid {epoch_text(epoch, cfg.steps)}")
    if cfg.eval_every < 1 or cfg.eval_every % epoch or cfg.steps % cfg.eval_every:
        raise ConfigError("--eval-every", f"must be a positive multiple of one epoch that "
                          f"divides --steps {cfg.steps}: {shape}; got {cfg.eval_every}, "
                          f"nearest multiple {epoch_text(epoch, cfg.eval_every)}")
    base.epochs, base.test_every = cfg.steps // epoch, cfg.eval_every // epoch
    episodes = base.envs_per_member * base.test_rollouts
    if cfg.eval_episodes not in (defaults.eval_episodes, episodes):
        raise ConfigError("--eval-episodes", f"a test of {cfg.env} runs workers × "
                          f"envs_per_worker × test_rollouts = {episodes} episodes; set "
                          f"test_rollouts with --set (got --eval-episodes {cfg.eval_episodes})")
    return base


def checkpoint_epochs(cfg: TrainConfig, base: BaselinesConfig) -> int:
    """`--checkpoint-every` in whole epochs, rounded up (0: no periodic checkpoints)."""
    if cfg.checkpoint_every <= 0:
        return 0
    return max(1, math.ceil(cfg.checkpoint_every / base.epoch_steps()))


@dataclass
class MemberStreams:
    """A member's random streams, all from its seed: one per purpose, and for the replay and
    the normaliser's samples one per worker (each Baselines worker samples its own)."""

    episodes: np.random.Generator
    """Seeds of the member's envs, drawn anew for every rollout."""
    tests: np.random.Generator
    """Seeds of its test envs, drawn anew for every test round."""
    exploration: np.random.Generator
    replay: list[np.random.Generator]
    statistics: list[np.random.Generator]
    init: torch.Generator

    @classmethod
    def from_seed(cls, seed: int, workers: int) -> MemberStreams:
        episodes, tests, exploration, replay, statistics, init = \
            np.random.SeedSequence(seed).spawn(6)
        return cls(
            episodes=np.random.default_rng(episodes),
            tests=np.random.default_rng(tests),
            exploration=np.random.default_rng(exploration),
            replay=[np.random.default_rng(s) for s in replay.spawn(workers)],
            statistics=[np.random.default_rng(s) for s in statistics.spawn(workers)],
            init=torch.Generator().manual_seed(int(init.generate_state(1, np.uint64)[0])),
        )

    def generators(self) -> dict[str, Any]:
        """The numpy generators whose states a checkpoint keeps (`init` is spent at start)."""
        return {"episodes": self.episodes, "tests": self.tests,
                "exploration": self.exploration, "replay": self.replay,
                "statistics": self.statistics}


def explore(actions: np.ndarray, rng: np.random.Generator, noise_eps: float,
            random_eps: float) -> np.ndarray:
    """Baselines' exploration for one member's actions `[envs, action_dim]` in [−1, 1]:
    Gaussian noise, clip, then each row replaced by a uniform random action with
    probability `random_eps`."""
    noisy = np.clip(actions + noise_eps * rng.standard_normal(actions.shape), -1.0, 1.0)
    replace = rng.binomial(1, random_eps, actions.shape[0]).astype(bool)
    random = rng.uniform(-1.0, 1.0, actions.shape)
    return np.where(replace[:, None], random, noisy)


def _env_seeds(rng: np.random.Generator, count: int) -> list[int]:
    return [int(s) for s in rng.integers(0, 2**31 - 1, count)]


class BaselinesRun:
    """A population of Baselines runs (one per seed, each of `workers` workers) and the
    pieces of an epoch: rollout, train_cycle, test. `run` chains them without files;
    `train_robotics` adds files, checkpoints and signals."""

    def __init__(self, cfg: BaselinesConfig):
        require_robotics()
        cfg.check()
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        spec = ROBOTICS_ENVS[cfg.env]
        self.M, self.W, self.N = len(cfg.seeds), cfg.workers, cfg.envs_per_worker
        self.E, self.T = cfg.envs_per_member, cfg.episode_steps()
        self.device = torch.device(cfg.device)
        self.streams = [MemberStreams.from_seed(s, self.W) for s in cfg.seeds]
        copies = self.M * self.E
        self.env = gym.make_vec(spec.gym_id, num_envs=copies,
                                vectorization_mode=cfg.vectorization_mode)
        self.test_env = gym.make_vec(spec.gym_id, num_envs=copies,
                                     vectorization_mode=cfg.vectorization_mode)
        self.reward_env = gym.make(spec.gym_id)
        space = self.env.single_observation_space
        self.obs_dim = space["observation"].shape[-1]
        self.goal_dim = space["desired_goal"].shape[-1]
        self.action_dim = self.env.single_action_space.shape[-1]
        self.learner = DDPG(self.M, self.obs_dim, self.goal_dim, self.action_dim,
                            cfg.learner_config(), [s.init for s in self.streams]).to(self.device)
        for normalizer in (self.learner.state_normalizer, self.learner.goal_normalizer):
            normalizer.count.fill_(self.W)  # Baselines' worker-averaged count (docstring)
        self.learner.prepare(self.W * cfg.batch_size)
        # One replay lane per (member, worker): lane m·W + w is worker w of member m.
        self.replay = EpisodeReplay(
            self.M * self.W, cfg.worker_capacity(), self.T, self.obs_dim, self.goal_dim,
            self.action_dim,
            reward_fn=lambda achieved, goal: batched_reward(self.reward_env, achieved, goal),
            rngs=[rng for s in self.streams for rng in s.replay], her_k=cfg.her_k)
        self.timings = {"rollout_s": 0.0, "update_s": 0.0, "test_s": 0.0,
                        "env_steps": 0, "updates": 0}

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        """`[members * envs, k]` -> `[members, envs, k]` float32 on the learner's device."""
        return torch.as_tensor(x, dtype=torch.float32, device=self.device).reshape(
            self.M, self.E, -1)

    def _act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        action = self.learner.act(self._tensor(obs["observation"]),
                                  self._tensor(obs["desired_goal"]))
        # A diverged member's actions may be NaN: zeros keep its simulator finite.
        return np.nan_to_num(action.cpu().numpy().astype(np.float64), nan=0.0,
                             posinf=0.0, neginf=0.0)  # [M, E, A]

    def rollout(self) -> None:
        """One episode in each env of each member, stored in its worker's buffer, and the
        normaliser fed."""
        cfg, M, E, T = self.cfg, self.M, self.E, self.T
        obs, _ = self.env.reset(seed=[s for m in self.streams
                                      for s in _env_seeds(m.episodes, E)])
        observations = np.empty((M, E, T + 1, self.obs_dim), np.float32)
        achieved = np.empty((M, E, T + 1, self.goal_dim), np.float32)
        actions = np.empty((M, E, T, self.action_dim), np.float32)
        desired = obs["desired_goal"].reshape(M, E, -1).astype(np.float32)
        for t in range(T):
            observations[:, :, t] = obs["observation"].reshape(M, E, -1)
            achieved[:, :, t] = obs["achieved_goal"].reshape(M, E, -1)
            policy = self._act(obs)
            # Member by member: a member's draws must not depend on the population's size.
            action = np.stack([explore(policy[m], s.exploration, cfg.noise_eps, cfg.random_eps)
                               for m, s in enumerate(self.streams)])
            actions[:, :, t] = action
            obs, _, _, _, _ = self.env.step(action.reshape(M * E, -1))
        observations[:, :, T] = obs["observation"].reshape(M, E, -1)
        achieved[:, :, T] = obs["achieved_goal"].reshape(M, E, -1)
        lanes = self._by_worker
        for j in range(self.N):  # the j-th env of every worker of every member
            self.replay.start_episode(lanes(observations)[:, j, 0], lanes(achieved)[:, j, 0],
                                      lanes(desired)[:, j])
            for t in range(T):
                self.replay.add_step(lanes(actions)[:, j, t], lanes(observations)[:, j, t + 1],
                                     lanes(achieved)[:, j, t + 1])
        self._feed_normalizer(observations, achieved, desired)
        self.timings["env_steps"] += E * T

    def _by_worker(self, x: np.ndarray) -> np.ndarray:
        """`[members, workers × envs_per_worker, ...]` -> `[members × workers, envs_per_worker,
        ...]`: env k of a member is env k % N of its worker k // N."""
        return x.reshape(self.M * self.W, self.N, *x.shape[2:])

    def _feed_normalizer(self, observations: np.ndarray, achieved: np.ndarray,
                         desired: np.ndarray) -> None:
        """As Baselines' `store_episode`, worker by worker: as many HER samples of the
        worker's new episodes as they hold transitions; their observations and (relabelled)
        goals, pooled over the member's workers."""
        k, lanes = self.cfg.her_k, self._by_worker
        episode, step, goal = her_statistics_sample(
            lanes(achieved), lanes(desired), [r for s in self.streams for r in s.statistics],
            self.N * self.T, k / (k + 1) if k > 0 else 0.0)
        state = lanes(observations)[np.arange(self.M * self.W)[:, None], episode, step]
        self.learner.update_normalizer(
            torch.as_tensor(state.reshape(self.M, -1, self.obs_dim), dtype=torch.float32,
                            device=self.device),
            torch.as_tensor(goal.reshape(self.M, -1, self.goal_dim), dtype=torch.float32,
                            device=self.device))

    def sample_batch(self) -> dict[str, torch.Tensor]:
        """One gradient step's batch per member: `batch_size` rows from each worker's own
        buffer, drawn with that worker's stream, as `[members, workers × batch_size, ...]`
        (worker w's rows are w·batch_size … (w+1)·batch_size − 1)."""
        batch = self.replay.sample(self.cfg.batch_size)
        return {k: torch.as_tensor(getattr(batch, k), device=self.device).reshape(
                    self.M, self.W * self.cfg.batch_size, *getattr(batch, k).shape[2:])
                for k in ("obs", "action", "next_obs", "goal", "reward")}

    def train_cycle(self) -> dict[str, torch.Tensor]:
        """`batches` gradient steps, then one Polyak step; the mean diagnostics per member
        (NaN for a member whose loss stopped being finite in any step)."""
        sums: dict[str, torch.Tensor] = {}
        for _ in range(self.cfg.batches):
            for key, value in self.learner.update(**self.sample_batch()).items():
                sums[key] = sums.get(key, 0) + value
        self.learner.update_targets()
        self.timings["updates"] += self.cfg.batches
        return {k: v / self.cfg.batches for k, v in sums.items()}

    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """Per member: the success rate (`is_success` at each test episode's last step) and
        mean return of `test_rollouts` rounds of deterministic episodes in its E test envs."""
        M, E = self.M, self.E
        success = np.zeros((M, E))
        returns = np.zeros((M, E))
        for _ in range(self.cfg.test_rollouts):
            obs, _ = self.test_env.reset(seed=[s for m in self.streams
                                               for s in _env_seeds(m.tests, E)])
            info: dict[str, Any] = {}
            for _ in range(self.T):
                action = self._act(obs).reshape(M * E, -1)
                obs, reward, _, _, info = self.test_env.step(action)
                returns += np.asarray(reward).reshape(M, E)
            success += np.asarray(info["is_success"], dtype=float).reshape(M, E)
        n = self.cfg.test_rollouts
        return (success / n).mean(axis=1), (returns / n).mean(axis=1)

    def finite_members(self) -> np.ndarray:
        """`[members]` bool: every parameter and normaliser statistic of the member finite."""
        finite = torch.ones(self.M, dtype=torch.bool, device=self.device)
        for tensor in [*self.learner.parameters(), *self.learner.buffers()]:
            finite &= torch.isfinite(tensor.reshape(self.M, -1)).all(dim=1)
        return finite.cpu().numpy()

    def run(self, out: Path | None = None, quiet: bool = False) -> list[list[dict[str, float]]]:
        """Test before training (epoch 0), then `epochs` epochs, each followed by a test:
        rows per member in COLUMNS, `step` counting a member's env steps, written to
        `out/seed<k>/progress.csv` when `out` is given. No checkpoints, no run.json (that is
        `train_robotics`)."""
        cfg = self.cfg
        rows: list[list[dict[str, float]]] = [[] for _ in range(self.M)]
        started = time.time()
        meter = _Meter(self.M)
        self._record(rows, 0, meter, started)
        for epoch in range(1, cfg.epochs + 1):
            for _ in range(cfg.cycles):
                self.cycle(meter)
            if epoch % cfg.test_every == 0:
                self._record(rows, epoch, meter, started)
                if not quiet:
                    print(f"{cfg.env} epoch {epoch}: success "
                          f"{np.nanmean([r[-1]['success_rate'] for r in rows]):.3f} "
                          f"({time.time() - started:.0f} s)", flush=True)
        if out is not None:
            for seed, seed_rows in zip(cfg.seeds, rows, strict=True):
                atomic_write(member_dir(out, seed) / PROGRESS_NAME,
                             progress_csv(seed_rows, COLUMNS))
        return rows

    def cycle(self, meter: _Meter) -> dict[str, torch.Tensor]:
        """One cycle (rollout, then updates), its diagnostics added to `meter`."""
        t0 = time.time()
        self.rollout()
        t1 = time.time()
        losses = self.train_cycle()
        t2 = time.time()
        self.timings["rollout_s"] += t1 - t0
        self.timings["update_s"] += t2 - t1
        meter.add(losses, self.cfg.batches, t2 - t1)
        return losses

    def _record(self, rows: list[list[dict[str, float]]], epoch: int, meter: _Meter,
                started: float, elapsed_before: float = 0.0,
                dead: dict[int, Any] | None = None) -> None:
        """Test, and append each member's row for `epoch` (missing values for `dead`)."""
        t0 = time.time()
        success, returns = self.test()
        self.timings["test_s"] += time.time() - t0
        losses, rate = meter.means(), meter.rate()
        for m in range(self.M):
            gone = dead is not None and m in dead
            row = {"step": epoch * self.cfg.epoch_steps(),
                   "success_rate": math.nan if gone else float(success[m]),
                   "mean_return": math.nan if gone else float(returns[m])}
            row.update({k: math.nan if gone else float(losses[k][m]) for k in LOSSES})
            row.update({"wall_time_s": elapsed_before + time.time() - started,
                        "updates_per_s": rate, "epoch": epoch})
            rows[m].append(row)
        meter.reset()

    def close(self) -> None:
        self.env.close()
        self.test_env.close()
        self.reward_env.close()


class _Meter:
    """Per-member sums of the cycles' diagnostics and the update time since the last test."""

    def __init__(self, members: int):
        self.members = members
        self.reset()

    def reset(self) -> None:
        self.sums = {k: np.zeros(self.members) for k in LOSSES}
        self.cycles, self.updates, self.update_s = 0, 0, 0.0

    def add(self, losses: dict[str, torch.Tensor], updates: int, seconds: float) -> None:
        for key in LOSSES:
            self.sums[key] = self.sums[key] + (losses[key].cpu().numpy().astype(np.float64)
                                               if key in losses else math.nan)
        self.cycles, self.updates = self.cycles + 1, self.updates + updates
        self.update_s += seconds

    def means(self) -> dict[str, np.ndarray]:
        if not self.cycles:
            return {k: np.full(self.members, math.nan) for k in LOSSES}
        return {k: v / self.cycles for k, v in self.sums.items()}

    def rate(self) -> float:
        return self.updates / self.update_s if self.update_s else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {k: v.copy() for k, v in self.sums.items()}, "cycles": self.cycles,
                "updates": self.updates, "update_s": self.update_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = {k: np.asarray(v, dtype=np.float64) for k, v in state["sums"].items()}
        self.cycles, self.updates = int(state["cycles"]), int(state["updates"])
        self.update_s = float(state["update_s"])


class EpochProgress(LiveProgress):
    """reengage.progress.LiveProgress with the `epoch` column, and the epoch in each line."""

    columns = COLUMNS

    def evaluation_text(self, step: int, last: list[dict[str, float]]) -> str:
        return f"epoch {int(last[0]['epoch'])}, " + super().evaluation_text(step, last)


class RoboticsTraining:
    """`reengage train` on a robotics env: a BaselinesRun with run.json, live progress,
    checkpoints, divergence records and signals (the module's docstring)."""

    def __init__(self, cfg: TrainConfig, out: Path, progress: bool = True,
                 listeners: Sequence[ProgressListener] = ()):
        self.cfg, self.out, self.progress = cfg, out, progress
        self.base = baselines_config(cfg)
        self.every = checkpoint_epochs(cfg, self.base)
        self.run_ = BaselinesRun(self.base)
        self.meter = _Meter(self.run_.M)
        self.epoch = self.cycle = 0
        self.rows: list[list[dict[str, float]]] = [[] for _ in cfg.seeds]
        self.diverged: dict[int, dict[str, Any]] = {}
        self.resumes: list[dict[str, Any]] = []
        self.elapsed_before, self.started = 0.0, time.time()
        self._stop_signal: int | None = None
        seeds = seeds_text(cfg.seeds)
        self.live = EpochProgress(out, f"{cfg.env} {cfg.method} {seeds}", cfg.steps,
                                  lines=not progress, listeners=listeners)

    @property
    def step(self) -> int:
        """A member's env steps so far."""
        return (self.epoch * self.base.cycles + self.cycle) * self.base.envs_per_member \
            * self.base.episode_steps()

    def fingerprint_config(self) -> dict[str, Any]:
        """What a checkpoint must agree on: the resolved regime (threads and device aside,
        which reengage.checkpoint.fingerprint ignores)."""
        return {**asdict(self.base), "method": self.cfg.method}

    # -- the loop --------------------------------------------------------------------
    def train(self) -> list[dict[str, Any]]:
        ckpt = checkpoint_path(self.out, self.cfg.seeds)
        if ckpt.exists():
            self.load_state_dict(load_checkpoint(ckpt, self.fingerprint_config()))
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        base = self.base
        bar = tqdm(total=self.cfg.steps, initial=self.step, unit="step", file=sys.stderr,
                   disable=not self.progress, mininterval=2.0,
                   desc=f"{self.cfg.env} {self.cfg.method} x{len(self.cfg.seeds)}")
        try:
            self.live.started(self._records(RUNNING), self._rows_by_seed())
            if not self.rows[0]:
                self._test(bar)
            while self.epoch < base.epochs:
                while self.cycle < base.cycles:
                    losses = self.run_.cycle(self.meter)
                    self.cycle += 1
                    self._check_divergence(losses)
                    bar.update(base.envs_per_member * base.episode_steps())
                    if self._stop_signal is not None:
                        self.save(ckpt)
                        self.live.ended(self._records("interrupted"), self._rows_by_seed())
                        raise RunInterrupted(self.step, self._stop_signal)
                self.epoch, self.cycle = self.epoch + 1, 0
                if self.epoch % base.test_every == 0:
                    self._test(bar)
                if self.every and self.epoch % self.every == 0 and self.epoch < base.epochs:
                    self.save(ckpt)
            records = self._records("finished")
            self.live.ended(records, self._rows_by_seed())
        finally:
            bar.close()
            self.live.close()
            self.run_.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        remove_checkpoint(ckpt)  # only now that every seed's files say finished
        return records

    def _on_signal(self, signal_number: int, frame: Any) -> None:
        # Finish the cycle in flight, then checkpoint: the state between cycles is complete.
        self._stop_signal = signal_number

    def _check_divergence(self, losses: dict[str, torch.Tensor]) -> None:
        """A member whose cycle diagnostics (the means of its losses and Q-values over the
        cycle's updates) or parameters stopped being finite is recorded as diverged at this
        step, with the first such quantity."""
        names = [k for k in LOSSES if k in losses]
        bad = first_non_finite(names, np.stack([losses[k].cpu().numpy() for k in names]))
        for m in np.flatnonzero(~self.run_.finite_members()):
            bad.setdefault(int(m), ("parameters", "non-finite"))
        for m, (quantity, value) in sorted(bad.items()):
            if m not in self.diverged:
                self.diverged[m] = {"step": self.step, "quantity": quantity, "value": value}

    def _test(self, bar: tqdm) -> None:
        self.run_._record(self.rows, self.epoch, self.meter, self.started, self.elapsed_before,
                          self.diverged)
        self.live.evaluated(self.step, self._rows_by_seed())
        alive = [r[-1]["success_rate"] for m, r in enumerate(self.rows) if m not in self.diverged]
        if alive:
            bar.set_postfix(epoch=self.epoch, success=f"{np.mean(alive):.2f}", refresh=False)

    # -- outputs -----------------------------------------------------------------------
    def _records(self, status: str) -> list[dict[str, Any]]:
        now = time.time()
        replay = self.run_.replay
        records = []
        for m, seed in enumerate(self.cfg.seeds):
            record = seed_record(
                self.cfg, seed, status, device=self.run_.device, step=self.step,
                replay_bytes=replay.nbytes // self.run_.M,
                wall_time_s=self.elapsed_before + now - self.started, finished_at=now,
                resumes=self.resumes, diverged=self.diverged.get(m),
                learner=self.run_.learner)
            record.update({
                "regime": "baselines", "epoch": self.epoch,
                "baselines": {**asdict(self.base), "gamma": self.base.discount(),
                              "epoch_steps": self.base.epoch_steps(),
                              "test_episodes": self.base.envs_per_member
                              * self.base.test_rollouts},
                "policy": None,
                "policy_note": "robotics runs write no policy.pt: the policy file's format "
                               "holds neither the input normaliser nor the robotics env",
            })
            records.append(record)
        return records

    def _rows_by_seed(self) -> dict[int, list[dict[str, float]]]:
        return dict(zip(self.cfg.seeds, self.rows, strict=True))

    # -- checkpoints -------------------------------------------------------------------
    def save(self, path: Path) -> int:
        return save_checkpoint(path, self.state_dict(), self.fingerprint_config())

    def state_dict(self) -> dict[str, Any]:
        learner = self.run_.learner
        return {
            "epoch": self.epoch, "cycle": self.cycle,
            "learner": learner.state_dict(),
            "optimizers": {name: opt.state_dict()
                           for name, opt in learner_optimizers(learner)},
            "replay": self.run_.replay.state_dict(),
            "streams": [{name: ([g.bit_generator.state for g in rng] if isinstance(rng, list)
                                else rng.bit_generator.state)
                         for name, rng in s.generators().items()} for s in self.run_.streams],
            "meter": self.meter.state_dict(),
            "rows": self.rows,
            "diverged": {str(m): v for m, v in self.diverged.items()},
            "resumes": self.resumes,
            "elapsed": self.elapsed_before + time.time() - self.started,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.cycle = int(state["epoch"]), int(state["cycle"])
        learner = self.run_.learner
        learner.load_state_dict(state["learner"])
        for name, opt in learner_optimizers(learner):
            opt.load_state_dict(state["optimizers"][name])
        self.run_.replay.load_state_dict(as_numpy(state["replay"]))
        for stream, saved in zip(self.run_.streams, state["streams"], strict=True):
            for name, rng in stream.generators().items():
                for g, g_state in zip(rng if isinstance(rng, list) else [rng],
                                      saved[name] if isinstance(rng, list) else [saved[name]],
                                      strict=True):
                    g.bit_generator.state = g_state
        self.meter.load_state_dict(as_numpy(state["meter"]))
        self.rows = state["rows"]
        self.diverged = {int(m): v for m, v in state["diverged"].items()}
        self.resumes = [*state["resumes"], {"from_step": self.step, "at": time.time()}]
        self.elapsed_before = float(state["elapsed"])
        self.started = time.time()


def train_robotics(cfg: TrainConfig, out: Path, progress: bool = True) -> list[dict[str, Any]]:
    """Train (or resume) the population of `cfg.seeds` on a robotics env in the Baselines
    regime; what `reengage.run.train` calls for ROBOTICS_ENVS. Returns the run.json records."""
    return RoboticsTraining(cfg, out, progress, active_listeners()).train()


def main(argv: list[str] | None = None) -> int:
    """`python -m reengage.baselines_her --env FetchReach --epochs 5`: a quick run of the
    regime (no checkpoints, no run.json: `reengage train` does those), printing each test and
    the time it took."""
    defaults = BaselinesConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=defaults.env, choices=sorted(ROBOTICS_ENVS))
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--cycles", type=int, default=defaults.cycles)
    parser.add_argument("--batches", type=int, default=defaults.batches)
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help="Baselines workers per seed (the paper: 19)")
    # --envs-per-member is the flag's name from before workers: with one worker, the same.
    parser.add_argument("--envs-per-worker", "--envs-per-member", dest="envs_per_worker",
                        type=int, default=defaults.envs_per_worker)
    parser.add_argument("--c", type=float, default=0.0)
    parser.add_argument("--normalized", action="store_true",
                        help="Normalized ReenGAGE (σ² weights)")
    parser.add_argument("--vectorization-mode", default="sync", choices=("sync", "async"))
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    cfg = BaselinesConfig(env=args.env, seeds=[int(s) for s in args.seeds.split(",")],
                          epochs=args.epochs, cycles=args.cycles, batches=args.batches,
                          workers=args.workers, envs_per_worker=args.envs_per_worker, c=args.c,
                          normalized_goal_gradient=args.normalized,
                          vectorization_mode=args.vectorization_mode, threads=args.threads)
    run = BaselinesRun(cfg)
    try:
        run.run(args.out)
    finally:
        run.close()
    t = run.timings
    print(f"env steps/s per member (rollouts, incl. acting): "
          f"{t['env_steps'] / max(t['rollout_s'], 1e-9):.0f}; "
          f"updates/s: {t['updates'] / max(t['update_s'], 1e-9):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
