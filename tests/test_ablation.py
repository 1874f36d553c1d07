"""Ablations: an experiment against one that changes one thing in it. The comparison on
synthetic logs with a known answer, its input checks, the change string and the config's
`ablations` checks, and claim 3's encoder-sharing part of the report."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from reengage.analysis import ablation, report
from reengage.analysis.ablation import (
    ABLATION_COLUMNS,
    ExperimentTables,
    compare_ablation,
)
from reengage.analysis.aggregate import aggregate_runs
from reengage.analysis.report import Ablation, build_report, interval_verdict
from reengage.analysis.select import select_cells
from reengage.analysis.stats import compute_stats
from reengage.config import ConfigError
from reengage.workflow import ablation_change, validate_config

LABELS = {"ddpg": "DDPG", "multi_reengage": "Multi-ReenGAGE(α=10/n_max)"}
METHODS = {"ddpg": None, "multi_reengage": 10.0}
SHARING = "networks.share_encoder: true -> false"


# -- synthetic experiments ------------------------------------------------------------------
def write_run(root: Path, method: str, seed: int, returns: list[float], env: str = "DriveSeek",
              dim: int = 5) -> None:
    """One seed's progress.csv and run.json at the workflow's path (goal-set task: the
    mean return is the metric)."""
    c = METHODS[method]
    folder = method if c is None else f"{method}_c{c:g}"
    directory = root / f"{env}-d{dim}" / folder / "b16_lr0.001" / f"seed{seed}"
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["step,mean_return"] + [f"{100 * i},{value!r}" for i, value in enumerate(returns)]
    (directory / "progress.csv").write_text("\n".join(lines) + "\n")
    record = {"format_version": 1, "status": "finished", "seed": seed, "population": [seed],
              "config": {"env": env, "dim": dim, "method": method, "c": c, "batch_size": 16,
                         "lr": 0.001, "steps": 100 * (len(returns) - 1), "eval_every": 100,
                         "eval_episodes": 5},
              "label": LABELS[method], "wall_time_s": 10.0, "versions": {}}
    (directory / "run.json").write_text(json.dumps(record))


def experiment(root: Path, name: str, levels: dict[str, float], seeds: int = 6,
               env: str = "DriveSeek") -> ExperimentTables:
    """Every method of `levels` with `seeds` seeds, each rising to about its level; the
    experiment's tables written to `root/tables/name/` as the workflow writes them."""
    runs = root / "runs" / name
    for method, level in levels.items():
        for seed in range(seeds):
            top = level + 0.1 * seed
            write_run(runs, method, seed, [0.0, top / 2, top], env)
    curves = aggregate_runs(runs, name)
    selection = select_cells(curves, "mean_return")
    tables = root / "tables" / name
    tables.mkdir(parents=True)
    curves.to_parquet(tables / "curves.parquet", index=False)
    selection.to_csv(tables / "selection.csv", index=False)
    return ExperimentTables(name, curves, selection)


def poi_row(table: pd.DataFrame, variant: str, score: str = "auc") -> pd.Series:
    return table[(table["variant"] == variant) & (table["statistic"] == "poi")
                 & (table["scope"] == "all_d") & (table["score"] == score)].iloc[0]


def reading(table: pd.DataFrame, variant: str) -> str:
    """What the report reads from the PoI interval: is the reference better?"""
    poi = poi_row(table, variant)
    return interval_verdict(poi["ci_low"], poi["ci_high"], 0.5)


# -- the comparison -------------------------------------------------------------------------
def test_a_clearly_better_reference_has_its_interval_above_one_half(tmp_path):
    better = experiment(tmp_path, "shared", {"ddpg": 4.0, "multi_reengage": 8.0})
    worse = experiment(tmp_path, "separate", {"ddpg": 1.0, "multi_reengage": 3.0})
    table = compare_ablation("sharing", SHARING, better, worse, reps=50)
    assert list(table.columns) == ABLATION_COLUMNS
    assert set(table["variant"]) == {"ddpg", "multi_reengage_c10"}
    assert set(table["statistic"]) == {"iqm_reference", "iqm_ablated", "iqm_diff", "poi"}
    for variant in ("ddpg", "multi_reengage_c10"):
        poi = poi_row(table, variant)
        assert poi["estimate"] == pytest.approx(1.0) and poi["ci_low"] > 0.5
        assert reading(table, variant) == report.SUPPORTED
        assert (poi["reference_n_runs"], poi["ablated_n_runs"]) == (6, 6)
        rows = table[(table["variant"] == variant) & (table["scope"] == "all_d")
                     & (table["score"] == "auc")].set_index("statistic")
        assert rows.loc["iqm_reference", "estimate"] > rows.loc["iqm_ablated", "estimate"]
        assert rows.loc["iqm_diff", "estimate"] == pytest.approx(
            rows.loc["iqm_reference", "estimate"] - rows.loc["iqm_ablated", "estimate"])
    assert set(table["change"]) == {SHARING} and set(table["ablation"]) == {"sharing"}
    assert set(table["reference"]) == {"shared"} and set(table["ablated"]) == {"separate"}
    assert (table["ci_low"] <= table["estimate"] + 1e-12).all()
    assert (table["estimate"] <= table["ci_high"] + 1e-12).all()

    # The same check fails when the answer is the other one: with the sides swapped the
    # interval lies below one half, and with identical sides it holds one half.
    swapped = compare_ablation("sharing", SHARING, worse, better, reps=50)
    assert reading(swapped, "ddpg") == report.NOT_SUPPORTED
    assert poi_row(swapped, "ddpg")["ci_high"] < 0.5


def test_identical_experiments_read_inconclusive(tmp_path):
    levels = {"ddpg": 4.0, "multi_reengage": 8.0}
    one, other = experiment(tmp_path, "one", levels), experiment(tmp_path, "other", levels)
    table = compare_ablation("same", "a copy", one, other, reps=50)
    for variant in ("ddpg", "multi_reengage_c10"):
        poi = poi_row(table, variant)
        assert poi["estimate"] == pytest.approx(0.5)
        assert poi["ci_low"] <= 0.5 <= poi["ci_high"]
        assert reading(table, variant) == report.INCONCLUSIVE


def test_each_sides_iqm_is_the_one_stats_computes(tmp_path):
    reference = experiment(tmp_path, "shared", {"ddpg": 4.0, "multi_reengage": 8.0})
    ablated = experiment(tmp_path, "separate", {"ddpg": 1.0, "multi_reengage": 3.0})
    table = compare_ablation("sharing", SHARING, reference, ablated, reps=50)
    stats = compute_stats(reference.curves, reference.selection, baseline="ddpg", reps=50)
    for variant in ("ddpg", "multi_reengage_c10"):
        for score in ("auc", "final"):
            ours = table[(table["variant"] == variant) & (table["score"] == score)
                         & (table["statistic"] == "iqm_reference")
                         & (table["scope"] == "all_d")].iloc[0]
            theirs = stats[(stats["variant"] == variant) & (stats["score"] == score)
                           & (stats["statistic"] == "iqm") & (stats["scope"] == "all_d")]
            assert ours["estimate"] == pytest.approx(theirs.iloc[0]["estimate"])


def test_cli_writes_the_table(tmp_path):
    experiment(tmp_path, "shared", {"ddpg": 4.0, "multi_reengage": 8.0})
    experiment(tmp_path, "separate", {"ddpg": 1.0, "multi_reengage": 3.0})
    out = tmp_path / "tables" / "ablations" / "sharing.csv"
    assert ablation.main(["--name", "sharing", "--change", SHARING, "--reference",
                          str(tmp_path / "tables" / "shared"), "--ablated",
                          str(tmp_path / "tables" / "separate"), "--reps", "20",
                          "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ABLATION_COLUMNS and set(table["change"]) == {SHARING}
    with pytest.raises(SystemExit) as exit_:
        ablation.main(["--help"])
    assert exit_.value.code == 0


def _bad_selection(tables: Path) -> None:
    (tables / "separate" / "selection.csv").write_text("experiment,env\nseparate,DriveSeek\n")


def _noisy_ablated(tables: Path) -> None:
    experiment(tables.parent / "noisy", "separate", {"ddpg": 1.0}, env="NoisySeek")
    for name in ("curves.parquet", "selection.csv"):
        (tables / "separate" / name).write_bytes(
            (tables.parent / "noisy" / "tables" / "separate" / name).read_bytes())


@pytest.mark.parametrize("spoil, ablated, message", [
    (None, "missing", "--ablated {tables}/missing: not a directory"),
    (lambda t: (t / "separate" / "curves.parquet").unlink(), "separate",
     "--ablated {tables}/separate/curves.parquet: no such file"),
    (_bad_selection, "separate", "missing columns"),
    (_noisy_ablated, "separate", "no (env, method variant) was run by both 'shared'"),
    (None, "shared", "--reference and --ablated are the same experiment ('shared')"),
])
def test_cli_refuses_bad_input_in_one_line(tmp_path, capsys, spoil, ablated, message):
    experiment(tmp_path, "shared", {"ddpg": 4.0, "multi_reengage": 8.0})
    experiment(tmp_path, "separate", {"ddpg": 1.0, "multi_reengage": 3.0})
    tables = tmp_path / "tables"
    if spoil:
        spoil(tables)
    out = tmp_path / "out.csv"
    code = ablation.main(["--name", "sharing", "--change", SHARING, "--reference",
                          str(tables / "shared"), "--ablated", str(tables / ablated),
                          "--reps", "20", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert message.format(tables=tables) in err
    assert not out.exists()


def test_the_comparison_imports_no_learner():
    code = ("import sys, reengage.analysis.ablation; "
            "bad = [m for m in ('torch', 'gymnasium', 'reengage.envs', 'reengage.agents') "
            "if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the config: what differs, and what is refused ------------------------------------------
def _goal_set(**changes) -> dict:
    experiment = {
        "env": "DriveSeek", "dims": [5], "steps": 200, "seeds": 2, "batch_sizes": [16],
        "lrs": [0.001], "eval_every": 100, "eval_episodes": 2, "learning_starts": 40,
        "buffer_size": 1000, "metric": "mean_return", "baseline": "ddpg",
        "settings": {"networks": {"encoder_hidden": 8, "head_hidden": 8, "embedding": 4}},
        "note": "shared", "methods": [{"name": "ddpg"}, {"name": "multi_reengage", "c": [10]}],
    }
    return {**experiment, **changes}


def _config(ablated: dict, **ablations) -> dict:
    return {"experiments": {"shared": _goal_set(), "separate": ablated},
            "ablations": ablations or {"sharing": {"reference": "shared",
                                                   "ablated": "separate"}}}


def _separate_encoders(**settings) -> dict:
    experiment = _goal_set(note="the ablation")
    experiment["settings"] = {"networks": {**experiment["settings"]["networks"],
                                           "share_encoder": False, **settings}}
    return experiment


def _with_method(name: str, **entry) -> dict:
    experiment = _goal_set()
    experiment["methods"] = [m if m["name"] != name else {**m, **entry}
                             for m in experiment["methods"]]
    return experiment


@pytest.mark.parametrize("ablated, change", [
    # The learner's default (true) stands in for the unset key; the note is not compared.
    (_separate_encoders(), SHARING),
    (_goal_set(steps=400, inputs="obs_goal"), "steps: 200 -> 400; inputs: sb3 -> obs_goal"),
    (_goal_set(seeds=[0, 1], inputs="sb3", action_noise=0.03, note="x"), ""),  # defaults
    (_with_method("multi_reengage", c=[5]), "multi_reengage: c: [10] -> [5]"),
    (_with_method("ddpg", settings={"networks": {"share_encoder": False}}),
     "ddpg: networks.share_encoder: true -> false"),
    (_goal_set(methods=[{"name": "ddpg"}]), "methods without multi_reengage"),
])
def test_the_change_names_what_differs(ablated, change):
    config = _config(ablated)
    assert ablation_change(config, "shared", "separate") == change
    assert ablation_change(config, "shared", "shared") == ""


def test_the_reproduce_config_ablates_encoder_sharing_alone():
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parent.parent / "config" /
                             "reproduce.yaml").read_text())
    validate_config(copy.deepcopy(config))
    encoder = config["ablations"]["encoder_sharing"]
    assert ablation_change(config, encoder["reference"], encoder["ablated"]) == SHARING


def _noisy() -> dict:
    return _goal_set(env="NoisySeek")


def _explicit_default() -> dict:
    experiment = _goal_set(note="the same")
    experiment["settings"]["networks"]["share_encoder"] = True
    return experiment


@pytest.mark.parametrize("config, key, words", [
    (_config(_separate_encoders(), x={"reference": "nope", "ablated": "separate"}),
     "ablations.x.reference", "'nope' is not one of the experiments"),
    (_config(_separate_encoders(), x={"reference": "shared", "ablated": "shared"}),
     "ablations.x.ablated", "is the reference itself"),
    (_config(_noisy()), "ablations.sharing.ablated", "runs NoisySeek"),
    (_config(_explicit_default()), "ablations.sharing.ablated", "nothing to compare"),
    (_config(_goal_set(methods=[{"name": "greedy"}], baseline="greedy", settings={})),
     "ablations.sharing.ablated", "none of the methods"),
    (_config(_separate_encoders(), x={"reference": "shared"}), "ablations.x",
     "'ablated' is a required property"),
    (_config(_separate_encoders(), stats={"reference": "shared", "ablated": "separate"}),
     "ablations.stats", "names an experiment's table"),
])
def test_a_bad_ablation_names_its_key(config, key, words):
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert error.value.option == key and words in error.value.message


def test_an_experiment_may_not_take_the_ablation_tables_name():
    config = _config(_separate_encoders())
    config["experiments"]["ablations"] = config["experiments"].pop("separate")
    config["ablations"]["sharing"]["ablated"] = "ablations"
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert error.value.option == "experiments.ablations"


def test_a_config_without_ablations_is_valid_as_before():
    config = _config(_separate_encoders())
    del config["ablations"]
    validate_config(config)


# -- the report -----------------------------------------------------------------------------
def ablation_of(tmp_path: Path, shared: dict[str, float], separate: dict[str, float],
                seeds: int = 6, change: str = SHARING) -> Ablation:
    """An ablation table of the shared-encoder experiment (reference) against separate
    encoders (ablated), through the real comparison."""
    reference = experiment(tmp_path, "shared", shared, seeds)
    ablated = experiment(tmp_path, "separate", separate, seeds)
    table = compare_ablation("sharing", change, reference, ablated, reps=50)
    return Ablation("sharing", change, "shared", "separate", table)


def sharing_part(text: str) -> str:
    claim = text.split("### Claim 3\n")[1].split("### Claim")[0]
    return next(line for line in claim.splitlines()
                if line.startswith("- sharing the goal encoder helps both methods"))


def test_claim_three_reads_encoder_sharing_from_an_ablation(tmp_path):
    found = ablation_of(tmp_path, {"ddpg": 4.0, "multi_reengage": 8.0},
                        {"ddpg": 1.0, "multi_reengage": 3.0})
    text = build_report([], tmp_path / "report.md", ablations=[found])
    assert sharing_part(text).endswith(f"**{report.SUPPORTED}**")
    assert "| 3 | DriveSeek and NoisySeek" in text  # the claim's row in the summary
    assert "**Verdict: supported**" in text.split("### Claim 3\n")[1].split("### Claim")[0]
    ablations = text.split("## Ablations\n")[1].split("## How verdicts")[0]
    assert "### sharing" in ablations and f"which changes `{SHARING}`" in ablations
    assert ablations.count("| supported |") == 2  # the reference beats the ablated twice
    assert "Sharing the goal encoder helps" in text.split("## How verdicts are decided")[1]


def test_the_direction_follows_the_change(tmp_path):
    """The reference with separate encoders (`false -> true`) scoring higher means the
    shared encoder did worse: not supported."""
    found = ablation_of(tmp_path, {"ddpg": 4.0, "multi_reengage": 8.0},
                        {"ddpg": 1.0, "multi_reengage": 3.0},
                        change="networks.share_encoder: false -> true")
    text = build_report([], tmp_path / "report.md", ablations=[found])
    assert sharing_part(text).endswith(f"**{report.NOT_SUPPORTED}**")


def test_both_methods_must_be_helped(tmp_path):
    mixed = ablation_of(tmp_path / "mixed", {"ddpg": 4.0, "multi_reengage": 3.0},
                        {"ddpg": 1.0, "multi_reengage": 8.0})
    text = build_report([], tmp_path / "report.md", ablations=[mixed])
    assert sharing_part(text).endswith(f"**{report.NOT_SUPPORTED}**")
    only_ddpg = ablation_of(tmp_path / "ddpg", {"ddpg": 4.0}, {"ddpg": 1.0})
    text = build_report([], tmp_path / "report.md", ablations=[only_ddpg])
    assert sharing_part(text).endswith(f"**{report.INCONCLUSIVE}**")
    assert "No ablation covers multi_reengage" in text


def test_too_few_seeds_read_too_few_seeds(tmp_path):
    few = ablation_of(tmp_path, {"ddpg": 4.0, "multi_reengage": 8.0},
                      {"ddpg": 1.0, "multi_reengage": 3.0}, seeds=report.MIN_SEEDS - 2)
    text = build_report([], tmp_path / "report.md", ablations=[few])
    assert sharing_part(text).endswith(f"**{report.TOO_FEW_SEEDS}**")
    assert "too few seeds (3 / 3; the interval alone reads supported)" in text


def test_without_an_encoder_ablation_the_part_is_not_covered(tmp_path):
    text = build_report([], tmp_path / "report.md")
    assert sharing_part(text).startswith(
        f"- sharing the goal encoder helps both methods: {report.NOT_COVERED}")
    assert "## Ablations" not in text
    other = ablation_of(tmp_path, {"ddpg": 4.0}, {"ddpg": 1.0}, change="steps: 200 -> 400")
    text = build_report([], tmp_path / "report.md", ablations=[other])
    assert report.NOT_COVERED in sharing_part(text)
    assert "### sharing" in text.split("## Ablations\n")[1]  # listed all the same


def test_report_cli_reads_the_ablation_folder(tmp_path, capsys):
    found = ablation_of(tmp_path, {"ddpg": 4.0, "multi_reengage": 8.0},
                        {"ddpg": 1.0, "multi_reengage": 3.0})
    folder = tmp_path / "tables" / "ablations"
    folder.mkdir()
    found.table.to_csv(folder / "sharing.csv", index=False)
    out = tmp_path / "report.md"
    args = ["--tables", str(tmp_path / "tables"), "--figures", str(tmp_path), "--out",
            str(out)]
    assert report.main([*args, "--ablations", str(folder)]) == 0
    text = out.read_text()
    assert sharing_part(text).endswith(f"**{report.SUPPORTED}**")
    assert "### shared\n" in text and "### ablations\n" not in text  # not an experiment
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([*args, "--ablations", str(empty)]) == 2
    assert "no ablation table" in capsys.readouterr().err
