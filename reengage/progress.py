"""What a training process shows while it runs, and the rule that tells a running seed from a
finished one.

* While a seed trains, its `run.json` says `status: running`, and `progress.partial.csv`
  beside it holds every evaluation row so far (the columns of progress.csv), rewritten
  atomically after each evaluation, so each row is readable as soon as it is measured.
* A seed is finished when its `run.json` says `finished` or `diverged`. Only then does
  `progress.csv` exist: it is written (with `policy.pt`) before that `run.json`, and the
  partial file is removed after it.
* A seed stopped by SIGTERM/SIGINT says `interrupted`; one killed outright still says
  `running`. Either keeps its partial file and has no `progress.csv`, the file a workflow
  engine waits for, so no engine or reader takes it for finished; re-running the same
  command resumes it (from the population's checkpoint).

Without a progress bar (`--quiet`) a process prints one short line per evaluation to stderr,
so the log of a workflow job shows how far it got. Listeners (Weights & Biases,
reengage/tracking.py) are told of every seed's start, evaluations and end as they happen.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .paths import member_dir

PROGRESS_COLUMNS = [
    "step", "success_rate", "mean_return", "critic_loss", "goal_grad_loss", "actor_loss",
    "q_mean", "wall_time_s", "updates_per_s",
]
PROGRESS_NAME = "progress.csv"
PARTIAL_NAME = "progress.partial.csv"
RECORD_NAME = "run.json"
POLICY_NAME = "policy.pt"
RUNNING = "running"
DONE_STATUSES = ("finished", "diverged")
"""run.json statuses of a seed whose progress.csv (and policy.pt) are complete."""

Row = dict[str, float]


def atomic_write_bytes(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write(f)` into a hidden temporary file beside `path`, fsync, rename: a reader sees
    the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def progress_csv(rows: Sequence[Row], columns: Sequence[str] = PROGRESS_COLUMNS) -> str:
    """The rows as CSV with `columns` (a loop may log more than PROGRESS_COLUMNS, e.g. the
    robotics loop's `epoch`); a NaN is an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else repr(v)
                         for k, v in row.items()})
    return buffer.getvalue()


class ProgressListener:
    """Told of a training process's seeds as they go; override what you need."""

    def seed_started(self, record: dict[str, Any], rows: list[Row]) -> None:
        """A seed starts, or resumes with `rows` restored from its checkpoint."""

    def evaluated(self, seed: int, row: Row) -> None:
        """A new evaluation row of `seed`."""

    def seed_ended(self, record: dict[str, Any]) -> None:
        """The seed's final run.json (finished, diverged or interrupted) was written."""

    def close(self) -> None:
        """The process stops listening (also after an error)."""


# A method with a loop of its own is called as `runner(cfg, out, progress)`; the listeners
# of the training call reach it here rather than through that signature, which plugins
# implement.
_LISTENERS: ContextVar[tuple[ProgressListener, ...]] = ContextVar("listeners", default=())


@contextmanager
def listening(listeners: Sequence[ProgressListener]) -> Iterator[None]:
    token = _LISTENERS.set(tuple(listeners))
    try:
        yield
    finally:
        _LISTENERS.reset(token)


def active_listeners() -> tuple[ProgressListener, ...]:
    """The listeners of the `reengage.run.train` call in progress (none outside one)."""
    return _LISTENERS.get()


class LiveProgress:
    """One process's live outputs for its seeds: run.json and the partial file per seed,
    a line per evaluation when `lines`, and the listeners. A loop that logs more columns
    sets `columns` and may say more per evaluation by overriding `evaluation_text`."""

    columns: Sequence[str] = PROGRESS_COLUMNS

    def __init__(self, out: Path, label: str, steps: int, lines: bool,
                 listeners: Sequence[ProgressListener] = ()):
        self.out, self.label, self.steps, self.lines = out, label, steps, lines
        self.listeners = list(listeners)

    def _say(self, text: str) -> None:
        if self.lines:
            print(f"{self.label}: {text}", file=sys.stderr, flush=True)

    def started(self, records: list[dict[str, Any]], rows: dict[int, list[Row]]) -> None:
        """The seeds of `records` (status running) start, or resume with `rows`."""
        for record in records:
            seed = record["seed"]
            directory = member_dir(self.out, seed)
            # No finished-looking file may stand beside a running seed (a --force re-run).
            for name in (PROGRESS_NAME, POLICY_NAME):
                (directory / name).unlink(missing_ok=True)
            if rows.get(seed):
                atomic_write(directory / PARTIAL_NAME, progress_csv(rows[seed], self.columns))
            else:
                (directory / PARTIAL_NAME).unlink(missing_ok=True)
            atomic_write(directory / RECORD_NAME, json.dumps(record, indent=2) + "\n")
            for listener in self.listeners:
                listener.seed_started(record, list(rows.get(seed, [])))
        step = records[0]["step"] if records else 0
        self._say(f"resumed at step {step}/{self.steps}" if step else
                  f"started, {self.steps} steps")

    def evaluated(self, step: int, rows: dict[int, list[Row]]) -> None:
        """Every seed of `rows` was just evaluated at `step` (its last row)."""
        for seed, seed_rows in rows.items():
            atomic_write(member_dir(self.out, seed) / PARTIAL_NAME,
                         progress_csv(seed_rows, self.columns))
            for listener in self.listeners:
                listener.evaluated(seed, seed_rows[-1])
        self._say(self.evaluation_text(step, [r[-1] for r in rows.values()]))

    def evaluation_text(self, step: int, last: list[Row]) -> str:
        """The line printed for an evaluation at `step`, from each seed's `last` row."""
        return evaluation_line(step, self.steps, last)

    def ended(self, records: list[dict[str, Any]], rows: dict[int, list[Row]]) -> None:
        """Final run.json of each seed; progress.csv first unless it was interrupted."""
        for record in records:
            directory = member_dir(self.out, record["seed"])
            done = record["status"] in DONE_STATUSES
            if done:
                atomic_write(directory / PROGRESS_NAME,
                             progress_csv(rows[record["seed"]], self.columns))
            atomic_write(directory / RECORD_NAME, json.dumps(record, indent=2) + "\n")
            if done:
                (directory / PARTIAL_NAME).unlink(missing_ok=True)
            for listener in self.listeners:
                listener.seed_ended(record)

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()


def evaluation_line(step: int, steps: int, rows: list[Row]) -> str:
    """`step 2000/20000: success 0.42 [0.30, 0.56], return -6.81, 398 updates/s`: the mean
    over the seeds evaluated (their range when there are several), diverged seeds counted
    apart."""
    success = np.array([r["success_rate"] for r in rows], dtype=float)
    returns = np.array([r["mean_return"] for r in rows], dtype=float)
    alive = ~np.isnan(success)
    parts = [f"step {step}/{steps}"]
    if alive.any():
        text = f"success {success[alive].mean():.2f}"
        if alive.sum() > 1:
            text += f" [{success[alive].min():.2f}, {success[alive].max():.2f}]"
        parts += [text, f"return {returns[alive].mean():.2f}"]
    if (~alive).any():
        parts.append(f"{int((~alive).sum())} diverged")
    if rows and rows[0]["updates_per_s"]:
        parts.append(f"{rows[0]['updates_per_s']:.0f} updates/s")
    return parts[0] + ": " + ", ".join(parts[1:]) if len(parts) > 1 else parts[0]
