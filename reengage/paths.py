"""Where a population's files live (kept free of heavy imports: the CLI checks them first)."""

from __future__ import annotations

import hashlib
from pathlib import Path

LONGEST_SEED_LABEL = 80
"""Characters of a checkpoint name's seed part; file systems refuse names over 255 bytes,
which a plain list of about 85 seeds already exceeds."""


def member_dir(out: Path, seed: int) -> Path:
    return out / f"seed{seed}"


def seed_label(seeds: list[int]) -> str:
    """The seeds as a file-name part: the plain list `0_1_5` while it is short (the names
    every existing checkpoint has), else runs in the CLI's range syntax `0-999_2000-2999`,
    else, when even those are long, the count, the first and last seed and a digest of the
    whole list. Different seed lists never share a label."""
    plain = "_".join(map(str, seeds))
    if len(plain) <= LONGEST_SEED_LABEL:
        return plain
    runs = "_".join(f"{first}-{last}" if last > first else str(first)
                    for first, last in _runs(seeds))
    if len(runs) <= LONGEST_SEED_LABEL:
        return runs  # shorter than the plain list, so it has a dash a plain label never has
    digest = hashlib.sha256(plain.encode()).hexdigest()[:16]
    return f"{len(seeds)}of{seeds[0]}..{seeds[-1]}.{digest}"


def _runs(seeds: list[int]) -> list[tuple[int, int]]:
    """Consecutive ascending runs of `seeds`, in order: [0, 1, 2, 7] -> [(0, 2), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for seed in seeds:
        if runs and seed == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seed)
        else:
            runs.append((seed, seed))
    return runs


def seeds_text(seeds: list[int]) -> str:
    """`seed 3`, `seeds 0,1` or `seeds 0-999`: the seeds for a log line, runs of three or
    more in the CLI's range syntax, so a large population's lines stay short."""
    parts = []
    for first, last in _runs(seeds):
        parts += ([f"{first}-{last}"] if last - first >= 2
                  else [str(s) for s in range(first, last + 1)])
    return ("seeds " if len(seeds) > 1 else "seed ") + ",".join(parts)


def checkpoint_path(out: Path, seeds: list[int]) -> Path:
    """Outside every declared output, and named by population: several populations (jobs)
    of one grid cell share `out`. The name stays short for any number of seeds."""
    return out / ".checkpoints" / f"seeds-{seed_label(seeds)}.pt"
