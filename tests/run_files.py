"""What the training tests read back from a run's folder, and how they interrupt a run:
helpers shared by the device-loop test files (imported by name: pytest puts this folder on
the path)."""

import os
import signal
from pathlib import Path

import pandas as pd
import torch

WALL_CLOCK = ["wall_time_s", "updates_per_s"]
"""progress.csv's columns that differ between two runs of the same computation."""


def progress(out: Path, seed: int) -> pd.DataFrame:
    """Seed `seed`'s progress.csv under `out`, without the wall-clock columns."""
    return pd.read_csv(out / f"seed{seed}" / "progress.csv").drop(columns=WALL_CLOCK)


def policy_weights(out: Path, seed: int) -> dict[str, torch.Tensor]:
    """The weights in seed `seed`'s policy.pt under `out`."""
    return torch.load(out / f"seed{seed}" / "policy.pt")["weights"]


def sigterm_at(step: int):
    """A step hook that sends this process SIGTERM after step `step`, as a scheduler's time
    limit would."""
    def hook(now: int, learner) -> None:
        if now == step:
            os.kill(os.getpid(), signal.SIGTERM)
    return hook
