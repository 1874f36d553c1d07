"""Stable-Baselines3's DDPG+HER as a control column: an independent implementation trained on
the same env, grid cell and seeds, and evaluated on the same episodes, as our population loop.

If our DDPG+HER and SB3's disagree, one of them has a bug or a difference worth knowing; the
paper itself ran SB3 (docs/paper.md §4), so SB3 is the closest thing to the authors' code we can
run. It is the method `sb3_ddpg_her` (reengage/registry.py), whose runner is
`train_population`; the workflow trains it like any other method.

* Seeds train one after the other in this process (SB3 has no population axis). Each writes
  the same `out/seed<k>/progress.csv` (reengage.run.PROGRESS_COLUMNS) and `run.json` as the
  population loop, plus an `implementation` entry saying what SB3 does differently.
* Evaluation: at step 0, every `eval_every` env steps and at the end, `eval_episodes`
  deterministic episodes seeded exactly as `reengage.run.Evaluator` seeds the member of the
  same seed, so both implementations are scored on the same goals. It runs after the
  gradient step of its env step, as in the population loop (SB3's `on_step` callback would
  come one update earlier, so the evaluation hangs on `on_rollout_start`, which follows it).
* Interruption is survived at seed granularity (no mid-seed checkpoint): each finished
  seed's two files are copied beside the population loop's checkpoints
  (`out/.checkpoints/seeds-<seeds>.sb3/`, removed once every seed is done), and a re-run
  of an interrupted population reads those seeds back (`finished` or `diverged` with the
  same configuration) instead of training them again, so a killed job resumes at its first
  unfinished seed even after a workflow engine deleted the failed job's outputs. SIGTERM/SIGINT
  stop the seed in flight, which is written as `interrupted` (run.json only), and raise
  `RunInterrupted` as the population loop does.
* Divergence: a non-finite critic or actor loss stops the seed, which is recorded as
  `diverged` at that step; its remaining evaluations are written as missing.
* Wall time: `progress.csv`'s `wall_time_s` is the seed's own training time; run.json's
  `wall_time_s` is the population's clock (the seeds' times summed in order up to this
  one), so the last seed's is the whole population's, the unit `analysis/runtime.py`
  compares; `seed_wall_time_s` is the seed's own.
* While a seed trains its run.json says `running` and its rows so far are in
  progress.partial.csv, as in the population loop (reengage/progress.py); the listeners of
  the `reengage.run.train` call hear each evaluation.
* Policy: a finished (or diverged) seed leaves `out/seed<k>/policy.pt` (reengage/policy.py)
  of kind `sb3`: the online actor and critic of SB3's `MultiInputPolicy` (its state_dict
  without the target networks), which `policy_model` loads back into a policy built with the
  same `hidden` widths, for `reengage evaluate`. SB3's own zip (`model.save`) is not written:
  it unpickles code on load.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from .config import ConfigError, TrainConfig, validate
from .paths import checkpoint_path, member_dir
from .policy import PolicyError, policy_document, save_policy
from .progress import (
    DONE_STATUSES,
    POLICY_NAME,
    PROGRESS_COLUMNS,
    PROGRESS_NAME,
    RECORD_NAME,
    RUNNING,
    LiveProgress,
    ProgressListener,
    active_listeners,
    atomic_write_bytes,
)
from .registry import ENVS
from .run import (
    MemberStreams,
    RunInterrupted,
    _make_vec,
    package_versions,
    resolve_device,
    seed_record,
)

SUPPORTED_ENVS = ("ContinuousSeek",)
SUPPORTED_SETTINGS = ("hidden",)
DEFAULT_HIDDEN = (256, 256)
LOSS_KEYS = {"critic_loss": "train/critic_loss", "actor_loss": "train/actor_loss"}


class Predictor(Protocol):
    """What the evaluation needs of a model: SB3's `predict` on a batch of dict observations."""

    def predict(self, observation: dict[str, np.ndarray],
                deterministic: bool = False) -> tuple[np.ndarray, Any]: ...


def check_config(cfg: TrainConfig) -> tuple[int, ...]:
    """Refuse, before anything is written, what SB3 cannot do; returns the hidden widths.

    SB3's MultiInputPolicy always sees (achieved goal, desired goal, observation), and SB3
    2.x's HER `future` always includes the final state, so the other options of those flags
    would silently be something else. Its exact int(k/(k+1)·B) relabelling is recorded in
    run.json rather than refused: `her_relabel=probability` is the same in expectation.
    """
    validate(cfg)
    if cfg.env not in SUPPORTED_ENVS:
        raise ConfigError("--env", f"{cfg.method} runs on {', '.join(SUPPORTED_ENVS)} only "
                          f"(got {cfg.env}): SB3's HER needs a single dict goal per step")
    if cfg.inputs != "sb3":
        raise ConfigError("--inputs", f"{cfg.method} takes --inputs sb3 only: SB3's "
                          "MultiInputPolicy always sees (achieved goal, desired goal, "
                          f"observation) (got {cfg.inputs!r})")
    if cfg.her_future != "next_to_final":
        raise ConfigError("--her-future", f"{cfg.method} takes --her-future next_to_final only: "
                          "Stable-Baselines3 2.x's future includes the final state "
                          f"(got {cfg.her_future!r})")
    unknown = sorted(set(cfg.extra) - set(SUPPORTED_SETTINGS))
    if unknown:
        raise ConfigError("--set", f"not a setting of {cfg.method}: {', '.join(unknown)} "
                          f"(it takes {', '.join(SUPPORTED_SETTINGS)})")
    hidden = cfg.extra.get("hidden", DEFAULT_HIDDEN)
    if (not isinstance(hidden, list | tuple) or not hidden
            or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0
                       for w in hidden)):
        raise ConfigError("--set", f"hidden must be a list of positive integers, e.g. "
                          f"hidden=[256,256] (got {hidden!r})")
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        raise ConfigError("--method", f"{cfg.method} needs stable-baselines3, a dependency "
                          "of reengage: pip install 'stable-baselines3>=2.3'") from None
    return tuple(hidden)


class SB3Evaluator:
    """`eval_episodes` deterministic episodes of one seed, on the episodes `Evaluator` gives
    the member of that seed: the same vector env, reset with the seed's `eval_seeds` the
    first time and continuing each copy's stream afterwards."""

    def __init__(self, cfg: TrainConfig, seed: int):
        self.env = _make_vec(cfg, cfg.eval_episodes)
        self.steps = ENVS[cfg.env].episode_steps
        self.seeds: list[int] | None = MemberStreams.from_seed(seed,
                                                               cfg.eval_episodes).eval_seeds

    def __call__(self, model: Predictor) -> tuple[float, float]:
        """(success rate, mean return): success = the goal was reached at least once."""
        obs, _ = self.env.reset(seed=self.seeds)
        self.seeds = None
        returns = np.zeros(self.env.num_envs)
        success = np.zeros(self.env.num_envs, dtype=bool)
        for _ in range(self.steps):
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, _, _, info = self.env.step(np.asarray(action, dtype=np.float32))
            returns += reward
            success |= np.asarray(info.get("is_success", np.zeros_like(success)), dtype=bool)
        return float(success.mean()), float(returns.mean())

    def close(self) -> None:
        self.env.close()


def _implementation(cfg: TrainConfig, version: str) -> dict[str, Any]:
    k = cfg.her_k
    return {
        "library": "stable-baselines3", "version": version, "algorithm": "DDPG",
        "policy": "MultiInputPolicy",
        "network_input": "achieved_goal, desired_goal, observation concatenated in this "
                         "(sorted key) order; the critic appends the action",
        "her": f"HerReplayBuffer, future, n_sampled_goal {k}: the goal is the achieved goal "
               "after a uniformly drawn transition from the current one to the episode's "
               "last, so the final state is included (next_to_final)",
        "her_relabel": f"exact: int({k}/{k + 1}·B) = {int((1 - 1 / (k + 1)) * cfg.batch_size)}"
                       f" of every batch of B = {cfg.batch_size} relabelled (config asked "
                       f"{cfg.her_relabel!r})",
        "warmup": f"the first {cfg.learning_starts} steps act uniformly at random, with the "
                  "Gaussian exploration noise added and clipped (our loop adds none there)",
        "time_limit": "the 10-step TimeLimit truncation is stored as a timeout, so the target "
                      "bootstraps through it",
        "training_env_seed": "the training env, action sampling, noise and replay draw from "
                             "SB3's global seeding with `seed` (not from MemberStreams); the "
                             "evaluation episodes are the population loop's",
        "losses": "critic_loss and actor_loss: means of SB3's logged train/ values over the "
                  "updates since the previous row; goal_grad_loss and q_mean are not logged",
    }


def _json_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config as run.json holds it (tuples become lists), for comparison."""
    return json.loads(json.dumps(cfg.to_dict()))


def _done_record(directory: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The run.json of a seed finished earlier with this very config, else None."""
    path = directory / "run.json"
    if not path.is_file() or not (directory / "progress.csv").is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("status") in DONE_STATUSES and record.get("config") == _json_config(cfg):
        return record
    return None


def _restore(seed: int, out: Path, saved: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The record of a seed that an interrupted run of this population finished, from the
    copy kept beside the checkpoints (put back in place); None when the seed must be
    trained. Only the kept copies count, as only a checkpoint does for the population loop:
    a population that finished is trained again, and `--restart` (which removes the copies)
    starts from the first seed."""
    record = _done_record(member_dir(saved, seed), cfg)
    if record is not None:
        _copy_seed_files(member_dir(saved, seed), member_dir(out, seed))
    return record


def _copy_seed_files(source: Path, target: Path) -> None:
    """A done seed's files, run.json last (it says the others are complete)."""
    for name in (POLICY_NAME, PROGRESS_NAME, RECORD_NAME):
        if (source / name).is_file():
            atomic_write_bytes(target / name, lambda f, path=source / name:
                               f.write(path.read_bytes()))


def _buffer_bytes(buffer: Any) -> int:
    """What SB3's replay arrays take (numpy allocates lazily, so nothing is touched)."""
    total = 0
    for value in vars(buffer).values():
        arrays = value.values() if isinstance(value, dict) else [value]
        total += sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))
    return total


class _Stop:
    """SIGTERM/SIGINT set a flag; the seed in flight stops at its next env step."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._on_signal)
                             for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _on_signal(self, signal_number: int, frame: Any) -> None:
        self.signal_number = signal_number

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _online_policy_weights(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """SB3's policy state_dict without its target networks, copied to the CPU."""
    return {name: tensor.detach().to("cpu", copy=True)
            for name, tensor in policy.state_dict().items()
            if not name.startswith(("actor_target.", "critic_target."))}


def policy_model(document: dict[str, Any], device: torch.device) -> Predictor:
    """The SB3 policy of an `sb3` policy.pt (reengage/policy.py), ready to `predict`."""
    import gymnasium as gym

    import reengage.envs  # noqa: F401  (registers the environment ids)

    try:
        from stable_baselines3.td3.policies import MultiInputPolicy
    except ImportError:
        raise PolicyError("an sb3 policy needs stable-baselines3, a dependency of reengage: "
                          "pip install 'stable-baselines3>=2.3'") from None
    config = document["config"]
    spec = ENVS[config["env"]]
    env = gym.make(spec.gym_id, **{spec.dim_kwarg: config["dim"]})
    # DDPG builds TD3's policy with one critic; the learning rate only feeds the optimisers.
    policy = MultiInputPolicy(env.observation_space, env.action_space,
                              lambda _: config["lr"], net_arch=list(document["learner"]["hidden"]),
                              n_critics=1)
    env.close()
    missing, unexpected = policy.load_state_dict(document["weights"], strict=False)
    if unexpected or any(not name.startswith(("actor_target.", "critic_target."))
                         for name in missing):
        raise PolicyError(f"the weights do not fit SB3's MultiInputPolicy (missing {missing[:3]}"
                         f", unexpected {unexpected[:3]})")
    policy.set_training_mode(False)
    return policy.to(device)


def _train_seed(cfg: TrainConfig, seed: int, hidden: tuple[int, ...], device: torch.device,
                bar: tqdm, stop: _Stop, live: LiveProgress) -> dict[str, Any]:
    """Train one seed; returns its rows, divergence, timings and final policy weights (the
    caller writes them); each evaluation goes to `live` as it happens."""
    import gymnasium as gym
    from stable_baselines3 import DDPG, HerReplayBuffer
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    import reengage.envs  # noqa: F401  (registers the environment ids)

    spec = ENVS[cfg.env]
    env = gym.make(spec.gym_id, **{spec.dim_kwarg: cfg.dim})
    action_dim = env.action_space.shape[-1]
    model = DDPG(
        "MultiInputPolicy", env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs={"n_sampled_goal": cfg.her_k, "goal_selection_strategy": "future"},
        action_noise=NormalActionNoise(np.zeros(action_dim),
                                       cfg.action_noise * np.ones(action_dim)),
        learning_rate=cfg.lr, buffer_size=cfg.buffer_size, learning_starts=cfg.learning_starts,
        batch_size=cfg.batch_size, tau=cfg.tau, gamma=cfg.gamma, train_freq=1,
        gradient_steps=1, policy_kwargs={"net_arch": list(hidden)}, device=device, seed=seed,
        verbose=0,
    )
    evaluate = SB3Evaluator(cfg, seed)
    schedule = sorted({0, *range(cfg.eval_every, cfg.steps + 1, cfg.eval_every), cfg.steps})
    state: dict[str, Any] = {"rows": [], "diverged": None, "step": 0}
    started = time.time()

    class Log(BaseCallback):
        """Reads each update's losses and evaluates once the update of its step is done
        (`on_rollout_start` follows the gradient step; `on_training_end` the last one)."""

        def __init__(self) -> None:
            super().__init__()
            self.sums = dict.fromkeys(LOSS_KEYS, 0.0)
            self.count, self.seen_updates = 0, 0
            self.since, self.last_log = 0, started
            self.due = iter(schedule)
            self.next_due: int | None = next(self.due)

        def _on_step(self) -> bool:
            bar.update(1)
            return state["diverged"] is None and stop.signal_number is None

        def _on_rollout_start(self) -> None:
            self._after_update()

        def _on_training_end(self) -> None:
            self._after_update()

        def _after_update(self) -> None:
            step = self.num_timesteps
            state["step"] = step
            if self.model._n_updates > self.seen_updates and state["diverged"] is None:
                self.seen_updates = self.model._n_updates
                values = self.model.logger.name_to_value
                for key, name in LOSS_KEYS.items():
                    value = float(values.get(name, math.nan))
                    if not math.isfinite(value):
                        state["diverged"] = {"step": step, "quantity": key,
                                             "value": str(value)}
                    self.sums[key] += value
                self.count += 1
                self.since += 1
            if state["diverged"] is None and step == self.next_due:
                self._log(step)

        def _log(self, step: int) -> None:
            success, mean_return = evaluate(self.model)
            now = time.time()
            row: dict[str, float] = {"step": step, "success_rate": success,
                                     "mean_return": mean_return}
            for key in ("critic_loss", "goal_grad_loss", "actor_loss", "q_mean"):
                row[key] = self.sums[key] / self.count if key in self.sums and self.count \
                    else math.nan
            row["wall_time_s"] = now - started
            row["updates_per_s"] = self.since / (now - self.last_log) if self.since else 0.0
            state["rows"].append(row)
            live.evaluated(step, {seed: state["rows"]})
            self.sums = dict.fromkeys(LOSS_KEYS, 0.0)
            self.count, self.since, self.last_log = 0, 0, now
            self.next_due = next(self.due, None)

    try:
        model.learn(total_timesteps=cfg.steps, callback=Log())
    finally:
        evaluate.close()
        env.close()
    wall = time.time() - started
    if state["diverged"] is not None:  # its later evaluations do not exist
        logged = {row["step"] for row in state["rows"]}
        for step in schedule:
            if step not in logged and step >= state["diverged"]["step"]:
                row = dict.fromkeys(PROGRESS_COLUMNS, math.nan)
                row.update(step=step, wall_time_s=wall, updates_per_s=0.0)
                state["rows"].append(row)
    state.update(wall=wall, replay_bytes=_buffer_bytes(model.replay_buffer),
                 weights=_online_policy_weights(model.policy))
    return state


def train_population(cfg: TrainConfig, out: Path, progress: bool = True,
                     listeners: Sequence[ProgressListener] | None = None) -> list[dict]:
    """Train every seed of `cfg.seeds` with SB3's DDPG+HER, one after the other; write
    `out/seed<k>/progress.csv`, `policy.pt` and `run.json` for each; return the records
    (run.json's contents). Seeds already finished with this config are read back, not
    retrained. `progress` shows a bar, else a line per evaluation; `listeners` default to
    those of the `reengage.run.train` call this runs under.

    Raises ConfigError (nothing written) for what SB3 cannot do, and RunInterrupted after
    SIGTERM/SIGINT (the seed in flight is written as interrupted)."""
    hidden = check_config(cfg)
    import stable_baselines3

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    # `auto` means the CPU here: SB3's small MLPs gain nothing on a GPU one seed at a time,
    # and only the CPU path was checked to be reproducible bit for bit.
    device = torch.device("cpu") if cfg.device == "auto" else resolve_device(cfg.device)
    versions = {**package_versions(), "stable_baselines3": stable_baselines3.__version__}
    saved = checkpoint_path(out, cfg.seeds).with_suffix(".sb3")
    done = {seed: _restore(seed, out, saved, cfg) for seed in cfg.seeds}
    bar = tqdm(total=cfg.steps * len(cfg.seeds),
               initial=cfg.steps * sum(r is not None for r in done.values()), unit="step",
               file=sys.stderr, disable=not progress, mininterval=2.0,
               desc=f"{cfg.env}-d{cfg.dim} {cfg.method} x{len(cfg.seeds)}")
    live = LiveProgress(out, "", cfg.steps, lines=not progress,
                        listeners=active_listeners() if listeners is None else listeners)
    implementation = _implementation(cfg, stable_baselines3.__version__)
    records: list[dict[str, Any]] = []
    clock = 0.0  # the population's wall time: its seeds' times in order
    try:
        with _Stop() as stop:
            for seed in cfg.seeds:
                directory = member_dir(out, seed)
                if done[seed] is not None:
                    records.append(done[seed])
                    clock += float(done[seed].get("seed_wall_time_s", 0.0))
                    continue
                live.label = f"{cfg.env}-d{cfg.dim} {cfg.method} seed {seed}"
                started = seed_record(cfg, seed, RUNNING, device=device, step=0,
                                      replay_bytes=0, wall_time_s=clock,
                                      finished_at=time.time(), resumes=[], versions=versions)
                live.started([{**started, "implementation": implementation}], {})
                result = _train_seed(cfg, seed, hidden, device, bar, stop, live)
                clock += result["wall"]
                diverged = result["diverged"]
                interrupted = stop.signal_number is not None and diverged is None
                record = seed_record(
                    cfg, seed, "interrupted" if interrupted else "finished", device=device,
                    step=result["step"], replay_bytes=result["replay_bytes"],
                    wall_time_s=clock, finished_at=time.time(), resumes=[],
                    diverged=diverged, versions=versions,
                )
                record.update({"seed_wall_time_s": result["wall"],
                               "implementation": implementation})
                if not interrupted:
                    save_policy(directory / POLICY_NAME, policy_document(
                        "sb3", record, {"hidden": list(hidden)}, result["weights"]))
                live.ended([record], {seed: result["rows"]})
                if interrupted:
                    # This runner keeps finished seeds only: say that this one restarts.
                    raise RunInterrupted(
                        result["step"], stop.signal_number,
                        f"resume: finished seeds are kept, seed {seed} restarts from step 0")
                _copy_seed_files(directory, member_dir(saved, seed))
                records.append(record)
    finally:
        bar.close()
        live.close()
    shutil.rmtree(saved, ignore_errors=True)
    if saved.parent.is_dir() and not any(saved.parent.iterdir()):
        saved.parent.rmdir()
    return records
