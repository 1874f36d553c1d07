"""One grid cell, start to finish: a population of seeds trained in lockstep.

Each member owns its random streams (environment, evaluation environment, exploration,
replay sampling, initial weights), all derived from its seed, so member i of a
population behaves as seed i run alone.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import reengage.envs  # noqa: F401  (registers the environment ids)
from reengage import __version__
from reengage.agents.replay import EpisodeReplay

from .config import TrainConfig
from .registry import ENVS, METHODS, LearnerSpec

FORMAT_VERSION = 1
PROGRESS_COLUMNS = [
    "step", "success_rate", "mean_return", "critic_loss", "goal_grad_loss", "actor_loss",
    "q_mean", "wall_time_s", "updates_per_s",
]


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
    kwargs = {"dim": cfg.dim} if spec.takes_dim else {}
    return gym.make_vec(spec.gym_id, num_envs=copies,
                        vectorization_mode=spec.vectorization_mode, **kwargs)


def _split(obs: dict[str, np.ndarray], members: int, device: torch.device):
    """Observation dict of `members * n` copies -> (obs, goal) tensors `[members, n, ...]`."""
    def as_tensor(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=device).reshape(
            members, -1, x.shape[-1])
    return as_tensor(obs["observation"]), as_tensor(obs["desired_goal"])


class Evaluator:
    """`eval_episodes` fresh episodes per member with the deterministic policy, all copies of
    all members stepped as one vector env; copy (i, j) is seeded from member i's stream."""

    def __init__(self, cfg: TrainConfig, streams: list[MemberStreams], device: torch.device):
        self.members, self.episodes = len(streams), cfg.eval_episodes
        self.steps = ENVS[cfg.env].episode_steps
        self.env = _make_vec(cfg, self.members * self.episodes)
        self.device = device
        self._seeds: list[int] | None = [s for m in streams for s in m.eval_seeds]

    def __call__(self, learner: Any) -> tuple[np.ndarray, np.ndarray]:
        obs, info = self.env.reset(seed=self._seeds)
        self._seeds = None  # later evaluations continue each copy's stream
        returns = np.zeros(self.env.num_envs)
        success = np.zeros(self.env.num_envs, dtype=bool)
        for _ in range(self.steps):
            action = learner.act(*_split(obs, self.members, self.device))
            obs, reward, _, _, info = self.env.step(action.reshape(self.env.num_envs, -1).cpu()
                                                    .numpy())
            returns += reward
            success |= np.asarray(info.get("is_success", np.zeros_like(success)), dtype=bool)
        shape = (self.members, self.episodes)
        return success.reshape(shape).mean(axis=1), returns.reshape(shape).mean(axis=1)


class LossMeter:
    """Per-member running sums of the update diagnostics, kept on the device so the step
    loop never waits for a host copy."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
        self.count += 1

    def means(self, members: int) -> dict[str, np.ndarray]:
        keys = ("critic_loss", "goal_grad_loss", "actor_loss", "q_mean")
        if self.count == 0:
            return {k: np.full(members, math.nan) for k in keys}
        return {k: (self.sums[k] / self.count).cpu().numpy() if k in self.sums
                else np.full(members, math.nan) for k in keys}

    def reset(self) -> None:
        self.sums, self.count = {}, 0


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _progress_csv(rows: list[dict[str, float]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PROGRESS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else repr(v)
                         for k, v in row.items()})
    return buffer.getvalue()


def member_dir(out: Path, seed: int) -> Path:
    return out / f"seed{seed}"


def train(cfg: TrainConfig, out: Path, progress: bool = True) -> list[dict[str, Any]]:
    """Train the population of `cfg.seeds` and write `out/seed<k>/{progress.csv,run.json}`.

    Returns the per-member run records (the contents of run.json).
    """
    started = time.time()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    members = len(cfg.seeds)
    spec, method = ENVS[cfg.env], METHODS[cfg.method]
    T = spec.episode_steps
    streams = [MemberStreams.from_seed(seed, cfg.eval_episodes) for seed in cfg.seeds]

    env = _make_vec(cfg, members)
    obs_space = env.single_observation_space
    obs_dim = obs_space["observation"].shape[-1]
    goal_dim = obs_space["desired_goal"].shape[-1]
    action_dim = env.single_action_space.shape[-1]
    learner = method.build(LearnerSpec(
        members=members, obs_dim=obs_dim, goal_dim=goal_dim, action_dim=action_dim,
        lr=cfg.lr, gamma=cfg.gamma, tau=cfg.tau, action_noise=cfg.action_noise, c=cfg.c,
        generators=[s.init for s in streams], extra=dict(cfg.extra),
    ))
    if isinstance(learner, torch.nn.Module):
        learner.to(device)
    replay = EpisodeReplay(
        members, cfg.buffer_size, T, obs_dim, goal_dim, action_dim,
        reward_fn=env.unwrapped.compute_reward if hasattr(env, "unwrapped") else
        env.compute_reward,
        rngs=[s.replay for s in streams], her_k=cfg.her_k if method.her else 0,
    )
    evaluate = Evaluator(cfg, streams, device)
    rows: list[list[dict[str, float]]] = [[] for _ in range(members)]
    meter = LossMeter()
    last_log_time, updates_since_log = time.time(), 0

    def log(step: int) -> None:
        nonlocal last_log_time, updates_since_log
        success, mean_return = evaluate(learner)
        losses = meter.means(members)
        now = time.time()
        rate = updates_since_log / (now - last_log_time) if updates_since_log else 0.0
        for m in range(members):
            rows[m].append({
                "step": step, "success_rate": float(success[m]),
                "mean_return": float(mean_return[m]),
                **{k: float(v[m]) for k, v in losses.items()},
                "wall_time_s": now - started, "updates_per_s": rate,
            })
        meter.reset()
        last_log_time, updates_since_log = now, 0
        if bar is not None:
            bar.set_postfix(success=f"{success.mean():.2f}", refresh=False)

    bar = tqdm(total=cfg.steps, unit="step", file=sys.stderr, disable=not progress,
               desc=f"{cfg.env}-d{cfg.dim} {cfg.method} x{members}", mininterval=2.0)
    log(0)
    obs = None
    for step in range(1, cfg.steps + 1):
        if (step - 1) % T == 0:
            obs, _ = env.reset(seed=[s.env_seed for s in streams] if obs is None else None)
            replay.start_episode(obs["observation"], obs["achieved_goal"], obs["desired_goal"])
        if step <= cfg.learning_starts:
            action = np.stack([s.exploration.uniform(-1.0, 1.0, action_dim) for s in streams])
        else:
            action = learner.act(*_split(obs, members, device)).reshape(members, -1).cpu().numpy()
            noise = np.stack([s.exploration.normal(0.0, cfg.action_noise, action_dim)
                              for s in streams])
            action = np.clip(action + noise, -1.0, 1.0)
        action = action.astype(np.float32)
        obs, _, _, _, _ = env.step(action)
        replay.add_step(action, obs["observation"], obs["achieved_goal"])
        if step > cfg.learning_starts and replay.size > 0:
            batch = replay.sample(cfg.batch_size)
            tensors = {k: torch.as_tensor(getattr(batch, k), device=device)
                       for k in ("obs", "action", "next_obs", "goal", "reward")}
            meter.add(learner.update(**tensors))
            updates_since_log += 1
        if step % cfg.eval_every == 0:
            log(step)
        if step % T == 0:
            bar.update(T)
    bar.close()
    if cfg.steps % cfg.eval_every != 0:
        log(cfg.steps)

    finished = time.time()
    records = []
    for m, seed in enumerate(cfg.seeds):
        directory = member_dir(out, seed)
        directory.mkdir(parents=True, exist_ok=True)
        record = {
            "format_version": FORMAT_VERSION,
            "status": "finished",
            "seed": seed,
            "population": cfg.seeds,
            "config": cfg.to_dict(),
            "label": method.label(cfg.c),
            "versions": package_versions(),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "replay_bytes_per_member": replay.nbytes // members,
            "started_at": started,
            "finished_at": finished,
            "wall_time_s": finished - started,
        }
        _atomic_write(directory / "progress.csv", _progress_csv(rows[m]))
        _atomic_write(directory / "run.json", json.dumps(record, indent=2) + "\n")
        records.append(record)
    return records
