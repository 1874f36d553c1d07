"""Learning-curve figures in the paper's style: one figure per experiment, one panel per
(env, d), x = environment steps (or, for the robotics tasks, whose logs carry an `epoch`
column, the epoch, as the paper's HandReach figure), y = a metric (success rate by default),
mean +- sd over
seeds for the selected batch x lr cell of each method variant, with a marker at every
evaluation. Each method keeps the colour and marker `labels.method_style` gives it on every
figure of the harness.

Missing points are never averaged in: at each step the band is over the seeds that have a
value there. A diverged seed stops having values, so from its divergence on the curve is an
average over fewer seeds; the figure marks that step with a cross and the legend says how
many seeds diverged. Matplotlib's object API (no pyplot) keeps this free of display backends.

Usage:
    python -m reengage.analysis.figures --curves results/tables/EXP/curves.parquet \
        --selection results/tables/EXP/selection.csv --out results/figures/EXP.png \
        [--metric success_rate] [--note "reduced: 3k steps"] [--reference "Greedy=12.5"]
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from reengage.analysis.aggregate import (
    AnalysisError,
    OneLineParser,
    add_table_arguments,
    atomic_write_bytes,
    read_curves,
    require_suffix,
    run_cli,
)
from reengage.analysis.labels import (
    BOUNDED_METRICS,
    DEFAULT_BASELINE,
    EPOCH,
    VariantStyle,
    dim_name,
    metric_name,
    variant_styles,
)
from reengage.analysis.select import check_metric, read_selection, selected_curves

# Beyond this many evaluations per curve, markers sit on every k-th one so they stay apart.
MAX_MARKERS = 25


def step_ticks(value: float, _position: int) -> str:
    """Axis ticks as 0, 500, 1k, 2.5k, 400k: the paper's step counts span 3 decades."""
    if abs(value) >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def curve_summary(runs: pd.DataFrame, metric: str, x: str = "step") -> pd.DataFrame:
    """Per value of `x` (the step, or the epoch): mean and sd over the seeds that have a
    value, and how many they are.

    A point where no seed has a value is dropped, so the curve ends rather than going NaN.
    """
    present = runs.dropna(subset=[metric, x])
    summary = present.groupby(x)[metric].agg(["mean", "std", "count"])
    summary["std"] = summary["std"].fillna(0.0)  # one seed: no spread to draw
    return summary.reset_index()


def x_axis(table: pd.DataFrame) -> str:
    """`epoch` where every row of `table` carries one (the robotics tasks' Baselines loop
    logs it), else `step`. A figure never mixes the two: an experiment is one env."""
    if EPOCH in table.columns and len(table) and table[EPOCH].notna().all():
        return EPOCH
    return "step"


def step_to_x(runs: pd.DataFrame, step: int, x: str) -> float:
    """Where env step `step` (a divergence) lies on the x axis, read off `runs`' own
    (step, x) pairs: an epoch is a fixed number of a run's env steps."""
    if x == "step":
        return float(step)
    pairs = runs[["step", x]].dropna().drop_duplicates().sort_values("step")
    return float(np.interp(step, pairs["step"].to_numpy(float), pairs[x].to_numpy(float)))


def variant_order(table: pd.DataFrame, baseline: str) -> list[str]:
    """Baseline first, then the others by method and coefficient: the legend's order."""
    variants = table.drop_duplicates("variant")[["variant", "method", "c"]]
    variants = variants.assign(is_base=variants["method"] != baseline)
    variants = variants.sort_values(["is_base", "method", "c"], na_position="first")
    return variants["variant"].tolist()


def styles_of(table: pd.DataFrame) -> dict[str, VariantStyle]:
    """Each variant of `table` (columns variant, method, c) -> its style."""
    variants = table.drop_duplicates("variant")
    return variant_styles(zip(variants["variant"], variants["method"], variants["c"],
                              strict=True))


def experiment_title(table: pd.DataFrame) -> str:
    """What the figure shows, in the environments' names rather than the config's key."""
    return " and ".join(sorted(table["env"].unique()))


def markevery(points: int) -> int:
    return max(1, -(-points // MAX_MARKERS))


def legend_labels(table: pd.DataFrame, order: list[str]) -> dict[str, str]:
    """run.json's label; made unique with the variant name if two variants share one."""
    labels = table.drop_duplicates("variant").set_index("variant")["label"]
    counts = labels.value_counts()
    return {v: labels[v] if counts[labels[v]] == 1 else f"{labels[v]} [{v}]" for v in order}


def draw_experiment(curves: pd.DataFrame, selection: pd.DataFrame,
                    metric: str = "success_rate", note: str | None = None,
                    reference_lines: dict[str, float] | None = None,
                    baseline: str = DEFAULT_BASELINE) -> Figure:
    """One experiment's selected curves as a matplotlib Figure (not yet saved).

    Raises AnalysisError if the tables hold more than one experiment or the metric was
    never logged.
    """
    check_metric(curves, metric)
    table = selected_curves(curves, selection)
    experiments = table["experiment"].unique()
    if len(experiments) != 1:
        raise AnalysisError(f"one experiment per figure; the tables hold {list(experiments)}")
    panels = table[["env", "dim"]].drop_duplicates().sort_values(["env", "dim"])
    panels = list(panels.itertuples(index=False, name=None))
    order = variant_order(table, baseline)
    labels = legend_labels(table, order)
    styles = styles_of(table)
    seeds = table.drop_duplicates(["env", "dim", "variant", "seed"])
    seed_counts = seeds.groupby(["env", "dim", "variant"]).size()
    diverged = seeds[seeds["status"] == "diverged"]
    seeds_per_panel = sorted(seed_counts.unique())
    many_envs = table["env"].nunique() > 1
    bounded = metric in BOUNDED_METRICS
    x = x_axis(table)

    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.15):
        width = max(4.0 * len(panels), 6.5)
        figure = Figure(figsize=(width, 4.6), layout="constrained")
        # One y scale where panels are comparable: a probability, or one environment's metric.
        shared = bounded or table["env"].nunique() == 1
        axes = figure.subplots(1, len(panels), sharey=shared, squeeze=False)[0]
        for ax, (env, dim) in zip(axes, panels, strict=True):
            panel = table[(table["env"] == env) & (table["dim"] == dim)]
            for variant in order:
                runs = panel[panel["variant"] == variant]
                if runs.empty:
                    continue
                style = styles[variant]
                color = style.color
                if runs.get("fixed_policy", pd.Series(False)).any():
                    # A fixed policy's level: the mean over every evaluation episode it ran.
                    ax.axhline(runs[metric].mean(), color=color, lw=1.6, ls="--",
                               label=labels[variant])
                    continue
                summary = curve_summary(runs, metric, x)
                low = summary["mean"] - summary["std"]
                high = summary["mean"] + summary["std"]
                if bounded:
                    low, high = low.clip(0.0, 1.0), high.clip(0.0, 1.0)
                ax.plot(summary[x], summary["mean"], color=color, lw=1.8,
                        ls=style.linestyle, marker=style.marker, ms=4.5,
                        markevery=markevery(len(summary)), label=labels[variant])
                ax.fill_between(summary[x], low, high, color=color, alpha=0.18, lw=0)
                for at in runs.loc[runs["status"] == "diverged", "diverged_at_step"].unique():
                    if pd.isna(at):
                        continue
                    # Mark, on the drawn line, where the average loses a seed.
                    where = step_to_x(runs, int(at), x)
                    y = np.interp(where, summary[x], summary["mean"])
                    ax.plot([where], [y], marker="x", ms=8, mew=2, color=color, ls="none",
                            zorder=5)
            for offset, value in enumerate((reference_lines or {}).values()):
                ax.axhline(value, color="0.35", lw=1.2,
                           ls=["--", ":", "-."][offset % 3], zorder=1)
            ax.set_title(f"{env}, {dim_name(env)} = {dim}")
            if x == EPOCH:
                ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            else:
                ax.set_xlabel("environment steps")
                ax.xaxis.set_major_formatter(FuncFormatter(step_ticks))
            ax.set_xlim(left=0)
            if bounded:
                ax.set_ylim(-0.02, 1.02)
        axes[0].set_ylabel(metric_name(metric))

        handles, names = [], []
        for variant in order:
            text = labels[variant]
            lost = diverged[diverged["variant"] == variant].groupby(["env", "dim"]).size()
            if not lost.empty:
                where = ", ".join(
                    f"{n}/{seed_counts[(env, dim, variant)]} at "
                    f"{f'{env} ' if many_envs else ''}d={dim}"
                    for (env, dim), n in lost.items()
                )
                text += f"  (seeds diverged: {where})"
            style = styles[variant]
            if table.loc[table["variant"] == variant].get(
                    "fixed_policy", pd.Series(False)).any():
                handles.append(Line2D([], [], color=style.color, lw=1.6, ls="--"))
                names.append(f"{text} (no training; mean over all evaluation episodes)")
                continue
            handles.append((Patch(color=style.color, alpha=0.18),
                            Line2D([], [], color=style.color, lw=1.8, ls=style.linestyle,
                                   marker=style.marker, ms=4.5)))
            names.append(text)
        for offset, (name, value) in enumerate((reference_lines or {}).items()):
            handles.append(Line2D([], [], color="0.35", lw=1.2, ls=["--", ":", "-."][offset % 3]))
            names.append(f"{name} ({value:g})")
        if not diverged.empty:
            handles.append(Line2D([], [], color="0.3", marker="x", ms=8, mew=2, ls="none"))
            names.append("a seed diverges (later points: mean of the remaining seeds)")
        # The legend's title says what each curve is, so the figure explains itself.
        # As many legend columns as fit the figure's width (about 14 characters an inch).
        columns = max(1, min(len(names), 3, int(width * 14) // max(map(len, names))))
        legend = figure.legend(
            handles, names, loc="outside lower center", ncol=columns, frameon=False,
            title="per method and d: the batch × lr cell with the best area under the curve "
            "(selection.csv)", title_fontsize="small",
        )
        legend.get_title().set_color("0.35")

        counts = "/".join(str(n) for n in seeds_per_panel)
        title = textwrap.fill(f"{experiment_title(table)}: {metric_name(metric)}, mean ± sd "
                              f"over {counts} seeds (markers: evaluations)",
                              width=int(width * 9))
        if note:  # on its own wrapped line, so a long note never runs off the figure
            title += "\n" + textwrap.fill(note, width=int(width * 9))
        figure.suptitle(title)
    return figure


def plot_experiment(curves: pd.DataFrame, selection: pd.DataFrame, out_png: Path,
                    metric: str = "success_rate", note: str | None = None,
                    reference_lines: dict[str, float] | None = None,
                    baseline: str = DEFAULT_BASELINE) -> tuple[Path, Path]:
    """Draw (see `draw_experiment`) and write `out_png` and the PDF beside it."""
    figure = draw_experiment(curves, selection, metric, note, reference_lines, baseline)
    out_png = Path(out_png)
    out_pdf = out_png.with_suffix(".pdf")
    atomic_write_bytes(out_png, lambda tmp: figure.savefig(tmp, format="png", dpi=150))
    atomic_write_bytes(out_pdf, lambda tmp: figure.savefig(tmp, format="pdf"))
    return out_png, out_pdf


def parse_reference(items: list[str]) -> dict[str, float]:
    """`LABEL=VALUE` pairs -> {label: value}; the label may contain spaces."""
    lines: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name.strip():
            raise AnalysisError(f"--reference {item!r}: expected LABEL=VALUE")
        try:
            lines[name.strip()] = float(value)
        except ValueError:
            raise AnalysisError(f"--reference {item!r}: {value!r} is not a number") from None
        if not np.isfinite(lines[name.strip()]):
            raise AnalysisError(f"--reference {item!r}: the value must be finite")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m reengage.analysis.figures",
        description="Plot one experiment: one panel per d, mean ± sd over seeds of the "
        "selected cell of each method variant. Writes OUT (.png) and the same name with .pdf.",
        epilog="example: python -m reengage.analysis.figures --curves "
        "results/tables/cs/curves.parquet --selection results/tables/cs/selection.csv "
        "--out results/figures/cs.png --note 'reduced: 3k steps'",
    )
    add_table_arguments(parser, "output .png; the .pdf is written beside it")
    parser.add_argument("--metric", default=None,
                        help="y axis column (default: the metric the selection was made on)")
    parser.add_argument("--note", default=None,
                        help="appended to the title, e.g. 'reduced: 3k steps'")
    parser.add_argument("--reference", action="append", default=[], metavar="LABEL=VALUE",
                        help="horizontal reference line, e.g. 'Perfect greedy agent=21.3' "
                        "(repeatable)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help=f"method drawn first in the legend (default {DEFAULT_BASELINE})")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> None:
        require_suffix(args.out, [".png"], "--out")
        references = parse_reference(args.reference)
        curves = read_curves(args.curves)
        selection = read_selection(args.selection)
        metric = args.metric or str(selection["metric"].iloc[0])
        png, pdf = plot_experiment(curves, selection, args.out, metric=metric,
                                   note=args.note, reference_lines=references,
                                   baseline=args.baseline)
        print(f"wrote {png} and {pdf}", file=sys.stderr)

    return run_cli(parser.prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
