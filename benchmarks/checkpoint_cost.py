"""Checkpoint size and write/read time of a 10-seed ContinuousSeek d=20 ReenGAGE population
whose replay holds 100k steps per seed (random contents: the cost depends on the bytes).

    python benchmarks/checkpoint_cost.py [--steps 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from reengage.checkpoint import load_checkpoint
from reengage.config import TrainConfig
from reengage.run import PopulationRun


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000, help="replay steps per seed")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = TrainConfig(env="ContinuousSeek", dim=20, method="reengage_her", c=0.2,
                      seeds=list(range(10)), steps=400_000, threads=1)
    out = Path(tempfile.mkdtemp())
    run = PopulationRun(cfg, out, progress=False)
    replay, rng = run.replay, np.random.default_rng(0)
    episodes = args.steps // replay.T
    for name in ("obs", "achieved", "actions", "desired"):
        stored = getattr(replay, name)[:, :episodes]
        stored[...] = rng.standard_normal(stored.shape, dtype=np.float32)
    replay.size = replay.cursor = episodes
    run.step = args.steps
    saves, loads, size = [], [], 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        size = run.save(out / "checkpoint.pt")
        saves.append(time.perf_counter() - start)
        start = time.perf_counter()
        load_checkpoint(out / "checkpoint.pt", cfg.to_dict())
        loads.append(time.perf_counter() - start)
    print(f"checkpoint {size / 2**20:.1f} MiB; write median {statistics.median(saves):.2f} s "
          f"(min {min(saves):.2f}, max {max(saves):.2f}); read median "
          f"{statistics.median(loads):.2f} s over {args.repeats} repeats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
