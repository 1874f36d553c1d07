"""Statistics beyond the paper, with rliable: for the selected cell of each method variant,
the interquartile mean (IQM) of the normalised AUC and of the final value of the metric,
with stratified-bootstrap confidence intervals; and, against the baseline (DDPG+HER), the
probability of improvement, the IQM difference, and how that difference changes with d.

Score matrices are seeds x tasks, one matrix per (env, variant), where the tasks are the d
values the variant was run at (an environment's scores at different d are comparable: the
same success rate; different environments are never pooled). Stratified bootstrap
resamples seeds within each task.

* Diverged seeds are left out of the matrices (their later scores do not exist) and counted
  in `n_diverged`; incomplete (interrupted) seeds likewise in `n_incomplete`. Leaving out
  diverged seeds flatters an unstable method, so the report shows the counts beside it.
* rliable needs the same number of seeds on every task of a matrix: each matrix keeps the
  first `n_runs` usable seeds (by seed number) of every task, `n_runs` being the smallest
  count over its tasks; `n_dropped` and `note` say what truncation removed.
* Probability of improvement (rliable): P(a seed of the variant scores higher than a seed
  of the baseline on the same task, ties 1/2), averaged over tasks. Variant and baseline are
  resampled independently, so they may have different seed counts.
* `margin_growth` = IQM difference (variant - baseline) at the largest d minus at the
  smallest d: positive when the margin grows with d.
* Beside the IQM, over all d at once: the `median` and the `mean` and, for a metric bounded
  by 1 (the success rate), the `optimality_gap` (the mean shortfall from 1), rliable's
  other aggregates, which its interval-estimate figure sets side by side.

All bootstraps of one variant (or pair) share one resampling per repetition and yield every
scope (all d, each d) and both scores at once, which keeps 2000 repetitions affordable.

Usage:
    python -m reengage.analysis.stats --curves results/tables/EXP/curves.parquet \
        --selection results/tables/EXP/selection.csv --out results/tables/EXP/stats.csv \
        [--baseline ddpg_her] [--reps 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rliable import library, metrics

from reengage.analysis.aggregate import (
    AnalysisError,
    OneLineParser,
    read_curves,
    require_suffix,
    run_cli,
    write_csv,
)
from reengage.analysis.labels import BOUNDED_METRICS, DEFAULT_BASELINE
from reengage.analysis.select import check_metric, read_selection, seed_scores, selected_curves

SCORES = ("auc", "final")
# rliable's aggregates beside the IQM (all d pooled). The optimality gap measures the
# shortfall from a best possible score of 1, which only a bounded metric has.
AGGREGATES = {"median": metrics.aggregate_median, "mean": metrics.aggregate_mean}
BOUNDED_AGGREGATES = {**AGGREGATES, "optimality_gap": metrics.aggregate_optimality_gap}
STATS_COLUMNS = [
    "experiment", "env", "scope", "dim", "statistic", "score", "metric", "variant", "method",
    "c", "label", "baseline_method", "baseline_variant", "baseline_label", "estimate",
    "ci_low", "ci_high",
    "n_runs", "n_tasks", "tasks", "n_seeds", "n_diverged", "n_incomplete", "n_dropped",
    "baseline_n_runs", "baseline_n_diverged", "reps", "confidence", "note",
]


@dataclass
class VariantScores:
    """One variant's per-seed scores on one environment, task by task (d ascending)."""

    variant: str
    method: str
    c: float
    label: str
    dims: list[int]
    usable: dict[int, np.ndarray]  # d -> [seeds, 2] (auc, final), by seed number
    seeds: dict[int, int]
    diverged: dict[int, int]
    incomplete: dict[int, int]

    def matrix(self, dims: list[int]) -> tuple[np.ndarray, int]:
        """[runs, tasks, 2] for `dims`, truncated to the smallest per-task seed count;
        also how many usable seeds the truncation dropped."""
        runs = min(len(self.usable[d]) for d in dims)
        stacked = np.stack([self.usable[d][:runs] for d in dims], axis=1)
        return stacked, sum(len(self.usable[d]) - runs for d in dims)

    def counts(self, dims: list[int]) -> dict[str, int]:
        return {"n_seeds": sum(self.seeds[d] for d in dims),
                "n_diverged": sum(self.diverged[d] for d in dims),
                "n_incomplete": sum(self.incomplete[d] for d in dims)}

    def note(self, dims: list[int]) -> str:
        parts = []
        counts = self.counts(dims)
        if counts["n_diverged"]:
            parts.append(f"{counts['n_diverged']} diverged seed(s) left out")
        if counts["n_incomplete"]:
            parts.append(f"{counts['n_incomplete']} incomplete seed(s) left out")
        sizes = [len(self.usable[d]) for d in dims]
        if len(set(sizes)) > 1:
            parts.append(f"truncated to {min(sizes)} seeds per task (had {min(sizes)}-"
                         f"{max(sizes)})")
        return "; ".join(parts)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """rliable's stratified bootstraps draw from numpy's global generator (not from their
    `random_state`), so reproducibility needs the global state seeded; restore it after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _iqm(scores: np.ndarray) -> float:
    return float(metrics.aggregate_iqm(scores))


def _aggregates(metric: str) -> dict:
    return BOUNDED_AGGREGATES if metric in BOUNDED_METRICS else AGGREGATES


def single_statistic(n_tasks: int, aggregates: dict) -> Callable[[np.ndarray], np.ndarray]:
    """The bootstrap statistic of one seeds x tasks x (auc, final) matrix: [IQM over all
    tasks (auc, final), then per task (auc, final), then each of `aggregates` over all
    tasks (auc, final)]."""
    def stat(x: np.ndarray) -> np.ndarray:
        out = [_iqm(x[:, :, k]) for k in range(2)]
        out += [_iqm(x[:, t, k]) for t in range(n_tasks) for k in range(2)]
        out += [float(aggregate(x[:, :, k])) for aggregate in aggregates.values()
                for k in range(2)]
        return np.array(out)
    return stat


def _pair_stat(n_tasks: int):
    """[PoI all (auc, final), IQM diff all (auc, final), per task PoI and diff (auc, final),
    margin growth (auc, final) when there are two tasks or more]."""
    def stat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        # rliable's overall PoI is the mean of the per-task ones; computed once per task.
        poi = np.array([[metrics.probability_of_improvement(x[:, [t], k], y[:, [t], k])
                         for k in range(2)] for t in range(n_tasks)])
        diff = np.array([[_iqm(x[:, t, k]) - _iqm(y[:, t, k]) for k in range(2)]
                         for t in range(n_tasks)])
        out = [*poi.mean(axis=0), *(_iqm(x[:, :, k]) - _iqm(y[:, :, k]) for k in range(2))]
        for t in range(n_tasks):
            out += [*poi[t], *diff[t]]
        if n_tasks >= 2:
            out += list(diff[-1] - diff[0])
        return np.array(out)
    return stat


def bootstrap_interval(score_dict: dict, stat: Callable[..., np.ndarray], reps: int,
                       confidence: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """rliable's stratified-bootstrap point estimates and intervals of `stat` over the one
    entry of `score_dict` (a matrix, or a pair of matrices for a pair statistic), with a
    fixed seed so that tables are reproducible."""
    with seeded(seed), warnings.catch_warnings():
        # arch warns when a bootstrap statistic is constant (e.g. every seed succeeds).
        warnings.simplefilter("ignore", RuntimeWarning)
        points, intervals = library.get_interval_estimates(
            score_dict, stat, reps=reps, confidence_interval_size=confidence)
    key = next(iter(score_dict))
    return points[key], intervals[key]


def collect_scores(curves: pd.DataFrame, selection: pd.DataFrame,
                   metric: str) -> dict[str, dict[str, VariantScores]]:
    """env -> variant -> VariantScores of the selected cells."""
    scores = seed_scores(selected_curves(curves, selection), metric, fill=None)
    out: dict[str, dict[str, VariantScores]] = {}
    for (env, variant), group in scores.groupby(["env", "variant"], sort=True):
        first = group.iloc[0]
        vs = VariantScores(variant, first["method"], first["c"], first["label"], [], {}, {},
                           {}, {})
        for dim, task in group.groupby("dim", sort=True):
            task = task.sort_values("seed")
            vs.dims.append(int(dim))
            vs.usable[int(dim)] = task.loc[task["scored"], ["auc", "final"]].to_numpy(float)
            vs.seeds[int(dim)] = len(task)
            vs.diverged[int(dim)] = int((task["outcome"] == "diverged").sum())
            vs.incomplete[int(dim)] = int((task["outcome"] == "incomplete").sum())
        out.setdefault(env, {})[variant] = vs
    return out


def compute_stats(curves: pd.DataFrame, selection: pd.DataFrame, metric: str | None = None,
                  baseline: str = DEFAULT_BASELINE, reps: int = 2000, seed: int = 0,
                  confidence: float = 0.95) -> pd.DataFrame:
    """The statistics table (columns `STATS_COLUMNS`); see the module docstring."""
    check_bootstrap(reps, confidence)
    metric = metric or str(selection["metric"].iloc[0])
    check_metric(curves, metric)
    experiments = selection.loc[selection["selected"], "experiment"].unique()
    if len(experiments) != 1:
        raise AnalysisError(f"one experiment per table; got {list(experiments)}")
    experiment = str(experiments[0])
    rows: list[dict] = []
    common = {"experiment": experiment, "metric": metric, "reps": reps,
              "confidence": confidence}

    def add(env, dims, scope_dim, statistic, score, vs, point, ci, extra):
        rows.append({
            **common, "env": env, "scope": "all_d" if scope_dim is None else "d",
            "dim": scope_dim, "statistic": statistic, "score": score, "variant": vs.variant,
            "method": vs.method, "c": vs.c, "label": vs.label, "estimate": float(point),
            "ci_low": float(ci[0]), "ci_high": float(ci[1]),
            "n_tasks": len(dims), "tasks": ";".join(f"d{d}" for d in dims), **extra,
        })

    for env, variants in collect_scores(curves, selection, metric).items():
        baselines = [vs for vs in variants.values() if vs.method == baseline]
        if not baselines:
            print(f"note: no {baseline} run on {env}; no comparisons for it", file=sys.stderr)
        for index, vs in enumerate(variants.values()):
            dims = [d for d in vs.dims if len(vs.usable[d]) > 0]
            if not dims:
                print(f"note: {vs.variant} on {env} has no usable seed", file=sys.stderr)
                continue
            matrix, dropped = vs.matrix(dims)
            aggregates = _aggregates(metric)
            # One resampling yields the IQM and the other aggregates, so adding an aggregate
            # leaves the IQM's interval as it was.
            point, ci = bootstrap_interval({vs.variant: matrix},
                                           single_statistic(len(dims), aggregates),
                                           reps, confidence, seed + index)
            for scope, scope_dims in [(None, dims)] + [(d, [d]) for d in dims]:
                offset = 0 if scope is None else 2 + 2 * dims.index(scope)
                extra = {"n_runs": len(matrix), **vs.counts(scope_dims), "n_dropped": dropped
                         if scope is None else len(vs.usable[scope]) - len(matrix),
                         "note": vs.note(scope_dims)}
                for k, score in enumerate(SCORES):
                    add(env, scope_dims, scope, "iqm", score, vs, point[offset + k],
                        ci[:, offset + k], extra)
            extra = {"n_runs": len(matrix), **vs.counts(dims), "n_dropped": dropped,
                     "note": vs.note(dims)}
            for j, name in enumerate(aggregates):
                at = 2 + 2 * len(dims) + 2 * j
                for k, score in enumerate(SCORES):
                    add(env, dims, None, name, score, vs, point[at + k], ci[:, at + k], extra)
            for base in baselines:
                if base.variant == vs.variant:
                    continue
                compare_pair(vs, base, env, reps, confidence, seed + index, add)
    if not rows:
        raise AnalysisError("no selected cell has a usable seed")
    table = pd.DataFrame(rows)
    table["dim"] = table["dim"].astype("Int64")
    return table.reindex(columns=STATS_COLUMNS)


def compare_pair(vs: VariantScores, base: VariantScores, env: str, reps: int,
                 confidence: float, seed: int, add) -> None:
    """Append the pair rows (through `add`) for `vs` against the baseline `base`."""
    dims = [d for d in vs.dims if d in base.dims and len(vs.usable[d]) and len(base.usable[d])]
    if not dims:
        return
    x, x_dropped = vs.matrix(dims)
    y, _ = base.matrix(dims)
    point, ci = bootstrap_interval({f"{vs.variant},{base.variant}": (x, y)},
                                   _pair_stat(len(dims)), reps, confidence, seed + 1000)

    def extra(scope_dims: list[int]) -> dict:
        note = "; ".join(n for n in (vs.note(scope_dims),
                                     f"baseline: {base.note(scope_dims)}"
                                     if base.note(scope_dims) else "") if n)
        return {"n_runs": len(x), **vs.counts(scope_dims), "n_dropped": x_dropped,
                "baseline_method": base.method, "baseline_variant": base.variant,
                "baseline_label": base.label,
                "baseline_n_runs": len(y),
                "baseline_n_diverged": base.counts(scope_dims)["n_diverged"], "note": note}

    for k, score in enumerate(SCORES):
        add(env, dims, None, "poi", score, vs, point[k], ci[:, k], extra(dims))
        add(env, dims, None, "iqm_diff", score, vs, point[2 + k], ci[:, 2 + k], extra(dims))
        for t, d in enumerate(dims):
            at = 4 + 4 * t
            add(env, [d], d, "poi", score, vs, point[at + k], ci[:, at + k], extra([d]))
            add(env, [d], d, "iqm_diff", score, vs, point[at + 2 + k], ci[:, at + 2 + k],
                extra([d]))
        if len(dims) >= 2:
            at = 4 + 4 * len(dims)
            add(env, dims, None, "margin_growth", score, vs, point[at + k], ci[:, at + k],
                extra(dims))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m reengage.analysis.stats",
        description="rliable statistics of the selected cells: IQM of the normalised AUC and "
        "of the final value with stratified-bootstrap CIs (tasks = the d values of each env), "
        "and against the baseline: probability of improvement, IQM difference, margin growth "
        "with d. Diverged seeds are left out and counted.",
        epilog="example: python -m reengage.analysis.stats --curves "
        "results/tables/cs/curves.parquet --selection results/tables/cs/selection.csv "
        "--out results/tables/cs/stats.csv",
    )
    parser.add_argument("--curves", required=True, type=Path,
                        help="tidy table from reengage.analysis.aggregate (.parquet)")
    parser.add_argument("--selection", required=True, type=Path,
                        help="selection.csv from reengage.analysis.select")
    parser.add_argument("--out", required=True, type=Path, help="output stats .csv")
    parser.add_argument("--metric", default=None,
                        help="score column (default: the metric the selection was made on)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help=f"method every other is compared with (default {DEFAULT_BASELINE})")
    add_bootstrap_arguments(parser)
    return parser


def check_bootstrap(reps: int, confidence: float) -> None:
    """Refuse bootstrap parameters that give no interval, with the option's name."""
    if reps < 1:
        raise AnalysisError(f"--reps must be >= 1 (got {reps})")
    if not 0 < confidence < 1:
        raise AnalysisError(f"--confidence must be in (0, 1) (got {confidence})")


def add_bootstrap_arguments(parser: argparse.ArgumentParser) -> None:
    """--reps, --confidence and --seed of a stage that bootstraps intervals (the stats and
    ablation stages), with the same defaults everywhere."""
    parser.add_argument("--reps", type=int, default=2000,
                        help="bootstrap repetitions (default 2000)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="confidence interval coverage (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> None:
        require_suffix(args.out, [".csv"], "--out")
        table = compute_stats(read_curves(args.curves), read_selection(args.selection),
                              args.metric, args.baseline, args.reps, args.seed,
                              args.confidence)
        write_csv(table, args.out)
        print(f"wrote {len(table)} rows to {args.out}", file=sys.stderr)

    return run_cli(parser.prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
