"""One grid cell, start to finish: a population of seeds trained in lockstep.

Each member owns its random streams (environment, evaluation environment, exploration,
replay sampling, initial weights), all derived from its seed, so member i of a
population behaves as seed i run alone. The whole population is checkpointed between
episodes; a re-run of the same command resumes from the last complete checkpoint and
writes the same progress.csv as an uninterrupted run (wall-clock columns aside).

While it trains, each seed's run.json says `running` and its evaluations so far are in
progress.partial.csv; progress.csv and policy.pt appear when it finishes (reengage/progress.py
states the rule, reengage/policy.py the policy file).
"""

from __future__ import annotations

import math
import platform
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import reengage.envs  # noqa: F401  (registers the environment ids)
from reengage import __version__
from reengage.agents.optim import PopulationAdam
from reengage.agents.replay import EpisodeReplay

from .allocator import retain_freed_memory
from .checkpoint import as_numpy, load_checkpoint, remove_checkpoint, save_checkpoint
from .config import MATMUL_PRECISIONS, ConfigError, TrainConfig
from .paths import checkpoint_path, member_dir, seeds_text
from .policy import learner_fields, member_weights, policy_document, save_policy
from .progress import (
    POLICY_NAME,
    PROGRESS_COLUMNS,  # noqa: F401  (imported from here by callers)
    RUNNING,
    LiveProgress,
    ProgressListener,
    listening,
)
from .provenance import provenance
from .registry import ENVS, METHODS, ROBOTICS_ENVS, Learner, LearnerSpec

FORMAT_VERSION = 1
LOSS_COLUMNS = ("critic_loss", "goal_grad_loss", "actor_loss", "q_mean")
StepHook = Callable[[int, Learner], None]


class RunInterrupted(RuntimeError):
    """SIGTERM/SIGINT arrived: a checkpoint was written and the run can be resumed."""

    def __init__(self, step: int, signal_number: int, resume: str = "resume"):
        """`resume` says what a re-run does (a runner without mid-seed checkpoints says
        which work it will repeat)."""
        super().__init__(f"interrupted at step {step}; re-run the same command to {resume}")
        self.step, self.signal_number = step, signal_number


@dataclass
class MemberStreams:
    """The independent random streams of one member, all derived from its seed."""

    env_seed: int
    eval_seeds: list[int]
    exploration: np.random.Generator
    replay: np.random.Generator
    init: torch.Generator

    @classmethod
    def from_seed(cls, seed: int, eval_episodes: int) -> MemberStreams:
        env, evaluation, exploration, replay, init = np.random.SeedSequence(seed).spawn(5)
        generator = torch.Generator().manual_seed(int(init.generate_state(1, np.uint64)[0]))
        return cls(
            env_seed=int(env.generate_state(1)[0]),
            eval_seeds=[int(s) for s in evaluation.generate_state(eval_episodes)],
            exploration=np.random.default_rng(exploration),
            replay=np.random.default_rng(replay),
            init=generator,
        )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def package_versions() -> dict[str, str]:
    return {
        "reengage": __version__, "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__, "gymnasium": gym.__version__,
    }


def _make_vec(cfg: TrainConfig, copies: int) -> gym.vector.VectorEnv:
    spec = ENVS[cfg.env]
    return gym.make_vec(spec.gym_id, num_envs=copies,
                        vectorization_mode=spec.vectorization_mode, **{spec.dim_kwarg: cfg.dim})


def _flat(x: np.ndarray) -> np.ndarray:
    """`[copies, *shape]` -> `[copies, prod(shape)]`: goal sets travel flattened."""
    return x.reshape(x.shape[0], -1)


def learner_state(observation: np.ndarray, achieved: np.ndarray, inputs: str) -> np.ndarray:
    """The state a learner is given (LearnerSpec.achieved_dim): `(achieved goal,
    observation)` under `inputs: sb3`, so that the networks see Stable-Baselines3's
    `(achieved_goal, desired_goal, observation)` once the goal is put after the achieved
    goal; the observation alone under `inputs: obs_goal`."""
    if inputs == "obs_goal":
        return observation
    return np.concatenate([achieved, observation], axis=-1, dtype=np.float32)


def _split(obs: dict[str, np.ndarray], members: int, device: torch.device, inputs: str):
    """Observation dict of `members * n` copies -> (state, goal) tensors `[members, n, ...]`."""
    def as_tensor(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(_flat(x), dtype=torch.float32, device=device).reshape(
            members, x.shape[0] // members, -1)
    state = learner_state(obs["observation"], obs["achieved_goal"], inputs)
    return as_tensor(state), as_tensor(obs["desired_goal"])


class Evaluator:
    """`eval_episodes` fresh episodes per member with the deterministic policy, all copies of
    all members stepped as one vector env; copy (i, j) is seeded from member i's stream."""

    def __init__(self, cfg: TrainConfig, streams: list[MemberStreams], device: torch.device):
        self.members, self.episodes = len(streams), cfg.eval_episodes
        self.steps = ENVS[cfg.env].steps_at(cfg.dim)
        self.env = _make_vec(cfg, self.members * self.episodes)
        self.device, self.inputs = device, cfg.inputs
        self.seeds: list[int] | None = [s for m in streams for s in m.eval_seeds]

    def __call__(self, learner: Learner) -> tuple[np.ndarray, np.ndarray]:
        obs, info = self.env.reset(seed=self.seeds)
        self.seeds = None  # later evaluations continue each copy's stream
        returns = np.zeros(self.env.num_envs)
        success = np.zeros(self.env.num_envs, dtype=bool)
        for _ in range(self.steps):
            action = learner.act(*_split(obs, self.members, self.device, self.inputs))
            action = action.reshape(self.env.num_envs, -1).cpu().numpy()
            obs, reward, _, _, info = self.env.step(action)
            returns += reward
            success |= np.asarray(info.get("is_success", np.zeros_like(success)), dtype=bool)
        shape = (self.members, self.episodes)
        return success.reshape(shape).mean(axis=1), returns.reshape(shape).mean(axis=1)


class LossMeter:
    """Per-member running sums of the update diagnostics, kept on the device so the step
    loop never waits for a host copy."""

    def __init__(self, members: int, device: torch.device):
        self.sums = torch.zeros(len(LOSS_COLUMNS), members, device=device)
        self.count = 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for i, key in enumerate(LOSS_COLUMNS):
            # A method that does not report a diagnostic leaves its column missing.
            self.sums[i] += values[key] if key in values else math.nan
        self.count += 1

    def means(self) -> np.ndarray:
        """`[len(LOSS_COLUMNS), members]`, NaN where nothing was recorded."""
        if self.count == 0:
            return np.full(tuple(self.sums.shape), math.nan)
        return (self.sums / self.count).cpu().numpy()

    def reset(self) -> None:
        self.sums.zero_()
        self.count = 0


def seed_record(cfg: TrainConfig, seed: int, status: str, *, device: torch.device,
                step: int, replay_bytes: int, wall_time_s: float, finished_at: float,
                resumes: list[dict[str, Any]], diverged: dict[str, Any] | None = None,
                versions: dict[str, str] | None = None,
                learner: Any | None = None) -> dict[str, Any]:
    """One seed's run.json. `diverged` ({step, quantity, value}) turns a finished status
    into `diverged` and records where and why; `learner`, when given, has its class and
    settings recorded (reengage/provenance.py). Every training loop writes this shape."""
    method = METHODS[cfg.method]
    record: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "status": "diverged" if diverged is not None and status == "finished" else status,
        "seed": seed,
        "population": cfg.seeds,
        "config": cfg.to_dict(),
        "label": method.label(cfg.c),
        "fixed_policy": not method.trains,
        "versions": versions or package_versions(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "step": step,
        "replay_bytes_per_member": replay_bytes,
        "wall_time_s": wall_time_s,
        "finished_at": finished_at,
        "resume_count": len(resumes),
        "resumed": resumes,
        "provenance": provenance(cfg.method, learner),
    }
    if diverged is not None:
        record.update({
            "diverged_at_step": diverged["step"],
            "diverged_reason": f"{diverged['quantity']} became {diverged['value']}",
        })
    return record


def first_non_finite(names: list[str], values: np.ndarray) -> dict[int, tuple[str, str]]:
    """Members whose `values` (`[quantities, members]`, in the order of `names`) hold a
    non-finite number: member -> (its first such quantity, that value as text)."""
    found = {}
    for m in np.flatnonzero(~np.isfinite(values).all(axis=0)):
        first = int(np.flatnonzero(~np.isfinite(values[:, m]))[0])
        found[int(m)] = (names[first], str(float(values[first, m])))
    return found


class PopulationRun:
    """The state of one population's training, and the loop that advances it."""

    def __init__(self, cfg: TrainConfig, out: Path, progress: bool = True,
                 step_hook: StepHook | None = None,
                 listeners: Sequence[ProgressListener] = ()):
        """`progress`: a progress bar on stderr; without it, a line per evaluation."""
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        self.cfg, self.out, self.progress, self.step_hook = cfg, out, progress, step_hook
        self.device = resolve_device(cfg.device)
        self.members = len(cfg.seeds)
        self.method = METHODS[cfg.method]
        self.T = ENVS[cfg.env].steps_at(cfg.dim)
        self.streams = [MemberStreams.from_seed(seed, cfg.eval_episodes) for seed in cfg.seeds]
        self.env = _make_vec(cfg, self.members)
        space = self.env.single_observation_space
        obs_dim = space["observation"].shape[-1]
        achieved_dim = space["achieved_goal"].shape[-1]
        goal_shape = space["desired_goal"].shape
        goal_dim = int(np.prod(goal_shape))
        action_space = self.env.single_action_space
        # A discrete action travels as its index in one float column (LearnerSpec.action_count).
        discrete = isinstance(action_space, gym.spaces.Discrete)
        self.action_count = int(action_space.n) if discrete else 0
        self.action_dim = 1 if discrete else action_space.shape[-1]
        # The learner's state leads with the achieved goal under `inputs: sb3`, and its
        # networks put the desired goal right after it (agents/inputs.py).
        leading = achieved_dim if cfg.inputs == "sb3" else 0
        self.spec = LearnerSpec(
            members=self.members, obs_dim=leading + obs_dim, goal_dim=goal_dim,
            action_dim=self.action_dim, lr=cfg.lr, gamma=cfg.gamma, tau=cfg.tau, c=cfg.c,
            generators=[s.init for s in self.streams], extra=dict(cfg.extra),
            achieved_dim=leading, goal_at=leading if leading else None,
            action_count=self.action_count,
        )
        try:
            self.learner = self.method.build(self.spec)
        except TypeError as error:  # a --set key the method's configuration does not have
            raise ConfigError("--set", f"not a setting of {cfg.method}: {error}") from error
        if isinstance(self.learner, torch.nn.Module):
            self.learner.to(self.device)
        prepare = getattr(self.learner, "prepare", None)
        if callable(prepare):  # optional: one-off work (compilation) before training
            prepare(cfg.batch_size)
        reward = self.env.item_reward if self.method.item_rewards else self.env.compute_reward

        def reward_fn(achieved: np.ndarray, goal: np.ndarray) -> np.ndarray:
            return reward(achieved, goal.reshape(*goal.shape[:-1], *goal_shape))

        # A fixed policy stores nothing; a one-episode ring keeps the loop uniform.
        capacity = cfg.buffer_size if self.method.trains else self.T
        self.replay = EpisodeReplay(
            self.members, capacity, self.T, obs_dim, goal_dim, self.action_dim,
            reward_fn=reward_fn, rngs=[s.replay for s in self.streams],
            her_k=cfg.her_k if self.method.her else 0,
            achieved_dim=achieved_dim,
            achieved_in_obs=ENVS[cfg.env].achieved_in_obs,
            her_future=cfg.her_future, her_relabel=cfg.her_relabel,
        )
        self.evaluate = Evaluator(cfg, self.streams, self.device)
        self.meter = LossMeter(self.members, self.device)
        self.step = 0
        self.rows: list[list[dict[str, float]]] = [[] for _ in range(self.members)]
        self.diverged: dict[int, dict[str, Any]] = {}
        self.resumes: list[dict[str, Any]] = []
        self.elapsed_before = 0.0  # wall time spent in earlier processes of this run
        self.started = time.time()
        self.updates_since_log, self.last_log_time = 0, self.started
        self._stop_signal: int | None = None
        seeds = seeds_text(cfg.seeds)
        self.live = LiveProgress(out, f"{cfg.env}-d{cfg.dim} {cfg.method} {seeds}",
                                 cfg.steps, lines=not progress, listeners=listeners)

    # -- the loop --------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        ckpt = checkpoint_path(self.out, cfg.seeds)
        if ckpt.exists():
            self.load_state_dict(load_checkpoint(ckpt, cfg.to_dict()))
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", file=sys.stderr,
                   disable=not self.progress, mininterval=2.0,
                   desc=f"{cfg.env}-d{cfg.dim} {cfg.method} x{self.members}")
        try:
            self.live.started(self._records(RUNNING), self._rows_by_seed())
            if self.step == 0:
                self._log(bar)
            while self.step < cfg.steps:
                self._run_episode(bar)
                if self.step % cfg.eval_every == 0 or self.step >= cfg.steps:
                    self._log(bar)
                if self._stop_signal is not None:
                    self.save(ckpt)
                    self.live.ended(self._records("interrupted"), self._rows_by_seed())
                    raise RunInterrupted(self.step, self._stop_signal)
                if self._checkpoint_due() and self.step < cfg.steps:
                    self.save(ckpt)
            records = self._records("finished")
            self._save_policies(records)
            self.live.ended(records, self._rows_by_seed())
        finally:
            bar.close()
            self.live.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        remove_checkpoint(ckpt)  # only now that every seed's files say finished
        return records

    def _on_signal(self, signal_number: int, frame: Any) -> None:
        # Finish the episode in flight, then checkpoint: checkpoints sit between episodes.
        self._stop_signal = signal_number

    def _checkpoint_due(self) -> bool:
        every = self.cfg.checkpoint_every
        return every > 0 and self.step % every < self.T

    def _run_episode(self, bar: tqdm) -> None:
        cfg, streams = self.cfg, self.streams
        obs, _ = self.env.reset(seed=[s.env_seed for s in streams] if self.step == 0 else None)
        self.replay.start_episode(obs["observation"], obs["achieved_goal"],
                                  _flat(obs["desired_goal"]))
        for _ in range(self.T):
            self.step += 1
            # Random draws go member by member: each member's stream must not depend on
            # how many others share the population.
            if self.step <= cfg.learning_starts and self.method.trains:
                action = np.stack([self._random_action(s.exploration) for s in streams])
            elif self.method.trains and hasattr(self.learner, "sample_actions"):
                # No noise for these: the learner draws its training actions (DQN's
                # ε-greedy) from each member's exploration stream.
                action = self.learner.sample_actions(
                    *_split(obs, self.members, self.device, cfg.inputs),
                    [s.exploration for s in streams]).reshape(self.members, -1).cpu().numpy()
            else:
                # A stochastic policy (SAC) explores by sampling (`explore`), and the noise
                # below comes on top, as Stable-Baselines3 adds action noise to SAC's samples.
                policy = getattr(self.learner, "explore", self.learner.act)
                action = policy(*_split(obs, self.members, self.device, cfg.inputs))
                action = action.reshape(self.members, -1).cpu().numpy()
                if self.method.trains:
                    noise = np.stack([s.exploration.normal(0.0, cfg.action_noise,
                                                           self.action_dim) for s in streams])
                    action = np.clip(action + noise, -1.0, 1.0)
            action = action.astype(np.float32)
            obs, _, _, _, _ = self.env.step(action)
            self.replay.add_step(action, obs["observation"], obs["achieved_goal"])
            if (self.method.trains and self.step > cfg.learning_starts and self.replay.size
                    and not cfg.cycle_episodes):
                self._update()
            if self.step % cfg.eval_every == 0 and self.step % self.T != 0:
                self._log(bar)  # an evaluation that falls inside an episode
        if self._cycle_ends():
            for _ in range(cfg.cycle_updates):
                self._update()
        bar.update(self.T)

    def _cycle_ends(self) -> bool:
        """Training in cycles (`cycle_episodes`): the episode just stored completes a cycle
        after the warm-up, so its block of updates is due. The count of episodes is the step
        count over T, so a resumed run finds the same cycles."""
        cfg = self.cfg
        return (bool(cfg.cycle_episodes) and self.method.trains
                and self.step > cfg.learning_starts
                and (self.step // self.T) % cfg.cycle_episodes == 0)

    def _random_action(self, rng: np.random.Generator) -> np.ndarray:
        """A uniformly random action: an index of a discrete space, else a point of [-1, 1]^n."""
        if self.action_count:
            return rng.integers(0, self.action_count, 1)
        return rng.uniform(-1.0, 1.0, self.action_dim)

    def _update(self) -> None:
        batch = self.replay.sample(self.cfg.batch_size)
        inputs = self.cfg.inputs
        arrays = {"obs": learner_state(batch.obs, batch.achieved, inputs),
                  "action": batch.action,
                  "next_obs": learner_state(batch.next_obs, batch.next_achieved, inputs),
                  "goal": batch.goal, "reward": batch.reward}
        tensors = {k: torch.as_tensor(v, device=self.device) for k, v in arrays.items()}
        values = self.learner.update(**tensors)
        self.meter.add(values)
        self.updates_since_log += 1
        if self.step_hook is not None:
            self.step_hook(self.step, self.learner)
        self._check_divergence(values)

    def _check_divergence(self, values: dict[str, torch.Tensor]) -> None:
        """A member whose losses or Q-values stop being finite is recorded as diverged at
        this step. Members are independent, so the others train on unaffected; its later
        evaluations are written as missing."""
        stacked = torch.stack(list(values.values()))
        if bool(torch.isfinite(stacked).all()):
            return
        for m, (quantity, value) in first_non_finite(list(values), stacked.cpu().numpy()).items():
            if m not in self.diverged:
                self.diverged[m] = {"step": self.step, "quantity": quantity, "value": value}

    def _log(self, bar: tqdm) -> None:
        success, mean_return = self.evaluate(self.learner)
        losses = self.meter.means()
        now = time.time()
        rate = self.updates_since_log / (now - self.last_log_time) if self.updates_since_log \
            else 0.0
        wall = self.elapsed_before + now - self.started
        for m in range(self.members):
            dead = m in self.diverged
            row = {"step": self.step,
                   "success_rate": math.nan if dead else float(success[m]),
                   "mean_return": math.nan if dead else float(mean_return[m])}
            row.update({k: math.nan if dead else float(losses[i, m])
                        for i, k in enumerate(LOSS_COLUMNS)})
            row.update({"wall_time_s": wall, "updates_per_s": rate})
            self.rows[m].append(row)
        self.meter.reset()
        self.last_log_time, self.updates_since_log = now, 0
        self.live.evaluated(self.step, self._rows_by_seed())
        alive = [m for m in range(self.members) if m not in self.diverged]
        if alive:
            bar.set_postfix(success=f"{success[alive].mean():.2f}", refresh=False)

    # -- outputs (written by self.live, reengage/progress.py) --------------------------
    def _records(self, status: str) -> list[dict[str, Any]]:
        """Every member's run.json with this status (`diverged` where a member did)."""
        now = time.time()
        return [seed_record(
            self.cfg, seed, status, device=self.device, step=self.step,
            replay_bytes=self.replay.nbytes // self.members,
            wall_time_s=self.elapsed_before + now - self.started, finished_at=now,
            resumes=self.resumes, diverged=self.diverged.get(m), learner=self.learner,
        ) for m, seed in enumerate(self.cfg.seeds)]

    def _rows_by_seed(self) -> dict[int, list[dict[str, float]]]:
        return dict(zip(self.cfg.seeds, self.rows, strict=True))

    def _save_policies(self, records: list[dict[str, Any]]) -> None:
        """Each member's policy.pt, before its run.json says finished. A learner that trains
        but keeps its weights outside torch modules has none to save."""
        if self.method.trains and not isinstance(self.learner, torch.nn.Module):
            return
        spec = learner_fields(self.spec)
        for m, record in enumerate(records):
            weights = member_weights(self.learner, m, self.members)
            save_policy(member_dir(self.out, record["seed"]) / POLICY_NAME,
                        policy_document("population", record, spec, weights))

    # -- checkpoints -----------------------------------------------------------------
    def save(self, path: Path) -> int:
        return save_checkpoint(path, self.state_dict(), self.cfg.to_dict())

    def state_dict(self) -> dict[str, Any]:
        learner = self.learner
        return {
            "step": self.step,
            "learner": learner.state_dict() if isinstance(learner, torch.nn.Module) else {},
            "optimizers": {name: opt.state_dict()
                           for name, opt in learner_optimizers(learner)},
            "replay": self.replay.state_dict(),
            "env": self.env.get_state(),
            "eval_env": self.evaluate.env.get_state(),
            "eval_seeded": self.evaluate.seeds is None,
            "exploration": [s.exploration.bit_generator.state for s in self.streams],
            "replay_rngs": [s.replay.bit_generator.state for s in self.streams],
            "meter_sums": self.meter.sums.cpu(), "meter_count": self.meter.count,
            "updates_since_log": self.updates_since_log,
            "rows": self.rows,
            "diverged": {str(m): v for m, v in self.diverged.items()},
            "resumes": self.resumes,
            "elapsed": self.elapsed_before + time.time() - self.started,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        if isinstance(self.learner, torch.nn.Module):
            self.learner.load_state_dict(state["learner"])
        for name, opt in learner_optimizers(self.learner):
            opt.load_state_dict(state["optimizers"][name])
        self.replay.load_state_dict(as_numpy(state["replay"]))
        self.env.set_state(as_numpy(state["env"]))
        self.evaluate.env.set_state(as_numpy(state["eval_env"]))
        if state["eval_seeded"]:
            self.evaluate.seeds = None
        for stream, rng_state, replay_state in zip(
                self.streams, state["exploration"], state["replay_rngs"], strict=True):
            stream.exploration.bit_generator.state = rng_state
            stream.replay.bit_generator.state = replay_state
        self.meter.sums.copy_(state["meter_sums"])
        self.meter.count = int(state["meter_count"])
        self.updates_since_log = int(state["updates_since_log"])
        self.rows = state["rows"]
        self.diverged = {int(m): v for m, v in state["diverged"].items()}
        self.resumes = [*state["resumes"], {"from_step": self.step, "at": time.time()}]
        self.elapsed_before = float(state["elapsed"])
        self.started = self.last_log_time = time.time()


def set_matmul_precision(cfg: TrainConfig) -> None:
    """This process's float32 matrix products as the run asks (config.MATMUL_PRECISIONS):
    set on every run, so one run's choice never carries into the next in one process."""
    torch.set_float32_matmul_precision(MATMUL_PRECISIONS[cfg.matmul_precision])


def learner_optimizers(
        learner: Learner) -> list[tuple[str, torch.optim.Optimizer | PopulationAdam]]:
    """The optimisers a learner owns, found by attribute so methods need no extra API."""
    return sorted(((name, value) for name, value in vars(learner).items()
                   if isinstance(value, torch.optim.Optimizer | PopulationAdam)),
                  key=lambda item: item[0])


def train(cfg: TrainConfig, out: Path, progress: bool = True,
          step_hook: StepHook | None = None,
          listeners: Sequence[ProgressListener] = ()) -> list[dict[str, Any]]:
    """Train (or resume) the population of `cfg.seeds`; write `out/seed<k>/progress.csv`,
    `policy.pt` and `run.json` (live: reengage/progress.py). A robotics env
    (ROBOTICS_ENVS) trains in the Baselines regime (reengage/baselines_her.py
    `train_robotics`: no policy.pt, an `epoch` column); `loop: device` in the device loop
    (reengage/device/driver.py); a method with a `runner` in it.
    Returns the per-member records (the contents of run.json). `progress` shows a bar,
    else a line per evaluation; `listeners` (e.g. reengage.tracking.WandbTracker) hear every
    evaluation as it happens.

    Tunes the process's malloc to keep freed memory (reengage/allocator.py): 2-7 % faster on
    CPU, at no cost in peak memory; `REENGAGE_MALLOC_TUNING=off` keeps glibc's defaults."""
    set_matmul_precision(cfg)
    if cfg.env in ROBOTICS_ENVS:  # the Baselines regime, whatever the method's own loop
        from .baselines_her import train_robotics

        retain_freed_memory()
        with listening(listeners):
            return train_robotics(cfg, out, progress)
    if cfg.loop == "device":  # task, replay and evaluation as tensors (reengage/device)
        from .device.driver import train_on_device

        retain_freed_memory()
        return train_on_device(cfg, out, progress, tuple(listeners), step_hook)
    runner = METHODS[cfg.method].runner
    if runner is not None:  # an independent implementation with a loop of its own
        with listening(listeners):
            return runner(cfg, out, progress)
    retain_freed_memory()
    return PopulationRun(cfg, out, progress, step_hook, listeners).run()
