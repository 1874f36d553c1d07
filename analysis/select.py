"""Model selection as in the paper: for each (experiment, env, dim, method, c) the batch x lr
cell with the best area under the curve.

Score of one seed (`seed_scores`):
* the cell's step grid is every step any of its seeds logged; the seed's curve is its metric
  on that grid, with interior gaps bridged linearly (a point left out of the trapezoid rule);
* normalised AUC = trapezoidal area under the curve / (last step - first step), i.e. the
  time-average of the metric, so a success curve's AUC is in [0, 1];
* final = the metric at the last step of the grid.

Diverged seeds (status `diverged`; their rows after divergence are missing): for selection
their missing points from the divergence on count as failure, `fill` below (0 for the
success rate; for an unbounded metric such as the mean return, the worst value logged in the
whole table, unless the caller gives one). This keeps an unstable cell from looking good
because its bad seeds stopped being measured. The statistics stage instead leaves diverged
seeds out and reports how many there were (`stats.py`).

Incomplete seeds (status `interrupted`, or a curve that stops before the grid's last step
without a divergence to explain it) are not comparable and are left out of both, counted as
`n_incomplete`.

The best cell has the highest mean AUC over its scored seeds; ties are broken by the higher
mean final value, then the smaller batch, then the smaller learning rate (deterministic).

Usage:
    python -m reengage.analysis.select --curves results/tables/EXP/curves.parquet \
        --out results/tables/EXP/selection.csv [--metric success_rate]
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
    read_checked_csv,
    read_curves,
    require_suffix,
    run_cli,
    write_csv,
)
from reengage.analysis.labels import (
    BOUNDED_METRICS,
    CELL_KEYS,
    VARIANT_ATTRIBUTES,
    VARIANT_KEYS,
)

SELECTION_COLUMNS = [
    *VARIANT_KEYS, *VARIANT_ATTRIBUTES, "batch_size", "lr", "metric", "n_seeds", "n_scored",
    "n_diverged", "n_incomplete", "auc_mean", "auc_sd", "final_mean", "final_sd",
    "first_step", "last_step", "rank", "selected",
]


def default_fill(curves: pd.DataFrame, metric: str) -> float:
    """The failure value a diverged seed scores after divergence (see module docstring)."""
    if metric in BOUNDED_METRICS:
        return 0.0
    observed = curves[metric].dropna()
    if observed.empty:
        raise AnalysisError(f"metric {metric!r} has no values")
    return float(observed.min())


def check_metric(curves: pd.DataFrame, metric: str) -> None:
    if metric not in curves.columns:
        raise AnalysisError(f"--metric {metric}: no such column in the curves table")
    if curves[metric].notna().sum() == 0:
        other = [m for m in ("success_rate", "mean_return")
                 if m != metric and m in curves.columns and curves[m].notna().any()]
        hint = f"; try --metric {other[0]}" if other else ""
        raise AnalysisError(f"--metric {metric}: no run logged a value{hint}")


def _normalised_auc(steps: np.ndarray, values: np.ndarray) -> float:
    if len(steps) == 1:
        return float(values[0])
    area = np.sum((values[1:] + values[:-1]) / 2 * np.diff(steps))
    return float(area / (steps[-1] - steps[0]))


def seed_scores(curves: pd.DataFrame, metric: str, fill: float | None) -> pd.DataFrame:
    """One row per (cell, seed): `auc`, `final`, `scored` and `outcome`.

    `outcome` is `finished`, `diverged` or `incomplete`. With `fill` None a diverged seed's
    scores are missing (the statistics leave it out); with a number, its missing points
    from the divergence on take that value (selection).
    """
    rows = []
    for cell, group in curves.groupby(CELL_KEYS, sort=True):
        grid = np.sort(group["step"].unique())
        for seed, run in group.groupby("seed", sort=True):
            series = run.set_index("step")[metric].reindex(grid)
            present = series.notna().to_numpy()
            first = run.iloc[0]
            status = first["status"]
            outcome = status
            if status == "diverged":
                at = first["diverged_at_step"]
                # Without a recorded step, everything after the last logged value is lost.
                start = (grid[present][-1] + 1 if present.any() else grid[0]) if pd.isna(at) \
                    else int(at)
                lost = (grid >= start) & ~present
                if fill is not None:
                    series.loc[lost] = fill
            elif status == "interrupted" or not present[-1]:
                outcome = "incomplete"
            values = series.to_numpy(dtype=float)
            known = ~np.isnan(values)
            scorable = outcome == "finished" or (outcome == "diverged" and fill is not None)
            scored = bool(scorable and known.any() and known[-1])
            rows.append({
                **dict(zip(CELL_KEYS, cell, strict=True)),
                **{k: first[k] for k in VARIANT_ATTRIBUTES},
                "seed": int(seed), "outcome": outcome, "scored": scored,
                "auc": _normalised_auc(grid[known], values[known]) if scored else np.nan,
                "final": values[-1] if scored else np.nan,
                "first_step": int(grid[0]), "last_step": int(grid[-1]),
            })
    return pd.DataFrame(rows)


def select_cells(curves: pd.DataFrame, metric: str = "success_rate",
                 diverged_fill: float | None = None) -> pd.DataFrame:
    """Every batch x lr cell with its AUC and a `selected` flag on the best cell of each
    (experiment, env, dim, method, c); see the module docstring for the definitions."""
    check_metric(curves, metric)
    fill = default_fill(curves, metric) if diverged_fill is None else diverged_fill
    scores = seed_scores(curves, metric, fill)
    scored = scores[scores["scored"]]
    cells = scores.groupby(CELL_KEYS, sort=True).agg(
        **{k: (k, "first") for k in VARIANT_ATTRIBUTES},
        n_seeds=("seed", "size"),
        n_diverged=("outcome", lambda o: int((o == "diverged").sum())),
        n_incomplete=("outcome", lambda o: int((o == "incomplete").sum())),
        first_step=("first_step", "first"), last_step=("last_step", "first"),
    )
    stats = scored.groupby(CELL_KEYS).agg(
        n_scored=("seed", "size"), auc_mean=("auc", "mean"), auc_sd=("auc", "std"),
        final_mean=("final", "mean"), final_sd=("final", "std"),
    )
    cells = cells.join(stats).reset_index()
    cells["n_scored"] = cells["n_scored"].fillna(0).astype(int)
    cells["metric"] = metric
    # Best first: AUC, then final value, then the cheaper / gentler cell.
    cells = cells.sort_values(
        [*VARIANT_KEYS, "auc_mean", "final_mean", "batch_size", "lr"],
        ascending=[True] * len(VARIANT_KEYS) + [False, False, True, True],
        na_position="last", ignore_index=True,
    )
    cells["rank"] = cells.groupby(VARIANT_KEYS, sort=False).cumcount() + 1
    cells["selected"] = (cells["rank"] == 1) & cells["auc_mean"].notna()
    unscored = cells.groupby(VARIANT_KEYS, sort=False)["selected"].any()
    for key in unscored[~unscored].index:
        print(f"warning: no cell of {dict(zip(VARIANT_KEYS, key, strict=True))} has a scored "
              "seed; nothing selected for it", file=sys.stderr)
    return cells[SELECTION_COLUMNS]


def read_selection(path: Path) -> pd.DataFrame:
    """selection.csv as written by `select_cells`, checked."""
    table = read_checked_csv(path, "--selection", SELECTION_COLUMNS)
    table["selected"] = table["selected"].astype(str).str.lower().eq("true")
    return table


def selected_curves(curves: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """The rows of `curves` that belong to a selected cell."""
    chosen = selection.loc[selection["selected"], CELL_KEYS]
    if chosen.empty:
        raise AnalysisError("the selection table selects no cell")
    merged = curves.merge(chosen, on=CELL_KEYS, how="inner")
    if merged.empty:
        raise AnalysisError("no selected cell is in the curves table (tables from different "
                            "experiments?)")
    return merged


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m reengage.analysis.select",
        description="Pick, for each (experiment, env, dim, method, c), the batch x lr cell with "
        "the best mean normalised area under the curve (trapezoidal area / last step; a "
        "diverged seed counts as failing from its divergence on). Writes every cell's AUC "
        "with a 'selected' flag.",
        epilog="example: python -m reengage.analysis.select --curves "
        "results/tables/cs/curves.parquet --out results/tables/cs/selection.csv",
    )
    parser.add_argument("--curves", required=True, type=Path,
                        help="tidy table from reengage.analysis.aggregate (.parquet)")
    parser.add_argument("--out", required=True, type=Path, help="output selection .csv")
    parser.add_argument("--metric", default="success_rate",
                        help="column to select on (default success_rate; mean_return for "
                        "tasks without a success signal)")
    parser.add_argument("--diverged-fill", type=float, default=None,
                        help="value a diverged seed scores after divergence (default 0 for "
                        "success_rate, else the worst value in the table)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> None:
        require_suffix(args.out, [".csv"], "--out")
        table = select_cells(read_curves(args.curves), args.metric, args.diverged_fill)
        write_csv(table, args.out)
        print(f"wrote {len(table)} cells ({int(table['selected'].sum())} selected) to "
              f"{args.out}", file=sys.stderr)

    return run_cli(parser.prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
