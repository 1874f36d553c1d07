"""rliable's views of one experiment (Agarwal et al., "Deep Reinforcement Learning at the
Edge of the Statistical Precipice", NeurIPS 2021), drawn with rliable's own plotting
functions in the harness's colours:

* `draw_intervals`: the IQM, median, mean and, for the success rate, optimality gap of the
  normalised AUC over seeds x d, with 95 % stratified-bootstrap intervals, one row per
  method variant;
* `draw_improvement`: the probability that a seed of each variant scores a higher
  normalised AUC than a seed of the baseline, with its interval;
* `draw_profiles`: performance profiles, the fraction of runs whose normalised AUC
  exceeds tau for every tau, with 95 % intervals.

The first two are read from stats.csv, so they show exactly the numbers the report quotes;
the profiles are computed here from the seeds' scores with `rliable.library`. Every label
says how many seeds per d lie behind it: with few seeds an interval can be narrow and
still not be evidence.

Usage:
    python -m reengage.analysis.rliable_figures --stats results/tables/EXP/stats.csv \
        --curves results/tables/EXP/curves.parquet \
        --selection results/tables/EXP/selection.csv \
        --intervals results/figures/EXP-intervals.png \
        --improvement results/figures/EXP-improvement.png \
        --profiles results/figures/EXP-profiles.png
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # rliable.plot_utils imports pyplot: no display backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from rliable import library, plot_utils  # noqa: E402

from reengage.analysis.aggregate import (  # noqa: E402
    AnalysisError,
    OneLineParser,
    atomic_write_bytes,
    read_checked_csv,
    read_curves,
    require_suffix,
    run_cli,
)
from reengage.analysis.figures import legend_labels, styles_of, variant_order  # noqa: E402
from reengage.analysis.labels import (  # noqa: E402
    BOUNDED_METRICS,
    DEFAULT_BASELINE,
    metric_name,
)
from reengage.analysis.select import read_selection  # noqa: E402
from reengage.analysis.stats import STATS_COLUMNS, collect_scores, seeded  # noqa: E402

AGGREGATE_NAMES = {"median": "Median", "iqm": "IQM", "mean": "Mean",
                   "optimality_gap": "Optimality gap"}
# The score every verdict is drawn from (stats.py: `auc`, the normalised area).
SCORE = "auc"
TAUS = 101
# Ties the pair names of rliable's improvement plot together; no label contains it.
PAIR = "\x1f"


def read_stats(path: Path) -> pd.DataFrame:
    """stats.csv as `reengage.analysis.stats` writes it, checked."""
    return read_checked_csv(path, "--stats", STATS_COLUMNS)


def _title(envs: list[str]) -> str:
    return " and ".join(sorted(envs))


def _seeds(n: float) -> str:
    return f"{int(n)} seed{'s' if int(n) != 1 else ''}"


def _entries(rows: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per (env, variant) of `rows`, ordered baseline first, with `name`: the label
    the figure prints (the env's name first when there are several)."""
    entries = rows.drop_duplicates(["env", "variant"]).copy()
    order = {v: i for i, v in enumerate(variant_order(entries, baseline))}
    entries["rank"] = entries["variant"].map(order)
    entries = entries.sort_values(["env", "rank"], ignore_index=True)
    labels = legend_labels(entries, list(order))
    several = entries["env"].nunique() > 1
    entries["name"] = [
        f"{f'{env}: ' if several else ''}{labels[variant]} ({_seeds(n)})"
        for env, variant, n in zip(entries["env"], entries["variant"], entries["n_runs"],
                                   strict=True)]
    return entries


def _empty(message: str, title: str) -> Figure:
    figure, ax = plt.subplots(figsize=(6.5, 1.8))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, color="0.3")
    figure.suptitle(title)
    return figure


def draw_intervals(stats: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> Figure:
    """rliable's interval-estimate plot of the aggregates stats.csv holds for every variant
    (the IQM always; median, mean and optimality gap where the table has them)."""
    rows = stats[(stats["scope"] == "all_d") & (stats["score"] == SCORE)
                 & stats["statistic"].isin(AGGREGATE_NAMES)]
    iqm = rows[rows["statistic"] == "iqm"]
    title = f"{_title(stats['env'].unique())}: aggregate scores"
    if iqm.empty:
        return _empty("stats.csv holds no IQM of the normalised AUC", title)
    entries = _entries(iqm, baseline)
    keys = list(zip(entries["env"], entries["variant"], strict=True))
    by = rows.set_index(["env", "variant", "statistic"])
    aggregates = [a for a in AGGREGATE_NAMES
                  if all((env, variant, a) in by.index for env, variant in keys)]
    points, intervals = {}, {}
    for name, key in zip(entries["name"], keys, strict=True):
        found = [by.loc[(*key, a)] for a in aggregates]
        points[name] = np.array([r["estimate"] for r in found])
        intervals[name] = np.array([[r["ci_low"] for r in found], [r["ci_high"] for r in found]])
    styles = styles_of(entries)
    colors = {name: styles[v].color for name, v in zip(entries["name"], entries["variant"],
                                                       strict=True)}
    metric = metric_name(str(rows["metric"].iloc[0]))
    height = max(0.5, 2.4 / len(entries))
    figure, axes = plot_utils.plot_interval_estimates(
        points, intervals, [AGGREGATE_NAMES[a] for a in aggregates],
        # rliable stacks the first algorithm at the bottom; the baseline goes on top.
        algorithms=list(entries["name"])[::-1], colors=colors, max_ticks=3,
        xlabel=f"normalised area under the {metric} curve", subfigure_width=3.8,
        row_height=height, xlabel_y_coordinate=-0.45 / (height * len(entries)))
    for ax in np.atleast_1d(axes):
        ax.tick_params(axis="x", labelsize="x-large")
    reps = int(iqm["reps"].iloc[0])
    lower = "; optimality gap: lower is better" if "optimality_gap" in aggregates else ""
    figure.suptitle(f"{title} over seeds × d\nwith 95 % stratified-bootstrap CIs "
                    f"({reps} repetitions{lower})", x=0.4, y=1.0 + 0.75 / (height * len(entries)),
                    fontsize="xx-large")
    return figure


def draw_improvement(stats: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> Figure:
    """rliable's probability-of-improvement plot: each variant over the baseline."""
    rows = stats[(stats["statistic"] == "poi") & (stats["scope"] == "all_d")
                 & (stats["score"] == SCORE)]
    title = f"{_title(stats['env'].unique())}: probability of improvement"
    if rows.empty:
        return _empty(f"no method was compared with the baseline ({baseline})", title)
    # rliable stacks the first pair at the bottom; the first variant goes on top.
    entries = _entries(rows, baseline).iloc[::-1]
    by = rows.set_index(["env", "variant"])
    estimates, intervals, colors = {}, {}, []
    styles = styles_of(entries)
    for name, env, variant in zip(entries["name"], entries["env"], entries["variant"],
                                  strict=True):
        row = by.loc[(env, variant)]
        pair = f"{name}{PAIR}{row['baseline_label']} ({_seeds(row['baseline_n_runs'])})"
        estimates[pair] = row["estimate"]
        intervals[pair] = np.array([row["ci_low"], row["ci_high"]])
        colors.append(styles[variant].color)
    figure, ax = plt.subplots(figsize=(7.5, 0.9 + 0.55 * len(entries)))
    plot_utils.plot_probability_of_improvement(
        estimates, intervals, pair_separator=PAIR, ax=ax, colors=colors,
        xticks=[0.0, 0.25, 0.5, 0.75, 1.0], xlabel="P(X > Y): a seed of X has the higher "
        "normalised AUC than a seed of Y", left_ylabel="X", right_ylabel="Y",
        ticklabelsize="medium", labelsize="medium", ylabel_x_coordinate=0.08)
    ax.axvline(0.5, color="0.4", ls=":", lw=1.2, zorder=0)
    # The method's marker at the estimate: an interval that collapsed to a point (every
    # resample agrees, as with 3 seeds that all beat the baseline) still shows.
    for idx, (estimate, variant) in enumerate(zip(estimates.values(), entries["variant"],
                                                  strict=True)):
        ax.plot([estimate], [idx], marker=styles[variant].marker, ms=7, ls="none",
                color=styles[variant].color, markeredgecolor="k", zorder=5)
    ax.set_xlim(-0.02, 1.02)
    reps = int(rows["reps"].iloc[0])
    ax.set_title(f"{title} over the baseline, all d pooled\n95 % stratified-bootstrap CIs "
                 f"({reps} repetitions)", fontsize="medium", pad=26)
    return figure


def draw_profiles(curves: pd.DataFrame, selection: pd.DataFrame,
                  baseline: str = DEFAULT_BASELINE, reps: int = 2000, seed: int = 0) -> Figure:
    """rliable's performance profiles of the normalised AUC, one panel per environment."""
    metric = str(selection["metric"].iloc[0])
    scores = collect_scores(curves, selection, metric)
    if not scores:
        raise AnalysisError("no selected cell has a scored seed")
    figure, axes = plt.subplots(1, len(scores), figsize=(7.5 * len(scores), 4.6),
                                squeeze=False)
    for index, (ax, (env, variants)) in enumerate(zip(axes[0], scores.items(), strict=True)):
        entries = pd.DataFrame([{"env": env, "variant": vs.variant, "method": vs.method,
                                 "c": vs.c, "label": vs.label,
                                 "n_runs": min((len(vs.usable[d]) for d in vs.dims), default=0)}
                                for vs in variants.values()])
        entries = _entries(entries[entries["n_runs"] > 0], baseline)
        styles = styles_of(entries)
        matrices = {}
        for name, variant in zip(entries["name"], entries["variant"], strict=True):
            vs = variants[variant]
            matrix, _ = vs.matrix([d for d in vs.dims if len(vs.usable[d])])
            matrices[name] = matrix[:, :, 0]  # the normalised AUC
        pooled = np.concatenate([m.ravel() for m in matrices.values()])
        # The range the scores span, a little wider: every profile falls from 1 to 0 there.
        margin = max(0.05 * np.ptp(pooled), 1e-3)
        low, high = pooled.min() - margin, pooled.max() + margin
        if metric in BOUNDED_METRICS:
            low, high = max(low, 0.0), min(high, 1.0)
        taus = np.linspace(low, high, TAUS)
        with seeded(seed + index), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant resamples
            profiles, intervals = library.create_performance_profile(matrices, taus,
                                                                     reps=reps)
        names = list(entries["name"])
        colors = {n: styles[v].color for n, v in zip(names, entries["variant"], strict=True)}
        lines = {n: styles[v].linestyle for n, v in zip(names, entries["variant"],
                                                        strict=True)}
        plot_utils.plot_performance_profiles(
            profiles, taus, performance_profile_cis=intervals, ax=ax, colors=colors,
            linestyles=lines, xlabel=f"τ (normalised area under the {metric_name(metric)} "
            "curve)", ylabel="fraction of runs with score > τ", labelsize="large",
            ticklabelsize="medium")
        if len(scores) > 1:
            ax.set_title(env)
        handles = [Line2D([], [], color=colors[n], ls=lines[n], lw=2,
                          marker=styles[v].marker, ms=5)
                   for n, v in zip(names, entries["variant"], strict=True)]
        ax.legend(handles, names, fontsize="medium", frameon=False, loc="upper center",
                  bbox_to_anchor=(0.5, -0.22), ncol=2)
    figure.suptitle(f"{_title(list(scores))}: performance profiles over seeds × d, 95 % "
                    f"stratified-bootstrap CIs ({reps} repetitions)", fontsize="large")
    figure.tight_layout()
    return figure


def save_figure(figure: Figure, out_png: Path) -> tuple[Path, Path]:
    """Write `out_png` and the PDF beside it, then release the figure."""
    out_png = Path(out_png)
    out_pdf = out_png.with_suffix(".pdf")
    try:
        # rliable places axis labels outside the axes; the tight box keeps them in.
        atomic_write_bytes(out_png, lambda tmp: figure.savefig(
            tmp, format="png", dpi=150, bbox_inches="tight"))
        atomic_write_bytes(out_pdf, lambda tmp: figure.savefig(
            tmp, format="pdf", bbox_inches="tight"))
    finally:
        plt.close(figure)
    return out_png, out_pdf


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m reengage.analysis.rliable_figures",
        description="Draw rliable's views of one experiment: aggregate interval estimates "
        "and probability of improvement (from stats.csv) and performance profiles (from the "
        "curves and selection). Each PNG gets a PDF beside it.",
        epilog="example: python -m reengage.analysis.rliable_figures --stats "
        "results/tables/cs/stats.csv --intervals results/figures/cs-intervals.png "
        "--improvement results/figures/cs-improvement.png",
    )
    parser.add_argument("--stats", type=Path, help="stats.csv from reengage.analysis.stats "
                        "(for --intervals and --improvement)")
    parser.add_argument("--curves", type=Path, help="tidy table from "
                        "reengage.analysis.aggregate (.parquet; for --profiles)")
    parser.add_argument("--selection", type=Path,
                        help="selection.csv from reengage.analysis.select (for --profiles)")
    parser.add_argument("--intervals", type=Path, help="output .png: aggregate scores")
    parser.add_argument("--improvement", type=Path,
                        help="output .png: probability of improvement over the baseline")
    parser.add_argument("--profiles", type=Path, help="output .png: performance profiles")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help=f"method listed first (default {DEFAULT_BASELINE})")
    parser.add_argument("--reps", type=int, default=2000,
                        help="bootstrap repetitions of the profiles' intervals (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> None:
        outputs = {"--intervals": args.intervals, "--improvement": args.improvement,
                   "--profiles": args.profiles}
        if not any(outputs.values()):
            raise AnalysisError("nothing to draw: give --intervals, --improvement or "
                                "--profiles")
        for option, path in outputs.items():
            if path is not None:
                require_suffix(path, [".png"], option)
        if args.reps < 1:
            raise AnalysisError(f"--reps must be >= 1 (got {args.reps})")
        figures = []
        if args.intervals or args.improvement:
            if args.stats is None:
                raise AnalysisError("--intervals and --improvement need --stats")
            stats = read_stats(args.stats)
            if args.intervals:
                figures.append((draw_intervals(stats, args.baseline), args.intervals))
            if args.improvement:
                figures.append((draw_improvement(stats, args.baseline), args.improvement))
        if args.profiles:
            if args.curves is None or args.selection is None:
                raise AnalysisError("--profiles needs --curves and --selection")
            figures.append((draw_profiles(read_curves(args.curves),
                                          read_selection(args.selection), args.baseline,
                                          args.reps, args.seed), args.profiles))
        for figure, out in figures:
            png, pdf = save_figure(figure, out)
            print(f"wrote {png} and {pdf}", file=sys.stderr)

    return run_cli(parser.prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
