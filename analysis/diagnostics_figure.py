"""Training diagnostics: per method, the critic's mean Q value, its TD loss and ReenGAGE's
goal-gradient loss over environment steps, from the columns every progress.csv logs
(`q_mean`, `critic_loss`, `goal_grad_loss`, each a mean over the updates since the
previous evaluation). One column of panels per (env, d), one row per diagnostic; the
selected batch x lr cell of each method variant, every seed as a thin line and the mean
over seeds bold, with a marker at every evaluation.

A critic that goes wrong shows here before the success rate does: Q values outside what
the rewards allow, a TD loss that climbs, a goal-gradient term that never falls. A
diagnostic a method does not log (the SB3 control logs neither Q nor a goal-gradient term),
a goal-gradient loss that is zero throughout (a method without the term) and a policy that
never trains are left out of the panel, which names them.

Usage:
    python -m reengage.analysis.diagnostics_figure \
        --curves results/tables/EXP/curves.parquet \
        --selection results/tables/EXP/selection.csv --out results/figures/EXP-diagnostics.png
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
from matplotlib.ticker import FuncFormatter

from reengage.analysis.aggregate import (
    AnalysisError,
    OneLineParser,
    add_table_arguments,
    atomic_write_bytes,
    read_curves,
    require_suffix,
    run_cli,
)
from reengage.analysis.figures import (
    curve_summary,
    experiment_title,
    legend_labels,
    markevery,
    step_ticks,
    styles_of,
    variant_order,
)
from reengage.analysis.labels import DEFAULT_BASELINE, dim_name
from reengage.analysis.select import read_selection, selected_curves

DIAGNOSTICS = {
    "q_mean": "Q mean over the batch",
    "critic_loss": "critic loss (TD term)",
    "goal_grad_loss": "goal-gradient loss\n(before its coefficient)",
}
# A loss spanning more than this factor is drawn on a log scale, so its early values do not
# flatten the rest of the run.
LOG_SPAN = 20.0


def _series_kind(runs: pd.DataFrame, column: str) -> str:
    """'drawn', or why the diagnostic is left out for these runs."""
    if runs.get("fixed_policy", pd.Series(False)).any():
        return "no training"
    values = runs[column].dropna() if column in runs else pd.Series(dtype=float)
    if values.empty:
        return "not logged"
    if column == "goal_grad_loss" and (values == 0).all():
        return "no goal-gradient term"
    return "drawn"


def _use_log_scale(values: list[np.ndarray]) -> bool:
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    return bool(finite.size and (finite > 0).all() and finite.max() / finite.min() > LOG_SPAN)


def draw_diagnostics(curves: pd.DataFrame, selection: pd.DataFrame,
                     baseline: str = DEFAULT_BASELINE, note: str | None = None) -> Figure:
    """One experiment's diagnostics as a matplotlib Figure (not yet saved).

    Raises AnalysisError if the tables hold more than one experiment.
    """
    table = selected_curves(curves, selection)
    experiments = table["experiment"].unique()
    if len(experiments) != 1:
        raise AnalysisError(f"one experiment per figure; the tables hold {list(experiments)}")
    panels = table[["env", "dim"]].drop_duplicates().sort_values(["env", "dim"])
    panels = list(panels.itertuples(index=False, name=None))
    order = variant_order(table, baseline)
    labels = legend_labels(table, order)
    styles = styles_of(table)
    drawn: list[str] = []

    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1):
        width = max(4.2 * len(panels), 6.5)
        figure = Figure(figsize=(width, 2.5 * len(DIAGNOSTICS) + 1.6), layout="constrained")
        axes = figure.subplots(len(DIAGNOSTICS), len(panels), sharex="col", squeeze=False)
        for col, (env, dim) in enumerate(panels):
            panel = table[(table["env"] == env) & (table["dim"] == dim)]
            for row, (column, name) in enumerate(DIAGNOSTICS.items()):
                ax = axes[row][col]
                left_out: dict[str, list[str]] = {}
                values = []
                for variant in order:
                    runs = panel[panel["variant"] == variant]
                    if runs.empty:
                        continue
                    kind = _series_kind(runs, column)
                    if kind != "drawn":
                        left_out.setdefault(kind, []).append(labels[variant])
                        continue
                    style = styles[variant]
                    for _, seed in runs.groupby("seed"):
                        ax.plot(seed["step"], seed[column], color=style.color, lw=0.7,
                                alpha=0.3, ls=style.linestyle)
                    summary = curve_summary(runs, column)
                    ax.plot(summary["step"], summary["mean"], color=style.color, lw=1.8,
                            ls=style.linestyle, marker=style.marker, ms=4,
                            markevery=markevery(len(summary)), label=labels[variant])
                    values.append(runs[column].to_numpy(float))
                    if variant not in drawn:
                        drawn.append(variant)
                if _use_log_scale(values):
                    ax.set_yscale("log")
                if left_out:
                    text = "\n".join(
                        textwrap.fill(f"{kind}: {', '.join(names)}",
                                      width=int(width * 9 / len(panels)))
                        for kind, names in left_out.items())
                    ax.text(0.02, 0.97, text, transform=ax.transAxes, va="top",
                            fontsize="small", color="0.35", zorder=6,
                            bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
                if row == 0:
                    ax.set_title(f"{env}, {dim_name(env)} = {dim}")
                if col == 0:
                    ax.set_ylabel(name)
                ax.set_xlim(left=0)
                ax.xaxis.set_major_formatter(FuncFormatter(step_ticks))
            axes[-1][col].set_xlabel("environment steps")

        if drawn:
            handles = [Line2D([], [], color=styles[v].color, lw=1.8, ls=styles[v].linestyle,
                              marker=styles[v].marker, ms=4) for v in drawn]
            names = [labels[v] for v in drawn]
            columns = max(1, min(len(names), 3, int(width * 14) // max(map(len, names))))
            legend = figure.legend(
                handles, names, loc="outside lower center", ncol=columns, frameon=False,
                title=textwrap.fill("thin lines: seeds; bold: their mean; each point is the mean "
                                    "over the updates since the previous evaluation",
                                    width=int(width * 14)), title_fontsize="small")
            legend.get_title().set_color("0.35")
        title = textwrap.fill(f"{experiment_title(table)}: training diagnostics of the "
                              "selected cells", width=int(width * 9))
        if note:
            title += "\n" + textwrap.fill(note, width=int(width * 9))
        figure.suptitle(title)
    return figure


def plot_diagnostics(curves: pd.DataFrame, selection: pd.DataFrame, out_png: Path,
                     baseline: str = DEFAULT_BASELINE, note: str | None = None
                     ) -> tuple[Path, Path]:
    """Draw (see `draw_diagnostics`) and write `out_png` and the PDF beside it."""
    figure = draw_diagnostics(curves, selection, baseline, note)
    out_png = Path(out_png)
    out_pdf = out_png.with_suffix(".pdf")
    atomic_write_bytes(out_png, lambda tmp: figure.savefig(tmp, format="png", dpi=150))
    atomic_write_bytes(out_pdf, lambda tmp: figure.savefig(tmp, format="pdf"))
    return out_png, out_pdf


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m reengage.analysis.diagnostics_figure",
        description="Plot one experiment's training diagnostics (Q mean, critic loss, "
        "goal-gradient loss over steps) for the selected cell of each method variant. Writes "
        "OUT (.png) and the same name with .pdf.",
        epilog="example: python -m reengage.analysis.diagnostics_figure --curves "
        "results/tables/cs/curves.parquet --selection results/tables/cs/selection.csv "
        "--out results/figures/cs-diagnostics.png",
    )
    add_table_arguments(parser, "output .png; the .pdf is written beside it")
    parser.add_argument("--note", default=None, help="a line under the title")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help=f"method first in the legend (default {DEFAULT_BASELINE})")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> None:
        require_suffix(args.out, [".png"], "--out")
        png, pdf = plot_diagnostics(read_curves(args.curves), read_selection(args.selection),
                                    args.out, args.baseline, args.note)
        print(f"wrote {png} and {pdf}", file=sys.stderr)

    return run_cli(parser.prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
