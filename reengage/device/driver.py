"""The device-resident training loop: task, buffer, learner, evaluator and logger, each on
one device, composed here into one step and a short host loop.

The step (act, env step, insert, sample, update) touches device tensors only; the host
decides from its own step count which mode a step runs in (an episode starts, random
actions before `learning_starts`, updates once an episode is complete and `learning_starts`
is past), so the step needs no value from the device; within a mode, what varies with the
data (ring position, fill, episode completion) is a mask. Off CUDA the step runs eagerly;
on CUDA it is a CUDA graph captured once per mode (reengage/device/graphs.py). The host
reads the device once per log point (reengage/device/logger.py).

Checkpoints: all state is tensors and the random streams are counters, so a checkpoint can
fall after any step (every `checkpoint_every` steps, and after the step in flight when
SIGTERM or SIGINT arrives); it is loaded into the same tensors in place before the first
step, and a resumed run continues bit for bit on the CPU.

Scope, for now: ContinuousSeek with ddpg_her or reengage_her, one update per env step. Not
yet: cycles of updates, other tasks and methods (the numpy loop, reengage/run.py, trains
those). The random streams differ from the numpy
loop's (reengage/device/streams.py), so the two loops give different curves for one seed;
the initial weights are the same networks.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from reengage.checkpoint import load_checkpoint, save_checkpoint
from reengage.config import ConfigError, TrainConfig, validate
from reengage.paths import checkpoint_path, member_dir, seeds_text
from reengage.policy import learner_fields, member_weights, policy_document, save_policy
from reengage.progress import POLICY_NAME, RUNNING, LiveProgress, ProgressListener
from reengage.registry import METHODS, LearnerSpec
from reengage.run import (
    MemberStreams,
    RunInterrupted,
    StepHook,
    learner_optimizers,
    resolve_device,
    seed_record,
)

from .evaluator import DeviceEvaluator
from .graphs import StepGraphs
from .logger import DeviceLogger
from .replay import DeviceEpisodeReplay
from .seek import SeekTask, seek_reward
from .streams import EXPLORATION, GOALS, CounterStreams

ENVS = ("ContinuousSeek",)
METHOD_NAMES = ("ddpg_her", "reengage_her")


def check_supported(cfg: TrainConfig) -> None:
    """Refuse, naming the option, what the device loop does not train yet."""
    if cfg.env not in ENVS:
        raise ConfigError("--env", f"the device loop trains {', '.join(ENVS)} (got {cfg.env}); "
                          "the numpy loop (reengage.run.train) trains the others")
    if cfg.method not in METHOD_NAMES:
        raise ConfigError("--method", f"the device loop trains {', '.join(METHOD_NAMES)} "
                          f"(got {cfg.method})")
    if cfg.cycle_episodes:
        raise ConfigError("--cycle-episodes", "the device loop runs one update per env step")


def learner_state(obs: dict[str, torch.Tensor], inputs: str) -> torch.Tensor:
    """The state a learner is given, as reengage/run.py `learner_state` builds it:
    `(achieved goal, observation)` under `inputs: sb3`, the observation under `obs_goal`."""
    if inputs == "obs_goal":
        return obs["observation"]
    return torch.cat([obs["achieved_goal"], obs["observation"]], dim=-1)


class DeviceTraining:
    """The parts of one population's training on `device`, and the step that joins them."""

    def __init__(self, cfg: TrainConfig, device: torch.device, live: LiveProgress):
        self.cfg, self.device = cfg, device
        members, dim = len(cfg.seeds), cfg.dim
        self.members = members
        # The state leads with the achieved goal under `inputs: sb3` (reengage/run.py).
        leading = dim if cfg.inputs == "sb3" else 0
        self.spec = LearnerSpec(
            members=members, obs_dim=leading + dim, goal_dim=dim, action_dim=dim, lr=cfg.lr,
            gamma=cfg.gamma, tau=cfg.tau, c=cfg.c,
            generators=[MemberStreams.from_seed(seed, 0).init for seed in cfg.seeds],
            extra=dict(cfg.extra), achieved_dim=leading, goal_at=leading or None)
        try:
            self.learner = METHODS[cfg.method].build(self.spec)
        except TypeError as error:
            raise ConfigError("--set", f"not a setting of {cfg.method}: {error}") from error
        self.learner.to(device)
        self.learner.prepare(cfg.batch_size)
        self.streams = CounterStreams(cfg.seeds, device)
        self.task = SeekTask(members, 1, dim, device)
        self.T = self.task.episode_steps
        self.replay = DeviceEpisodeReplay(
            members, cfg.buffer_size, self.T, dim, dim, dim, seek_reward, self.streams, device,
            her_k=cfg.her_k, her_future=cfg.her_future, her_relabel=cfg.her_relabel)
        self.evaluator = DeviceEvaluator(SeekTask(members, cfg.eval_episodes, dim, device),
                                         self.streams, self.state_of)
        self.logger = DeviceLogger(cfg.seeds, device, live)
        counter = torch.zeros((), dtype=torch.int64, device=device)
        self.step_count, self.episodes, self.updates = counter, counter.clone(), counter.clone()
        self.run_step = StepGraphs(self.step, device)
        # The evaluation's kernels (the actor, the task) have run in the step's warm-up
        # already, so one eager run before its capture suffices: the capture then falls at
        # the second log point, not inside a later, timed window.
        self.run_evaluation = StepGraphs(lambda _: self.evaluator(self.learner.act), device,
                                         warmup=1)

    def state_of(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return learner_state(obs, self.cfg.inputs), obs["desired_goal"]

    def state_tensors(self) -> list[torch.Tensor]:
        """Everything the step mutates in place, for tests (nothing may be re-allocated)."""
        task = self.task
        return [task.position, task.goal, task.elapsed, task.reached,
                *self.replay.state_tensors(), *self.logger.state_tensors(),
                self.step_count, self.episodes, self.updates, *self.learner.parameters()]

    def mode(self, step: int) -> tuple[bool, bool, bool]:
        """(episode starts, random actions, update) of step `step` (1-based), from host
        counts alone: episodes are T steps in lockstep; as in the numpy loop, random
        actions up to `learning_starts`, updates after it once an episode is complete.
        Starting an episode is a mode rather than a mask because drawing goals is most of
        an eager step's overhead on the CPU; on CUDA it costs one graph more per phase."""
        learning = step > self.cfg.learning_starts
        return step % self.T == 1 % self.T, not learning, learning and step >= self.T

    def step(self, mode: tuple[bool, bool, bool]) -> None:
        """One env step of every member, and an update when `mode` says so. Device
        tensors only: no host copies, no branches on device values."""
        starting, random_actions, update = mode
        cfg, task, replay, members = self.cfg, self.task, self.replay, self.members
        if starting:
            task.begin(task.draw_goals(self.streams, GOALS, self.episodes))
            replay.start_episode(task.position[:, 0], task.goal[:, 0])
            self.episodes.add_(1)
        self.step_count.add_(1)
        if random_actions:
            u = self.streams.uniform(EXPLORATION, self.step_count, cfg.dim)
            action = (-1.0 + 2.0 * u).to(torch.float32)
        else:
            state, goal = self.state_of(task.observation())
            noise = self.streams.normal(EXPLORATION, self.step_count, cfg.dim)
            action = self.learner.act(state, goal)[:, 0] + (cfg.action_noise * noise).float()
            action = action.clamp(-1.0, 1.0)
        task.step(action.view(members, 1, -1))
        replay.add_step(action, task.position[:, 0])
        if update:
            batch = replay.sample(cfg.batch_size, self.updates)
            values = self.learner.update(
                obs=learner_state({"observation": batch.obs, "achieved_goal": batch.achieved},
                                  cfg.inputs),
                action=batch.action,
                next_obs=learner_state({"observation": batch.next_obs,
                                        "achieved_goal": batch.next_achieved}, cfg.inputs),
                goal=batch.goal, reward=batch.reward)
            self.updates.add_(1)
            self.logger.add(values, self.step_count)

    def checkpointed_tensors(self) -> list[torch.Tensor]:
        """The tensors a checkpoint holds besides the learner's: the task, the buffer, the
        logger's sums, the counters that drive every random stream."""
        task = self.task
        return [task.position, task.goal, task.elapsed, task.reached,
                *self.replay.state_tensors(), *self.logger.state_tensors(),
                self.step_count, self.episodes, self.updates, self.evaluator.count]

    def state_dict(self) -> dict[str, Any]:
        logger = self.logger
        return {
            "learner": self.learner.state_dict(),
            "optimizers": {name: opt.state_dict()
                           for name, opt in learner_optimizers(self.learner)},
            "tensors": [t.detach().cpu() for t in self.checkpointed_tensors()],
            "rows": logger.rows,
            "diverged": {str(m): v for m, v in logger.diverged.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint into the existing tensors (copied in place, so storage a
        captured graph would use stays where it is)."""
        self.learner.load_state_dict(state["learner"])
        for name, opt in learner_optimizers(self.learner):
            opt.load_state_dict(state["optimizers"][name])
        tensors = self.checkpointed_tensors()
        if len(state["tensors"]) != len(tensors):
            raise ValueError("checkpoint holds a different set of device-loop tensors")
        for tensor, saved in zip(tensors, state["tensors"], strict=True):
            tensor.copy_(saved)
        self.logger.rows = state["rows"]
        self.logger.diverged = {int(m): v for m, v in state["diverged"].items()}

    def evaluate_and_log(self, step: int, updates: int) -> None:
        self.run_evaluation(None)
        evaluator = self.evaluator
        self.logger.log(step, evaluator.successes, evaluator.return_sums, evaluator.episodes,
                        updates)

    def records(self, status: str, step: int, wall_time_s: float,
                resumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [seed_record(
            self.cfg, seed, status, device=self.device, step=step,
            replay_bytes=self.replay.nbytes // self.members, wall_time_s=wall_time_s,
            finished_at=time.time(), resumes=resumes, diverged=self.logger.diverged.get(m),
            learner=self.learner) for m, seed in enumerate(self.cfg.seeds)]

    def save_policies(self, out: Path, records: list[dict[str, Any]]) -> None:
        fields = learner_fields(self.spec)
        for m, record in enumerate(records):
            weights = member_weights(self.learner, m, self.members)
            save_policy(member_dir(out, record["seed"]) / POLICY_NAME,
                        policy_document("population", record, fields, weights))


class DeviceRun:
    """The host side of a device-loop run: resume, the step loop, log points, checkpoints
    and signals, and the files at the end."""

    def __init__(self, cfg: TrainConfig, out: Path, progress: bool,
                 listeners: tuple[ProgressListener, ...], step_hook: StepHook | None):
        self.cfg, self.out, self.progress, self.step_hook = cfg, out, progress, step_hook
        self.device = resolve_device(cfg.device)
        seeds = seeds_text(cfg.seeds)
        self.live = LiveProgress(out, f"{cfg.env}-d{cfg.dim} {cfg.method} {seeds} (device "
                                 "loop)", cfg.steps, lines=not progress, listeners=listeners)
        self.training = DeviceTraining(cfg, self.device, self.live)
        self.step, self.updates_since_log = 0, 0
        self.resumes: list[dict[str, Any]] = []
        self.elapsed_before, self.started = 0.0, time.time()
        self._stop_signal: int | None = None

    def wall_time(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def save(self, path: Path) -> int:
        state = {"step": self.step, "updates_since_log": self.updates_since_log,
                 "resumes": self.resumes, "elapsed": self.wall_time(),
                 "training": self.training.state_dict()}
        return save_checkpoint(path, state, self.cfg.to_dict())

    def load(self, path: Path) -> None:
        state = load_checkpoint(path, self.cfg.to_dict())
        self.training.load_state_dict(state["training"])
        self.step = int(state["step"])
        self.updates_since_log = int(state["updates_since_log"])
        self.resumes = [*state["resumes"], {"from_step": self.step, "at": time.time()}]
        self.elapsed_before = float(state["elapsed"])
        self.started = time.time()
        # The logger's wall-clock column continues from the interrupted process's.
        self.training.logger.started = self.started - self.elapsed_before

    def run(self) -> list[dict[str, Any]]:
        cfg, training = self.cfg, self.training
        ckpt = checkpoint_path(self.out, cfg.seeds)
        if ckpt.exists():
            self.load(ckpt)
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", file=sys.stderr,
                   disable=not self.progress, mininterval=2.0,
                   desc=f"{cfg.env}-d{cfg.dim} {cfg.method} x{len(cfg.seeds)}")
        try:
            self.live.started(self.records(RUNNING), training.logger.rows_by_seed())
            if self.step == 0:
                training.evaluate_and_log(0, 0)
            while self.step < cfg.steps:
                self.step += 1
                mode = training.mode(self.step)
                training.run_step(mode)
                self.updates_since_log += mode[2]
                bar.update(1)
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    training.evaluate_and_log(self.step, self.updates_since_log)
                    self.updates_since_log = 0
                if self.step_hook is not None:
                    self.step_hook(self.step, training.learner)
                if self._stop_signal is not None:
                    self.save(ckpt)
                    self.live.ended(self.records("interrupted"), training.logger.rows_by_seed())
                    raise RunInterrupted(self.step, self._stop_signal)
                every = cfg.checkpoint_every
                if every > 0 and self.step % every == 0 and self.step < cfg.steps:
                    self.save(ckpt)
            records = self.records("finished")
            training.save_policies(self.out, records)
            self.live.ended(records, training.logger.rows_by_seed())
        finally:
            bar.close()
            self.live.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        # The checkpoint goes only once every seed's files say finished.
        ckpt.unlink(missing_ok=True)
        if ckpt.parent.is_dir() and not any(ckpt.parent.iterdir()):
            ckpt.parent.rmdir()
        return records

    def records(self, status: str) -> list[dict[str, Any]]:
        return self.training.records(status, self.step, self.wall_time(), self.resumes)

    def _on_signal(self, signal_number: int, frame: Any) -> None:
        # All state is tensors: the checkpoint follows the step in flight.
        self._stop_signal = signal_number


def train_on_device(cfg: TrainConfig, out: Path, progress: bool = True,
                    listeners: tuple[ProgressListener, ...] = (),
                    step_hook: StepHook | None = None) -> list[dict[str, Any]]:
    """Train (or resume from its checkpoint) the population of `cfg.seeds` on `cfg.device`
    with the device-resident loop; write `out/seed<k>/progress.csv`, `policy.pt` and
    `run.json` as reengage.run.train does. Returns the per-member records (run.json's
    contents); raises RunInterrupted after checkpointing on SIGTERM or SIGINT."""
    cfg = replace(cfg, loop="device")  # run.json and the checkpoint say which loop ran
    validate(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    return DeviceRun(cfg, out, progress, tuple(listeners), step_hook).run()
