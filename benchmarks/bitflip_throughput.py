"""DQN+ReenGAGE's cost over DQN+HER on BitFlip(d), measured the way benchmarks/throughput.py
measures DDPG's: the real training loop (`reengage.run.train`) in a fresh subprocess per
measurement, contenders alternating within each repeat with the order rotating from one
repeat to the next, an untimed warm-up of uniformly random actions, then timed env steps,
read from progress.csv's `wall_time_s`, with the updates of the bit_flip experiment: 40 at
the end of every cycle of 16 episodes (`--cycle-episodes 0` makes it one per env step, which
isolates the cost of an update). Ratios are taken
repeat by repeat against DQN+HER at the same population (the two ran side by side), and
medians over repeats are reported beside the paper's end-to-end +34 … +60 % for DDPG
(docs/paper.md §6).

    python benchmarks/bitflip_throughput.py --json results/benchmarks/bitflip_throughput.json
    python benchmarks/bitflip_throughput.py --quick     # a smoke check, about 2 minutes

The settings are config/paper.yaml's `bit_flip` (d = 40, batch 128, one hidden layer of 256,
c = 1, the networks seeing (bits, goal)). See README.md here.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reengage.analysis.runtime import PAPER_RATIO_RANGE

BASELINE = "dqn_her"
CONTENDERS = ("dqn_her", "dqn_reengage_her_t0", "dqn_reengage_her_t05",
              "dqn_reengage_her_both_t05", "dqn_reengage_her_boltzmann_t05")
DEFAULT_CONTENDERS = ("dqn_her", "dqn_reengage_her_t0", "dqn_reengage_her_t05")
CHILD_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Setting:
    """config/paper.yaml's bit_flip settings; the same for every contender."""

    dim: int = 40
    batch_size: int = 128
    hidden: tuple[int, ...] = (256,)
    c: float = 1.0
    lr: float = 1e-3
    gamma: float = 0.98
    tau: float = 0.00128
    warmup: int = 1000
    """Untimed random-action steps, rounded up to whole cycles (or episodes of d steps)."""
    threads: int = 2
    inputs: str = "obs_goal"
    cycle_episodes: int = 16
    """Updates come in cycles of this many episodes (0: one update per env step)."""
    cycle_updates: int = 40

    @property
    def block(self) -> int:
        """The warm-up in whole cycles (whole episodes without cycles): also the evaluation
        period, so that the timed window starts and ends on an evaluation row (one episode per
        member, a few act calls) and holds whole cycles."""
        unit = self.dim * max(1, self.cycle_episodes)
        return unit * math.ceil(self.warmup / unit)


def timed_steps(steps: int, setting: Setting) -> int:
    """Timed env steps of a population: `steps` rounded to whole blocks, at least one."""
    return setting.block * max(1, round(steps / setting.block))


def measure(task: dict[str, Any]) -> dict[str, Any]:
    """One contender's timed window, in this process (the child side of `_spawn`)."""
    import torch

    from reengage.config import TrainConfig, validate
    from reengage.run import train

    s = Setting(**{**task["setting"], "hidden": tuple(task["setting"]["hidden"])})
    torch.set_num_threads(s.threads)
    load = os.getloadavg()[0]
    method, population, steps = task["contender"], task["population"], task["steps"]
    cfg = TrainConfig(
        env="BitFlip", dim=s.dim, method=method,
        seeds=[1000 * task["repeat"] + m for m in range(population)],
        steps=s.block + steps, c=None if method == BASELINE else s.c,
        batch_size=s.batch_size, lr=s.lr, eval_every=s.block, eval_episodes=1,
        learning_starts=s.block, cycle_episodes=s.cycle_episodes,
        cycle_updates=s.cycle_updates, gamma=s.gamma, tau=s.tau, threads=s.threads, device="cpu",
        checkpoint_every=0, extra={"hidden": s.hidden}, inputs=s.inputs,
    )
    validate(cfg)
    with tempfile.TemporaryDirectory() as out:
        train(cfg, Path(out), progress=False)
        with open(Path(out) / f"seed{cfg.seeds[0]}" / "progress.csv") as f:
            wall = {int(row["step"]): float(row["wall_time_s"]) for row in csv.DictReader(f)}
    return {"seconds": wall[s.block + steps] - wall[s.block], "load_avg_1m": load,
            "torch_threads": torch.get_num_threads()}


def _spawn(task: dict[str, Any]) -> dict[str, Any]:
    threads = str(task["setting"]["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    child = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                            json.dumps(task)], capture_output=True, text=True, env=env,
                           timeout=CHILD_TIMEOUT_S)
    if child.returncode != 0:
        tail = "\n".join(child.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"measurement {task['contender']} failed:\n{tail}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def plan(contenders: list[str], populations: list[int], steps: int, repeats: int,
         setting: Setting) -> list[list[dict[str, Any]]]:
    """Tasks per repeat, contenders alternating; the order rotates by one each repeat."""
    base = [{"contender": c, "population": p, "steps": timed_steps(steps, setting)}
            for c in contenders for p in populations]
    return [[{**t, "repeat": r, "setting": asdict(setting)}
             for t in base[r % len(base):] + base[:r % len(base)]] for r in range(repeats)]


def aggregate(results: list[tuple[dict[str, Any], dict[str, Any]]],
              setting: Setting) -> list[dict[str, Any]]:
    """One record per (contender, population); cost ratios to DQN+HER repeat by repeat."""
    groups: dict[tuple[str, int], dict[int, tuple[dict, dict]]] = {}
    for task, result in results:
        groups.setdefault((task["contender"], task["population"]), {})[task["repeat"]] = (
            task, result)
    records = []
    for (contender, population), runs in groups.items():
        repeats = sorted(runs)
        steps = runs[repeats[0]][0]["steps"]
        seconds = [runs[r][1]["seconds"] for r in repeats]
        seed_steps = [population * steps / t for t in seconds]
        record: dict[str, Any] = {
            "contender": contender, "population": population, "repeats": len(repeats),
            **{k: v for k, v in asdict(setting).items() if k != "warmup"},
            "warmup_steps": setting.block, "timed_steps": steps,
            "seed_steps_per_s_median": statistics.median(seed_steps),
            "seed_steps_per_s_min": min(seed_steps), "seed_steps_per_s_max": max(seed_steps),
            "seed_steps_per_s_runs": seed_steps,
            "load_avg_1m_median": statistics.median(runs[r][1]["load_avg_1m"]
                                                    for r in repeats),
        }
        baseline = groups.get((BASELINE, population))
        if contender != BASELINE and baseline is not None and set(baseline) >= set(repeats):
            costs = [(runs[r][1]["seconds"] / steps)
                     / (baseline[r][1]["seconds"] / baseline[r][0]["steps"]) for r in repeats]
            record.update({"baseline_contender": BASELINE,
                           "cost_ratio_median": statistics.median(costs),
                           "cost_ratio_min": min(costs), "cost_ratio_max": max(costs),
                           "cost_ratio_runs": costs,
                           "paper_ratio_range": list(PAPER_RATIO_RANGE)})
        records.append(record)
    order = {c: i for i, c in enumerate(CONTENDERS)}
    return sorted(records, key=lambda x: (order[x["contender"]], x["population"]))


def format_table(records: list[dict[str, Any]]) -> str:
    lines = ["| contender | population | seed-steps/s (median, range) | × DQN+HER time per "
             "step (median, range) |", "|---|---|---|---|"]
    for r in records:
        cost = (f"{r['cost_ratio_median']:.2f} ({r['cost_ratio_min']:.2f}–"
                f"{r['cost_ratio_max']:.2f})" if "cost_ratio_median" in r else "1")
        lines.append(f"| {r['contender']} | {r['population']} | "
                     f"{r['seed_steps_per_s_median']:.0f} ({r['seed_steps_per_s_min']:.0f}–"
                     f"{r['seed_steps_per_s_max']:.0f}) | {cost} |")
    low, high = PAPER_RATIO_RANGE
    lines.append(f"\nPaper (DDPG, end to end, GPUs): ReenGAGE {low:.2f}–{high:.2f}× the time.")
    return "\n".join(lines)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown or BASELINE not in names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(CONTENDERS)}, {BASELINE} "
                                         f"included (got {text!r})")
    return names


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"a list of positive integers (got {text!r})")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=None, help="write the records to this file")
    p.add_argument("--contenders", type=_names, default=list(DEFAULT_CONTENDERS),
                   help=f"comma-separated, {BASELINE} included (default: "
                   f"{','.join(DEFAULT_CONTENDERS)})")
    p.add_argument("--populations", type=_ints, default=[1, 10],
                   help="seeds per population (default 1,10)")
    p.add_argument("--steps", type=int, default=4000,
                   help="timed env steps per population, rounded to whole warm-up blocks")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dim", type=int, default=Setting.dim)
    p.add_argument("--threads", type=int, default=Setting.threads)
    p.add_argument("--warmup", type=int, default=Setting.warmup)
    p.add_argument("--cycle-episodes", type=int, default=Setting.cycle_episodes,
                   help="episodes per cycle of updates (default 16; 0: one update per step)")
    p.add_argument("--cycle-updates", type=int, default=Setting.cycle_updates,
                   help="updates per cycle (default 40)")
    p.add_argument("--quick", action="store_true",
                   help="d = 8, populations 1,2, 200 warm-up and 200 timed steps (each rounded to "
                   "whole cycles), 2 repeats")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(json.loads(args.child))))
        return 0
    if args.quick:
        args.dim, args.populations, args.warmup, args.steps, args.repeats = 8, [1, 2], 200, \
            200, 2
    if min(args.steps, args.repeats, args.dim, args.threads, args.warmup) < 1:
        print("bitflip_throughput: --steps, --repeats, --dim, --threads and --warmup must be "
              ">= 1", file=sys.stderr)
        return 2
    if args.cycle_episodes < 0 or args.cycle_updates < 1:
        print("bitflip_throughput: --cycle-episodes must be >= 0 and --cycle-updates >= 1",
              file=sys.stderr)
        return 2
    setting = Setting(dim=args.dim, warmup=args.warmup, threads=args.threads,
                      cycle_episodes=args.cycle_episodes, cycle_updates=args.cycle_updates)
    results = []
    for tasks in plan(args.contenders, args.populations, args.steps, args.repeats, setting):
        for task in tasks:
            try:
                results.append((task, _spawn(task)))
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                print(f"bitflip_throughput: {error}", file=sys.stderr)
                return 1
            print(f"repeat {task['repeat']}: {task['contender']} x{task['population']}: "
                  f"{task['steps'] / results[-1][1]['seconds']:.0f} steps/s", file=sys.stderr)
    records = aggregate(results, setting)
    print(format_table(records))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
