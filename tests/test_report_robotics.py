"""The robotics analysis: per-epoch learning curves, claim 2's parts decided from synthetic
HandReach and HandManipulateBlock tables (each can read supported, not supported and
inconclusive or too few seeds), diverged seeds counted, the reduction and the FetchReach
reference check stated in the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from reengage.analysis import report
from reengage.analysis.aggregate import aggregate_runs
from reengage.analysis.figures import draw_experiment
from reengage.analysis.report import Experiment, build_report
from reengage.analysis.select import select_cells
from reengage.analysis.stats import compute_stats

EPOCH = 5000  # env steps of one epoch: 50 cycles x 1 worker x 2 envs x T = 50
LABELS = {"ddpg_her": lambda c: "DDPG+HER",
          "reengage_her": lambda c: f"ReenGAGE(α={c:g}/d)+HER",
          "reengage_her_normalized": lambda c: f"Normalized ReenGAGE(α={c:g}/d)+HER"}
HEADER = ("step,success_rate,mean_return,critic_loss,goal_grad_loss,actor_loss,q_mean,"
          "wall_time_s,updates_per_s,epoch")


def robotics_run(root: Path, method: str, seed: int, success: list[float], *,
                 env: str = "HandReach", dim: int = 15, c: float | None = None,
                 diverged_at_epoch: int | None = None) -> None:
    """One member's progress.csv (a row per epoch, the first at epoch 0) and run.json as the
    Baselines loop writes them; after a divergence the values are missing."""
    method_dir = method if c is None else f"{method}_c{c:g}"
    directory = root / f"{env}-d{dim}" / method_dir / "b256_lr0.001" / f"seed{seed}"
    directory.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for epoch, value in enumerate(success):
        lost = diverged_at_epoch is not None and epoch >= diverged_at_epoch
        cell = "" if lost else repr(float(value))
        loss = "" if lost or epoch == 0 else "0.5"
        lines.append(f"{epoch * EPOCH},{cell},{cell},{loss},{loss},{loss},{loss},"
                     f"{10.0 * epoch},{0.0 if epoch == 0 else 40.0},{epoch}")
    (directory / "progress.csv").write_text("\n".join(lines) + "\n")
    record = {
        "format_version": 1, "seed": seed, "population": [seed],
        "status": "finished" if diverged_at_epoch is None else "diverged",
        "config": {"env": env, "dim": dim, "method": method, "c": c, "batch_size": 256,
                   "lr": 0.001, "steps": (len(success) - 1) * EPOCH, "eval_every": EPOCH},
        "label": LABELS[method](c), "wall_time_s": 100.0, "versions": {},
    }
    if diverged_at_epoch is not None:
        record.update(diverged_at_step=diverged_at_epoch * EPOCH,
                      diverged_reason="critic_loss became nan")
    (directory / "run.json").write_text(json.dumps(record))


def rising(level: float, seed: int, epochs: int = 4) -> list[float]:
    """0 at epoch 0, then up to about `level` (seeds a little apart)."""
    return [0.0] + [min(1.0, level * e / epochs + 0.02 * seed) for e in range(1, epochs + 1)]


def experiment(root: Path, name: str, runs: dict[tuple[str, float | None], float], *,
               env: str = "HandReach", seeds: int = 5,
               diverged: dict[tuple[str, float | None], int] | None = None) -> Experiment:
    """An experiment of `env` whose every (method, c) rises to its level; `diverged` gives
    how many of a variant's seeds diverge (at epoch 2)."""
    dim = 15 if env == "HandReach" else 7
    for (method, c), level in runs.items():
        lost = (diverged or {}).get((method, c), 0)
        for seed in range(seeds):
            robotics_run(root / name, method, seed, rising(level, seed), env=env, dim=dim, c=c,
                         diverged_at_epoch=2 if seed < lost else None)
    curves = aggregate_runs(root / name, name)
    selection = select_cells(curves)
    return Experiment(name, selection, compute_stats(curves, selection, reps=200, seed=0),
                      None, None, root / f"{name}.png")


def part(text: str, statement_start: str) -> str:
    """The verdict of the claim-2 part whose statement starts with `statement_start`."""
    claim = text.split("### Claim 2\n")[1].split("### Claim 3")[0]
    line = next(line for line in claim.splitlines() if line.startswith(f"- {statement_start}"))
    if "**" in line:
        return line.split("**")[1]
    assert report.NOT_COVERED in line, line
    return report.NOT_COVERED


REACH = "HandReach: ReenGAGE+HER beats DDPG+HER at a small α"
UNSTABLE = "HandReach: the largest α is less stable"
BLOCK = "HandManipulateBlock: no significant gain"
NORMALIZED_REACH = "HandReach: Normalized ReenGAGE+HER against DDPG+HER"


# -- curves per epoch ------------------------------------------------------------------------
def test_the_tidy_table_keeps_the_epoch_and_the_figure_is_drawn_against_it(tmp_path):
    for seed in range(3):
        robotics_run(tmp_path, "ddpg_her", seed, rising(0.6, seed))
        robotics_run(tmp_path, "reengage_her", seed, rising(0.8, seed), c=0.0001,
                     diverged_at_epoch=3 if seed == 0 else None)
    curves = aggregate_runs(tmp_path, "hr")
    assert str(curves["epoch"].dtype) == "Int64"
    assert (curves["step"] == curves["epoch"] * EPOCH).all()
    figure = draw_experiment(curves, select_cells(curves), note="reduced: 1 worker")
    ax = figure.axes[0]
    assert ax.get_xlabel() == "epoch"
    ours = next(line for line in ax.get_lines() if line.get_label() == "DDPG+HER")
    assert list(ours.get_xdata()) == [0, 1, 2, 3, 4]
    # The divergence is marked at its epoch (step 15000 = epoch 3), not at step 15000.
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert [list(line.get_xdata()) for line in crosses] == [[3.0]]
    assert "reduced: 1 worker" in figure.get_suptitle()


def test_a_table_without_epochs_is_still_drawn_against_steps(tmp_path):
    for seed in range(2):
        robotics_run(tmp_path, "ddpg_her", seed, rising(0.6, seed))
    curves = aggregate_runs(tmp_path, "hr").drop(columns="epoch")
    ax = draw_experiment(curves, select_cells(curves)).axes[0]
    assert ax.get_xlabel() == "environment steps"


# -- claim 2, part by part -------------------------------------------------------------------
@pytest.mark.parametrize("reengage_level, expected", [
    (0.9, report.SUPPORTED), (0.1, report.NOT_SUPPORTED), (0.5, report.INCONCLUSIVE),
])
def test_hand_reach_beats_at_a_small_alpha(tmp_path, reengage_level, expected):
    # The large c does worse whatever the small one does: "at a small α" ignores it.
    found = experiment(tmp_path, "hr", {("ddpg_her", None): 0.5,
                                        ("reengage_her", 0.0001): reengage_level,
                                        ("reengage_her", 0.001): 0.05})
    if expected == report.INCONCLUSIVE:  # the same curves: P(improvement) about 0.5
        assert reengage_level == 0.5
    assert part(build_report([found], tmp_path / "r.md"), REACH) == expected


def test_hand_reach_small_alpha_needs_a_c_of_the_papers_order(tmp_path):
    found = experiment(tmp_path, "hr", {("ddpg_her", None): 0.5,
                                        ("reengage_her", 0.001): 0.9})
    text = build_report([found], tmp_path / "r.md")
    assert f"{REACH} (some c ≤ 0.0001): {report.NOT_COVERED} (needs reengage_her at c ≤ " \
           "0.0001)" in text


@pytest.mark.parametrize("levels, diverged, expected", [
    # The largest c loses 2 of 5 seeds, the smallest none.
    ({0.00001: 0.6, 0.001: 0.6}, {("reengage_her", 0.001): 2}, report.SUPPORTED),
    # Every seed of the largest c diverges: stats.csv has no row for it, selection.csv does.
    ({0.00001: 0.6, 0.001: 0.6}, {("reengage_her", 0.001): 5}, report.SUPPORTED),
    ({0.00001: 0.6, 0.001: 0.1}, {}, report.SUPPORTED),        # far lower, none diverged
    ({0.00001: 0.1, 0.001: 0.9}, {}, report.NOT_SUPPORTED),    # the largest c does better
    ({0.00001: 0.6, 0.001: 0.6}, {}, report.INCONCLUSIVE),
])
def test_hand_reach_large_alpha_destabilises(tmp_path, levels, diverged, expected):
    runs = {("ddpg_her", None): 0.5, **{("reengage_her", c): v for c, v in levels.items()}}
    found = experiment(tmp_path, "hr", runs, diverged=diverged)
    text = build_report([found], tmp_path / "r.md")
    assert part(text, UNSTABLE) == expected
    lost = diverged.get(("reengage_her", 0.001), 0)
    assert f"| {lost} of 5 |" in text.split("### Claim 2")[1]


@pytest.mark.parametrize("normalized_level, seeds, expected", [
    (0.5, 5, report.SUPPORTED),       # neither variant beats DDPG+HER
    (0.9, 5, report.NOT_SUPPORTED),   # Normalized ReenGAGE does: a gain after all
    (0.5, 3, report.TOO_FEW_SEEDS),   # no rule reads "inconclusive" for absence of a gain
])
def test_hand_block_no_gain_with_or_without_normalisation(tmp_path, normalized_level, seeds,
                                                           expected):
    found = experiment(tmp_path, "block", {("ddpg_her", None): 0.5,
                                           ("reengage_her", 0.0001): 0.5,
                                           ("reengage_her_normalized", 0.0001):
                                               normalized_level},
                       env="HandManipulateBlockRotateXYZ", seeds=seeds)
    text = build_report([found], tmp_path / "r.md")
    assert part(text, BLOCK) == expected
    claim = text.split("### Claim 2")[1].split("### Claim 3")[0]
    # Both variants are in the evidence, by their labels.
    assert "ReenGAGE(α=0.0001/d)+HER" in claim
    assert "Normalized ReenGAGE(α=0.0001/d)+HER" in claim


def test_claim_two_combines_reach_and_block_and_reports_normalized_reach(tmp_path):
    reach = experiment(tmp_path, "hr", {("ddpg_her", None): 0.5,
                                        ("reengage_her", 0.0001): 0.9,
                                        ("reengage_her", 0.001): 0.9,
                                        ("reengage_her_normalized", 0.0001): 0.9},
                       diverged={("reengage_her", 0.001): 2})
    block = experiment(tmp_path, "block", {("ddpg_her", None): 0.5,
                                           ("reengage_her", 0.0001): 0.5},
                       env="HandManipulateBlockRotateXYZ")
    text = build_report([reach, block], tmp_path / "r.md")
    assert "**Verdict: supported**" in text.split("### Claim 2")[1].split("### Claim 3")[0]
    assert part(text, NORMALIZED_REACH) == "no verdict"
    assert "normalised ReenGAGE (not told apart" not in text


def test_claim_two_is_not_covered_without_robotics(tmp_path):
    text = build_report([], tmp_path / "r.md")
    assert part(text, REACH) == report.NOT_COVERED
    assert part(text, BLOCK) == report.NOT_COVERED


# -- the reduction and the reference check in the report ------------------------------------
def test_the_reduction_reaches_the_report(tmp_path):
    found = experiment(tmp_path, "hand_reach", {("ddpg_her", None): 0.5})
    note = "reduced: 1 worker x 2 envs (paper 19 x 2), 4 epochs (paper 50)"
    text = build_report([found], tmp_path / "r.md", notes={"hand_reach": note})
    configuration = text.split("## Configuration")[1].split("## Claims")[0]
    # Against the paper's 50 epochs of 19 workers x 2 envs: 4.75M env steps per seed.
    assert "reduced: 20,000 steps at d=15 (paper 4,750,000)" in configuration
    assert f"| {note} |" in configuration
    assert f"*{note}*" in text.split("### hand_reach")[1]


def _fetch_reach(tmp_path: Path, final: float, diverged: int = 0) -> Experiment:
    root = tmp_path / "check"
    robotics_run(root, "ddpg_her", 0, [0.0, 1.0, final], env="FetchReach", dim=3,
                 diverged_at_epoch=2 if diverged else None)
    curves = aggregate_runs(root, "fetch_reach_check")
    return Experiment("fetch_reach_check", select_cells(curves), None, None, None,
                      tmp_path / "fetch_reach_check.png")


@pytest.mark.parametrize("final, diverged, passed", [
    (1.0, 0, True), (0.9, 0, True), (0.85, 0, False), (1.0, 1, False),
])
def test_the_reference_check_passes_or_fails_visibly(tmp_path, final, diverged, passed):
    found = _fetch_reach(tmp_path, final, diverged)
    text = build_report([found], tmp_path / "r.md", checks={"fetch_reach_check": 0.9})
    section = text.split("## Reference checks")[1].split("## Claims")[0]
    assert ("every check passed" in section) == passed
    assert ("**1 check FAILED**" in section) == (not passed)
    row = next(line for line in section.splitlines() if line.startswith("| fetch_reach_check"))
    assert row.endswith("| passed |" if passed else "| **FAILED** |")
    assert "FetchReach d=3" in row and "≥ 0.9" in row


def test_a_reference_check_without_tables_fails(tmp_path):
    text = build_report([], tmp_path / "r.md", checks={"fetch_reach_check": 0.9})
    assert "**FAILED** (no tables)" in text and "**1 check FAILED**" in text


def test_no_reference_check_no_section(tmp_path):
    found = _fetch_reach(tmp_path, 1.0)
    assert "## Reference checks" not in build_report([found], tmp_path / "r.md")


def test_report_cli_takes_notes_and_checks(tmp_path):
    found = _fetch_reach(tmp_path, 1.0)
    tables = tmp_path / "tables" / "fetch_reach_check"
    tables.mkdir(parents=True)
    found.selection.to_csv(tables / "selection.csv", index=False)
    out = tmp_path / "report.md"
    assert report.main(["--tables", str(tmp_path / "tables"), "--figures", str(tmp_path),
                        "--out", str(out), "--experiment-note",
                        "fetch_reach_check=reference check: 1 seed, x=y",
                        "--reference-check", "fetch_reach_check=0.9"]) == 0
    text = out.read_text()
    assert "| reference check: 1 seed, x=y |" in text and "every check passed" in text
    assert report.main(["--tables", str(tmp_path / "tables"), "--figures", str(tmp_path),
                        "--out", str(out), "--reference-check", "fetch_reach_check=high"]) == 2


def test_rising_curves_are_what_the_cases_assume():
    """The synthetic levels: epoch 0 at 0, the last epoch at the level (plus seed offsets)."""
    curve = rising(0.6, 0)
    assert curve[0] == 0.0 and math.isclose(curve[-1], 0.6)
    assert np.all(np.diff(curve) > 0)
