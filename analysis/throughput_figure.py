"""Throughput figure from the benchmark's JSON (benchmarks/throughput.py): aggregate
seed-steps/s against population size, beside Stable-Baselines3 and the rate the GEMM
ceiling would allow. Reads the JSON only (no torch), so it redraws anywhere.

    python -m reengage.analysis.throughput_figure results/benchmarks/throughput.json \
        --out results/figures/throughput.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from reengage.analysis.labels import method_style  # noqa: E402

# Each contender in its method's colour, as on every other figure.
METHODS = {m: (method_style(m).label, method_style(m).color)
           for m in ("ddpg_her", "reengage_her")}
SB3 = method_style("sb3_ddpg_her")
DEFAULT_OUT = Path("results/figures/throughput.png")


def _records(json_path: Path) -> list[dict[str, Any]]:
    records = json.loads(Path(json_path).read_text())
    if not isinstance(records, list):
        raise ValueError(f"{json_path}: expected a list of records")
    return records


def _subtitle(records: list[dict[str, Any]]) -> str:
    parts = []
    ours = [r for r in records if r.get("contender") in METHODS]
    if ours:
        r = ours[0]
        hidden = "x".join(str(h) for h in r.get("hidden", []))
        policy = r.get("omp_wait_policy")
        threads = f"{r.get('threads')} torch threads"
        if policy and policy not in ("unset", "inherit"):
            threads += f" (OMP_WAIT_POLICY={policy})"
        parts.append(f"ContinuousSeek d={r.get('dim')}, batch {r.get('batch_size')}, "
                     f"MLP {hidden}, {threads}")
    info = next((r for r in records if r.get("contender") == "run_info"), None)
    if info and info.get("load_avg_before"):
        before, after = info["load_avg_before"][0], info["load_avg_after"][0]
        parts.append(f"load avg {before:.1f} → {after:.1f} on {info.get('cpu_count')} cores")
    return "\n".join(parts)


def plot_throughput(json_path: Path | str, out_png: Path | str = DEFAULT_OUT) -> Path:
    """Draw aggregate seed-steps/s versus population size (median, min–max bars) for ours,
    with SB3's median (band: min–max) and the ceiling-implied rates as horizontal lines."""
    records = _records(Path(json_path))
    fig, ax = plt.subplots(figsize=(7.5, 5.4), dpi=150)
    populations: set[int] = set()
    ceiling = next((r for r in records if r.get("contender") == "gemm_ceiling"), None)
    for contender, (label, color) in METHODS.items():
        rows = sorted((r for r in records if r.get("contender") == contender
                       and r.get("seed_steps_per_s_median") is not None),
                      key=lambda r: r["population"])
        if not rows:
            continue
        x = [r["population"] for r in rows]
        y = [r["seed_steps_per_s_median"] for r in rows]
        low = [m - r["seed_steps_per_s_min"] for m, r in zip(y, rows, strict=True)]
        high = [r["seed_steps_per_s_max"] - m for m, r in zip(y, rows, strict=True)]
        populations.update(x)
        ax.errorbar(x, y, yerr=[low, high], color=color, marker=method_style(contender).marker,
                    capsize=4, lw=2, label=f"{label} (ours, population)")
        for xi, yi in zip(x, y, strict=True):
            ax.annotate(f"{yi:.3g}", (xi, yi), textcoords="offset points", xytext=(8, 4),
                        fontsize=8, color=color, fontweight="bold")
        if ceiling is not None and rows[0].get("ceiling_seed_steps_per_s"):
            ax.axhline(rows[0]["ceiling_seed_steps_per_s"], color=color, ls=":", lw=1.5,
                       label=f"{label} if every FLOP ran at the GEMM ceiling "
                       f"({ceiling['gflops_median']:.0f} GFLOP/s)")
    sb3 = next((r for r in records if r.get("contender") == "sb3_ddpg_her"
                and r.get("seed_steps_per_s_median") is not None), None)
    if sb3 is not None:
        ax.axhline(sb3["seed_steps_per_s_median"], color=SB3.color, ls="--", lw=2,
                   label=f"{SB3.label} (Stable-Baselines3), 1 seed: "
                   f"{sb3['seed_steps_per_s_median']:.3g} (band: min–max)")
        ax.axhspan(sb3["seed_steps_per_s_min"], sb3["seed_steps_per_s_max"], color=SB3.color,
                   alpha=0.15, lw=0)
    if populations:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sorted(populations)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlim(min(populations) / 1.25, max(populations) * 1.25)
    drawn = [v for line in ax.get_lines() for v in line.get_ydata() if v > 0]
    if drawn and max(drawn) / min(drawn) > 20:  # a collapse (e.g. spinning threads): log
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    else:
        ax.set_ylim(0, 1.08 * max([*drawn, sb3["seed_steps_per_s_max"] if sb3 else 0]))
    ax.set_xlabel("population size (seeds trained together in one process)")
    ax.set_ylabel("seed-steps/s, all seeds together\n(env steps, one update each)")
    fig.suptitle("Training throughput", x=0.02, ha="left", fontsize=12)
    ax.set_title(_subtitle(records), loc="left", fontsize=8, color="0.35")
    ax.grid(True, which="major", alpha=0.35)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
              frameon=False)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="throughput_figure",
        description="Draw the throughput figure from benchmarks/throughput.py's JSON.",
    )
    parser.add_argument("json", type=Path, help="records written by throughput.py --json")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"PNG to write (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    print(plot_throughput(args.json, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
