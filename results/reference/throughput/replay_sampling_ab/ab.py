"""Alternated A/B of `EpisodeReplay.sample`: the three-index gathers of commit 9a01cd7
against the flat-row gathers of the working tree, on the same stored data, sides taking
turns for `--rounds` rounds. Run from the repository root:

    python results/reference/throughput/replay_sampling_ab/ab.py > \
        results/reference/throughput/replay_sampling_ab/ab.txt
"""

import argparse
import copy
import runpy
import statistics
import subprocess
import types
from pathlib import Path

import numpy as np

from reengage.allocator import retain_freed_memory

bench = runpy.run_path(str(Path(__file__).resolve().parents[4] / "benchmarks"
                           / "replay_sampling.py"))
filled_replay, sample_microseconds = bench["filled_replay"], bench["sample_microseconds"]

parser = argparse.ArgumentParser()
parser.add_argument("--baseline", default="9a01cd7")
parser.add_argument("--fills", default="2000,400000")
parser.add_argument("--rounds", type=int, default=5)
args = parser.parse_args()
retain_freed_memory()

source = subprocess.run(["git", "show", f"{args.baseline}:agents/replay.py"],
                        capture_output=True, text=True, check=True).stdout
baseline = types.ModuleType("baseline_replay")
exec(compile(source, "baseline_replay", "exec"), baseline.__dict__)

fills = [int(x) for x in args.fills.split(",")]
for fill in fills:
    new = filled_replay(10, 20, fill, capacity=max(fills))
    old = baseline.EpisodeReplay(10, max(fills), 50, 20, 20, 20, new.reward_fn,
                                 copy.deepcopy(new.rngs), her_k=4, achieved_in_obs=True)
    old.obs[...] = new.obs
    old.actions[...] = new.actions
    old.desired[...] = new.desired
    old.size, old.cursor = new.size, new.cursor
    a, b = old.sample(256), new.sample(256)  # same draws, so the same batch
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in vars(a)), "batches differ"
    times = {"baseline": [], "flat rows": []}
    for _ in range(args.rounds):
        times["baseline"].append(sample_microseconds(old, 256, 200))
        times["flat rows"].append(sample_microseconds(new, 256, 200))
    for side, t in times.items():
        print(f"fill {fill:>6}  {side:9s}  median {statistics.median(t):6.0f} µs  "
              f"rounds {[round(x) for x in t]}")
