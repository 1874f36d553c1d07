"""Time of one replay batch for a population: `EpisodeReplay.sample` on ContinuousSeek
d = 20 (10 members, batch 256, HER k = 4, episodes of 50 steps), at several fill levels.

A full paper-size buffer (400k steps per member) is the regime of long runs: its rows no
longer fit in any cache, so gathers pay for memory latency. The allocator setting of
`reengage.run.train` is applied, so fresh arrays cost what they cost in training.

    python benchmarks/replay_sampling.py [--fills 2000,400000] [--repeats 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from reengage.agents.replay import EpisodeReplay
from reengage.allocator import retain_freed_memory
from reengage.envs.continuous_seek import continuous_seek_reward

EPISODE_STEPS = 50


def filled_replay(members: int, dim: int, steps: int, capacity: int) -> EpisodeReplay:
    """A ContinuousSeek-shaped replay holding `steps` random transitions per member."""
    replay = EpisodeReplay(
        members, capacity, EPISODE_STEPS, dim, dim, dim, continuous_seek_reward,
        [np.random.default_rng(m) for m in range(members)], her_k=4, achieved_in_obs=True,
    )
    data = np.random.default_rng(12345)
    for _ in range(steps // EPISODE_STEPS):
        start = data.uniform(-1, 1, (members, dim)).astype(np.float32)
        replay.start_episode(start, start, data.uniform(-1, 1, (members, dim)))
        for _ in range(EPISODE_STEPS):
            position = data.uniform(-1, 1, (members, dim)).astype(np.float32)
            replay.add_step(data.uniform(-1, 1, (members, dim)), position, position)
    return replay


def sample_microseconds(replay: EpisodeReplay, batch: int, calls: int) -> float:
    """Mean time of one `sample(batch)` over `calls` calls, in microseconds."""
    start = time.perf_counter()
    for _ in range(calls):
        replay.sample(batch)
    return (time.perf_counter() - start) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", default="2000,400000",
                        help="comma-separated steps stored per member (default 2000,400000)")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--dim", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--calls", type=int, default=200, help="sample calls per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the records here")
    args = parser.parse_args(argv)
    fills = [int(x) for x in args.fills.split(",")]
    if any(f < EPISODE_STEPS for f in fills):
        parser.error(f"every fill needs at least one episode ({EPISODE_STEPS} steps)")
    retain_freed_memory()
    records = []
    for fill in fills:
        replay = filled_replay(args.members, args.dim, fill, capacity=max(fills))
        sample_microseconds(replay, args.batch, 20)  # warm caches and the allocator
        times = [sample_microseconds(replay, args.batch, args.calls)
                 for _ in range(args.repeats)]
        record = {"fill_steps": fill, "members": args.members, "batch": args.batch,
                  "sample_us_median": statistics.median(times),
                  "sample_us_min": min(times), "sample_us_max": max(times),
                  "repeats": args.repeats}
        records.append(record)
        print(f"fill {fill:>7} steps/member: {record['sample_us_median']:7.0f} µs per batch "
              f"(min {record['sample_us_min']:.0f}, max {record['sample_us_max']:.0f})",
              flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
