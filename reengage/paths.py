"""Where a population's files live (kept free of heavy imports: the CLI checks them first)."""

from __future__ import annotations

from pathlib import Path


def member_dir(out: Path, seed: int) -> Path:
    return out / f"seed{seed}"


def checkpoint_path(out: Path, seeds: list[int]) -> Path:
    """Outside every declared output, and named by population: several populations (jobs)
    of one grid cell share `out`."""
    return out / ".checkpoints" / f"seeds-{'_'.join(map(str, seeds))}.pt"
