"""Optional Weights & Biases logging: every seed becomes one wandb run, grouped by grid cell,
with the same metrics as its progress.csv. Offline by default: no account, no network."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from .paths import member_dir


def log_population(out: Path, records: list[dict[str, Any]], project: str, group: str,
                   mode: str = "offline") -> list[Path]:
    """Replay each member's progress.csv into its own wandb run; returns the run folders."""
    import wandb

    directory = Path(os.environ.get("WANDB_DIR", out / ".wandb"))
    directory.mkdir(parents=True, exist_ok=True)
    folders = []
    for record in records:
        seed = record["seed"]
        run = wandb.init(project=project, group=group, name=f"{group}/seed{seed}",
                         config={**record["config"], "seed": seed}, dir=str(directory),
                         mode=mode, reinit="create_new")
        with open(member_dir(out, seed) / "progress.csv") as f:
            for row in csv.DictReader(f):
                values = {k: float(v) for k, v in row.items() if v != "" and k != "step"}
                run.log({k: v for k, v in values.items() if not math.isnan(v)},
                        step=int(float(row["step"])))
        run.summary["status"] = record["status"]
        folders.append(Path(run.dir).parent)
        run.finish()
    return folders
