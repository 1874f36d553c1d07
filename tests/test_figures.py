"""Figures a reader can trust at a glance: one colour, marker and label per method on every
figure, the diagnostics and rliable views drawn from small synthetic tables, and a note
with shell metacharacters passed to the figure rules intact."""

from __future__ import annotations

import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest
import yaml

from reengage.analysis import labels, rliable_figures, theory_figure, throughput_figure
from reengage.analysis.diagnostics_figure import draw_diagnostics
from reengage.analysis.figures import draw_experiment
from reengage.analysis.labels import METHOD_STYLES, method_style, variant_name, variant_styles
from reengage.analysis.select import select_cells
from reengage.analysis.stats import compute_stats

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LABELS = {"ddpg_her": "DDPG+HER", "reengage_her": "ReenGAGE(α=0.2/d)+HER",
          "sb3_ddpg_her": "SB3 DDPG+HER", "my_method": "MyMethod+HER"}
STEPS = (0, 1000, 2000, 3000)


def frame(levels: dict[str, float], dims=(2,), seeds: int = 5) -> pd.DataFrame:
    """A tidy curves table as `aggregate` writes it: each method rises to about its level.

    Losses are missing at step 0 (no update yet); DDPG+HER logs a zero goal-gradient loss
    (it has no such term) and the SB3 control logs neither Q nor the goal-gradient loss.
    """
    rows = []
    for method, level in levels.items():
        c = 0.2 if method == "reengage_her" else None
        for dim in dims:
            for seed in range(seeds):
                for i, step in enumerate(STEPS):
                    trained = i > 0
                    success = min(1.0, level * i / (len(STEPS) - 1) + 0.01 * seed)
                    grad = 0.0 if method == "ddpg_her" else 0.1 / (i + 1)
                    rows.append({
                        "experiment": "exp", "env": "ContinuousSeek", "dim": dim,
                        "variant": variant_name(method, c), "method": method,
                        "c": math.nan if c is None else c, "label": LABELS[method],
                        "batch_size": 256, "lr": 0.001, "seed": seed, "step": step,
                        "success_rate": success, "mean_return": 10 * success - 10,
                        "critic_loss": 1.0 / (i + 1) + 0.01 * seed if trained else math.nan,
                        "goal_grad_loss": grad if trained and method != "sb3_ddpg_her"
                        else math.nan,
                        "actor_loss": 1.0 if trained else math.nan,
                        "q_mean": -5.0 + i + 0.1 * seed
                        if trained and method != "sb3_ddpg_her" else math.nan,
                        "status": "finished", "diverged_at_step": pd.NA,
                        "fixed_policy": False,
                    })
    return pd.DataFrame(rows)


def line_colours(figure) -> dict[str, str]:
    """Label -> colour of every labelled line of a matplotlib figure."""
    return {line.get_label(): matplotlib.colors.to_hex(line.get_color())
            for ax in figure.axes for line in ax.get_lines()
            if not line.get_label().startswith("_")}


def bars(ax) -> dict:
    """Label -> the bar of every labelled bar container of an axes."""
    return {bar.get_label(): bar.patches[0] for bar in ax.containers
            if not bar.get_label().startswith("_")}


def bar_colours(figure) -> dict[str, str]:
    """Label -> colour (without alpha) of every labelled bar of a matplotlib figure."""
    return {label: matplotlib.colors.to_hex(patch.get_facecolor(), keep_alpha=False)
            for ax in figure.axes for label, patch in bars(ax).items()}


@pytest.fixture(scope="module")
def tables():
    curves = frame({"ddpg_her": 0.6, "reengage_her": 0.9, "sb3_ddpg_her": 0.5,
                    "my_method": 0.3})
    selection = select_cells(curves)
    return curves, selection, compute_stats(curves, selection, reps=50, seed=0)


# -- one colour per method ------------------------------------------------------------------
def test_a_method_has_the_same_colour_on_every_figure(tables):
    curves, selection, stats = tables
    expected = {LABELS[m]: method_style(m).color.lower() for m in LABELS}
    learning = line_colours(draw_experiment(curves, selection))
    diagnostics = line_colours(draw_diagnostics(curves, selection))
    assert learning == expected
    assert diagnostics == expected
    seeds = " (5 seeds)"
    intervals = rliable_figures.draw_intervals(stats)
    profiles = rliable_figures.draw_profiles(curves, selection, reps=20)
    try:
        assert bar_colours(intervals) == {f"{k}{seeds}": v for k, v in expected.items()}
        assert line_colours(profiles) == {f"{k}{seeds}": v for k, v in expected.items()}
    finally:
        for figure in (intervals, profiles):
            rliable_figures.plt.close(figure)
    # The theory and throughput figures draw DDPG and ReenGAGE in the same colours.
    ddpg, reengage = method_style("ddpg_her"), method_style("reengage_her")
    assert theory_figure.LOSS_STYLE["td"]["color"] == ddpg.color
    assert theory_figure.LOSS_STYLE["gradient"]["color"] == reengage.color
    assert theory_figure.METHOD_STYLE["reengage"]["marker"] == reengage.marker
    assert throughput_figure.METHODS["ddpg_her"][1] == ddpg.color
    assert throughput_figure.SB3.color == method_style("sb3_ddpg_her").color


def test_the_goal_set_methods_keep_their_family_colours():
    """DDPG is the same baseline with or without HER; ReenGAGE is one method on both tasks."""
    assert method_style("ddpg").color == method_style("ddpg_her").color
    assert method_style("multi_reengage").color == method_style("reengage_her").color
    assert method_style("greedy").color not in {method_style(m).color
                                                for m in METHOD_STYLES if m != "greedy"}


def test_unknown_methods_get_fixed_colours_no_known_method_uses():
    known = {style.color for style in METHOD_STYLES.values()}
    names = [f"plugin_{i}" for i in range(40)]
    styles = [method_style(name) for name in names]
    assert not {s.color for s in styles} & known
    assert len({s.color for s in styles}) > 3  # spread over the pool, not one colour
    assert styles[0].label == "plugin_0"
    # Fixed across processes: not Python's salted hash().
    code = ("from reengage.analysis.labels import method_style; "
            "print(method_style('plugin_0').color, method_style('plugin_0').marker)")
    for salt in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": salt}, check=True)
        assert out.stdout.split() == [styles[0].color, styles[0].marker]


def test_variants_of_one_method_share_its_hue_lighter_to_darker_by_c():
    # One row per seed, as a table gives them; a missing c is NaN, which never equals itself.
    styles = variant_styles([("r_c0.3", "reengage_her", 0.3), ("r_c0.1", "reengage_her", 0.1),
                             ("r_c0.2", "reengage_her", 0.2), ("ddpg_her", "ddpg_her", math.nan),
                             ("ddpg_her", "ddpg_her", float("nan"))])
    assert styles["ddpg_her"].color == method_style("ddpg_her").color
    assert styles["ddpg_her"].linestyle == "-"
    lightness = [sum(matplotlib.colors.to_rgb(styles[v].color))
                 for v in ("r_c0.1", "r_c0.2", "r_c0.3")]
    assert lightness[0] > lightness[1] > lightness[2]
    assert len({styles[v].linestyle for v in ("r_c0.1", "r_c0.2", "r_c0.3")}) == 3
    hues = {round(matplotlib.colors.rgb_to_hsv(matplotlib.colors.to_rgb(styles[v].color))[0], 2)
            for v in ("r_c0.1", "r_c0.2", "r_c0.3")}
    assert len(hues) == 1
    assert {styles[v].marker for v in styles} == {"o", "s"}


def test_learning_curves_mark_every_evaluation_and_title_the_environment(tables):
    curves, selection, _ = tables
    figure = draw_experiment(curves, selection, note="reduced")
    ours = next(line for line in figure.axes[0].get_lines() if line.get_label() == "DDPG+HER")
    assert ours.get_marker() == method_style("ddpg_her").marker
    assert list(ours.get_xdata()) == list(STEPS)
    title = figure.get_suptitle()
    assert title.startswith("ContinuousSeek: success rate") and "exp" not in title


# -- diagnostics ----------------------------------------------------------------------------
def test_diagnostics_draw_each_method_from_a_synthetic_frame(tables):
    curves, selection, _ = tables
    figure = draw_diagnostics(curves, selection)
    q_axis, critic_axis, gradient_axis = figure.axes[:3]

    def mean_line(ax, label):
        return next(line for line in ax.get_lines() if line.get_label() == label)

    # The bold line is the mean over seeds of the logged column, at the logged steps.
    ddpg = curves[(curves["method"] == "ddpg_her") & curves["critic_loss"].notna()]
    expected = ddpg.groupby("step")["critic_loss"].mean()
    line = mean_line(critic_axis, "DDPG+HER")
    assert list(line.get_xdata()) == list(expected.index)
    assert list(line.get_ydata()) == pytest.approx(list(expected))
    assert mean_line(critic_axis, "SB3 DDPG+HER") is not None  # SB3 logs its critic loss
    assert {line.get_label() for line in q_axis.get_lines()
            if not line.get_label().startswith("_")} == {LABELS[m] for m in LABELS} - {
        "SB3 DDPG+HER"}
    gradient_labels = {line.get_label() for line in gradient_axis.get_lines()
                       if not line.get_label().startswith("_")}
    assert gradient_labels == {"ReenGAGE(α=0.2/d)+HER", "MyMethod+HER"}
    notes = " ".join(text.get_text() for text in gradient_axis.texts)
    assert "no goal-gradient term: DDPG+HER" in notes
    assert "not logged: SB3 DDPG+HER" in notes
    assert gradient_axis.get_yscale() == "linear" and critic_axis.get_yscale() == "linear"
    assert [ax.get_ylabel() for ax in figure.axes[:3]][0].startswith("Q mean")


def test_diagnostics_cli_writes_png_and_pdf(tables, tmp_path):
    from reengage.analysis import diagnostics_figure

    curves, selection, _ = tables
    curves.to_parquet(tmp_path / "curves.parquet")
    selection.to_csv(tmp_path / "selection.csv", index=False)
    out = tmp_path / "figures" / "exp-diagnostics.png"
    assert diagnostics_figure.main(["--curves", str(tmp_path / "curves.parquet"),
                                    "--selection", str(tmp_path / "selection.csv"),
                                    "--out", str(out), "--note", "it's reduced"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


# -- rliable --------------------------------------------------------------------------------
def test_interval_and_improvement_figures_show_the_stats_table(tables):
    _, _, stats = tables
    intervals = rliable_figures.draw_intervals(stats)
    improvement = rliable_figures.draw_improvement(stats)
    try:
        titles = [ax.get_title() for ax in intervals.axes]
        assert titles == ["Median", "IQM", "Mean", "Optimality gap"]
        iqm = stats[(stats["statistic"] == "iqm") & (stats["scope"] == "all_d")
                    & (stats["score"] == "auc")].set_index("label")
        drawn = bars(intervals.axes[1])
        for label, row in iqm.iterrows():
            bar = drawn[f"{label} (5 seeds)"]
            assert bar.get_x() == pytest.approx(row["ci_low"])
            assert bar.get_x() + bar.get_width() == pytest.approx(row["ci_high"])
        poi = stats[(stats["statistic"] == "poi") & (stats["scope"] == "all_d")
                    & (stats["score"] == "auc")]
        ax = improvement.axes[0]
        marks = sorted(float(line.get_xdata()[0]) for line in ax.get_lines()
                       if line.get_marker() not in ("None", None, ""))
        assert marks == pytest.approx(sorted(poi["estimate"]))
        assert [t.get_text() for t in ax.get_yticklabels()][-1].startswith("MyMethod+HER")
    finally:
        for figure in (intervals, improvement):
            rliable_figures.plt.close(figure)


def test_rliable_cli_writes_each_figure_and_refuses_nothing_to_draw(tables, tmp_path, capsys):
    curves, selection, stats = tables
    curves.to_parquet(tmp_path / "curves.parquet")
    selection.to_csv(tmp_path / "selection.csv", index=False)
    stats.to_csv(tmp_path / "stats.csv", index=False)
    outs = {kind: tmp_path / f"exp-{kind}.png" for kind in labels.EXPERIMENT_FIGURES
            if kind != "diagnostics"}
    assert rliable_figures.main([
        "--stats", str(tmp_path / "stats.csv"), "--curves", str(tmp_path / "curves.parquet"),
        "--selection", str(tmp_path / "selection.csv"), "--reps", "20",
        *(arg for kind, path in outs.items() for arg in (f"--{kind}", str(path)))]) == 0
    for path in outs.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.with_suffix(".pdf").is_file()
    capsys.readouterr()
    assert rliable_figures.main(["--stats", str(tmp_path / "stats.csv")]) == 2
    assert "nothing to draw" in capsys.readouterr().err
    assert rliable_figures.main(["--profiles", str(tmp_path / "p.png")]) == 2
    assert "--profiles needs --curves" in capsys.readouterr().err


# -- the figure rules and their note ----------------------------------------------------------
NOTE = """reduced: it's "3k" steps, $HOME and `date` stay as written"""


@pytest.mark.parametrize("note", [NOTE, ""])
def test_a_note_with_quotes_reaches_the_figure_rules_intact(tmp_path, note):
    """A dry run prints each rule's shell command; the shell must read the note back
    exactly, apostrophe, quotes, $ and backticks included, and an empty note (the schema's
    default) as an empty value rather than a missing one."""
    config = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    config["theory"]["enabled"] = False
    config["experiments"] = {"continuous_seek": {**config["experiments"]["continuous_seek"],
                                                 "note": note}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    result = subprocess.run(
        [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-n", "-p", "--cores", "1",
         "--configfile", str(tmp_path / "config.yaml"), "--directory", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line.split("Shell command: ", 1)[1] for line in result.stdout.splitlines()
                if "Shell command: python -m reengage.analysis." in line]
    modules = {"figures": 0, "diagnostics_figure": 0}
    for command in commands:
        words = shlex.split(command)
        module = words[2].rsplit(".", 1)[1]
        if module in modules:
            modules[module] += 1
            (given,) = [w for w in words if w.startswith("--note")]
            assert given == f"--note={note}"
    assert modules == {"figures": 1, "diagnostics_figure": 1}
    assert any("rliable_figures" in command for command in commands)


def test_every_figure_rule_is_registered_for_the_snakemake_report():
    text = (REPO / "Snakefile").read_text()
    for category in ("Learning curves", "Training diagnostics", "Aggregate scores (rliable)",
                     "Probability of improvement (rliable)", "Performance profiles (rliable)",
                     "Theory", "Throughput"):
        assert f'"{category}"' in text or f"category=\"{category}\"" in text, category


def test_shade_mixes_towards_white_and_black():
    assert labels.shade("#0072B2", 0.0) == "#0072b2"
    assert labels.shade("#000000", 1.0) == "#ffffff"
    assert labels.shade("#ffffff", -1.0) == "#000000"
    assert np.isclose(matplotlib.colors.to_rgb(labels.shade("#000000", 0.5))[0], 128 / 255)


# -- redrawing from tables alone ------------------------------------------------------------
def test_redraw_draws_every_figure_from_the_tables_without_the_runs(tables, tmp_path):
    from reengage.analysis.redraw import main as redraw

    curves, selection, stats = tables
    experiment = tmp_path / "results" / "tables" / "exp"
    experiment.mkdir(parents=True)
    curves[curves["method"] != "my_method"].to_parquet(experiment / "curves.parquet")
    selection[selection["method"] != "my_method"].to_csv(experiment / "selection.csv",
                                                         index=False)
    stats.to_csv(experiment / "stats.csv", index=False)
    config = {"experiments": {
        "exp": {"env": "ContinuousSeek", "dims": [2], "steps": 3000, "seeds": 5,
                "methods": [{"name": "ddpg_her"}, {"name": "reengage_her", "c": [0.2]},
                            {"name": "sb3_ddpg_her"}], "note": "it's a test"},
        "absent": {"env": "ContinuousSeek", "dims": [2], "steps": 3000, "seeds": 5,
                   "methods": [{"name": "ddpg_her"}]},
    }}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert redraw([str(tmp_path / "results"), "--config", str(tmp_path / "config.yaml")]) == 0
    figures = tmp_path / "results" / "figures"
    for name in ("exp", "exp-diagnostics", "exp-intervals", "exp-improvement", "exp-profiles"):
        assert (figures / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not list(figures.glob("absent*"))  # no tables, nothing drawn, and no failure
    assert redraw([str(tmp_path / "nowhere")]) == 2
