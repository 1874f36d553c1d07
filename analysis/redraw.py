"""Redraw every figure of a results folder from its tables alone, without the training logs
(the workflow would retrain to recreate missing logs): `make figures`, or

    python -m reengage.analysis.redraw results/reference/default --config config/default.yaml

For each experiment of the config whose `tables/<experiment>/` holds curves.parquet and
selection.csv (and stats.csv for the rliable views) it draws what the workflow's figure
rules draw, with the same notes and baselines; then the theory figures where their tables
are. Figures go to `<results>/figures/`, or to --out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from . import diagnostics_figure, figures, rliable_figures, theory_figure


def _experiment_commands(tables: Path, out: Path, name: str, experiment: dict,
                         reps: int) -> list[tuple[str, Callable, list[str]]]:
    curves, selection = tables / "curves.parquet", tables / "selection.csv"
    baseline = experiment["baseline"]
    note = ["--note", experiment["note"]] if experiment.get("note") else []
    common = ["--curves", str(curves), "--selection", str(selection)]
    commands = [
        (f"{name}.png", figures.main,
         [*common, "--out", str(out / f"{name}.png"), *note, "--baseline", baseline]),
        (f"{name}-diagnostics.png", diagnostics_figure.main,
         [*common, "--out", str(out / f"{name}-diagnostics.png"), *note,
          "--baseline", baseline]),
    ]
    if (tables / "stats.csv").exists():
        commands.append((f"{name}-intervals/-improvement/-profiles.png", rliable_figures.main, [
            "--stats", str(tables / "stats.csv"), *common,
            "--intervals", str(out / f"{name}-intervals.png"),
            "--improvement", str(out / f"{name}-improvement.png"),
            "--profiles", str(out / f"{name}-profiles.png"),
            "--reps", str(reps), "--baseline", baseline]))
    return commands


def _theory_commands(tables: Path, out: Path) -> list[tuple[str, Callable, list[str]]]:
    points, slopes = tables / "theory_points.csv", tables / "theory_slopes.csv"
    if not (points.exists() and slopes.exists()):
        return []
    arguments = ["--points", str(points), "--slopes", str(slopes),
                 "--out-png", str(out / "theory.png"), "--out-pdf", str(out / "theory.pdf")]
    if (tables / "theory_mlp.csv").exists():
        arguments += ["--mlp", str(tables / "theory_mlp.csv"),
                      "--mlp-out-png", str(out / "theory_mlp.png"),
                      "--mlp-out-pdf", str(out / "theory_mlp.pdf")]
    return [("theory.png", theory_figure.main, arguments)]


def redraw(results: Path, config: dict, out: Path) -> tuple[list[str], list[str]]:
    """Draw what the tables allow; returns (figures drawn, experiments skipped and why)."""
    from reengage.workflow import apply_defaults

    config = apply_defaults(config)
    out.mkdir(parents=True, exist_ok=True)
    drawn, skipped = [], []
    commands = []
    for name, experiment in config["experiments"].items():
        tables = results / "tables" / name
        missing = [f for f in ("curves.parquet", "selection.csv") if not (tables / f).exists()]
        if missing:
            skipped.append(f"{name}: no {' or '.join(missing)} under {tables}")
            continue
        commands += _experiment_commands(tables, out, name, experiment,
                                         config["bootstrap_reps"])
    commands += _theory_commands(results / "tables", out)
    for label, draw, arguments in commands:
        code = draw(arguments)
        if code:
            raise RuntimeError(f"drawing {label} failed (exit status {code})")
        drawn.append(label)
    return drawn, skipped


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reengage.analysis.redraw",
        description="Redraw a results folder's figures from its tables (curves.parquet, "
        "selection.csv, stats.csv, theory tables), without its training logs.",
    )
    parser.add_argument("results", type=Path,
                        help="a results folder holding tables/ (e.g. results or "
                        "results/reference/default)")
    parser.add_argument("--config", type=Path, default=Path("config/default.yaml"),
                        help="the config that made it: experiments, notes and baselines "
                        "(default config/default.yaml)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the figures go (default RESULTS/figures)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.results / "tables").is_dir():
        print(f"redraw: {args.results} has no tables/ folder", file=sys.stderr)
        return 2
    try:
        config = yaml.safe_load(args.config.read_text())
    except (OSError, yaml.YAMLError) as error:
        print(f"redraw: --config {args.config}: {error}", file=sys.stderr)
        return 2
    drawn, skipped = redraw(args.results, config, args.out or args.results / "figures")
    for line in skipped:
        print(f"redraw: skipped {line}", file=sys.stderr)
    print(f"redraw: drew {len(drawn)} figure sets under {args.out or args.results / 'figures'}")
    return 0 if drawn else 2


if __name__ == "__main__":
    raise SystemExit(main())
