"""Optional Weights & Biases logging, live: every seed becomes one wandb run, grouped by grid
cell, opened when the seed starts and given each evaluation row (the metrics of
progress.csv) as it is measured. Offline by default: no account, no network; `online`
needs `wandb login`.

A resumed population opens a new run per seed and logs the rows restored from its
checkpoint first, so each run holds its seed's whole history; the runs of the interrupted
process stay behind with `status: interrupted` in their summary (or none, if killed).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .progress import ProgressListener, Row

MODES = ("offline", "online", "disabled")


class WandbTracker(ProgressListener):
    """Logs a training process's seeds to wandb as they train (reengage/progress.py)."""

    def __init__(self, out: Path, project: str, group: str, mode: str = "offline"):
        if mode not in MODES:
            raise ValueError(f"wandb mode must be one of {', '.join(MODES)} (got {mode!r})")
        self.project, self.group, self.mode = project, group, mode
        # Beside the runs unless WANDB_DIR says otherwise; a hidden folder, which the
        # analysis does not read.
        self.directory = Path(os.environ.get("WANDB_DIR", out / ".wandb"))
        self.runs: dict[int, Any] = {}

    def seed_started(self, record: dict[str, Any], rows: list[Row]) -> None:
        import wandb

        self.directory.mkdir(parents=True, exist_ok=True)
        seed = record["seed"]
        run = wandb.init(project=self.project, group=self.group, name=f"{self.group}/seed{seed}",
                         config={**record["config"], "seed": seed}, dir=str(self.directory),
                         mode=self.mode, reinit="create_new")
        self.runs[seed] = run
        for row in rows:
            _log(run, row)

    def evaluated(self, seed: int, row: Row) -> None:
        _log(self.runs[seed], row)

    def seed_ended(self, record: dict[str, Any]) -> None:
        run = self.runs.pop(record["seed"], None)
        if run is not None:
            run.summary["status"] = record["status"]
            run.finish(exit_code=0 if record["status"] != "interrupted" else 1)

    def close(self) -> None:
        """Runs still open here ended with an error: mark them failed."""
        for run in self.runs.values():
            run.finish(exit_code=1)
        self.runs.clear()


def _log(run: Any, row: Row) -> None:
    run.log({k: v for k, v in row.items() if k != "step" and not math.isnan(v)},
            step=int(row["step"]))
