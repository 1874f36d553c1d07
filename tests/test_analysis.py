"""The analysis layer on synthetic logs written the way `reengage train` writes them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from reengage.analysis import (
    aggregate,
    diagnostics_figure,
    figures,
    report,
    rliable_figures,
    runtime,
    select,
    stats,
)
from reengage.analysis.aggregate import AnalysisError, aggregate_runs
from reengage.analysis.figures import curve_summary, draw_experiment, plot_experiment
from reengage.analysis.report import Experiment, build_report, load_experiments
from reengage.analysis.runtime import runtime_table
from reengage.analysis.select import select_cells
from reengage.analysis.stats import compute_stats

LABELS = {"ddpg_her": lambda c: "DDPG+HER",
          "reengage_her": lambda c: f"ReenGAGE(α={c:g}/d)+HER",
          "my_method": lambda c: "MyMethod+HER"}
HEADER = ("step,success_rate,mean_return,critic_loss,goal_grad_loss,actor_loss,q_mean,"
          "wall_time_s,updates_per_s")


def write_run(root: Path, method: str, seed: int, success: list[float | None], *,
              dim: int = 2, c: float | None = None, batch: int = 256, lr: float = 0.001,
              steps: list[int] | None = None, status: str = "finished",
              diverged_at: int | None = None, population: list[int] | None = None,
              wall_time: float = 100.0, rate: float = 50.0, env: str = "ContinuousSeek",
              format_version: int = 1) -> Path:
    """One member's progress.csv and run.json at the contract's path; None = empty cell."""
    steps = steps or [100 * i for i in range(len(success))]
    method_dir = method if c is None else f"{method}_c{c:g}"
    directory = root / f"{env}-d{dim}" / method_dir / f"b{batch}_lr{lr:g}" / f"seed{seed}"
    directory.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for i, (step, value) in enumerate(zip(steps, success, strict=True)):
        cell = "" if value is None else repr(float(value))
        ret = "" if value is None else repr(-10.0 + 10.0 * float(value))
        loss = "" if value is None or i == 0 else "0.5"
        lines.append(f"{step},{cell},{ret},{loss},{loss},{loss},{loss},{step / 10},"
                     f"{0.0 if i == 0 else rate}")
    (directory / "progress.csv").write_text("\n".join(lines) + "\n")
    record = {
        "format_version": format_version, "status": status, "seed": seed,
        "population": population or [seed],
        "config": {"env": env, "dim": dim, "method": method, "c": c, "batch_size": batch,
                   "lr": lr, "steps": steps[-1], "eval_every": 100, "eval_episodes": 10},
        "label": LABELS[method](c), "wall_time_s": wall_time, "versions": {},
    }
    if diverged_at is not None:
        record.update(diverged_at_step=diverged_at, diverged_reason="critic_loss became nan")
    (directory / "run.json").write_text(json.dumps(record))
    return directory


def curves_of(root: Path, experiment: str = "exp") -> pd.DataFrame:
    return aggregate_runs(root, experiment)


# -- aggregate ------------------------------------------------------------------------------
def test_aggregate_exact_values(tmp_path):
    write_run(tmp_path, "ddpg_her", 0, [0.0, 0.5, 1.0], population=[0, 1], wall_time=12.5)
    write_run(tmp_path, "ddpg_her", 1, [0.0, 0.25, 0.75], population=[0, 1], wall_time=12.5)
    write_run(tmp_path, "reengage_her", 0, [0.0, 0.9, None], c=0.2, status="diverged",
              diverged_at=150)
    table = curves_of(tmp_path)

    assert len(table) == 9
    assert list(table.columns[:11]) == ["experiment", "env", "dim", "variant", "method", "c",
                                        "label", "batch_size", "lr", "seed", "step"]
    ddpg = table[table["variant"] == "ddpg_her"]
    assert ddpg["success_rate"].tolist() == [0.0, 0.5, 1.0, 0.0, 0.25, 0.75]
    assert ddpg["mean_return"].tolist() == [-10.0, -5.0, 0.0, -10.0, -7.5, -2.5]
    assert ddpg["c"].isna().all() and set(ddpg["label"]) == {"DDPG+HER"}
    assert set(ddpg["population"]) == {"0,1"} and set(ddpg["population_size"]) == {2}
    assert set(ddpg["run_wall_time_s"]) == {12.5} and set(ddpg["status"]) == {"finished"}
    assert math.isnan(ddpg.iloc[0]["critic_loss"])  # step 0 has no losses
    assert ddpg["step"].dtype == np.int64 and ddpg["dim"].tolist() == [2] * 6

    ours = table[table["method"] == "reengage_her"]
    assert set(ours["variant"]) == {"reengage_her_c0.2"} and set(ours["c"]) == {0.2}
    assert set(ours["label"]) == {"ReenGAGE(α=0.2/d)+HER"}
    assert set(ours["status"]) == {"diverged"} and set(ours["diverged_at_step"]) == {150}
    assert ours["success_rate"].isna().tolist() == [False, False, True]
    assert set(ours["run_dir"]) == {"ContinuousSeek-d2/reengage_her_c0.2/b256_lr0.001/seed0"}
    assert set(table["experiment"]) == {"exp"}


def test_aggregate_skips_what_training_jobs_keep_in_hidden_folders(tmp_path):
    """A resumable runner keeps copies of finished seeds under `.checkpoints/`: not results."""
    run = write_run(tmp_path, "ddpg_her", 0, [0.0, 1.0])
    kept = run.parent / ".checkpoints" / "seeds-0.sb3" / "seed0"
    kept.mkdir(parents=True)
    for name in ("progress.csv", "run.json"):
        (kept / name).write_bytes((run / name).read_bytes())
    table = curves_of(tmp_path)
    assert set(table["run_dir"]) == {"ContinuousSeek-d2/ddpg_her/b256_lr0.001/seed0"}


def test_aggregate_refuses_nothing_and_unknown_versions(tmp_path):
    with pytest.raises(AnalysisError, match="no run found"):
        aggregate_runs(tmp_path, "exp")
    write_run(tmp_path, "ddpg_her", 0, [0.0, 1.0], format_version=2)
    with pytest.raises(AnalysisError, match="unknown format_version 2"):
        aggregate_runs(tmp_path, "exp")


def test_aggregate_cli_writes_parquet_and_refuses_bad_input(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs, "ddpg_her", 0, [0.0, 1.0])
    out = tmp_path / "tables" / "exp" / "curves.parquet"
    assert aggregate.main(["--runs", str(runs), "--experiment", "exp", "--out", str(out)]) == 0
    assert len(pd.read_parquet(out)) == 2
    assert not list(out.parent.glob(".*.tmp"))  # the temporary file was moved, not left

    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    code = aggregate.main(["--runs", str(empty), "--experiment", "exp", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "no run found" in err and err.count("\n") == 1
    assert aggregate.main(["--runs", str(runs), "--experiment", "x", "--out", "a.csv"]) == 2
    with pytest.raises(SystemExit) as exit_:
        aggregate.main(["--runs", str(runs)])  # --experiment and --out missing
    assert exit_.value.code == 2


# -- select ---------------------------------------------------------------------------------
def test_selection_takes_the_larger_area_not_the_larger_final_value(tmp_path):
    for seed in (0, 1):
        # Early learner: area (0.8*100/2 + 0.8*100) / 200 = 0.6, final 0.8.
        write_run(tmp_path, "ddpg_her", seed, [0.0, 0.8, 0.8], batch=128)
        # Late jumper: area (1.0*100/2) / 200 = 0.25, final 1.0.
        write_run(tmp_path, "ddpg_her", seed, [0.0, 0.0, 1.0], batch=256)
    table = select_cells(curves_of(tmp_path))
    by_batch = table.set_index("batch_size")
    assert by_batch.loc[128, "auc_mean"] == pytest.approx(0.6)
    assert by_batch.loc[256, "auc_mean"] == pytest.approx(0.25)
    assert by_batch.loc[256, "final_mean"] == pytest.approx(1.0)
    assert bool(by_batch.loc[128, "selected"]) and not bool(by_batch.loc[256, "selected"])
    assert by_batch.loc[128, "rank"] == 1 and by_batch.loc[256, "rank"] == 2


def test_selection_counts_a_diverged_seed_as_failing(tmp_path):
    # Without the fill this cell would average only the surviving points (AUC 0.9).
    write_run(tmp_path, "ddpg_her", 0, [0.9, 0.9, 0.9], batch=128)
    write_run(tmp_path, "ddpg_her", 1, [0.9, None, None], batch=128, status="diverged",
              diverged_at=50)
    write_run(tmp_path, "ddpg_her", 0, [0.6, 0.6, 0.6], batch=256)
    write_run(tmp_path, "ddpg_her", 1, [0.6, 0.6, 0.6], batch=256)
    # An interrupted seed is not comparable: counted, not scored.
    write_run(tmp_path, "ddpg_her", 2, [1.0, 1.0], batch=256, status="interrupted")
    table = select_cells(curves_of(tmp_path)).set_index("batch_size")
    assert table.loc[256, "n_incomplete"] == 1 and table.loc[256, "n_scored"] == 2
    assert table.loc[256, "auc_mean"] == pytest.approx(0.6)
    # Diverged seed: points 0.9, 0, 0 -> (0.45*100 + 0) / 200 = 0.225.
    assert table.loc[128, "auc_mean"] == pytest.approx((0.9 + 0.225) / 2)
    assert table.loc[128, "n_diverged"] == 1 and table.loc[128, "n_scored"] == 2
    assert bool(table.loc[256, "selected"])


def test_select_cli_refuses_an_unknown_metric(tmp_path, capsys):
    write_run(tmp_path / "runs", "ddpg_her", 0, [0.0, 1.0])
    curves = tmp_path / "curves.parquet"
    aggregate.main(["--runs", str(tmp_path / "runs"), "--experiment", "e", "--out",
                    str(curves)])
    capsys.readouterr()
    code = select.main(["--curves", str(curves), "--out", str(tmp_path / "s.csv"),
                        "--metric", "succes_rate"])
    assert code == 2 and "succes_rate: no such column" in capsys.readouterr().err


# -- figures --------------------------------------------------------------------------------
def _three_methods(root: Path) -> None:
    for seed in range(3):
        write_run(root, "ddpg_her", seed, [0.0, 0.2, 0.4, 0.5])
        write_run(root, "my_method", seed, [0.0, 0.3, 0.5, 0.6])
        if seed == 2:
            write_run(root, "reengage_her", seed, [0.0, 0.6, None, None], c=0.2,
                      status="diverged", diverged_at=150)
        else:
            write_run(root, "reengage_her", seed, [0.0, 0.5, 0.7, 0.8], c=0.2)


def test_a_diverged_seed_never_makes_a_curve_nan_and_is_counted(tmp_path):
    _three_methods(tmp_path)
    curves = curves_of(tmp_path)
    runs = curves[curves["variant"] == "reengage_her_c0.2"]
    summary = curve_summary(runs, "success_rate")
    assert not summary["mean"].isna().any() and not summary["std"].isna().any()
    assert summary["count"].tolist() == [3, 3, 2, 2]
    assert summary["mean"].tolist() == pytest.approx([0.0, (0.5 + 0.5 + 0.6) / 3, 0.7, 0.8])
    figure = draw_experiment(curves, select_cells(curves))
    texts = [t.get_text() for t in figure.legends[0].get_texts()]
    assert any("ReenGAGE(α=0.2/d)+HER" in t and "1/3" in t for t in texts)


def test_figures_are_real_images_with_every_label(tmp_path):
    _three_methods(tmp_path / "runs")
    curves = curves_of(tmp_path / "runs")
    selection = select_cells(curves)
    figure = draw_experiment(curves, selection, note="reduced: 300 steps",
                             reference_lines={"Perfect greedy agent": 0.55})
    texts = " | ".join(t.get_text() for t in figure.legends[0].get_texts())
    for label in ("DDPG+HER", "ReenGAGE(α=0.2/d)+HER", "MyMethod+HER", "Perfect greedy agent"):
        assert label in texts
    assert "reduced: 300 steps" in figure.get_suptitle()

    png, pdf = plot_experiment(curves, selection, tmp_path / "figures" / "exp.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def test_figures_cli_refuses_a_bad_reference_line(tmp_path, capsys):
    code = figures.main(["--curves", "c.parquet", "--selection", "s.csv", "--out",
                         str(tmp_path / "f.png"), "--reference", "greedy"])
    assert code == 2 and "LABEL=VALUE" in capsys.readouterr().err


# -- stats ----------------------------------------------------------------------------------
def test_stats_on_a_dominating_method(tmp_path):
    rng = np.random.default_rng(0)
    for dim in (2, 4):
        for seed in range(6):
            low = list(rng.uniform(0.0, 0.2, 3))
            high = list(rng.uniform(0.7, 0.9, 3))
            write_run(tmp_path, "ddpg_her", seed, [0.0, *low], dim=dim)
            if seed == 5 and dim == 4:  # one diverged seed, left out of the matrices
                write_run(tmp_path, "reengage_her", seed, [0.0, 0.9, None, None], dim=dim,
                          c=0.2, status="diverged", diverged_at=150)
            else:
                write_run(tmp_path, "reengage_her", seed, [0.0, *high], dim=dim, c=0.2)
    curves = curves_of(tmp_path)
    table = compute_stats(curves, select_cells(curves), reps=100, seed=1)

    poi = table[(table["statistic"] == "poi") & (table["scope"] == "all_d")
                & (table["score"] == "auc")].iloc[0]
    assert poi["variant"] == "reengage_her_c0.2" and poi["baseline_variant"] == "ddpg_her"
    assert poi["estimate"] == pytest.approx(1.0) and poi["ci_low"] > 0.5
    assert poi["n_diverged"] == 1 and poi["n_runs"] == 5 and "truncated to 5" in poi["note"]

    iqm = table[(table["statistic"] == "iqm") & (table["scope"] == "all_d")]
    assert set(iqm["variant"]) == {"ddpg_her", "reengage_her_c0.2"}
    assert set(iqm["score"]) == {"auc", "final"}
    ours = iqm[(iqm["variant"] == "reengage_her_c0.2") & (iqm["score"] == "auc")].iloc[0]
    base = iqm[(iqm["variant"] == "ddpg_her") & (iqm["score"] == "auc")].iloc[0]
    assert ours["ci_low"] > base["ci_high"]
    assert (table["ci_low"] <= table["estimate"] + 1e-12).all()
    assert (table["estimate"] <= table["ci_high"] + 1e-12).all()
    per_d = table[(table["statistic"] == "poi") & (table["scope"] == "d")]
    assert sorted(per_d["dim"].unique()) == [2, 4]
    assert {"iqm_diff", "margin_growth"} <= set(table["statistic"])


# -- runtime --------------------------------------------------------------------------------
def test_runtime_is_per_population_with_ratio(tmp_path):
    for seed, wall in ((0, 100.0), (1, 100.0), (2, 120.0), (3, 120.0)):
        population = [0, 1] if seed < 2 else [2, 3]
        write_run(tmp_path, "ddpg_her", seed, [0.0, 1.0], population=population,
                  wall_time=wall, rate=60.0)
        write_run(tmp_path, "reengage_her", seed, [0.0, 1.0], c=0.2, population=population,
                  wall_time=wall * 1.5, rate=40.0)
    table = runtime_table(curves_of(tmp_path)).set_index("variant")
    assert table.loc["ddpg_her", "n_populations"] == 2
    assert table.loc["ddpg_her", "n_seeds"] == 4
    assert table.loc["ddpg_her", "wall_time_mean_s"] == pytest.approx(110.0)
    assert table.loc["ddpg_her", "wall_time_sd_s"] == pytest.approx(np.std([100, 120], ddof=1))
    assert table.loc["reengage_her_c0.2", "ratio"] == pytest.approx(1.5)
    assert table.loc["reengage_her_c0.2", "update_slowdown"] == pytest.approx(1.5)
    markdown = runtime.runtime_markdown(table.reset_index())
    assert "2549 ± 203" in markdown and "| 1.50 |" in markdown


# -- report ---------------------------------------------------------------------------------
def test_report_covers_what_was_run_and_says_not_covered_otherwise(tmp_path):
    runs = tmp_path / "runs" / "cs"
    for dim in (2, 3):
        for seed in range(report.MIN_SEEDS):
            write_run(runs, "ddpg_her", seed, [0.0, 0.1, 0.2], dim=dim, wall_time=10.0)
            write_run(runs, "reengage_her", seed, [0.0, 0.8, 0.9], dim=dim, c=0.2,
                      wall_time=14.0)
    tables, figs = tmp_path / "results" / "tables", tmp_path / "results" / "figures"
    curves = tables / "cs" / "curves.parquet"
    selection, stats_csv = tables / "cs" / "selection.csv", tables / "cs" / "stats.csv"
    assert aggregate.main(["--runs", str(runs), "--experiment", "cs", "--out",
                           str(curves)]) == 0
    assert select.main(["--curves", str(curves), "--out", str(selection)]) == 0
    assert stats.main(["--curves", str(curves), "--selection", str(selection), "--out",
                       str(stats_csv), "--reps", "50"]) == 0
    assert runtime.main(["--curves", str(curves), "--out",
                         str(tables / "cs" / "runtime.csv")]) == 0
    assert (tables / "cs" / "runtime.md").is_file()
    assert figures.main(["--curves", str(curves), "--selection", str(selection), "--out",
                         str(figs / "cs.png")]) == 0
    theory = tmp_path / "theory_slopes.csv"
    theory.write_text("env,loss,slope,ci_low,ci_high\nprop1,td,2.0,1.9,2.1\n"
                      "prop1,gradient,1.0,0.9,1.1\n")
    out = tmp_path / "results" / "report.md"
    assert report.main(["--tables", str(tables), "--figures", str(figs), "--out", str(out),
                        "--theory", str(theory), "--note", "reduced: 200 steps"]) == 0
    text = out.read_text()

    def verdict(number: int) -> str:
        section = text.split(f"### Claim {number}\n")[1]
        return section.split("**Verdict: ")[1].split("**")[0]

    assert verdict(1) != report.NOT_COVERED  # ContinuousSeek, DDPG+HER and ReenGAGE ran
    assert verdict(6) == "supported"  # 14 s / 10 s = 1.40
    assert verdict(7) == "supported"
    for number in (2, 3, 4, 5):
        assert verdict(number) == report.NOT_COVERED
    assert "ReenGAGE+HER beats DDPG+HER (every c, all d pooled): **supported**" in text
    assert "![cs](figures/cs.png)" in text  # relative to the report
    assert "reduced: 200 steps" in text and "reduced: d 2, 3" in text
    assert "More figures" not in text  # none drawn beside the curves here


def _separated_runs(root: Path, seeds: int) -> Experiment:
    """ReenGAGE+HER far above DDPG+HER at d = 2 and 4, with `seeds` seeds each."""
    for dim in (2, 4):
        for seed in range(seeds):
            write_run(root, "ddpg_her", seed, [0.0, 0.1, 0.1 + 0.01 * seed], dim=dim)
            write_run(root, "reengage_her", seed, [0.0, 0.8, 0.8 + 0.01 * seed], dim=dim,
                      c=0.2)
    curves = curves_of(root)
    selection = select_cells(curves)
    return Experiment("cs", selection, compute_stats(curves, selection, reps=50, seed=0),
                      None, None, root / "cs.png")


def _claim(text: str, number: int) -> str:
    return text.split(f"### Claim {number}\n")[1].split("### Claim")[0]


def test_fewer_than_five_seeds_a_side_read_too_few_seeds(tmp_path):
    """3 seeds against 3 that all beat the baseline: the interval collapses to [1, 1], and
    the verdict says too few seeds, not supported; with 5 a side it is supported."""
    few = _separated_runs(tmp_path / "few", 3)
    poi = few.stats[(few.stats["statistic"] == "poi") & (few.stats["scope"] == "all_d")
                    & (few.stats["score"] == "auc")].iloc[0]
    assert poi["ci_low"] == poi["ci_high"] == 1.0
    text = _claim(build_report([few], tmp_path / "report.md"), 1)
    assert "**Verdict: too few seeds**" in text
    assert ("ReenGAGE+HER beats DDPG+HER (every c, all d pooled): **too few seeds**" in text)
    assert "| too few seeds (3 / 3; the interval alone reads supported) |" in text
    assert "the margin grows with d: **too few seeds**" in text

    enough = _separated_runs(tmp_path / "enough", report.MIN_SEEDS)
    text = _claim(build_report([enough], tmp_path / "report.md"), 1)
    assert "ReenGAGE+HER beats DDPG+HER (every c, all d pooled): **supported**" in text
    assert "too few seeds" not in text


@pytest.mark.parametrize("verdicts, expected", [
    ([report.SUPPORTED, report.SUPPORTED], report.SUPPORTED),
    ([report.TOO_FEW_SEEDS, report.TOO_FEW_SEEDS], report.TOO_FEW_SEEDS),
    ([report.SUPPORTED, report.TOO_FEW_SEEDS], report.TOO_FEW_SEEDS),
    ([report.INCONCLUSIVE, report.TOO_FEW_SEEDS], report.TOO_FEW_SEEDS),
    ([report.NOT_SUPPORTED, report.TOO_FEW_SEEDS], report.NOT_SUPPORTED),
    ([report.SUPPORTED, report.INCONCLUSIVE], report.INCONCLUSIVE),
    ([report.CHEAPER], report.CHEAPER),
    ([], report.NOT_COVERED),
])
def test_parts_combine_into_a_claim(verdicts, expected):
    assert report.combine(verdicts) == expected


@pytest.mark.parametrize("ratio, expected", [
    (1.40, report.SUPPORTED), (1.24, report.SUPPORTED), (1.70, report.SUPPORTED),
    (1.22, report.CHEAPER), (1.00, report.CHEAPER), (1.85, report.COSTLIER),
    (0.90, report.NOT_SUPPORTED), (2.50, report.NOT_SUPPORTED),
])
def test_runtime_verdict_bands(ratio, expected):
    assert report.runtime_verdict(ratio) == expected


def test_claim_six_says_when_reengage_is_cheaper_than_the_paper(tmp_path):
    """The default reference run measured a median ratio of 1.22: a constant factor, below
    the paper's +34 … +60 %, which the report now says instead of 'inconclusive'."""
    for seed, wall in ((0, 100.0), (1, 100.0)):
        write_run(tmp_path, "ddpg_her", seed, [0.0, 1.0], population=[0, 1], wall_time=wall)
        write_run(tmp_path, "reengage_her", seed, [0.0, 1.0], c=0.2, population=[0, 1],
                  wall_time=wall * 1.22)
    curves = curves_of(tmp_path)
    experiment = Experiment("cs", select_cells(curves), None, runtime_table(curves), None,
                            tmp_path / "cs.png")
    text = build_report([experiment], tmp_path / "report.md")
    claim = _claim(text, 6)
    assert f"**Verdict: {report.CHEAPER}**" in claim
    assert "ReenGAGE cost +22% here against the paper's +34% … +60%" in claim
    assert f"| 6 | Runtime: ReenGAGE costs a constant factor (measured +34 % … +60 %). | " \
           f"**{report.CHEAPER}** |" in text


def test_report_links_the_figures_beside_the_curves(tmp_path):
    figures_dir = tmp_path / "results" / "figures"
    figures_dir.mkdir(parents=True)
    for name in ("cs.png", "cs-intervals.png", "cs-diagnostics.png"):
        (figures_dir / name).write_bytes(b"\x89PNG")
    experiment = Experiment("cs", select_cells(_three_methods_curves(tmp_path / "runs")),
                            None, None, None, figures_dir / "cs.png")
    text = build_report([experiment], tmp_path / "results" / "report.md")
    assert ("More figures: [IQM, median, mean (and optimality gap) with 95 % CIs]"
            "(figures/cs-intervals.png); [training diagnostics: Q mean, critic loss, "
            "goal-gradient loss](figures/cs-diagnostics.png).") in text


def _three_methods_curves(root: Path) -> pd.DataFrame:
    _three_methods(root)
    return curves_of(root)


def test_report_without_theory_or_runtime_says_not_covered(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(2):
        write_run(runs, "ddpg_her", seed, [0.0, 0.5])
    experiment = tmp_path / "tables" / "only"
    experiment.mkdir(parents=True)
    curves = curves_of(runs, "only")
    select_cells(curves).to_csv(experiment / "selection.csv", index=False)
    text = build_report(load_experiments(tmp_path / "tables", tmp_path / "figures"),
                        tmp_path / "report.md")
    for number in range(1, 8):
        section = text.split(f"### Claim {number}\n")[1].split("### ")[0]
        assert f"**Verdict: {report.NOT_COVERED}**" in section


def test_report_cli_refuses_an_empty_tables_directory(tmp_path, capsys):
    (tmp_path / "tables").mkdir()
    code = report.main(["--tables", str(tmp_path / "tables"), "--figures", str(tmp_path),
                        "--out", str(tmp_path / "report.md")])
    assert code == 2 and "no {experiment}/selection.csv" in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()


def test_analysis_imports_no_learner_and_every_cli_has_help():
    code = ("import sys; import reengage.analysis.report, reengage.analysis.figures, "
            "reengage.analysis.diagnostics_figure, reengage.analysis.rliable_figures; "
            "bad = [m for m in ('torch', 'gymnasium', 'reengage.envs', 'reengage.agents') "
            "if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for module in (aggregate, select, figures, stats, runtime, report, diagnostics_figure,
                   rliable_figures):
        with pytest.raises(SystemExit) as exit_:
            module.main(["--help"])
        assert exit_.value.code == 0
