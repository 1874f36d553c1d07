"""The Baselines HER regime (Plappert et al. 2018) as a configuration of our DDPG learner: the
robotics tasks' training loop (docs/paper.md §4).

Where the toy tasks train one gradient step per env step, Baselines trains in epochs of
cycles: each cycle runs one episode in each of a worker's envs (ε-random actions, else the
policy plus Gaussian noise), stores them, feeds the normaliser with HER-relabelled samples
of those episodes, then takes `batches` gradient steps and one Polyak step of the targets
(τ = 1 − polyak). Each epoch ends with deterministic test episodes whose success is
`is_success` at their last step. The learner is agents/ddpg.py with 3×256 networks, action
L2, the running normaliser, targets clipped to [−1/(1−γ), 0] (zero goal gradient where
clipped) and γ = 1 − 1/T. The networks see (observation, goal), as Baselines builds them.

Each population member is one Baselines worker with its own envs, buffer, normaliser and
random streams (derived from its seed), so member i behaves as seed i run alone. Many
workers per member (the paper's 19 MPI workers) are not modelled here.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from reengage.agents.ddpg import DDPG, DDPGConfig
from reengage.agents.normalizer import her_statistics_sample
from reengage.agents.replay import EpisodeReplay
from reengage.envs.robotics import batched_reward, require_robotics

from .paths import member_dir
from .progress import PROGRESS_NAME, atomic_write, progress_csv
from .registry import ROBOTICS_ENVS

LOSSES = ("critic_loss", "goal_grad_loss", "actor_loss", "q_mean")


@dataclass
class BaselinesConfig:
    """One population of Baselines HER runs. Defaults are Baselines' robotics settings."""

    env: str = "HandReach"
    """A key of reengage.registry.ROBOTICS_ENVS."""
    seeds: list[int] = field(default_factory=lambda: [0])
    c: float = 0.0
    """ReenGAGE's weight (the release's `grad_loss_weight`; α = c/d); 0 is DDPG+HER."""
    normalized_goal_gradient: bool = False
    """Normalized ReenGAGE: each goal coordinate's squared error times σ_i²."""
    epochs: int = 50
    cycles: int = 50
    """Cycles per epoch."""
    batches: int = 40
    """Gradient steps per cycle."""
    batch_size: int = 256
    envs_per_member: int = 2
    """Episodes per cycle (Baselines' `rollout_batch_size`, one env each)."""
    test_rollouts: int = 10
    """Test rounds per epoch; each runs one deterministic episode in every test env
    (`envs_per_member` of them)."""
    buffer_size: int = 1_000_000
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

    def discount(self) -> float:
        return self.gamma if self.gamma is not None else 1.0 - 1.0 / self.episode_steps()

    def episode_steps(self) -> int:
        return ROBOTICS_ENVS[self.env].episode_steps

    def learner_config(self) -> DDPGConfig:
        gamma = self.discount()
        return DDPGConfig(
            gamma=gamma, tau=1.0 - self.polyak, lr=self.lr, hidden=tuple(self.hidden),
            goal_gradient_coef=self.c, action_l2=self.action_l2,
            target_clip=(-1.0 / (1.0 - gamma), 0.0) if self.clip_return else None,
            target_update_every_step=False, normalize_inputs=True,
            normalizer_eps=self.norm_eps, normalizer_clip=self.norm_clip,
            normalizer_clip_input=self.clip_obs,
            normalized_goal_gradient=self.normalized_goal_gradient, compile=self.compile,
        )


@dataclass
class WorkerStreams:
    """A member's random streams, all from its seed."""

    env_seeds: list[int]
    test_seeds: list[int]
    exploration: np.random.Generator
    replay: np.random.Generator
    statistics: np.random.Generator
    init: torch.Generator

    @classmethod
    def from_seed(cls, seed: int, envs: int) -> WorkerStreams:
        env, test, exploration, replay, statistics, init = np.random.SeedSequence(seed).spawn(6)
        return cls(
            env_seeds=[int(s) for s in env.generate_state(envs)],
            test_seeds=[int(s) for s in test.generate_state(envs)],
            exploration=np.random.default_rng(exploration),
            replay=np.random.default_rng(replay),
            statistics=np.random.default_rng(statistics),
            init=torch.Generator().manual_seed(int(init.generate_state(1, np.uint64)[0])),
        )


def explore(actions: np.ndarray, rng: np.random.Generator, noise_eps: float,
            random_eps: float) -> np.ndarray:
    """Baselines' exploration for one member's actions `[envs, action_dim]` in [−1, 1]:
    Gaussian noise, clip, then each row replaced by a uniform random action with
    probability `random_eps`."""
    noisy = np.clip(actions + noise_eps * rng.standard_normal(actions.shape), -1.0, 1.0)
    replace = rng.binomial(1, random_eps, actions.shape[0]).astype(bool)
    random = rng.uniform(-1.0, 1.0, actions.shape)
    return np.where(replace[:, None], random, noisy)


class BaselinesRun:
    """A population of Baselines workers and the epoch loop that trains them."""

    def __init__(self, cfg: BaselinesConfig):
        require_robotics()
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        spec = ROBOTICS_ENVS[cfg.env]
        self.M, self.E, self.T = len(cfg.seeds), cfg.envs_per_member, cfg.episode_steps()
        self.device = torch.device(cfg.device)
        self.streams = [WorkerStreams.from_seed(s, self.E) for s in cfg.seeds]
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
        self.learner.prepare(cfg.batch_size)
        self.replay = EpisodeReplay(
            self.M, cfg.buffer_size, self.T, self.obs_dim, self.goal_dim, self.action_dim,
            reward_fn=lambda achieved, goal: batched_reward(self.reward_env, achieved, goal),
            rngs=[s.replay for s in self.streams], her_k=cfg.her_k)
        self.seeded = self.test_seeded = False
        self.timings = {"rollout_s": 0.0, "update_s": 0.0, "test_s": 0.0,
                        "env_steps": 0, "updates": 0}

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        """`[members * envs, k]` -> `[members, envs, k]` float32 on the learner's device."""
        return torch.as_tensor(x, dtype=torch.float32, device=self.device).reshape(
            self.M, self.E, -1)

    def _act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        action = self.learner.act(self._tensor(obs["observation"]),
                                  self._tensor(obs["desired_goal"]))
        return action.cpu().numpy().astype(np.float64)  # [M, E, A]

    def rollout(self) -> None:
        """One episode in each env of each member, stored, and the normaliser fed."""
        cfg, M, E, T = self.cfg, self.M, self.E, self.T
        seeds = None if self.seeded else [s for m in self.streams for s in m.env_seeds]
        self.seeded = True
        obs, _ = self.env.reset(seed=seeds)
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
        for e in range(E):
            self.replay.start_episode(observations[:, e, 0], achieved[:, e, 0], desired[:, e])
            for t in range(T):
                self.replay.add_step(actions[:, e, t], observations[:, e, t + 1],
                                     achieved[:, e, t + 1])
        self._feed_normalizer(observations, achieved, desired)
        self.timings["env_steps"] += E * T

    def _feed_normalizer(self, observations: np.ndarray, achieved: np.ndarray,
                         desired: np.ndarray) -> None:
        """As Baselines' `store_episode`: as many HER samples of the new episodes as they
        hold transitions; their observations and (relabelled) goals."""
        k = self.cfg.her_k
        episode, step, goal = her_statistics_sample(
            achieved, desired, [s.statistics for s in self.streams], self.E * self.T,
            k / (k + 1) if k > 0 else 0.0)
        state = observations[np.arange(self.M)[:, None], episode, step]
        self.learner.update_normalizer(
            torch.as_tensor(state, dtype=torch.float32, device=self.device),
            torch.as_tensor(goal, dtype=torch.float32, device=self.device))

    def train_cycle(self) -> dict[str, torch.Tensor]:
        """`batches` gradient steps, then one Polyak step; the mean diagnostics."""
        sums: dict[str, torch.Tensor] = {}
        for _ in range(self.cfg.batches):
            batch = self.replay.sample(self.cfg.batch_size)
            tensors = {k: torch.as_tensor(getattr(batch, k), device=self.device)
                       for k in ("obs", "action", "next_obs", "goal", "reward")}
            for key, value in self.learner.update(**tensors).items():
                sums[key] = sums.get(key, 0) + value
        self.learner.update_targets()
        self.timings["updates"] += self.cfg.batches
        return {k: v / self.cfg.batches for k, v in sums.items()}

    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """Per member: the success rate (`is_success` at each test episode's last step) and
        mean return of `test_rollouts` rounds of deterministic episodes."""
        M, E = self.M, self.E
        success = np.zeros((M, E))
        returns = np.zeros((M, E))
        for _ in range(self.cfg.test_rollouts):
            seeds = None if self.test_seeded else [s for m in self.streams for s in m.test_seeds]
            self.test_seeded = True
            obs, _ = self.test_env.reset(seed=seeds)
            info: dict[str, Any] = {}
            for _ in range(self.T):
                action = self._act(obs).reshape(M * E, -1)
                obs, reward, _, _, info = self.test_env.step(action)
                returns += np.asarray(reward).reshape(M, E)
            success += np.asarray(info["is_success"], dtype=float).reshape(M, E)
        n = self.cfg.test_rollouts
        return (success / n).mean(axis=1), (returns / n).mean(axis=1)

    def run(self, out: Path | None = None, quiet: bool = False) -> list[list[dict[str, float]]]:
        """Test before training (epoch 0), then `epochs` epochs, each followed by a test.
        Rows per member in progress.csv's columns, `step` counting a member's env steps;
        written to `out/seed<k>/progress.csv` when `out` is given."""
        cfg = self.cfg
        rows: list[list[dict[str, float]]] = [[] for _ in range(self.M)]
        started = time.time()

        def record(step: int, losses: dict[str, torch.Tensor], rate: float) -> None:
            t0 = time.time()
            success, returns = self.test()
            self.timings["test_s"] += time.time() - t0
            means = {k: (losses[k].cpu().numpy() if k in losses else np.full(self.M, math.nan))
                     for k in LOSSES}
            for m in range(self.M):
                rows[m].append({"step": step, "success_rate": float(success[m]),
                                "mean_return": float(returns[m]),
                                **{k: float(means[k][m]) for k in LOSSES},
                                "wall_time_s": time.time() - started, "updates_per_s": rate})
            if not quiet:
                print(f"{cfg.env} step {step}: success {success.mean():.3f} "
                      f"({time.time() - started:.0f} s)", flush=True)

        record(0, {}, 0.0)
        for epoch in range(1, cfg.epochs + 1):
            sums: dict[str, torch.Tensor] = {}
            update_time = 0.0
            for _ in range(cfg.cycles):
                t0 = time.time()
                self.rollout()
                t1 = time.time()
                for key, value in self.train_cycle().items():
                    sums[key] = sums.get(key, 0) + value
                t2 = time.time()
                self.timings["rollout_s"] += t1 - t0
                self.timings["update_s"] += t2 - t1
                update_time += t2 - t1
            losses = {k: v / cfg.cycles for k, v in sums.items()}
            rate = cfg.cycles * cfg.batches / update_time if update_time else 0.0
            record(epoch * cfg.cycles * self.E * self.T, losses, rate)
        if out is not None:
            for seed, seed_rows in zip(cfg.seeds, rows, strict=True):
                atomic_write(member_dir(out, seed) / PROGRESS_NAME, progress_csv(seed_rows))
        return rows

    def close(self) -> None:
        self.env.close()
        self.test_env.close()
        self.reward_env.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m reengage.baselines_her --env FetchReach --epochs 5`: a quick run of the
    regime (no checkpoints, no workflow), printing each test and the time it took."""
    defaults = BaselinesConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=defaults.env, choices=sorted(ROBOTICS_ENVS))
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--cycles", type=int, default=defaults.cycles)
    parser.add_argument("--batches", type=int, default=defaults.batches)
    parser.add_argument("--envs-per-member", type=int, default=defaults.envs_per_member)
    parser.add_argument("--c", type=float, default=0.0)
    parser.add_argument("--normalized", action="store_true",
                        help="Normalized ReenGAGE (σ² weights)")
    parser.add_argument("--vectorization-mode", default="sync", choices=("sync", "async"))
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    cfg = BaselinesConfig(env=args.env, seeds=[int(s) for s in args.seeds.split(",")],
                          epochs=args.epochs, cycles=args.cycles, batches=args.batches,
                          envs_per_member=args.envs_per_member, c=args.c,
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
