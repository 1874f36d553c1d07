"""Figures for the theory experiment (Propositions 1 and 2), drawn from its CSV tables only.

`plot_theory`: one log-log panel per environment, transitions needed N* versus d for the
TD loss and ReenGAGE's goal-gradient loss (median over seeds, bars from min to max), the
fitted power laws with their confidence intervals in the legend, and the identifiability
bounds `d(d-1)/2` and `d-1` beside them. `plot_mlp`: policy cosine versus buffer size for
generic MLP critics (DDPG versus ReenGAGE). Nothing here imports torch or the
environments, so the figures can be rebuilt anywhere from `reengage.theory`'s tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from reengage.analysis.labels import DDPG_FAMILY, REENGAGE_FAMILY  # noqa: E402

ENV_ORDER = ("RotationReach", "TwoPhaseRotation")
# The TD loss is DDPG's and the goal-gradient loss ReenGAGE's: each is drawn in its
# method's colour and marker, as on the learning curves.
LOSS_STYLE = {
    "td": {"label": "TD loss (DDPG)", "color": DDPG_FAMILY.color,
           "marker": DDPG_FAMILY.marker},
    "gradient": {"label": "goal-gradient loss (ReenGAGE)", "color": REENGAGE_FAMILY.color,
                 "marker": REENGAGE_FAMILY.marker},
}
METHOD_STYLE = {
    "ddpg": {"label": "DDPG (TD loss)", "color": DDPG_FAMILY.color,
             "marker": DDPG_FAMILY.marker},
    "reengage": {"label": "ReenGAGE (TD + c·gradient)", "color": REENGAGE_FAMILY.color,
                 "marker": REENGAGE_FAMILY.marker},
}


def _save(fig: plt.Figure, out_png: str | Path, out_pdf: str | Path | None = None) -> None:
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=150, bbox_inches="tight")
    if out_pdf is not None:
        Path(out_pdf).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_pdf, bbox_inches="tight")
    plt.close(fig)


def plot_theory(
    points_csv: str | Path,
    slopes_csv: str | Path,
    out_png: str | Path,
    out_pdf: str | Path | None = None,
) -> None:
    """N* versus d on log-log axes, one panel per environment, both losses, with bounds.

    The fitted line is redrawn from the points (OLS intercept at the tabled slope), so it
    is exactly the fit whose slope and interval the legend quotes.
    """
    points = pd.read_csv(points_csv)
    slopes = pd.read_csv(slopes_csv)
    envs = [e for e in ENV_ORDER if e in set(points["env"])] or sorted(set(points["env"]))
    fig, axes = plt.subplots(1, len(envs), figsize=(5.2 * len(envs), 4.4), squeeze=False)
    dims_all = np.sort(points["d"].unique())
    grid = np.geomspace(dims_all.min(), dims_all.max(), 100)
    for ax, env in zip(axes[0], envs, strict=True):
        ax.plot(grid, grid * (grid - 1) / 2, "--", color="0.35", lw=1.2,
                label="d(d-1)/2: TD identifiability bound")
        ax.plot(grid, np.maximum(grid - 1, 1), ":", color="0.35", lw=1.5,
                label="d-1: gradient identifiability bound")
        for loss, style in LOSS_STYLE.items():
            table = points[(points["env"] == env) & (points["loss"] == loss)]
            if table.empty:
                continue
            by_dim = table.groupby("d")["n_star"]
            dims = np.asarray(by_dim.median().index, float)
            median = by_dim.median().to_numpy()
            low, high = by_dim.min().to_numpy(), by_dim.max().to_numpy()
            fit = slopes[(slopes["env"] == env) & (slopes["loss"] == loss)]
            label = style["label"]
            if not fit.empty:
                row = fit.iloc[0]
                label += f": slope {row.slope:.2f} (95% CI {row.ci_low:.2f}–{row.ci_high:.2f})"
                finite = table[np.isfinite(table["n_star"])]
                x, y = np.log(finite["d"].to_numpy(float)), np.log(finite["n_star"].to_numpy())
                intercept = y.mean() - row.slope * x.mean()
                ax.plot(grid, np.exp(intercept) * grid**row.slope, "-", color=style["color"],
                        lw=1, alpha=0.6)
            ax.errorbar(dims, median, yerr=[median - low, high - median], fmt=style["marker"],
                        color=style["color"], ms=6, capsize=3, lw=1.2, label=label)
            if "n_full_rank" in table:
                full = table.groupby("d")["n_full_rank"].median()
                ax.plot(full.index, full.to_numpy(), "x", color=style["color"], ms=7,
                        mew=1.5, alpha=0.8)
        ax.plot([], [], "x", color="0.35", ms=7, mew=1.5,
                label="exact full rank of the same buffers (median)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(dims_all, [str(int(d)) for d in dims_all])
        ax.set_xlabel("dimension d (goal, state, action)")
        ax.set_title(env)
        if env == "TwoPhaseRotation":
            ax.text(0.98, 0.03, "bounds count informative tuples (s¹ ≠ 0),\n"
                    "about half of a buffer's tuples", transform=ax.transAxes, ha="right",
                    va="bottom", fontsize=7.5, color="0.3")
        ax.grid(True, which="major", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        rank = ("TD loss", "goal-gradient", "exact", "d(d-1)/2", "d-1")
        order = sorted(range(len(labels)),
                       key=lambda i: next(k for k, p in enumerate(rank) if labels[i].startswith(p)))
        ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7.5,
                  loc="upper left", framealpha=0.9)
    axes[0][0].set_ylabel("transitions N* to recover the optimal policy")
    fig.suptitle("Transitions needed to recover the optimal policy versus d "
                 "(median over seeds, bars: min to max)", fontsize=10)
    fig.tight_layout()
    _save(fig, out_png, out_pdf)


def plot_mlp(
    mlp_csv: str | Path, out_png: str | Path, out_pdf: str | Path | None = None
) -> None:
    """Policy cosine versus buffer size for MLP critics, one panel per d, both methods
    (mean over seeds, bars from min to max)."""
    table = pd.read_csv(mlp_csv)
    dims = sorted(table["d"].unique())
    fig, axes = plt.subplots(1, len(dims), figsize=(4.4 * len(dims), 3.8), squeeze=False,
                             sharey=True)
    for ax, dim in zip(axes[0], dims, strict=True):
        for method, style in METHOD_STYLE.items():
            rows = table[(table["d"] == dim) & (table["method"] == method)]
            if rows.empty:
                continue
            stats = rows.groupby("n")["cosine"].agg(["mean", "min", "max"])
            ax.errorbar(stats.index, stats["mean"],
                        yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
                        fmt="-" + style["marker"], color=style["color"], capsize=3,
                        label=style["label"])
        ax.axhline(0.99, color="0.4", ls=":", lw=1, label="0.99 (closed-form criterion)")
        ax.set_xscale("log", base=2)
        sizes = sorted(table["n"].unique())
        ax.set_xticks(sizes, [str(int(n)) for n in sizes])
        ax.set_xlabel("transitions N in the buffer")
        ax.set_title(f"RotationReach, d = {dim}, MLP critics")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("policy cosine to the optimal action")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Generic MLP critics trained offline on a fixed buffer "
                 "(mean over seeds, bars: min to max)", fontsize=10)
    fig.tight_layout()
    _save(fig, out_png, out_pdf)


def main(argv: list[str] | None = None) -> int:
    """CLI: draw the theory figure (and the MLP figure when its table is given)."""
    parser = argparse.ArgumentParser(
        prog="python -m reengage.analysis.theory_figure",
        description="Draw the theory figures from the CSV tables of `python -m reengage.theory`.",
    )
    parser.add_argument("--points", required=True, help="theory_points.csv")
    parser.add_argument("--slopes", required=True, help="theory_slopes.csv")
    parser.add_argument("--out-png", required=True)
    parser.add_argument("--out-pdf")
    parser.add_argument("--mlp", help="theory_mlp.csv (optional)")
    parser.add_argument("--mlp-out-png", help="where the MLP figure goes (with --mlp)")
    parser.add_argument("--mlp-out-pdf")
    args = parser.parse_args(argv)
    plot_theory(args.points, args.slopes, args.out_png, args.out_pdf)
    if args.mlp:
        if not args.mlp_out_png:
            parser.error("--mlp needs --mlp-out-png")
        plot_mlp(args.mlp, args.mlp_out_png, args.mlp_out_pdf)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
