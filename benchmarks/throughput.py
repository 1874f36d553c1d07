"""Training throughput on ContinuousSeek(d=20): ours (DDPG+HER, ReenGAGE+HER, populations of
seeds) side by side with Stable-Baselines3's DDPG+HER and the machine's float32 GEMM ceiling.

Every measurement runs in a fresh subprocess (so peak RSS is that contender's alone), with
the same torch thread count for every contender. Contenders alternate within each repeat
and the order rotates from one repeat to the next, so a change in machine load touches all
of them alike. Each run warms up untimed (uniformly random actions, no training) and then
times `steps` env steps with one gradient step each, as the paper trains.

    python benchmarks/throughput.py --json results/benchmarks/throughput.json
    python benchmarks/throughput.py --quick          # about two minutes, a smoke check
    python benchmarks/throughput.py --contenders sac_her,reengage_sac_her  # SAC's ReenGAGE cost

Ours runs the real training loop (`reengage.run.train`) and reads its timing from the
`wall_time_s` column of progress.csv, so it measures what users run. Each ReenGAGE contender's
cost is also taken against its own baseline (ReenGAGE+HER / DDPG+HER, ReenGAGE+SAC+HER /
SAC+HER: time per seed-step at the same population, repeat by repeat), beside the paper's
end-to-end +34 … +60 % (docs/paper.md §6). See README.md here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reengage.analysis.runtime import PAPER_RATIO_RANGE
from reengage.config import ConfigError, check_device, parse_settings

CONTENDERS = ("gemm_ceiling", "sb3_ddpg_her", "ddpg_her", "reengage_her", "sac_her",
              "reengage_sac_her")
# What runs without --contenders: SAC is opt-in (its update is not counted in FLOPs, and
# the lead table of the README is DDPG's).
DEFAULT_CONTENDERS = ("gemm_ceiling", "sb3_ddpg_her", "ddpg_her", "reengage_her")
OURS = ("ddpg_her", "reengage_her", "sac_her", "reengage_sac_her")
# Contenders whose update `update_flops` counts.
FLOP_COUNTED = ("sb3_ddpg_her", "ddpg_her", "reengage_her")
# A ReenGAGE contender -> the method it adds its term to: its cost is taken against that.
REENGAGE_BASELINES = {"reengage_her": "ddpg_her", "reengage_sac_her": "sac_her"}
LABELS = {
    "gemm_ceiling": "GEMM ceiling",
    "sb3_ddpg_her": "SB3 DDPG+HER",
    "ddpg_her": "DDPG+HER",
    "reengage_her": "ReenGAGE+HER",
    "sac_her": "SAC+HER",
    "reengage_sac_her": "ReenGAGE+SAC+HER",
}
CHILD_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Setting:
    """The paper's ContinuousSeek settings (docs/paper.md §4); the same for every contender."""

    dim: int = 20
    batch_size: int = 256
    hidden: tuple[int, ...] = (256, 256)
    her_k: int = 4
    c: float = 0.2
    lr: float = 1e-3
    gamma: float = 0.95
    tau: float = 0.005
    action_noise: float = 0.03
    warmup: int = 1000
    buffer_size: int = 1_000_000
    threads: int = 2
    learner_settings: dict[str, Any] = field(default_factory=dict)
    """Extra settings of our learners (`--set`), e.g. {"fused_adam": False}; SB3 ignores them."""
    inputs: str = "sb3"
    """Our networks' input layout (`reengage train --inputs`); sb3 is what SB3's networks see."""
    device: str = "cpu"
    """Where every contender computes: both learners, SB3's networks and the GEMM ceiling."""


# --------------------------------------------------------------------------------------
# Analytic FLOP count of one update
# --------------------------------------------------------------------------------------


def mlp_layers(n_in: int, hidden: Sequence[int], n_out: int) -> list[tuple[int, int]]:
    """(in, out) of every linear layer of an MLP."""
    sizes = [n_in, *hidden, n_out]
    return list(zip(sizes[:-1], sizes[1:], strict=True))


def _pass(layers: Sequence[tuple[int, int]], batch: int) -> int:
    """One pass of `batch` rows through the layers: 2·batch·in·out per layer."""
    return sum(2 * batch * i * o for i, o in layers)


def update_flops(
    contender: str,
    obs_dim: int,
    goal_dim: int,
    action_dim: int,
    hidden: Sequence[int],
    batch: int,
    population: int = 1,
    hand_gradients: bool = True,
    inputs: str = "obs_goal",
) -> int:
    """Matmul FLOPs of one update of `population` members (acting is not counted).

    Every pass through a linear layer costs 2·batch·in·out: a forward, an input-gradient
    pass and a weight-gradient pass alike. Writing A and C for one forward through the
    actor and the critic, A1, C1, CL for their first and last layers, and a1, c1 for the
    first layer's cost per input column (2·batch·hidden[0]); obs, goal and act are the
    input widths:

    * `ddpg_her` with autograd (`hand_gradients=False`): target actor + target critic
      (A + C); critic forward, weight gradients, input gradients below the first layer
      (3C − C1); actor forward, critic forward on π, critic input gradients down to π,
      actor weight and input gradients (3A − A1 + 2C). Total 4A − A1 + 6C − C1.
    * `ddpg_her` by hand (agents/hand_gradients.py, the default): the same, except that
      the actor step takes the critic's first-layer input gradient over the action's
      columns only (C1 → act·c1). Total 4A − A1 + 6C − 2·C1 + act·c1.
    * `reengage_her` with autograd: the target's goal gradient adds critic and actor
      input-gradient passes (2A + 2C); the critic's ∇_g Q adds an input-gradient pass with
      a graph (C); the goal leaf needs the first layer's input gradient in the value
      backward (+C1); the double backward through ∇_g Q costs a weight- and a
      grad-output-gradient pass per layer, except that the last layer's incoming gradient
      is a constant (2C − CL). Total 5A − A1 + 10C − CL.
    * `reengage_her` by hand: target forwards (A + C) and its goal gradient through the
      critic over the goal's and action's columns (C − C1 + (goal + act)·c1) and through
      the actor over the goal's columns (A − A1 + goal·a1); the critic's forward (C), its
      ∇_g Q over the goal's columns (C − C1 + goal·c1), the goal-gradient term's backward
      (goal·c1 + C − C1 − CL), and one weight-gradient pass for both terms (C), since a
      one-output critic's TD backward is its ∇_x Q chain scaled row by row; the actor step
      as for DDPG (3A − A1 + 2C − C1 + act·c1). Total
      5A − 2·A1 + 8C − 4·C1 − CL + (3·goal + 2·act)·c1 + goal·a1.
    * `sb3_ddpg_her`: Stable-Baselines3 flattens every key of the dict observation into the
      networks (actor input obs + achieved + desired goal, critic input adds the action),
      and its actor backward also fills the critic's weight gradients (+C).
      Total 4A − A1 + 7C − C1.

    `gemm_ceiling` has no update and returns 0. These counts equal the FLOPs of the
    matrix products torch dispatches for one update (checked in tests/test_benchmark.py).
    """
    if contender == "gemm_ceiling":
        return 0
    if contender not in FLOP_COUNTED:
        raise ValueError(f"no FLOP count for {contender!r}; counted: {', '.join(FLOP_COUNTED)}")
    # Under `inputs` sb3 our networks see what SB3's see; the observation then follows the
    # goal, and the target's input gradient over "the goal's columns on" covers it too.
    after_goal = 0
    if contender == "sb3_ddpg_her" or (contender in OURS and inputs == "sb3"):
        actor = mlp_layers(obs_dim + 2 * goal_dim, hidden, action_dim)
        critic = mlp_layers(obs_dim + 2 * goal_dim + action_dim, hidden, 1)
        after_goal = obs_dim
    elif contender in OURS:
        actor = mlp_layers(obs_dim + goal_dim, hidden, action_dim)
        critic = mlp_layers(obs_dim + goal_dim + action_dim, hidden, 1)
    else:
        raise ValueError(f"unknown contender {contender!r}; choose from {', '.join(CONTENDERS)}")
    a, c = _pass(actor, batch), _pass(critic, batch)
    a1, c1, c_last = _pass(actor[:1], batch), _pass(critic[:1], batch), _pass(critic[-1:], batch)
    a1_column, c1_column = 2 * batch * actor[0][1], 2 * batch * critic[0][1]
    hand = hand_gradients and len(hidden) > 0
    if contender == "ddpg_her":
        per_member = 4 * a - a1 + 6 * c - c1
        if hand:
            per_member += -c1 + action_dim * c1_column
    elif contender == "reengage_her":
        if hand:
            per_member = (5 * a - 2 * a1 + 8 * c - 4 * c1 - c_last
                          + (3 * goal_dim + 2 * action_dim + after_goal) * c1_column
                          + goal_dim * a1_column)
        else:
            per_member = 5 * a - a1 + 10 * c - c_last
    else:
        per_member = 4 * a - a1 + 7 * c - c1
    return population * per_member


def replay_target_bytes(steps: int, episode_steps: int, obs_dim: int, goal_dim: int,
                        action_dim: int) -> int:
    """float32 bytes of observation, achieved goal and action per step plus one desired goal
    per episode: the least a replay buffer that relabels at sample time must keep."""
    episodes = steps // episode_steps
    return 4 * (steps * (obs_dim + goal_dim + action_dim) + episodes * goal_dim)


# --------------------------------------------------------------------------------------
# Measurements, each run in a fresh child process
# --------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def _measure_gemm(task: dict[str, Any]) -> dict[str, Any]:
    import torch

    n, reps = task["gemm_size"], task["gemm_reps"]
    from reengage.run import resolve_device

    device = resolve_device(task["setting"]["device"])
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def synchronize() -> None:  # a GPU product is only queued until the device is waited on
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    a @ b  # first call pays for thread start-up and workspace
    synchronize()
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        synchronize()
        best = min(best, time.perf_counter() - start)
    return {"seconds": best, "gflops": 2 * n**3 / best / 1e9}


def _measure_sb3(task: dict[str, Any], s: Setting) -> dict[str, Any]:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import DDPG, HerReplayBuffer
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    import reengage.envs  # noqa: F401  (registers the environment ids)

    class StartClock(BaseCallback):
        """Notes the time once the untimed warm-up steps are done."""

        def __init__(self) -> None:
            super().__init__()
            self.start = time.perf_counter()

        def _on_step(self) -> bool:
            if self.num_timesteps == s.warmup:
                self.start = time.perf_counter()
            return True

    env = gym.make("reengage/ContinuousSeek-v0", dim=s.dim)
    model = DDPG(
        "MultiInputPolicy", env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs={"n_sampled_goal": s.her_k, "goal_selection_strategy": "future"},
        action_noise=NormalActionNoise(np.zeros(s.dim), s.action_noise * np.ones(s.dim)),
        learning_rate=s.lr, buffer_size=s.buffer_size, learning_starts=s.warmup,
        batch_size=s.batch_size, tau=s.tau, gamma=s.gamma, train_freq=1, gradient_steps=1,
        policy_kwargs={"net_arch": list(s.hidden)}, device=s.device,
        seed=1000 * task["repeat"] + task.get("process", 0),
        verbose=0,
    )
    clock = StartClock()
    model.learn(total_timesteps=s.warmup + task["steps"], callback=clock)
    return {"seconds": time.perf_counter() - clock.start}


def _measure_ours(task: dict[str, Any], s: Setting) -> dict[str, Any]:
    import csv
    import tempfile

    from reengage.config import TrainConfig, validate
    from reengage.run import train

    steps, population = task["steps"], task["population"]
    # Evaluation rows land on the warm-up's end and on the timed window's end; one episode
    # per member keeps the evaluation inside the window to a few milliseconds.
    eval_every = math.gcd(s.warmup, steps)
    cfg = TrainConfig(
        env="ContinuousSeek", dim=s.dim, method=task["contender"],
        seeds=[1000 * task["repeat"] + 100 * task.get("process", 0) + m
               for m in range(population)], steps=s.warmup + steps,
        c=s.c if task["contender"] in REENGAGE_BASELINES else None, batch_size=s.batch_size,
        lr=s.lr, eval_every=eval_every, eval_episodes=1, learning_starts=s.warmup,
        buffer_size=s.buffer_size, her_k=s.her_k, gamma=s.gamma, tau=s.tau,
        action_noise=s.action_noise, threads=s.threads, device=s.device,
        extra={"hidden": tuple(s.hidden), **s.learner_settings}, inputs=s.inputs,
    )
    validate(cfg)
    with tempfile.TemporaryDirectory() as out:
        train(cfg, Path(out), progress=False)
        with open(Path(out) / f"seed{cfg.seeds[0]}" / "progress.csv") as f:
            wall = {int(row["step"]): float(row["wall_time_s"]) for row in csv.DictReader(f)}
    return {"seconds": wall[s.warmup + steps] - wall[s.warmup]}


def _measure_replay_memory(task: dict[str, Any], s: Setting) -> dict[str, Any]:
    """Bytes our EpisodeReplay and SB3's HerReplayBuffer allocate for `steps` transitions
    (numpy allocates lazily, so nothing is touched)."""
    import gymnasium as gym
    import numpy as np

    import reengage.envs  # noqa: F401
    from reengage.agents.replay import EpisodeReplay
    from reengage.envs.continuous_seek import EPISODE_STEPS, continuous_seek_reward
    from reengage.registry import ENVS

    steps, d = task["replay_steps"], s.dim
    # As the training loop builds it: ContinuousSeek's achieved goal is its observation.
    ours = EpisodeReplay(1, steps, EPISODE_STEPS, d, d, d, continuous_seek_reward,
                         [np.random.default_rng(0)], her_k=s.her_k,
                         achieved_in_obs=ENVS["ContinuousSeek"].achieved_in_obs).nbytes
    result: dict[str, Any] = {
        "replay_steps": steps, "episode_steps": EPISODE_STEPS,
        "replay_bytes": ours,
        "replay_target_bytes": replay_target_bytes(steps, EPISODE_STEPS, d, d, d),
    }
    try:
        from stable_baselines3 import HerReplayBuffer
        from stable_baselines3.common.vec_env import DummyVecEnv
    except ImportError:
        return result
    vec = DummyVecEnv([lambda: gym.make("reengage/ContinuousSeek-v0", dim=d)])
    sb3 = HerReplayBuffer(steps, vec.observation_space, vec.action_space, env=vec, device="cpu",
                          n_sampled_goal=s.her_k, goal_selection_strategy="future")
    arrays = [v for v in vars(sb3).values() if isinstance(v, np.ndarray)]
    arrays += [a for v in vars(sb3).values() if isinstance(v, dict)
               for a in v.values() if isinstance(a, np.ndarray)]
    result["sb3_replay_bytes"] = int(sum(a.nbytes for a in arrays))
    return result


def run_child(task: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this process (the child side of `_spawn`)."""
    s = Setting(**{**task["setting"], "hidden": tuple(task["setting"]["hidden"])})
    load = os.getloadavg()[0]
    import torch

    torch.set_num_threads(s.threads)
    kind = task["contender"]
    if kind == "gemm_ceiling":
        result = _measure_gemm(task)
    elif kind == "sb3_ddpg_her":
        result = _measure_sb3(task, s)
    elif kind in OURS:
        result = _measure_ours(task, s)
    elif kind == "replay_memory":
        result = _measure_replay_memory(task, s)
    else:
        raise ValueError(f"unknown contender {kind!r}")
    from reengage.run import resolve_device

    device = resolve_device(s.device)
    result["device_name"] = (torch.cuda.get_device_name(device) if device.type == "cuda"
                             else platform.processor() or platform.machine())
    return {**result, "peak_rss_mb": _peak_rss_mb(), "load_avg_1m": load,
            "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")}


def _spawn(task: dict[str, Any], omp_wait_policy: str = "inherit",
           processes: int = 1) -> dict[str, Any]:
    """Run `task` in `processes` fresh interpreters at once (each its own seeds); each one's
    last stdout line is its JSON result, and `merge_processes` combines them.

    OpenMP reads OMP_WAIT_POLICY when torch loads it, so it is set in the child's
    environment: `passive` stops idle threads from spinning, which matters when the
    machine has more runnable threads than cores.
    """
    threads = str(task["setting"]["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = omp_wait_policy.upper()
    children = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child",
             json.dumps({**task, "process": k})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for k in range(processes)
    ]
    results = []
    try:
        for child in children:
            stdout, stderr = child.communicate(timeout=CHILD_TIMEOUT_S)
            if child.returncode != 0:
                tail = "\n".join(stderr.strip().splitlines()[-15:])
                raise RuntimeError(f"measurement {task['contender']} failed:\n{tail}")
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    return merge_processes(results)


def merge_processes(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from concurrent processes running the same measurement: GEMM rates add
    up; a training measurement keeps the per-process mean rate as `seconds` (so
    `steps / seconds` is the mean process's steps/s) and `processes` scales it to the
    machine's total."""
    if len(results) == 1:
        return {**results[0], "processes": 1}
    merged = {**results[0], "processes": len(results),
              "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
              "load_avg_1m": max(r["load_avg_1m"] for r in results)}
    if "gflops" in results[0]:
        merged["gflops"] = sum(r["gflops"] for r in results)
        merged["seconds"] = max(r["seconds"] for r in results)
    else:
        merged["seconds"] = len(results) / sum(1 / r["seconds"] for r in results)
    return merged


# --------------------------------------------------------------------------------------
# Plan, aggregate, report
# --------------------------------------------------------------------------------------


def timed_steps(steps: int, population: int) -> int:
    """Timed env steps for a population: `steps` seed-steps shared by its members, in whole
    episodes of 10 steps and at least 20."""
    return max(20, 10 * round(steps / population / 10))


def plan(contenders: Sequence[str], populations: Sequence[int], steps: int, repeats: int,
         setting: Setting, gemm_size: int, gemm_reps: int) -> list[list[dict[str, Any]]]:
    """Tasks per repeat, contenders alternating; the order rotates by one each repeat."""
    base: list[dict[str, Any]] = []
    for contender in contenders:
        if contender == "gemm_ceiling":
            base.append({"contender": contender, "population": None, "steps": 0,
                         "gemm_size": gemm_size, "gemm_reps": gemm_reps})
        elif contender == "sb3_ddpg_her":
            base.append({"contender": contender, "population": 1, "steps": steps})
        else:
            base += [{"contender": contender, "population": p, "steps": timed_steps(steps, p)}
                     for p in populations]
    rounds = []
    for r in range(repeats):
        shift = r % len(base)
        rounds.append([{**t, "repeat": r, "setting": asdict(setting)}
                       for t in base[shift:] + base[:shift]])
    return rounds


def _spread(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def aggregate(results: list[tuple[dict[str, Any], dict[str, Any]]],
              setting: Setting) -> list[dict[str, Any]]:
    """One record per (contender, population) from (task, result) pairs, ratios to SB3
    taken repeat by repeat."""
    groups: dict[tuple[str, int | None], dict[int, tuple[dict, dict]]] = {}
    for task, result in results:
        groups.setdefault((task["contender"], task["population"]), {})[task["repeat"]] = (
            task, result)
    ceiling = groups.get(("gemm_ceiling", None))
    ceiling_gflops = (statistics.median(r["gflops"] for _, r in ceiling.values())
                      if ceiling else None)
    sb3 = groups.get(("sb3_ddpg_her", 1))
    d = setting.dim
    records = []
    for (contender, population), runs in groups.items():
        repeats = sorted(runs)
        rss = max(runs[r][1]["peak_rss_mb"] for r in repeats)
        policy = runs[repeats[0]][1].get("omp_wait_policy", "unset")
        load = statistics.median(runs[r][1]["load_avg_1m"] for r in repeats)
        record: dict[str, Any] = {
            "contender": contender, "label": LABELS[contender], "population": population,
            "repeats": len(repeats), "threads": setting.threads, "dim": d,
            "batch_size": setting.batch_size, "hidden": list(setting.hidden),
            "warmup_steps": setting.warmup, "peak_rss_mb": rss, "load_avg_1m_median": load,
            "omp_wait_policy": policy, "processes": runs[repeats[0]][1].get("processes", 1),
        }
        if contender == "gemm_ceiling":
            gflops = [runs[r][1]["gflops"] for r in repeats]
            record.update({
                "gemm_size": runs[repeats[0]][0]["gemm_size"],
                "seed_steps_per_s_median": None, "seed_steps_per_s_min": None,
                "seed_steps_per_s_max": None, "gflops_median": statistics.median(gflops),
                "gflops_min": min(gflops), "gflops_max": max(gflops), "gflops_runs": gflops,
            })
            records.append(record)
            continue
        steps = runs[repeats[0]][0]["steps"]
        processes = runs[repeats[0]][1].get("processes", 1)
        per_seed = [steps / runs[r][1]["seconds"] for r in repeats]
        seed_steps = [processes * population * v for v in per_seed]
        flops = (update_flops(contender, d, d, d, setting.hidden, setting.batch_size,
                              hand_gradients=setting.learner_settings.get("hand_gradients", True),
                              inputs=setting.inputs)
                 if contender in FLOP_COUNTED else None)
        gflops = [v * flops / 1e9 for v in seed_steps] if flops else None
        record.update({
            "timed_steps": steps,
            "steps_per_s_per_seed_median": statistics.median(per_seed),
            "steps_per_s_per_seed_min": min(per_seed),
            "steps_per_s_per_seed_max": max(per_seed),
            "seed_steps_per_s_median": statistics.median(seed_steps),
            "seed_steps_per_s_min": min(seed_steps),
            "seed_steps_per_s_max": max(seed_steps),
            "seed_steps_per_s_runs": seed_steps,
            "flops_per_seed_step": flops,
            "gflops_median": statistics.median(gflops) if gflops else None,
            "ceiling_fraction_median": (statistics.median(gflops) / ceiling_gflops
                                        if ceiling_gflops and gflops else None),
            "ceiling_seed_steps_per_s": (ceiling_gflops * 1e9 / flops
                                         if ceiling_gflops and flops else None),
        })
        if sb3 is not None and contender != "sb3_ddpg_her" and set(sb3) >= set(repeats):
            ratios = [population * steps / runs[r][1]["seconds"]
                      / (sb3[r][0]["steps"] / sb3[r][1]["seconds"]) for r in repeats]
            record.update({"ratio_to_sb3_median": statistics.median(ratios),
                           "ratio_to_sb3_min": min(ratios), "ratio_to_sb3_max": max(ratios),
                           "ratio_to_sb3_runs": ratios})
        baseline = groups.get((REENGAGE_BASELINES.get(contender, ""), population))
        if baseline is not None and set(baseline) >= set(repeats):
            # Time per seed-step with ReenGAGE over without, repeat by repeat (the two ran
            # next to each other within a repeat).
            costs = [(runs[r][1]["seconds"] / steps)
                     / (baseline[r][1]["seconds"] / baseline[r][0]["steps"]) for r in repeats]
            record.update({"baseline_contender": REENGAGE_BASELINES[contender],
                           "cost_ratio_median": statistics.median(costs),
                           "cost_ratio_min": min(costs), "cost_ratio_max": max(costs),
                           "cost_ratio_runs": costs})
        records.append(record)
    order = {c: i for i, c in enumerate(CONTENDERS)}
    records.sort(key=lambda x: (order[x["contender"]], x["population"] or 0))
    return records


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_range(record: dict[str, Any], key: str, digits: int = 1) -> str:
    if record.get(f"{key}_median") is None:
        return "-"
    return (f"{record[f'{key}_median']:.{digits}f} [{record[f'{key}_min']:.{digits}f}, "
            f"{record[f'{key}_max']:.{digits}f}]")


def format_table(records: list[dict[str, Any]]) -> str:
    """The throughput table (medians with [min, max] over repeats)."""
    header = ("contender", "pop", "steps/s per seed", "seed-steps/s", "GFLOP/s", "% ceiling",
              "peak RSS MB", "x SB3 (paired)", "n")
    rows = [header]
    for r in records:
        if r["contender"] not in CONTENDERS:
            continue
        is_ceiling = r["contender"] == "gemm_ceiling"
        rows.append((
            r["label"], "-" if r["population"] is None else (
                f"{r['processes']}x{r['population']}" if r.get("processes", 1) > 1
                else str(r["population"])),
            "-" if is_ceiling else _fmt_range(r, "steps_per_s_per_seed"),
            "-" if is_ceiling else _fmt_range(r, "seed_steps_per_s"),
            _fmt_range(r, "gflops") if is_ceiling else _fmt(r["gflops_median"]),
            "100" if is_ceiling else _fmt(
                None if r["ceiling_fraction_median"] is None
                else 100 * r["ceiling_fraction_median"]),
            f"{r['peak_rss_mb']:.0f}",
            _fmt_range(r, "ratio_to_sb3", 2) if "ratio_to_sb3_median" in r else "-",
            str(r["repeats"]),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_costs(records: list[dict[str, Any]]) -> str:
    """ReenGAGE's cost against its own baseline per population, beside the paper's."""
    low, high = PAPER_RATIO_RANGE
    lines = [f"{r['label']} / {LABELS[r['baseline_contender']]} at population "
             f"{r['population']}: {_fmt_range(r, 'cost_ratio', 2)} x time per seed-step"
             for r in records if "cost_ratio_median" in r]
    if lines:
        lines.append(f"(paper: ReenGAGE costs a constant factor, {low:.2f}-{high:.2f} x "
                     "end-to-end wall time, docs/paper.md §6)")
    return "\n".join(lines)


def format_memory(record: dict[str, Any]) -> str:
    ours, target = record["replay_bytes"], record["replay_target_bytes"]
    text = (f"replay for {record['replay_steps']:,} steps of d={record['dim']}: EpisodeReplay "
            f"{ours / 1e6:.1f} MB vs target {target / 1e6:.1f} MB (x{ours / target:.3f})")
    if "sb3_replay_bytes" in record:
        text += f"; SB3 HerReplayBuffer {record['sb3_replay_bytes'] / 1e6:.1f} MB"
    return text


def _describe(task: dict[str, Any], result: dict[str, Any]) -> str:
    name = LABELS[task["contender"]] if task["contender"] in LABELS else task["contender"]
    if task["contender"] == "gemm_ceiling":
        what = f"{result['gflops']:.1f} GFLOP/s"
    else:
        pop = task["population"]
        rate = task["steps"] / result["seconds"]
        processes = result.get("processes", 1)
        what = f"{rate:.2f} steps/s per seed, {processes * pop * rate:.1f} seed-steps/s"
        name += f" x{pop}" + (f" in each of {processes} processes" if processes > 1 else "")
    return (f"[repeat {task['repeat'] + 1}] {name}: {what}, peak RSS "
            f"{result['peak_rss_mb']:.0f} MB, load {result['load_avg_1m']:.2f}")


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give integers >= 1")
    return values


def _contender_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown contender(s) {', '.join(unknown) or text!r}; choose from "
            f"{', '.join(CONTENDERS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="throughput",
        description="Throughput of DDPG+HER and ReenGAGE+HER (populations of seeds) against "
        "Stable-Baselines3 DDPG+HER and the float32 GEMM ceiling, on ContinuousSeek.",
        epilog="example: python benchmarks/throughput.py --json results/benchmarks/"
        "throughput.json",
    )
    p.add_argument("--json", type=Path, default=None, help="write the records to this file")
    p.add_argument("--quick", action="store_true",
                   help="smoke check of about two minutes: --steps 200, populations 1,4, "
                   "3 repeats (explicit options still win)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed env steps at population 1 and for SB3 (default 1000); a "
                   "population of S times about steps/S (whole episodes, at least 20)")
    p.add_argument("--populations", type=_int_list, default=None,
                   help="population sizes of ours (default 1,4,10,20)")
    p.add_argument("--repeats", type=int, default=None,
                   help="repeats of every contender (default 3)")
    p.add_argument("--contenders", type=_contender_list, default=list(DEFAULT_CONTENDERS),
                   help=f"subset of {','.join(CONTENDERS)} (default "
                   f"{','.join(DEFAULT_CONTENDERS)}; the SAC pair gives SAC's ReenGAGE cost)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads for every contender (default 2)")
    p.add_argument("--dim", type=int, default=20, help="ContinuousSeek goal dimension (20)")
    p.add_argument("--batch-size", type=int, default=256, help="minibatch (default 256)")
    p.add_argument("--hidden", type=_int_list, default=[256, 256],
                   help="hidden widths of actor and critic (default 256,256)")
    p.add_argument("--warmup", type=int, default=1000,
                   help="untimed random-action steps before training (default 1000)")
    p.add_argument("--c", type=float, default=0.2, help="ReenGAGE coefficient c (0.2)")
    p.add_argument("--gemm-size", type=int, default=2048,
                   help="n of the n x n x n float32 products of the ceiling (default 2048)")
    p.add_argument("--replay-steps", type=int, default=400_000,
                   help="transitions for the replay-memory report (default 400000; 0 skips)")
    p.add_argument("--omp-wait-policy", choices=("inherit", "passive", "active"),
                   default="inherit",
                   help="OMP_WAIT_POLICY of every measurement (default: inherit this "
                   "environment's); passive avoids spinning threads on a busy machine")
    p.add_argument("--processes", type=int, default=1,
                   help="run every measurement as this many concurrent processes (each "
                        "with --threads threads and its own seeds) and report their total: "
                        "the whole machine's throughput, as the workflow's parallel jobs "
                        "use it (default 1)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of our learners for an A/B run, e.g. fused_adam=false "
                        "(repeatable; Stable-Baselines3 is unaffected)")
    p.add_argument("--inputs", choices=("sb3", "obs_goal"), default="sb3",
                   help="our networks' inputs (reengage train --inputs; default sb3, what "
                        "Stable-Baselines3's networks see)")
    p.add_argument("--device", default="cpu",
                   help="where every contender computes: cpu (default), cuda[:N] or auto "
                   "(cuda where there is one); the environments stay on the host as in "
                   "training")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0
    steps = args.steps if args.steps is not None else (200 if args.quick else 1000)
    populations = args.populations or ([1, 4] if args.quick else [1, 4, 10, 20])
    repeats = args.repeats if args.repeats is not None else 3
    for option, value in (("--steps", steps), ("--repeats", repeats),
                          ("--threads", args.threads), ("--dim", args.dim),
                          ("--batch-size", args.batch_size), ("--gemm-size", args.gemm_size),
                          ("--processes", args.processes)):
        if value < 1:
            print(f"throughput: {option} must be >= 1 (got {value})", file=sys.stderr)
            return 2
    if args.warmup < 10:
        # Both replay buffers sample complete episodes only (HER needs the future).
        print(f"throughput: --warmup must cover one 10-step episode (got {args.warmup})",
              file=sys.stderr)
        return 2
    try:
        learner_settings = parse_settings(args.settings)
        if args.device not in ("cpu", "auto") and not re.fullmatch(r"cuda(:\d+)?", args.device):
            raise ConfigError("--device", f"must be cpu, cuda[:N] or auto (got {args.device!r})")
        check_device(args.device)
    except ConfigError as error:
        print(f"throughput: {error}", file=sys.stderr)
        return 2
    setting = Setting(dim=args.dim, batch_size=args.batch_size, hidden=tuple(args.hidden),
                      c=args.c, warmup=args.warmup, threads=args.threads,
                      learner_settings=learner_settings, inputs=args.inputs,
                      device=args.device)
    rounds = plan(args.contenders, populations, steps, repeats, setting, args.gemm_size,
                  gemm_reps=3 if args.quick else 5)
    load_before = os.getloadavg()
    started = time.time()
    print(f"throughput: {sum(map(len, rounds))} measurements, {args.processes} process(es) "
          f"at once with {args.threads} torch threads each "
          f"(OMP_WAIT_POLICY {args.omp_wait_policy}), "
          f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
          file=sys.stderr)
    results = []
    try:
        for tasks in rounds:
            for task in tasks:
                result = _spawn(task, args.omp_wait_policy, args.processes)
                results.append((task, result))
                print(_describe(task, result), file=sys.stderr)
        memory = None
        if args.replay_steps > 0:
            memory = _spawn({"contender": "replay_memory", "population": None, "repeat": 0,
                             "replay_steps": args.replay_steps, "setting": asdict(setting)},
                            args.omp_wait_policy)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"throughput: {error}", file=sys.stderr)
        return 1
    load_after = os.getloadavg()
    records = aggregate(results, setting)
    if memory is not None:
        records.append({"contender": "replay_memory", "population": None, "repeats": 1,
                        "dim": setting.dim, "seed_steps_per_s_median": None,
                        "seed_steps_per_s_min": None, "seed_steps_per_s_max": None,
                        "gflops_median": None, **memory})
    records.append({
        "contender": "run_info", "population": None, "repeats": repeats,
        "seed_steps_per_s_median": None, "seed_steps_per_s_min": None,
        "seed_steps_per_s_max": None, "gflops_median": None, "peak_rss_mb": None,
        "threads": args.threads, "omp_wait_policy": args.omp_wait_policy,
        "learner_settings": learner_settings, "processes": args.processes,
        "inputs": args.inputs, "device": args.device,
        "load_avg_before": list(load_before),
        "load_avg_after": list(load_after), "wall_time_s": time.time() - started,
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "processor": platform.processor(), "python": platform.python_version(),
        "started_at": started,
    })
    print(format_table(records))
    costs = format_costs(records)
    if costs:
        print(costs)
    if memory is not None:
        print(format_memory(records[-2]))
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; "
          f"{time.time() - started:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
