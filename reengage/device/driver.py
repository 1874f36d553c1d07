"""The device-resident training loop: task, buffer, learner, evaluator and logger, each on
one device, composed here into one step and a short host loop.

The step (act, env step, insert, sample, update) touches device tensors only; the host
decides from its own step count which mode a step runs in (an episode starts, random
actions before `learning_starts`, updates once an episode is complete and `learning_starts`
is past), so the step needs no value from the device; within a mode, what varies with the
data (ring position, fill, episode completion) is a mask. Off CUDA the step runs eagerly;
on CUDA it is a CUDA graph captured once per mode (reengage/device/graphs.py). The host
reads the device once per log point (reengage/device/logger.py).

Scope, for now: ContinuousSeek with ddpg_her or reengage_her, one update per env step. Not
yet: checkpoints and resume, SIGTERM handling, cycles of updates, other tasks and methods
(the numpy loop, reengage/run.py, trains those). The random streams differ from the numpy
loop's (reengage/device/streams.py), so the two loops give different curves for one seed;
the initial weights are the same networks.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from reengage.config import ConfigError, TrainConfig, validate
from reengage.paths import member_dir, seeds_text
from reengage.policy import learner_fields, member_weights, policy_document, save_policy
from reengage.progress import POLICY_NAME, RUNNING, LiveProgress, ProgressListener
from reengage.registry import METHODS, LearnerSpec
from reengage.run import MemberStreams, resolve_device, seed_record

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

    def evaluate_and_log(self, step: int, updates: int) -> None:
        self.run_evaluation(None)
        evaluator = self.evaluator
        self.logger.log(step, evaluator.successes, evaluator.return_sums, evaluator.episodes,
                        updates)

    def records(self, status: str, step: int, started: float) -> list[dict[str, Any]]:
        now = time.time()
        return [seed_record(
            self.cfg, seed, status, device=self.device, step=step,
            replay_bytes=self.replay.nbytes // self.members, wall_time_s=now - started,
            finished_at=now, resumes=[], diverged=self.logger.diverged.get(m),
            learner=self.learner) for m, seed in enumerate(self.cfg.seeds)]

    def save_policies(self, out: Path, records: list[dict[str, Any]]) -> None:
        fields = learner_fields(self.spec)
        for m, record in enumerate(records):
            weights = member_weights(self.learner, m, self.members)
            save_policy(member_dir(out, record["seed"]) / POLICY_NAME,
                        policy_document("population", record, fields, weights))


def train_on_device(cfg: TrainConfig, out: Path, progress: bool = True,
                    listeners: tuple[ProgressListener, ...] = ()) -> list[dict[str, Any]]:
    """Train the population of `cfg.seeds` on `cfg.device` with the device-resident loop;
    write `out/seed<k>/progress.csv`, `policy.pt` and `run.json` as reengage.run.train
    does. Returns the per-member records (run.json's contents)."""
    validate(cfg)
    check_supported(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    seeds = seeds_text(cfg.seeds)
    live = LiveProgress(out, f"{cfg.env}-d{cfg.dim} {cfg.method} {seeds} (device loop)",
                        cfg.steps, lines=not progress, listeners=listeners)
    training = DeviceTraining(cfg, device, live)
    started = time.time()
    bar = tqdm(total=cfg.steps, unit="step", file=sys.stderr, disable=not progress,
               mininterval=2.0, desc=f"{cfg.env}-d{cfg.dim} {cfg.method} x{len(cfg.seeds)}")
    try:
        live.started(training.records(RUNNING, 0, started), {})
        training.evaluate_and_log(0, 0)
        updates, logged = 0, 0
        for step in range(1, cfg.steps + 1):
            mode = training.mode(step)
            training.run_step(mode)
            updates += mode[2]
            if step % cfg.eval_every == 0 or step == cfg.steps:
                training.evaluate_and_log(step, updates)
                bar.update(step - logged)
                updates, logged = 0, step
        records = training.records("finished", cfg.steps, started)
        training.save_policies(out, records)
        live.ended(records, training.logger.rows_by_seed())
    finally:
        bar.close()
        live.close()
    return records
