"""Summarise the input-layout and HER A/B (benchmarks/layout_ab.sh): per d and variant, the
IQM of every method's normalised AUC and final success with 95 % stratified-bootstrap
intervals, where our DDPG+HER lies against Stable-Baselines3's interval, ReenGAGE's margin
over DDPG+HER under each layout, and the mean curves.

    python benchmarks/layout_ab_summary.py RUNS_DIR --out results/reference/layout_ab

RUNS_DIR holds one folder per variant (sb3, obs_goal, her_exact, her_release), each laid out
as a workflow experiment's runs. Writes OUT/curves.parquet (every evaluation of every seed),
OUT/summary.csv, OUT/margins.csv, OUT/summary.md and OUT/layout_ab.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from reengage.analysis.aggregate import AnalysisError, aggregate_runs  # noqa: E402
from reengage.analysis.labels import method_style  # noqa: E402
from reengage.analysis.report import control_position  # noqa: E402
from reengage.analysis.select import select_cells  # noqa: E402
from reengage.analysis.stats import compute_stats  # noqa: E402

VARIANTS = {
    "sb3": "inputs (achieved, desired, observation)",
    "obs_goal": "inputs (observation, desired)",
    "her_exact": "sb3 inputs, exact int(0.8·B) relabelled",
    "her_release": "sb3 inputs, SB3 1.3's HER (exact, no final state)",
}
CONTROL, OURS, REENGAGE = "sb3_ddpg_her", "ddpg_her", "reengage_her"


def variant_stats(runs: Path, reps: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, stats) of one variant's folder, treated as one experiment."""
    curves = aggregate_runs(runs, experiment=runs.name)
    stats = compute_stats(curves, select_cells(curves), reps=reps, baseline=OURS)
    return curves, stats


def _fmt(row: pd.Series) -> str:
    return f"{row['estimate']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def summarise(stats: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, d, method): IQM AUC and final with intervals, and where the
    AUC lies against the SB3 control's interval at that d."""
    per_d = stats[(stats["scope"] == "d") & (stats["statistic"] == "iqm")]
    wide = per_d.pivot_table(index=["experiment", "dim", "variant", "label"], columns="score",
                             values=["estimate", "ci_low", "ci_high"], aggfunc="first")
    wide.columns = [f"{score}_{value}" for value, score in wide.columns]
    wide = wide.reset_index()
    n = per_d[per_d["score"] == "auc"].set_index(["experiment", "dim", "variant"])["n_runs"]
    wide["n_seeds"] = [n.get((e, d, v)) for e, d, v in
                       zip(wide["experiment"], wide["dim"], wide["variant"], strict=True)]
    control = wide[wide["variant"] == CONTROL].set_index("dim")
    wide["vs_sb3_interval"] = [
        "(the control)" if row.variant == CONTROL else
        control_position(row.auc_estimate, control.loc[row.dim, "auc_ci_low"],
                         control.loc[row.dim, "auc_ci_high"])
        if row.dim in control.index else "(no SB3 run at this d)"
        for row in wide.itertuples()]
    return wide.sort_values(["dim", "experiment", "variant"], ignore_index=True)


def margins(stats: pd.DataFrame) -> pd.DataFrame:
    """ReenGAGE − DDPG+HER (IQM difference of AUC) and P(ReenGAGE > DDPG), per layout and d."""
    pairs = stats[(stats["scope"] == "d") & (stats["score"] == "auc")
                  & (stats["method"] == REENGAGE)
                  & stats["statistic"].isin(["iqm_diff", "poi"])]
    return pairs[["experiment", "dim", "variant", "statistic", "estimate", "ci_low",
                  "ci_high", "n_runs"]].sort_values(["dim", "experiment", "statistic"],
                                                    ignore_index=True)


def markdown(summary: pd.DataFrame, margin: pd.DataFrame) -> str:
    lines = ["| d | variant | method | IQM AUC [95 % CI] | IQM final [95 % CI] | seeds "
             "| vs SB3's AUC interval |", "|---|---|---|---|---|---|---|"]
    for row in summary.itertuples():
        auc = f"{row.auc_estimate:.3f} [{row.auc_ci_low:.3f}, {row.auc_ci_high:.3f}]"
        final = f"{row.final_estimate:.3f} [{row.final_ci_low:.3f}, {row.final_ci_high:.3f}]"
        lines.append(f"| {row.dim} | {row.experiment} | {row.label} | {auc} | {final} | "
                     f"{row.n_seeds} | {row.vs_sb3_interval} |")
    lines += ["", "| d | variant | ReenGAGE(c=0.2) − DDPG+HER, IQM AUC [95 % CI] "
              "| P(ReenGAGE > DDPG) [95 % CI] |", "|---|---|---|---|"]
    for (dim, experiment), group in margin.groupby(["dim", "experiment"], sort=True):
        by = group.set_index("statistic")
        lines.append(f"| {dim} | {experiment} | {_fmt(by.loc['iqm_diff'])} | "
                     f"{_fmt(by.loc['poi'])} |")
    return "\n".join(lines) + "\n"


def plot(curves: pd.DataFrame, out: Path) -> None:
    dims = sorted(curves["dim"].unique())
    fig, axes = plt.subplots(1, len(dims), figsize=(6 * len(dims), 4.2), squeeze=False)
    for ax, dim in zip(axes[0], dims, strict=True):
        at_d = curves[curves["dim"] == dim]
        for (experiment, label), run in at_d.groupby(["experiment", "label"], sort=True):
            mean = run.groupby("step")["success_rate"].agg(["mean", "std"])
            name = "SB3 DDPG+HER (Stable-Baselines3)" if CONTROL in run["method"].iloc[0] \
                else f"{label}, {experiment}"
            # The method's colour and marker as on every other figure; the variant is the
            # line style (solid: the default inputs).
            method_look = method_style(str(run["method"].iloc[0]))
            style = "-" if experiment == "sb3" else ("--" if experiment == "obs_goal" else ":")
            ax.plot(mean.index, mean["mean"], linestyle=style, marker=method_look.marker,
                    markersize=4, color=method_look.color, label=name,
                    lw=2.5 if CONTROL in run["method"].iloc[0] else 1.5)
            ax.fill_between(mean.index, mean["mean"] - mean["std"], mean["mean"] + mean["std"],
                            color=method_look.color, alpha=0.12)
        ax.set(title=f"ContinuousSeek d = {dim} (10 seeds, mean ± sd)", xlabel="env steps",
               ylabel="success rate", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="the RUNS_DIR of benchmarks/layout_ab.sh")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap repetitions")
    args = parser.parse_args(argv)
    all_curves, all_stats = [], []
    for name in VARIANTS:
        folder = args.runs / name
        if not folder.is_dir():
            continue
        try:
            curves, stats = variant_stats(folder, args.reps)
        except AnalysisError as error:  # a variant with no finished run yet
            print(f"note: {name} left out: {error}", file=sys.stderr)
            continue
        all_curves.append(curves)
        all_stats.append(stats)
    curves, stats = pd.concat(all_curves, ignore_index=True), pd.concat(all_stats)
    args.out.mkdir(parents=True, exist_ok=True)
    curves.to_parquet(args.out / "curves.parquet", index=False)
    summary, margin = summarise(stats), margins(stats)
    summary.to_csv(args.out / "summary.csv", index=False)
    margin.to_csv(args.out / "margins.csv", index=False)
    text = markdown(summary, margin)
    (args.out / "summary.md").write_text(text)
    plot(curves, args.out / "layout_ab.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
