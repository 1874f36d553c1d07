"""Runtime: wall time of each method beside the baseline's, and the paper's table (docs/paper.md
section 6), where ReenGAGE cost +34 % to +60 % end to end.

All seeds of a population train in one process and their run.json files carry the same
wall time, so the unit here is the population, not the seed: the mean +- sd is over the
populations of one (env, d, variant, batch size, population size, steps), pooled over
learning rates (the update's cost does not depend on it). Populations with an interrupted
member are left out (their clock stopped early). Wall time includes evaluation episodes,
which cost the same with and without ReenGAGE and so dilute the ratio; `updates_per_s`
(the training loop's own rate, from progress.csv) gives the undiluted slowdown.

Usage:
    python -m reengage.analysis.runtime --curves results/tables/EXP/curves.parquet \
        --out results/tables/EXP/runtime.csv [--markdown results/tables/EXP/runtime.md] \
        [--baseline ddpg_her]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from reengage.analysis.aggregate import (
    AnalysisError,
    OneLineParser,
    atomic_write_text,
    read_curves,
    require_suffix,
    run_cli,
    write_csv,
)
from reengage.analysis.labels import DEFAULT_BASELINE

# docs/paper.md section 6 (seconds, mean +- sd); row names in parentheses are our reading.
PAPER_RUNTIME = [
    ("ContinuousSeek d=20, batch 256", 2549, 203, 3591, 248),
    ("(robotics, HandReach)", 2533, 2, 3395, 208),
    ("(multi-goal)", 8931, 2037, 12467, 1354),
    ("(multi-goal)", 7385, 503, 11814, 1519),
]
PAPER_RATIO_RANGE = (1.34, 1.60)

SETTING_KEYS = ["experiment", "env", "dim", "batch_size", "population_size", "config_steps"]
RUNTIME_COLUMNS = [
    *SETTING_KEYS, "variant", "method", "c", "label", "n_populations", "n_seeds",
    "wall_time_mean_s", "wall_time_sd_s", "updates_per_s_mean", "baseline_method",
    "baseline_variant",
    "baseline_wall_time_mean_s", "ratio", "update_slowdown",
]


def population_times(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per population: its wall time and mean update rate while training."""
    keys = [*SETTING_KEYS, "variant", "lr", "population"]
    training = curves[curves["updates_per_s"] > 0]  # rows before learning starts log 0
    rates = training.groupby(keys, dropna=False)["updates_per_s"].mean()
    runs = curves.drop_duplicates([*keys, "seed"])
    populations = runs.groupby(keys, dropna=False).agg(
        method=("method", "first"), c=("c", "first"), label=("label", "first"),
        n_seeds=("seed", "size"), wall_time_s=("run_wall_time_s", "max"),
        interrupted=("status", lambda s: bool((s == "interrupted").any())),
    )
    populations["updates_per_s"] = rates.reindex(populations.index)
    return populations.reset_index()


def runtime_table(curves: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> pd.DataFrame:
    """Mean +- sd wall time per setting and variant, and the ratio to the baseline at the
    same setting (same env, d, batch size, population size and steps)."""
    populations = population_times(curves)
    populations = populations[~populations["interrupted"]]
    if populations.empty:
        raise AnalysisError("no finished population to time")
    keys = [*SETTING_KEYS, "variant"]
    table = populations.groupby(keys, dropna=False).agg(
        method=("method", "first"), c=("c", "first"), label=("label", "first"),
        n_populations=("population", "size"), n_seeds=("n_seeds", "sum"),
        wall_time_mean_s=("wall_time_s", "mean"), wall_time_sd_s=("wall_time_s", "std"),
        updates_per_s_mean=("updates_per_s", "mean"),
    ).reset_index()
    base = table[table["method"] == baseline][
        [*SETTING_KEYS, "variant", "wall_time_mean_s", "updates_per_s_mean"]
    ].rename(columns={"variant": "baseline_variant",
                      "wall_time_mean_s": "baseline_wall_time_mean_s",
                      "updates_per_s_mean": "baseline_updates_per_s"})
    if base.empty:
        print(f"note: no {baseline} population; no ratios", file=sys.stderr)
    table = table.merge(base, on=SETTING_KEYS, how="left")
    table["baseline_method"] = np.where(table["baseline_variant"].notna(), baseline, None)
    table["ratio"] = table["wall_time_mean_s"] / table["baseline_wall_time_mean_s"]
    table["update_slowdown"] = table["baseline_updates_per_s"] / table["updates_per_s_mean"]
    table = table.sort_values([*SETTING_KEYS, "method", "c"], na_position="first",
                              ignore_index=True)
    return table[RUNTIME_COLUMNS]


def _seconds(mean: float, sd: float) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.1f}" if np.isnan(sd) else f"{mean:.1f} ± {sd:.1f}"


def _ratio(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.2f}"


def runtime_markdown(table: pd.DataFrame) -> str:
    """Our measurements, then the paper's table with its ratios, as a markdown fragment."""
    lines = [
        "Wall time of one population (its seeds share one process and one clock; n counts "
        "populations). Ratio = mean wall time / the baseline's at the same env, d, batch, "
        "population size and steps; update slowdown = the baseline's training updates/s "
        "over the method's (evaluation time excluded).",
        "",
        "| env | d | batch | seeds/pop. | steps | method | wall time (s) | n | ratio "
        "| update slowdown |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        lines.append(
            f"| {row.env} | {row.dim} | {row.batch_size} | {row.population_size} | "
            f"{row.config_steps} | {row.label} | "
            f"{_seconds(row.wall_time_mean_s, row.wall_time_sd_s)} | {row.n_populations} | "
            f"{_ratio(row.ratio)} | {_ratio(row.update_slowdown)} |"
        )
    lines += [
        "",
        "Paper (docs/paper.md §6; GPUs for the toy tasks, 20 CPUs for robotics; one seed per "
        "process):",
        "",
        "| experiment | without (s) | with ReenGAGE (s) | ratio |",
        "|---|---|---|---|",
    ]
    for name, without, without_sd, with_, with_sd in PAPER_RUNTIME:
        lines.append(f"| {name} | {without} ± {without_sd} | {with_} ± {with_sd} | "
                     f"{with_ / without:.2f} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m reengage.analysis.runtime",
        description="Wall time per (env, d, method, c, batch size) over populations (all seeds "
        "of a population share one process and one wall time), the ratio to the baseline, "
        "and the paper's runtime table beside it.",
        epilog="example: python -m reengage.analysis.runtime --curves "
        "results/tables/cs/curves.parquet --out results/tables/cs/runtime.csv",
    )
    parser.add_argument("--curves", required=True, type=Path,
                        help="tidy table from reengage.analysis.aggregate (.parquet)")
    parser.add_argument("--out", required=True, type=Path, help="output runtime .csv")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="output markdown fragment (default: OUT with .md)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help=f"method the ratios divide by (default {DEFAULT_BASELINE})")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> None:
        require_suffix(args.out, [".csv"], "--out")
        markdown = args.markdown or args.out.with_suffix(".md")
        require_suffix(markdown, [".md"], "--markdown")
        table = runtime_table(read_curves(args.curves), args.baseline)
        write_csv(table, args.out)
        atomic_write_text(markdown, runtime_markdown(table))
        print(f"wrote {args.out} and {markdown}", file=sys.stderr)

    return run_cli(parser.prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
