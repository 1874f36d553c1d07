"""How fast are the robotics tasks' parts, and how long would the paper's robotics config take?

Measures, each as the median over `--repeats` timed repeats after an untimed warm-up:

(a) simulation: env steps per second of HandReach-v3, HandManipulateBlockRotateXYZ-v1 and
    FetchReach-v4, one env (`gymnasium.make`), uniformly random actions, reset at each time
    limit;
(b) learning: the time of one update (`DDPG.update` in the Baselines regime's configuration:
    3×256 networks, normaliser, clipped targets, action L2) of ddpg_her, reengage_her and
    reengage_her_normalized, at batch 256 (one worker) and 19 × 256 (the paper's 19 workers
    as one batch, reengage/baselines_her.py), with each task's widths; and the policy's
    forward pass for the 38 envs of a member (acting, once per env step of a rollout);
(c) a check of the model below: the measured time of whole cycles of a real HandReach
    member of 19 × 2 envs (`BaselinesRun.cycle`) beside the time the parts predict;
(d) the projection: the wall time of the paper config (19 workers × 2 envs, 50 cycles × 40
    batches, 10 test rollouts; HandReach 50 epochs of T = 50, the block 200 epochs of
    T = 100) per seed on one core, and for `--seeds` seeds × `--cells` (method, c) cells
    per task on 2 and on 16 cores.

The projection's assumptions (also in the JSON): one seed's work on one core is
rollout + test simulation (env steps × (a)) + acting (env steps / 38 × the forward pass) +
updates (epochs × cycles × batches × (b) at 19 × 256); storing episodes, feeding the
normaliser and HER sampling are not modelled — (c) says how much they add. On k cores the
seeds and cells run as independent jobs, one core each (async simulation inside a job does
not change the total work), so the wall time is the total over k, whole-machine parallelism
assumed perfect. The single-seed 16-core figure spreads one seed's simulation over 16 envs'
processes (async) and keeps its updates on one core.

The machine may be shared: the JSON records `os.getloadavg()` before and after.

    python benchmarks/robotics_speed.py --threads 1 --json results/reference/robotics/speed.json
    python benchmarks/robotics_speed.py --quick          # a few seconds' smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TASKS = {"HandReach": "HandReach-v3",
         "HandManipulateBlockRotateXYZ": "HandManipulateBlockRotateXYZ-v1",
         "FetchReach": "FetchReach-v4"}
METHODS = {"ddpg_her": (0.0, False), "reengage_her": (1e-4, False),
           "reengage_her_normalized": (1e-4, True)}
PAPER = {"workers": 19, "envs_per_worker": 2, "cycles": 50, "batches": 40, "test_rollouts": 10,
         "batch_size": 256}
PAPER_EPOCHS = {"HandReach": 50, "HandManipulateBlockRotateXYZ": 200}


def median_time(work: Callable[[], None], repeats: int, warmup: int = 1) -> float:
    """Median seconds of `work()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def simulation_rate(task: str, steps: int, repeats: int) -> float:
    """Env steps per second of one env of `task` with uniformly random actions."""
    import gymnasium as gym
    import numpy as np

    env = gym.make(f"gymnasium_robotics:{TASKS[task]}")
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    actions = rng.uniform(-1, 1, (steps, *env.action_space.shape))

    def run() -> None:
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()

    seconds = median_time(run, repeats)
    env.close()
    return steps / seconds


def _learner(task: str, c: float, normalized: bool, batch: int, compile_: bool):
    """A one-member learner in the Baselines configuration with `task`'s widths, its
    normaliser fed (so that σ is not the initial 1), and a random batch of `batch` rows."""
    import torch

    from reengage.agents.ddpg import DDPG
    from reengage.baselines_her import BaselinesConfig
    from reengage.registry import ROBOTICS_ENVS

    obs, _, goal, action = ROBOTICS_ENVS[task].widths
    cfg = BaselinesConfig(env=task, c=c, normalized_goal_gradient=normalized, compile=compile_)
    generator = torch.Generator().manual_seed(0)
    learner = DDPG(1, obs, goal, action, cfg.learner_config(), [generator])
    learner.update_normalizer(torch.randn(1, 1000, obs, generator=generator),
                              torch.randn(1, 1000, goal, generator=generator))
    learner.prepare(batch)
    data = {"obs": torch.randn(1, batch, obs, generator=generator),
            "action": torch.rand(1, batch, action, generator=generator) * 2 - 1,
            "next_obs": torch.randn(1, batch, obs, generator=generator),
            "goal": torch.randn(1, batch, goal, generator=generator),
            "reward": -(torch.rand(1, batch, generator=generator) < 0.9).float()}
    return learner, data


def update_seconds(task: str, method: str, batch: int, updates: int, repeats: int,
                   compile_: bool) -> float:
    """Median seconds of one update (timed over blocks of `updates` updates)."""
    c, normalized = METHODS[method]
    learner, data = _learner(task, c, normalized, batch, compile_)

    def run() -> None:
        for _ in range(updates):
            learner.update(**data)

    return median_time(run, repeats, warmup=1) / updates


def act_seconds(task: str, envs: int, calls: int, repeats: int) -> float:
    """Median seconds of the policy's forward pass for `envs` envs of one member."""
    learner, data = _learner(task, 0.0, False, envs, compile_=False)
    obs, goal = data["obs"], data["goal"]

    def run() -> None:
        for _ in range(calls):
            learner.act(obs, goal)

    return median_time(run, repeats) / calls


def measured_cycle(task: str, cycles: int, compile_: bool, method: str) -> float:
    """Median seconds of one real cycle (rollout of 19 × 2 episodes, 40 updates of
    19 × 256) of a member of the paper's shape."""
    from reengage.baselines_her import BaselinesConfig, BaselinesRun, _Meter

    c, normalized = METHODS[method]
    run = BaselinesRun(BaselinesConfig(
        env=task, seeds=[0], epochs=1, cycles=cycles + 1, c=c,
        normalized_goal_gradient=normalized, compile=compile_,
        **{k: v for k, v in PAPER.items() if k in ("workers", "envs_per_worker", "batches",
                                                   "test_rollouts", "batch_size")}))
    meter = _Meter(1)
    try:
        return median_time(lambda: run.cycle(meter), cycles, warmup=1)
    finally:
        run.close()


def seed_seconds(task: str, sim_rate: float, act_s: float, update_s: float,
                 epochs: int, episode: int) -> dict[str, float]:
    """One seed of the paper config on one core, by part."""
    p = PAPER
    envs = p["workers"] * p["envs_per_worker"]
    rollout_steps = epochs * p["cycles"] * envs * episode
    test_steps = (epochs + 1) * p["test_rollouts"] * envs * episode  # epoch 0 included
    env_steps = rollout_steps + test_steps
    parts = {"simulation_s": env_steps / sim_rate,
             "acting_s": env_steps / envs * act_s,
             "updates_s": epochs * p["cycles"] * p["batches"] * update_s}
    parts["total_s"] = sum(parts.values())
    parts["env_steps"] = env_steps
    return parts


def project(results: dict[str, Any], seeds: int, cells: int) -> dict[str, Any]:
    """Per task and method: one seed on 1 core, one seed on 16 (async simulation), and the
    whole config (`seeds` × `cells`) on 2 and 16 cores."""
    from reengage.registry import ROBOTICS_ENVS

    projection: dict[str, Any] = {}
    envs = PAPER["workers"] * PAPER["envs_per_worker"]
    for task, epochs in PAPER_EPOCHS.items():
        episode = ROBOTICS_ENVS[task].episode_steps
        sim = results["simulation_steps_per_s"][task]
        act = results["act_s"][task]
        per_method = {}
        for method in METHODS:
            update = results["update_s"][task][method][str(PAPER["batch_size"] * PAPER["workers"])]
            one = seed_seconds(task, sim, act, update, epochs, episode)
            alone_16 = one["simulation_s"] / min(16, envs) + one["acting_s"] + one["updates_s"]
            per_method[method] = {**one, "seed_on_16_cores_async_s": alone_16}
        mean_seed = statistics.mean(m["total_s"] for m in per_method.values())
        total = mean_seed * seeds * cells
        projection[task] = {
            "epochs": epochs, "episode_steps": episode, "methods": per_method,
            "config_seed_runs": seeds * cells,
            "config_core_hours": total / 3600,
            "config_on_2_cores_hours": total / 2 / 3600,
            "config_on_16_cores_hours": total / 16 / 3600,
        }
    return projection


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from reengage.envs.robotics import require_robotics

    torch.set_num_threads(args.threads)
    require_robotics()
    quick = args.quick
    repeats = 2 if quick else args.repeats
    sim_steps = 100 if quick else args.sim_steps
    updates = 2 if quick else args.updates
    batches = [PAPER["batch_size"], PAPER["batch_size"] * PAPER["workers"]]
    envs = PAPER["workers"] * PAPER["envs_per_worker"]
    results: dict[str, Any] = {"simulation_steps_per_s": {}, "update_s": {}, "act_s": {}}
    for task in TASKS:
        results["simulation_steps_per_s"][task] = simulation_rate(task, sim_steps, repeats)
        say(f"{task}: {results['simulation_steps_per_s'][task]:.0f} sim steps/s")
    for task in PAPER_EPOCHS:
        results["act_s"][task] = act_seconds(task, envs, 20 if quick else 200, repeats)
        results["update_s"][task] = {}
        for method in METHODS:
            results["update_s"][task][method] = {
                str(b): update_seconds(task, method, b, updates, repeats, not args.no_compile)
                for b in batches}
            say(f"{task} {method}: update "
                + ", ".join(f"{1e3 * s:.1f} ms at {b}"
                            for b, s in results["update_s"][task][method].items()))
    if not quick:
        cycle = {m: measured_cycle("HandReach", args.cycles, not args.no_compile, m)
                 for m in ("ddpg_her", "reengage_her")}
        episode = 50
        modelled = {}
        for m in cycle:
            update = results["update_s"]["HandReach"][m][str(batches[1])]
            steps = envs * episode
            modelled[m] = (steps / results["simulation_steps_per_s"]["HandReach"]
                           + episode * results["act_s"]["HandReach"]
                           + PAPER["batches"] * update)
        results["cycle_check"] = {"task": "HandReach", "measured_s": cycle,
                                  "modelled_s": modelled}
        say(f"HandReach cycle: measured {cycle}, modelled {modelled}")
    results["projection"] = project(results, args.seeds, args.cells)
    return results


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def table(results: dict[str, Any]) -> str:
    lines = ["| task | method | update 256 (ms) | update 19×256 (ms) | seed, 1 core (h) | "
             "seed, 16 cores async (h) |", "|---|---|---|---|---|---|"]
    for task, projection in results["projection"].items():
        for method, parts in projection["methods"].items():
            update = results["update_s"][task][method]
            lines.append(f"| {task} | {method} | {1e3 * update['256']:.1f} | "
                         f"{1e3 * update['4864']:.1f} | {parts['total_s'] / 3600:.2f} | "
                         f"{parts['seed_on_16_cores_async_s'] / 3600:.2f} |")
    lines.append("")
    lines.append("| task | sim steps/s | config seed-runs | on 2 cores (h) | on 16 cores (h) |")
    lines.append("|---|---|---|---|---|")
    for task, rate in results["simulation_steps_per_s"].items():
        projection = results["projection"].get(task)
        if projection is None:
            lines.append(f"| {task} | {rate:.0f} | | | |")
            continue
        lines.append(f"| {task} | {rate:.0f} | {projection['config_seed_runs']} | "
                     f"{projection['config_on_2_cores_hours']:.0f} | "
                     f"{projection['config_on_16_cores_hours']:.0f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few seconds' smoke check")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median; default 5)")
    p.add_argument("--sim-steps", type=int, default=2000,
                   help="env steps per simulation repeat (default 2000)")
    p.add_argument("--updates", type=int, default=10,
                   help="updates per timed update repeat (default 10)")
    p.add_argument("--cycles", type=int, default=3,
                   help="timed cycles of the real-member check (default 3)")
    p.add_argument("--seeds", type=int, default=10, help="seeds per cell (default 10)")
    p.add_argument("--cells", type=int, default=9,
                   help="(method, c) cells per task (default 9: ddpg_her, and reengage_her "
                   "and reengage_her_normalized at 4 weights each, as config/paper.yaml)")
    p.add_argument("--no-compile", action="store_true",
                   help="the learner without torch.compile (default: compiled, as trained)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load_before = os.getloadavg()
    started = time.time()
    results = measure(args)
    document = {
        "benchmark": "robotics_speed", "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "quick": args.quick, "threads": args.threads, "repeats": args.repeats,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "paper_config": {**PAPER, "epochs": PAPER_EPOCHS},
        "assumptions": [
            "one seed = one core: simulation (rollouts and tests, epoch 0's test included) + "
            "acting (a forward pass per env step of a member's 38 envs) + updates at "
            "19 x 256; storing episodes, feeding the normaliser and HER sampling are not "
            "modelled (cycle_check compares a real cycle)",
            "k cores: the config's seed-runs as independent one-core jobs, perfectly "
            "parallel (no hyper-threading, memory bandwidth or process start-up counted)",
            "seed on 16 cores: its simulation spread over 16 env processes (async), its "
            "updates and acting on one core",
            "the block's updates use its own widths (61, 7, 20); its simulation rate is "
            "HandManipulateBlockRotateXYZ-v1's",
        ],
        "seeds_per_cell": args.seeds, "cells_per_task": args.cells,
        "elapsed_s": time.time() - started,
        **results,
    }
    print(table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
