"""The SB3 control column in the analysis: the report says per d whether our DDPG+HER lies
inside SB3's interval, keeps SB3 out of every claim, and the figures draw it as its own
curve. Inputs are synthetic logs written as `reengage train` writes them, and small
hand-made stats tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from reengage.analysis import report
from reengage.analysis.aggregate import aggregate_runs
from reengage.analysis.figures import draw_experiment
from reengage.analysis.labels import method_style
from reengage.analysis.report import Experiment, build_report, control_position
from reengage.analysis.select import select_cells
from reengage.analysis.stats import STATS_COLUMNS, compute_stats

LABELS = {"ddpg_her": "DDPG+HER", "reengage_her": "ReenGAGE(α=0.2/d)+HER",
          "sb3_ddpg_her": "SB3 DDPG+HER"}
HEADER = ("step,success_rate,mean_return,critic_loss,goal_grad_loss,actor_loss,q_mean,"
          "wall_time_s,updates_per_s")


def write_run(root: Path, method: str, seed: int, success: list[float], dim: int = 2) -> None:
    """One seed's progress.csv and run.json at the workflow's path."""
    c = 0.2 if method == "reengage_her" else None
    directory = root / f"ContinuousSeek-d{dim}" / (method if c is None else f"{method}_c0.2") \
        / "b256_lr0.001" / f"seed{seed}"
    directory.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [f"{100 * i},{s!r},{-10 + 10 * s!r},,,,,{i},0.0"
                        for i, s in enumerate(success)]
    (directory / "progress.csv").write_text("\n".join(lines) + "\n")
    record = {"format_version": 1, "status": "finished", "seed": seed, "population": [seed],
              "config": {"env": "ContinuousSeek", "dim": dim, "method": method, "c": c,
                         "batch_size": 256, "lr": 0.001, "steps": 100 * (len(success) - 1),
                         "eval_every": 100, "eval_episodes": 10},
              "label": LABELS[method], "wall_time_s": 10.0, "versions": {}}
    (directory / "run.json").write_text(json.dumps(record))


def write_grid(root: Path, levels: dict[str, float], dims=(2, 4), seeds: int = 3) -> None:
    """Every method of `levels` at every d: a curve rising to about its level."""
    for method, level in levels.items():
        for dim in dims:
            for seed in range(seeds):
                top = level + 0.02 * seed
                write_run(root, method, seed, [0.0, top / 2, top, top], dim)


def iqm_row(method: str, dim: int, estimate: float, low: float, high: float) -> dict:
    return {"experiment": "cs", "env": "ContinuousSeek", "scope": "d", "dim": dim,
            "statistic": "iqm", "score": "auc", "metric": "success_rate", "variant": method,
            "method": method, "c": float("nan"), "label": LABELS[method],
            "estimate": estimate, "ci_low": low, "ci_high": high, "n_runs": 3, "n_tasks": 1,
            "tasks": f"d{dim}", "n_seeds": 3, "n_diverged": 0, "n_incomplete": 0,
            "n_dropped": 0, "reps": 100, "confidence": 0.95, "note": ""}


def experiment(tmp_path: Path, stats_rows: list[dict], methods=("ddpg_her", "sb3_ddpg_her"),
               dims=(2, 4)) -> Experiment:
    write_grid(tmp_path / "runs", {m: 0.5 for m in methods}, dims)
    curves = aggregate_runs(tmp_path / "runs", "cs")
    stats = pd.DataFrame(stats_rows).reindex(columns=STATS_COLUMNS)
    return Experiment("cs", select_cells(curves), stats, None, None, tmp_path / "cs.png")


def control_section(text: str) -> str:
    return text.split("#### Independent implementation\n")[1].split("\n### ")[0]


def table_rows(section: str) -> dict[str, list[str]]:
    """The control table's body, by its d column."""
    rows = [line.strip("|").split(" | ") for line in section.splitlines()
            if line.startswith("| ContinuousSeek")]
    return {row[1].strip(): [cell.strip() for cell in row] for row in rows}


@pytest.mark.parametrize("estimate, expected", [
    (0.5, "inside"), (0.4, "inside"), (0.6, "inside"), (0.61, "above"), (0.39, "below"),
    (float("nan"), "–"),
])
def test_control_position(estimate, expected):
    assert control_position(estimate, 0.4, 0.6) == expected
    assert control_position(0.5, float("nan"), 0.6) == "–"


def test_the_report_says_where_ours_lies_against_sb3_per_d(tmp_path):
    e = experiment(tmp_path, [
        iqm_row("ddpg_her", 2, 0.50, 0.45, 0.55), iqm_row("sb3_ddpg_her", 2, 0.48, 0.40, 0.56),
        iqm_row("ddpg_her", 4, 0.70, 0.65, 0.75), iqm_row("sb3_ddpg_her", 4, 0.30, 0.20, 0.40),
        iqm_row("ddpg_her", 8, 0.10, 0.05, 0.15), iqm_row("sb3_ddpg_her", 8, 0.30, 0.20, 0.40),
    ], dims=(2, 4, 8))
    section = control_section(build_report([e], tmp_path / "report.md"))
    rows = table_rows(section)
    assert list(rows) == ["d = 2", "d = 4", "d = 8"]
    assert rows["d = 2"][2:] == ["0.50 [0.45, 0.55]", "0.48 [0.40, 0.56]", "inside", "3 / 3"]
    assert rows["d = 4"][4] == "above" and rows["d = 8"][4] == "below"
    assert "| env | d | DDPG+HER (ours) | SB3 DDPG+HER | ours vs SB3 DDPG+HER's CI |" in section
    assert "*Inside* means our DDPG+HER scores what SB3 DDPG+HER does" in section
    assert "The control enters no verdict." in section


def test_no_control_subsection_without_both_columns(tmp_path):
    only_ours = experiment(tmp_path / "a", [iqm_row("ddpg_her", 2, 0.5, 0.4, 0.6)],
                           methods=("ddpg_her",))
    only_sb3 = experiment(tmp_path / "b", [iqm_row("sb3_ddpg_her", 2, 0.5, 0.4, 0.6)],
                          methods=("sb3_ddpg_her",))
    for e in (only_ours, only_sb3):
        assert "Independent implementation" not in build_report([e], tmp_path / "report.md")
    # Both columns, but at different d: nothing to set side by side.
    apart = experiment(tmp_path / "c", [iqm_row("ddpg_her", 2, 0.5, 0.4, 0.6),
                                        iqm_row("sb3_ddpg_her", 4, 0.5, 0.4, 0.6)])
    assert "Independent implementation" not in build_report([apart], tmp_path / "report.md")


def test_sb3_takes_no_part_in_the_claims(tmp_path):
    """Real statistics of DDPG+HER, ReenGAGE+HER and an SB3 column far above both: the
    claims read the same with the SB3 rows as without them, and never name SB3."""
    write_grid(tmp_path / "runs", {"ddpg_her": 0.2, "reengage_her": 0.6, "sb3_ddpg_her": 0.95},
               seeds=report.MIN_SEEDS)
    curves = aggregate_runs(tmp_path / "runs", "cs")
    selection = select_cells(curves)
    stats = compute_stats(curves, selection, reps=50, seed=0)
    assert "sb3_ddpg_her" in set(stats["method"])  # compared with DDPG+HER like any column

    def claims(stats_table: pd.DataFrame) -> str:
        e = Experiment("cs", selection, stats_table, None, None, tmp_path / "cs.png")
        text = build_report([e], tmp_path / "report.md")
        return text.split("## Claims\n")[1].split("## Experiments\n")[0], text

    with_sb3, text = claims(stats)
    without_sb3, _ = claims(stats[stats["method"] != "sb3_ddpg_her"])
    assert with_sb3 == without_sb3
    assert "SB3" not in with_sb3
    assert "ReenGAGE+HER beats DDPG+HER (every c, all d pooled): **supported**" in with_sb3
    rows = table_rows(control_section(text))
    assert [row[4] for row in rows.values()] == ["below", "below"]  # 0.2-level vs 0.95-level


def test_the_figure_draws_sb3_as_its_own_curve(tmp_path):
    write_grid(tmp_path / "runs", {"ddpg_her": 0.2, "sb3_ddpg_her": 0.8}, dims=(2,))
    curves = aggregate_runs(tmp_path / "runs", "cs")
    figure = draw_experiment(curves, select_cells(curves))
    texts = [t.get_text() for t in figure.legends[0].get_texts()]
    assert texts == ["DDPG+HER", "SB3 DDPG+HER"]
    lines = [line for line in figure.axes[0].get_lines() if len(line.get_xdata()) > 1]
    assert len(lines) == 2
    colors = {line.get_label(): line.get_color() for line in lines}
    # Each in its own method's colour: SB3's control is not drawn as our baseline.
    assert colors == {"DDPG+HER": method_style("ddpg_her").color,
                      "SB3 DDPG+HER": method_style("sb3_ddpg_her").color}
    sb3 = next(line for line in lines if line.get_label() == "SB3 DDPG+HER")
    assert max(sb3.get_ydata()) == pytest.approx(0.82)  # the SB3 curve is the higher one


def test_the_report_module_names_no_control_as_a_claims_method():
    methods = {name for c in (*report.RUNTIME_PAIRS,) for name in (c.baseline, c.treatment)}
    assert not methods & set(report.CONTROLS)
