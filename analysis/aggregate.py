"""Every `progress.csv` of one experiment -> one tidy table (parquet).

One row per (experiment, env, dim, method, c, label, batch_size, lr, seed, step) with the
logged metrics, plus the seed's facts from its `run.json` (status, divergence step, wall
time, population) repeated on each of its rows, so later stages read one file only.

This module is also where the analysis CLIs share their conventions: a usage error is one
line on stderr with exit status 2, and every output is written to a temporary file beside
its destination and moved into place (`os.replace`), so an interrupted stage never leaves a
half-written table that a workflow would take for finished.

Usage:
    python -m reengage.analysis.aggregate --runs results/runs/EXP --experiment EXP \
        --out results/tables/EXP/curves.parquet
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reengage.analysis.labels import (
    EPOCH,
    PROGRESS_COLUMNS,
    RUN_COLUMNS,
    RUN_KEYS,
    STATUSES,
    VARIANT_ATTRIBUTES,
    variant_name,
)

SUPPORTED_FORMAT_VERSIONS = (1,)
USAGE_ERROR = 2
# A seed still training (or killed while it trained) says `running`; it has no progress.csv
# yet, only progress.partial.csv, and is skipped (reengage/progress.py states the rule).
RUNNING = "running"


class AnalysisError(ValueError):
    """Input the analysis cannot use; the CLIs print it as one line and exit with status 2."""


# -- CLI conventions shared by every stage -------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are a single line (the full usage is one --help away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE_ERROR, f"{self.prog}: {message} (see --help)\n")


def run_cli(prog: str, body: Callable[[], None]) -> int:
    """Run a stage's body; bad input becomes one line on stderr and exit status 2."""
    try:
        body()
    except AnalysisError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return USAGE_ERROR
    return 0


def require_suffix(path: Path, suffixes: Sequence[str], option: str) -> None:
    if path.suffix.lower() not in suffixes:
        raise AnalysisError(f"{option} {path}: expected a {' or '.join(suffixes)} file")


def require_file(path: Path, option: str) -> None:
    if not path.is_file():
        raise AnalysisError(f"{option} {path}: no such file")


def atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file in `path`'s directory, then move it into place.

    The temporary file is in the destination's directory so `os.replace` is atomic (same
    file system); it is removed if `write` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_csv(table: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, table.to_csv(index=False, lineterminator="\n"))


def write_parquet(table: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, lambda tmp: table.to_parquet(tmp, index=False))


def read_checked_csv(path: Path, option: str, columns: Sequence[str]) -> pd.DataFrame:
    """A stage's CSV input (the file `option` names), refused in one line when it is
    missing, unreadable or lacks one of `columns`."""
    require_file(Path(path), option)
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise AnalysisError(f"{option} {path}: not a readable CSV ({error})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise AnalysisError(f"{option} {path}: missing columns {', '.join(missing)}")
    return table


def add_table_arguments(parser: argparse.ArgumentParser, out_help: str) -> None:
    """The --curves, --selection and --out options of the figure stages."""
    parser.add_argument("--curves", required=True, type=Path,
                        help="tidy table from reengage.analysis.aggregate (.parquet)")
    parser.add_argument("--selection", required=True, type=Path,
                        help="selection.csv from reengage.analysis.select")
    parser.add_argument("--out", required=True, type=Path, help=out_help)


def read_curves(path: Path) -> pd.DataFrame:
    """The tidy table written by `aggregate`, with its key columns checked."""
    require_file(Path(path), "--curves")
    try:
        curves = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise AnalysisError(f"--curves {path}: not a readable parquet file ({error})") from None
    missing = [c for c in [*RUN_KEYS, "step", "status"] if c not in curves.columns]
    if missing:
        raise AnalysisError(
            f"--curves {path}: missing columns {', '.join(missing)} (was it written by "
            "reengage.analysis.aggregate?)"
        )
    return curves


# -- reading one run -------------------------------------------------------------------------
def _load_run_json(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise AnalysisError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(record, dict):
        raise AnalysisError(f"{path}: expected a JSON object")
    version = record.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise AnalysisError(
            f"{path}: unknown format_version {version!r} (this analysis reads "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); update reengage.analysis"
        )
    config = record.get("config")
    required = ("env", "dim", "method", "batch_size", "lr")
    if not isinstance(config, dict) or any(k not in config for k in required):
        raise AnalysisError(f"{path}: config must hold {', '.join(required)}")
    for key in ("status", "seed", "label"):
        if key not in record:
            raise AnalysisError(f"{path}: missing key {key!r}")
    if record["status"] not in (*STATUSES, RUNNING):
        raise AnalysisError(
            f"{path}: unknown status {record['status']!r} (expected "
            f"{', '.join((*STATUSES, RUNNING))})"
        )
    return record


def _load_progress(path: Path) -> pd.DataFrame:
    try:
        progress = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise AnalysisError(f"{path}: not a readable CSV ({error})") from None
    if "step" not in progress.columns:
        raise AnalysisError(f"{path}: no 'step' column")
    if progress["step"].isna().any():
        raise AnalysisError(f"{path}: a row has no step")
    # Columns a method does not log stay missing rather than absent, so every run has the
    # same columns; columns a new method adds are kept.
    for column in PROGRESS_COLUMNS:
        if column not in progress.columns:
            progress[column] = np.nan
    extra = [c for c in progress.columns if c not in PROGRESS_COLUMNS]
    progress = progress[PROGRESS_COLUMNS + extra]
    for column in progress.columns:
        if column != "step":
            progress[column] = pd.to_numeric(progress[column], errors="coerce").astype(float)
    progress["step"] = progress["step"].astype(np.int64)
    if progress["step"].duplicated().any():
        raise AnalysisError(f"{path}: a step appears twice")
    return progress.sort_values("step", ignore_index=True)


def _run_rows(run_json: Path, runs_root: Path, experiment: str) -> pd.DataFrame | None:
    record = _load_run_json(run_json)
    if record["status"] == RUNNING:
        print(f"note: {run_json.parent} is still training (or was killed); skipped",
              file=sys.stderr)
        return None
    progress_path = run_json.with_name("progress.csv")
    if not progress_path.is_file():
        if record["status"] == "interrupted":
            # An interrupted population writes run.json only; nothing to plot yet.
            print(f"note: {run_json.parent} was interrupted before writing progress.csv; "
                  "skipped", file=sys.stderr)
            return None
        raise AnalysisError(f"{run_json.parent}: run.json without progress.csv")
    progress = _load_progress(progress_path)
    config = record["config"]
    c = config.get("c")
    population = record.get("population") or [record["seed"]]
    facts = {
        "experiment": experiment,
        "env": str(config["env"]),
        "dim": int(config["dim"]),
        "variant": variant_name(str(config["method"]), c),
        "batch_size": int(config["batch_size"]),
        "lr": float(config["lr"]),
        "seed": int(record["seed"]),
        "method": str(config["method"]),
        "c": float("nan") if c is None else float(c),
        "label": str(record["label"]),
        "status": record["status"],
        "diverged_at_step": record.get("diverged_at_step"),
        "diverged_reason": record.get("diverged_reason"),
        "run_wall_time_s": float(record.get("wall_time_s", float("nan"))),
        # A population (all seeds trained in one process) is identified by its seed list.
        "population": ",".join(str(s) for s in sorted(population)),
        "population_size": len(population),
        "config_steps": config.get("steps"),
        "eval_every": config.get("eval_every"),
        "eval_episodes": config.get("eval_episodes"),
        "run_dir": run_json.parent.relative_to(runs_root).as_posix(),
        # A policy that never trains (the greedy agent) is drawn as a level, not a curve.
        "fixed_policy": bool(record.get("fixed_policy", False)),
    }
    for key, value in facts.items():
        progress[key] = value
    return progress


def aggregate_runs(runs_root: Path, experiment: str) -> pd.DataFrame:
    """Read every `*/seed<k>/run.json` (and its `progress.csv`) under `runs_root`.

    Raises AnalysisError when nothing is found, a run.json has an unknown format_version or
    is malformed, or two runs claim the same (cell, seed).
    """
    runs_root = Path(runs_root)
    if not runs_root.is_dir():
        raise AnalysisError(f"--runs {runs_root}: not a directory")
    # Hidden folders (`.checkpoints/`) hold a training job's own state, such as the finished
    # seeds a resumable runner keeps; they are not results.
    found = sorted(path for path in runs_root.rglob("run.json")
                   if not any(part.startswith(".") for part in
                              path.relative_to(runs_root).parts))
    if not found:
        raise AnalysisError(
            f"no run found under {runs_root} (expected .../seed<k>/run.json beside progress.csv)"
        )
    parts = [rows for path in found if (rows := _run_rows(path, runs_root, experiment))
             is not None]
    if not parts:
        raise AnalysisError(f"no run under {runs_root} has a progress.csv yet")
    table = pd.concat(parts, ignore_index=True)
    seeds = table.drop_duplicates(["run_dir"])
    clash = seeds[seeds.duplicated(RUN_KEYS, keep=False)]
    if not clash.empty:
        raise AnalysisError(
            "two runs claim the same cell and seed: " + ", ".join(clash["run_dir"].head(4))
        )
    table["diverged_at_step"] = table["diverged_at_step"].astype("Int64")
    if EPOCH in table.columns:  # a whole number, kept beside the step (figures use it)
        table[EPOCH] = table[EPOCH].round().astype("Int64")
    for column in ("config_steps", "eval_every", "eval_episodes"):
        table[column] = table[column].astype("Int64")
    table["status"] = table["status"].astype(str)
    metric_columns = [c for c in table.columns
                      if c not in [*RUN_KEYS, *VARIANT_ATTRIBUTES, *RUN_COLUMNS]]
    ordered = [*RUN_KEYS[:4], *VARIANT_ATTRIBUTES, *RUN_KEYS[4:], *metric_columns,
               *RUN_COLUMNS]
    table = table[ordered]
    return table.sort_values([*RUN_KEYS, "step"], ignore_index=True)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m reengage.analysis.aggregate",
        description="Collect every progress.csv + run.json of one experiment into one tidy "
        "parquet table: one row per (experiment, env, dim, method, c, label, batch_size, lr, "
        "seed, step), with the seed's status, divergence step and wall time on each row.",
        epilog="example: python -m reengage.analysis.aggregate --runs results/runs/cs "
        "--experiment cs --out results/tables/cs/curves.parquet",
    )
    parser.add_argument("--runs", required=True, type=Path,
                        help="directory holding {env}-d{dim}/{method}/b{batch}_lr{lr}/seed<k>/")
    parser.add_argument("--experiment", required=True,
                        help="experiment name written in the 'experiment' column")
    parser.add_argument("--out", required=True, type=Path, help="output .parquet file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> None:
        require_suffix(args.out, [".parquet"], "--out")
        if not args.experiment.strip():
            raise AnalysisError("--experiment: must not be empty")
        table = aggregate_runs(args.runs, args.experiment)
        write_parquet(table, args.out)
        seeds = table.drop_duplicates("run_dir")
        print(f"wrote {len(table)} rows ({len(seeds)} seeds, "
              f"{(seeds['status'] == 'diverged').sum()} diverged) to {args.out}",
              file=sys.stderr)

    return run_cli(parser.prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
