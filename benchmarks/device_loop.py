"""Seed-steps/s of the device-resident loop (reengage.device) against the numpy loop
(reengage.run.train, PopulationRun), both as a user runs them, on one config.

Each run trains `3 × window` steps: the first window takes random actions (the loop's
warm-up, `learning_starts`), the second is the first with updates (compilation caches, and
on CUDA the graph capture, fall there), and the third is timed, from the `wall_time_s` of
the progress rows both loops write at its ends (so one evaluation of `--eval-episodes`
episodes falls inside it, as in benchmarks/throughput.py). seed-steps/s = population ×
window / that time; each env step of each seed carries one gradient step. Repeats alternate
the two loops; the table gives the median [min, max].

    python benchmarks/device_loop.py --threads 1                  # CPU, populations 1 and 10
    python benchmarks/device_loop.py --dim 2 --hidden 64,64 --batch-size 64   # loop-bound
    python benchmarks/device_loop.py --device cuda --populations 1,10,100 --window 1000
    python benchmarks/device_loop.py --env DriveSeek --dim 200 --method multi_reengage \
        --device cuda --window 200                  # goal sets at the paper's scale

On DriveSeek and NoisySeek `--dim` is n_max and the networks are the DeepSets actor-critic,
at the paper's widths unless `--deepsets WIDTH,EMBEDDING` says otherwise (64,16 is
config/reproduce.yaml's; `--hidden` does not apply).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from reengage.config import TrainConfig
from reengage.device import train_on_device
from reengage.registry import ENVS
from reengage.run import train

LOOPS = {"numpy": train, "device": train_on_device}


METHODS = {"ContinuousSeek": ("ddpg_her", "reengage_her"),
           "DriveSeek": ("ddpg", "multi_reengage"), "NoisySeek": ("ddpg", "multi_reengage")}
C = {"reengage_her": 0.2, "multi_reengage": 10.0}
"""The paper's middle c for ReenGAGE+HER; c = 10 (α = c/n_max) for Multi-ReenGAGE."""


def _config(args: argparse.Namespace, population: int) -> TrainConfig:
    window = args.window
    goal_sets = args.env != "ContinuousSeek"
    return TrainConfig(
        env=args.env, dim=args.dim, method=args.method, c=C.get(args.method),
        seeds=list(range(population)), steps=3 * window, learning_starts=window,
        eval_every=window, eval_episodes=args.eval_episodes, batch_size=args.batch_size,
        threads=args.threads, device=args.device, checkpoint_every=0,
        extra=({"networks": {"encoder_hidden": args.deepsets[0],
                             "head_hidden": args.deepsets[0], "embedding": args.deepsets[1]}}
               if goal_sets else {"hidden": args.hidden}))


def measure(loop: str, cfg: TrainConfig) -> float:
    """Seed-steps/s over the last window of one run of `loop`."""
    with tempfile.TemporaryDirectory() as out:
        LOOPS[loop](cfg, Path(out), False)
        rows = pd.read_csv(Path(out) / f"seed{cfg.seeds[0]}" / "progress.csv")
    window = rows["step"].iloc[-1] - rows["step"].iloc[-2]
    seconds = rows["wall_time_s"].iloc[-1] - rows["wall_time_s"].iloc[-2]
    return len(cfg.seeds) * window / seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--populations", default="1,10", help="comma-separated (default 1,10)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--window", type=int, default=None,
                   help="steps per window, a multiple of the episode length (default 100 on "
                   "ContinuousSeek, 200 on the goal-set tasks)")
    p.add_argument("--env", choices=tuple(METHODS), default="ContinuousSeek")
    p.add_argument("--dim", type=int, default=20, help="d, or n_max on a goal-set task")
    p.add_argument("--method", default=None,
                   help="ddpg_her (default) or reengage_her on ContinuousSeek; ddpg (default) "
                   "or multi_reengage on DriveSeek and NoisySeek")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden", type=lambda text: tuple(int(x) for x in text.split(",")),
                   default=(256, 256), help="hidden widths (default 256,256)")
    p.add_argument("--deepsets", type=lambda text: tuple(int(x) for x in text.split(",")),
                   default=(400, 20), help="goal sets: DeepSets hidden width and embedding "
                   "(default 400,20, the paper's)")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--loops", default="numpy,device", help="which loops (default both)")
    p.add_argument("--json", type=Path, default=None, help="write the records here")
    args = p.parse_args(argv)
    methods = METHODS[args.env]
    args.method = args.method or methods[0]
    if args.method not in methods:
        p.error(f"--method on {args.env}: one of {', '.join(methods)}")
    episode = ENVS[args.env].steps_at(args.dim)
    args.window = args.window or (100 if args.env == "ContinuousSeek" else 200)
    if args.window % episode:
        p.error(f"--window must be a multiple of {episode} (the episode length)")
    populations = [int(x) for x in args.populations.split(",")]
    loops = args.loops.split(",")
    torch.set_num_threads(args.threads)
    samples: dict[tuple[str, int], list[float]] = {}
    load_before = os.getloadavg()
    info = {"device": args.device, "threads": args.threads, "env": args.env, "dim": args.dim,
            "method": args.method, "batch_size": args.batch_size, "hidden": list(args.hidden),
            "deepsets": list(args.deepsets),
            "window": args.window,
            "eval_episodes": args.eval_episodes, "repeats": args.repeats,
            "torch": torch.__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "load_average_before": load_before,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    records: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for population in populations:
            cfg = _config(args, population)
            order = loops if repeat % 2 == 0 else loops[::-1]
            for loop in order:
                value = measure(loop, cfg)
                samples.setdefault((loop, population), []).append(value)
                print(f"repeat {repeat} {loop:6s} population {population:4d}: "
                      f"{value:9.1f} seed-steps/s", file=sys.stderr, flush=True)
                # Written after every sample: a run cut short by a time limit keeps what it
                # measured.
                records = _records(samples)
                info["load_average_after"] = os.getloadavg()
                if args.json is not None:
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps({"run_info": info, "records": records},
                                                    indent=2) + "\n")
    print(f"{'loop':8s} {'pop':>5s} {'seed-steps/s':>14s}  [min, max]")
    for r in sorted(records, key=lambda r: (r["population"], r["loop"])):
        print(f"{r['loop']:8s} {r['population']:5d} {r['seed_steps_per_s']:14.1f}  "
              f"[{r['min']:.1f}, {r['max']:.1f}]")
    for population in populations:
        if ("numpy", population) in samples and ("device", population) in samples:
            ratio = (statistics.median(samples[("device", population)])
                     / statistics.median(samples[("numpy", population)]))
            print(f"population {population}: device / numpy = {ratio:.2f}")
    print(f"load average before {load_before}, after {info.get('load_average_after')}")
    return 0


def _records(samples: dict[tuple[str, int], list[float]]) -> list[dict[str, Any]]:
    """Median [min, max] of each (loop, population)'s samples so far."""
    return [{"loop": loop, "population": population,
             "seed_steps_per_s": statistics.median(values), "min": min(values),
             "max": max(values), "samples": values}
            for (loop, population), values in samples.items()]


if __name__ == "__main__":
    raise SystemExit(main())
