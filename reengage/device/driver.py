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

Scope, for now: ContinuousSeek with ddpg_her or reengage_her, DriveSeek and NoisySeek with
ddpg or multi_reengage (reengage/device/task.py has the tasks), one update per env step.
Not yet: cycles of updates, BitFlip, the greedy agent, SAC, DQN (the numpy loop,
reengage/run.py, trains those). The random streams differ from the numpy loop's
(reengage/device/streams.py), so the two loops give different curves for one seed; the
initial weights are the same networks.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from reengage.checkpoint import fingerprint, load_checkpoint, remove_checkpoint, save_checkpoint
from reengage.config import (
    DEVICE_LOOP_ENVS,
    DEVICE_LOOP_METHODS,
    ConfigError,
    TrainConfig,
    validate,
)
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
    set_matmul_precision,
)

from .evaluator import DeviceEvaluator
from .graphs import StepGraphs
from .logger import DeviceLogger
from .pack import PackedCell, pack_checkpoint, population_config
from .replay import DeviceEpisodeReplay
from .streams import EVALUATION_MOTION, EXPLORATION, GOALS, MOTION, CounterStreams
from .task import make_task

ENVS, METHOD_NAMES = DEVICE_LOOP_ENVS, DEVICE_LOOP_METHODS


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


def policy_inputs(obs: dict[str, torch.Tensor],
                  inputs: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(state, goal) `[members, copies, ...]` as a learner's `act` takes them; a goal set
    flattened, as it travels in the numpy loop."""
    return learner_state(obs, inputs), obs["desired_goal"].flatten(start_dim=2)


def learner_extra(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """The method's settings (`--set`) as the device loop builds the learner with them. On
    CUDA a goal-set learner encodes every row, padding included (DeepSetsConfig
    `skip_padding=False`): packing the present rows has a data-dependent shape, which a
    CUDA graph cannot capture. The two are equal up to float summation order
    (agents/deepsets.py); run.json's provenance records the setting the learner had."""
    extra = dict(cfg.extra)
    if METHODS[cfg.method].item_rewards and device.type == "cuda":
        extra["networks"] = {**extra.get("networks", {}), "skip_padding": False}
    return extra


class DeviceTraining:
    """The parts of one population's training on `device`, and the step that joins them."""

    def __init__(self, cfg: TrainConfig, device: torch.device,
                 on_evaluated: Callable[[int], None] = lambda step: None,
                 member_lrs: tuple[float, ...] | None = None,
                 member_cs: tuple[float, ...] | None = None):
        """`cfg.seeds` are the members (a packed population's may repeat: its cells'
        seeds one after another); `member_lrs` and `member_cs` give each member its own
        learning rate and c (reengage/device/pack.py), else all take `cfg.lr` and `cfg.c`.
        `on_evaluated(step)` hears each log point once its rows are in `logger.rows`."""
        self.cfg, self.device = cfg, device
        members = len(cfg.seeds)
        self.members = members
        method = METHODS[cfg.method]
        self.streams = CounterStreams(cfg.seeds, device)
        self.task = task = make_task(cfg.env, members, 1, cfg.dim, device, self.streams,
                                     MOTION)
        self.T = task.episode_steps
        # The state leads with the achieved goal under `inputs: sb3` (reengage/run.py).
        leading = task.achieved_dim if cfg.inputs == "sb3" else 0
        goal_dim = math.prod(task.goal_shape)
        self.spec = LearnerSpec(
            members=members, obs_dim=leading + task.obs_dim, goal_dim=goal_dim,
            action_dim=task.action_dim, lr=cfg.lr, gamma=cfg.gamma, tau=cfg.tau, c=cfg.c,
            generators=[MemberStreams.from_seed(seed, 0).init for seed in cfg.seeds],
            extra=learner_extra(cfg, device), achieved_dim=leading,
            goal_at=leading or None, member_lrs=member_lrs, member_cs=member_cs)
        try:
            self.learner = method.build(self.spec)
        except TypeError as error:
            raise ConfigError("--set", f"not a setting of {cfg.method}: {error}") from error
        # A builder that ignored per-member settings would train every member of a pack at
        # the first cell's lr and c, silently.
        for name, wanted in (("member_lrs", member_lrs), ("member_cs", member_cs)):
            if wanted is not None and tuple(getattr(self.learner, name, ())) != tuple(wanted):
                raise ConfigError("--cell", f"{cfg.method} cannot give its members their own "
                                  f"{name[7:-1]}: pack only cells that share it")
        self.learner.to(device)
        prepare = getattr(self.learner, "prepare", None)
        if callable(prepare):
            prepare(cfg.batch_size)
        # A goal set travels flattened (`[..., n_max * 3]`) through the buffer and into the
        # learner, as in the numpy loop; the reward functions want its rows.
        reward = task.item_reward if method.item_rewards else task.reward
        shape = task.goal_shape

        def reward_fn(achieved: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
            return reward(achieved, goal.view(*goal.shape[:-1], *shape))

        # The buffer's rows lead with the achieved goal; ContinuousSeek's is its observation.
        row = task.obs_dim + (0 if task.achieved_is_observation else task.achieved_dim)
        self.replay = DeviceEpisodeReplay(
            members, cfg.buffer_size, self.T, row, goal_dim, task.action_dim, reward_fn,
            self.streams, device, her_k=cfg.her_k if method.her else 0,
            achieved_dim=task.achieved_dim, her_future=cfg.her_future,
            her_relabel=cfg.her_relabel)
        self.evaluator = DeviceEvaluator(
            make_task(cfg.env, members, cfg.eval_episodes, cfg.dim, device, self.streams,
                      EVALUATION_MOTION), self.streams, self.state_of)
        self.logger = DeviceLogger(members, device, on_evaluated)
        counter = torch.zeros((), dtype=torch.int64, device=device)
        self.step_count, self.episodes, self.updates = counter, counter.clone(), counter.clone()
        self.run_step = StepGraphs(self.step, device)
        # The evaluation's kernels (the actor, the task) have run in the step's warm-up
        # already, so one eager run before its capture suffices: the capture then falls at
        # the second log point, not inside a later, timed window.
        self.run_evaluation = StepGraphs(lambda _: self.evaluator(self.learner.act), device,
                                         warmup=1)

    def buffer_row(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the buffer stores of an observation: the achieved goal, then the rest."""
        if self.task.achieved_is_observation:
            return obs["observation"]
        return torch.cat([obs["achieved_goal"], obs["observation"]], dim=-1)

    def batch_observation(self, rows: torch.Tensor) -> torch.Tensor:
        """The observation part of sampled buffer rows (`buffer_row`'s inverse)."""
        if self.task.achieved_is_observation:
            return rows
        return rows[..., self.task.achieved_dim:]

    def state_of(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return policy_inputs(obs, self.cfg.inputs)

    def state_tensors(self) -> list[torch.Tensor]:
        """Everything the step and the evaluation mutate in place, for tests (nothing may
        be re-allocated): what a checkpoint holds, and the learner's weights."""
        return [*self.checkpointed_tensors(), *self.learner.parameters()]

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
            obs = task.observation()
            replay.start_episode(self.buffer_row(obs)[:, 0],
                                 obs["desired_goal"][:, 0].reshape(members, -1))
            self.episodes.add_(1)
        self.step_count.add_(1)
        width = task.action_dim
        if random_actions:
            u = self.streams.uniform(EXPLORATION, self.step_count, width)
            action = (-1.0 + 2.0 * u).to(torch.float32)
        else:
            state, goal = self.state_of(task.observation())
            noise = self.streams.normal(EXPLORATION, self.step_count, width)
            action = self.learner.act(state, goal)[:, 0] + (cfg.action_noise * noise).float()
            action = action.clamp(-1.0, 1.0)
        task.step(action.view(members, 1, -1))
        replay.add_step(action, self.buffer_row(task.observation())[:, 0])
        if update:
            batch = replay.sample(cfg.batch_size, self.updates)
            observation = self.batch_observation
            values = self.learner.update(
                obs=learner_state({"observation": observation(batch.obs),
                                   "achieved_goal": batch.achieved}, cfg.inputs),
                action=batch.action,
                next_obs=learner_state({"observation": observation(batch.next_obs),
                                        "achieved_goal": batch.next_achieved}, cfg.inputs),
                goal=batch.goal, reward=batch.reward)
            self.updates.add_(1)
            self.logger.add(values, self.step_count)

    def checkpointed_tensors(self) -> list[torch.Tensor]:
        """The tensors a checkpoint holds besides the learner's: the task, the buffer, the
        logger's sums, the counters that drive every random stream."""
        return [*self.task.state_tensors(), *self.replay.state_tensors(),
                *self.logger.state_tensors(), self.step_count, self.episodes, self.updates,
                self.evaluator.count]

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

    def member_record(self, cfg: TrainConfig, member: int, status: str, step: int,
                      wall_time_s: float, resumes: list[dict[str, Any]]) -> dict[str, Any]:
        """Member `member`'s run.json, as the seed of the cell `cfg` it belongs to."""
        return seed_record(
            cfg, self.cfg.seeds[member], status, device=self.device, step=step,
            replay_bytes=self.replay.nbytes // self.members, wall_time_s=wall_time_s,
            finished_at=time.time(), resumes=resumes,
            diverged=self.logger.diverged.get(member), learner=self.learner)

    def save_policy(self, path: Path, member: int, record: dict[str, Any]) -> None:
        weights = member_weights(self.learner, member, self.members)
        save_policy(path, policy_document("population", record, learner_fields(self.spec),
                                          weights))


class CellOutput:
    """The files of one cell's seeds (members `members` of the population), written
    through its own LiveProgress, so a cell's folder looks the same packed or not."""

    def __init__(self, cell: PackedCell, members: range, label: str, progress: bool,
                 listeners: tuple[ProgressListener, ...]):
        self.cfg, self.out, self.members = cell.cfg, cell.out, members
        self.live = LiveProgress(cell.out, label, cell.cfg.steps, lines=not progress,
                                 listeners=listeners)

    def rows_by_seed(self, rows: list[list[dict[str, float]]]) -> dict[int, list[dict]]:
        return {seed: rows[m] for seed, m in zip(self.cfg.seeds, self.members, strict=True)}


class DeviceRun:
    """The host side of a device-loop run of one or more cells (a packed population):
    resume, the step loop, log points, checkpoints and signals, and each cell's files."""

    def __init__(self, cells: list[PackedCell], checkpoint: Path, progress: bool,
                 listeners: tuple[ProgressListener, ...], step_hook: StepHook | None):
        self.cfg, member_lrs, member_cs = population_config(cells)
        self.cells, self.checkpoint = cells, checkpoint
        self.progress, self.step_hook = progress, step_hook
        cfg = self.cfg
        self.device = resolve_device(cfg.device)
        self.outputs, first = [], 0
        for cell in cells:
            members = range(first, first + len(cell.cfg.seeds))
            first = members.stop
            label = f"{cfg.env}-d{cfg.dim} {cell.cfg.method} {seeds_text(cell.cfg.seeds)}"
            if len(cells) > 1:
                label += f" lr {cell.cfg.lr:g}" + (f" c {cell.cfg.c:g}" if cell.cfg.c else "")
            self.outputs.append(CellOutput(cell, members, f"{label} (device loop)", progress,
                                           (*listeners, *cell.listeners)))
        self.training = DeviceTraining(cfg, self.device, self._evaluated, member_lrs,
                                       member_cs)
        self.step, self.updates_since_log = 0, 0
        self.resumes: list[dict[str, Any]] = []
        self.elapsed_before, self.started = 0.0, time.time()
        self._stop_signal: int | None = None

    def fingerprint_config(self) -> dict[str, Any]:
        """What a checkpoint must belong to: the cell's configuration, or every cell's."""
        if len(self.cells) == 1:
            return self.cells[0].cfg.to_dict()
        # Each cell by its own fingerprint, so a pack ignores what one cell's checkpoint
        # ignores (threads, device, checkpoint interval; reengage/checkpoint.py).
        return {"pack": [fingerprint(cell.cfg.to_dict()) for cell in self.cells]}

    def wall_time(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def save(self) -> int:
        state = {"step": self.step, "updates_since_log": self.updates_since_log,
                 "resumes": self.resumes, "elapsed": self.wall_time(),
                 "training": self.training.state_dict()}
        return save_checkpoint(self.checkpoint, state, self.fingerprint_config())

    def load(self) -> None:
        state = load_checkpoint(self.checkpoint, self.fingerprint_config())
        self.training.load_state_dict(state["training"])
        self.step = int(state["step"])
        self.updates_since_log = int(state["updates_since_log"])
        self.resumes = [*state["resumes"], {"from_step": self.step, "at": time.time()}]
        self.elapsed_before = float(state["elapsed"])
        self.started = time.time()
        # The logger's wall-clock column continues from the interrupted process's.
        self.training.logger.started = self.started - self.elapsed_before

    def run(self) -> list[dict[str, Any]]:
        cfg, training, ckpt = self.cfg, self.training, self.checkpoint
        if ckpt.exists():
            self.load()
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", file=sys.stderr,
                   disable=not self.progress, mininterval=2.0,
                   desc=f"{cfg.env}-d{cfg.dim} {cfg.method} x{len(cfg.seeds)}")
        try:
            self._tell("started", RUNNING)
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
                    self.save()
                    self._tell("ended", "interrupted")
                    raise RunInterrupted(self.step, self._stop_signal)
                every = cfg.checkpoint_every
                if every > 0 and self.step % every == 0 and self.step < cfg.steps:
                    self.save()
            records = self._tell("ended", "finished", policies=True)
        finally:
            bar.close()
            for output in self.outputs:
                output.live.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        remove_checkpoint(ckpt)  # only now that every seed's files say finished
        return records

    def _tell(self, event: str, status: str, policies: bool = False) -> list[dict[str, Any]]:
        """Every cell's seeds started or ended with `status`: their run.json (and, at a
        finish, policy.pt before it) through the cell's LiveProgress."""
        rows, wall, everyone = self.training.logger.rows, self.wall_time(), []
        for output in self.outputs:
            records = [self.training.member_record(output.cfg, m, status, self.step, wall,
                                                   self.resumes) for m in output.members]
            if policies:
                for m, record in zip(output.members, records, strict=True):
                    self.training.save_policy(
                        member_dir(output.out, record["seed"]) / POLICY_NAME, m, record)
            getattr(output.live, event)(records, output.rows_by_seed(rows))
            everyone += records
        return everyone

    def _evaluated(self, step: int) -> None:
        rows = self.training.logger.rows
        for output in self.outputs:
            output.live.evaluated(step, output.rows_by_seed(rows))

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
    set_matmul_precision(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    return DeviceRun([PackedCell(cfg, out)], checkpoint_path(out, cfg.seeds), progress,
                     tuple(listeners), step_hook).run()


def train_pack(cells: list[PackedCell], checkpoint_dir: Path, progress: bool = True,
               listeners: tuple[ProgressListener, ...] = (),
               step_hook: StepHook | None = None) -> list[dict[str, Any]]:
    """Train grid cells that differ only in seeds, learning rate and c as one population
    (reengage/device/pack.py says which may pack); each cell's seeds write their files under
    the cell's own `out` exactly as `train_on_device` of that cell alone would. The pack's
    checkpoint goes under `checkpoint_dir` (`pack_checkpoint`). Returns every member's
    record, cell after cell."""
    cells = [replace(cell, cfg=replace(cell.cfg, loop="device")) for cell in cells]
    for cell in cells:
        validate(cell.cfg)
    population, _, _ = population_config(cells)  # refuse what cannot pack, before building
    set_matmul_precision(population)
    threads = cells[0].cfg.threads
    if threads is not None:
        torch.set_num_threads(threads)
    return DeviceRun(cells, pack_checkpoint(checkpoint_dir), progress, tuple(listeners),
                     step_hook).run()
