"""The Snakemake workflow: dry-run job counts, lint, profiles, config errors, and a new
method added as a plugin reaching the tables, the statistics and the figure legend."""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import yaml

from reengage.config import ConfigError
from reengage.workflow import (
    apply_defaults,
    cells,
    format_number,
    job_priority,
    progress_files,
    seed_chunks,
    train_arguments,
    train_chunks,
    validate_config,
)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _snakemake(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 300):
    environment = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *args],
                          cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def _job_counts(output: str) -> dict[str, int]:
    counts, in_table = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
            elif counts and not line.startswith("-"):
                break
    return counts


def _chunk_jobs(counts: dict[str, int], chunk: str) -> int:
    """Jobs of the rules that train seed chunk `chunk` (one rule per chunk and experiment,
    `train_seeds_<chunk>_<experiment>`; the tests' experiments start with a letter)."""
    return sum(n for name, n in counts.items()
               if re.fullmatch(f"train_seeds_{chunk}_[A-Za-z][A-Za-z0-9_]*", name))


def test_default_dry_run_plans_one_job_per_population():
    result = _snakemake("-n", "--cores", "2")
    assert result.returncode == 0, result.stderr
    counts = _job_counts(result.stdout + result.stderr)
    # 2 d x (DDPG+HER + ReenGAGE c = 0.2 + the SB3 control) x 1 cell x (5 seeds / 5 per job)
    assert _chunk_jobs(counts, "0_1_2_3_4") == 6
    # goal sets: DDPG + Multi-ReenGAGE on DriveSeek, and the greedy agent on NoisySeek
    assert _chunk_jobs(counts, "0_1_2") == 2 + 3
    # the FetchReach reference check: DDPG+HER, one seed, two epochs
    assert _chunk_jobs(counts, "0") == 1
    for rule in ("aggregate", "select", "figures"):
        assert counts[rule] == 4  # one per experiment
    for rule in ("stats", "runtime", "rliable_figures", "diagnostics"):
        assert counts[rule] == 3  # the reference check compares no methods
    assert counts["report"] == 1


def test_paper_config_plans_the_full_grid():
    result = _snakemake("-n", "--cores", "2", "--configfile", "config/paper.yaml")
    assert result.returncode == 0, result.stderr
    counts = _job_counts(result.stdout + result.stderr)
    train_jobs = sum(v for k, v in counts.items() if k.startswith("train_"))
    # ContinuousSeek: 3 d x 6 method variants (DDPG+HER, 3 ReenGAGE c, the SB3 control,
    # TD3+HER) x (3 batch x 4 lr) x (20 seeds / 10 per job); its SAC grid: 3 d x 4 variants
    # (SAC+HER, 3 ReenGAGE c) x (7 batch x 5 lr) x one job of 10 seeds; DriveSeek: DDPG + 3
    # Multi-ReenGAGE c; NoisySeek: the same plus the greedy agent; BitFlip: 2 d x 15 variants
    # (DQN+HER, 7 soft-target uses and τ x 2 c) x one job of 10 seeds; HandReach and the
    # block: DDPG+HER and 4 c each of ReenGAGE and Normalized ReenGAGE, 5 jobs of one seed
    # (the experiments' own seeds_per_job).
    assert train_jobs == 3 * 6 * 12 * 2 + 3 * 4 * 35 + 4 + 5 + 2 * 15 + 2 * 9 * 5
    for seed in range(5):  # the robotics jobs alone train one seed
        assert _chunk_jobs(counts, str(seed)) == 2 * 9
    # The default grid is not merged in: neither its goal sets nor its FetchReach check (the
    # total above counts every job).
    assert _chunk_jobs(counts, "0_1_2") == 0


def test_slurm_profile_dry_run():
    result = _snakemake("--profile", "profiles/slurm", "--configfile", "config/paper.yaml",
                        "-n")
    assert result.returncode == 0, result.stderr


def test_lint_is_clean():
    result = _snakemake("--lint")
    assert result.returncode == 0
    assert "good condition" in result.stdout + result.stderr


def test_conda_environment_lists_what_pyproject_lists():
    env = yaml.safe_load((REPO / "environment.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {line.split("=")[0].split(">")[0].split("<")[0].strip().lower()
              for line in pip if not line.startswith("-")}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = {d.split("=")[0].split(">")[0].split("<")[0].strip().lower()
                for d in project["dependencies"]}
    assert required <= listed
    # Snakemake builds the env from a copy under .snakemake/conda/, where a relative path
    # names the wrong directory: the checkout is installed by the post-deploy script.
    assert not [line for line in pip if line.startswith("-e") or line.startswith(".")]
    deploy = REPO / "environment.post-deploy.sh"  # the name Snakemake looks for
    assert deploy.stat().st_mode & 0o111
    assert "pip install --quiet --no-deps -e ." in deploy.read_text()


@pytest.mark.parametrize("change, key", [
    ({"bogus_key": 1}, "(top level)"),
    ({"seeds_per_job": "five"}, "seeds_per_job"),
    ({"experiments": {"cs": {"env": "ContinuousSeek", "dims": [0], "steps": 100, "seeds": 2,
                             "methods": [{"name": "ddpg_her"}]}}}, "experiments.cs.dims.0"),
    ({"experiments": {"cs": {"env": "ContinuousSeek", "dims": [2], "steps": 100, "seeds": 2,
                             "methods": [{"name": "ddpg_her"}, {"name": "reengage_her"}]}}},
     "experiments.cs.methods.1.c"),
    ({"experiments": {"cs": {"env": "ContinuousSeek", "dims": [2], "steps": 100, "seeds": 2,
                             "methods": [{"name": "reengage_her", "c": [0.1]}]}}},
     "experiments.cs.baseline"),
    ({"experiments": {"cs": {"env": "Nope", "dims": [2], "steps": 100, "seeds": 2,
                             "methods": [{"name": "ddpg_her"}]}}}, "experiments.cs.env"),
    ({"experiments": {"cs": {"env": "ContinuousSeek", "dims": [2, 5], "steps": {2: 100},
                             "seeds": 2, "methods": [{"name": "ddpg_her"}]}}},
     "experiments.cs.steps"),
])
def test_bad_config_names_the_key(change, key):
    config = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    config.update(change)
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert error.value.option == key


def test_bad_config_stops_the_workflow_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    config["experiments"]["continuous_seek"]["lrs"] = [-0.1]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake("--cores", "1", "--configfile", str(tmp_path / "bad.yaml"),
                        "--directory", str(tmp_path))
    assert result.returncode != 0
    assert "experiments.continuous_seek.lrs.0" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_grid_expansion_and_train_arguments():
    config = apply_defaults(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    grid = list(cells(config, "continuous_seek"))
    # 6 methods: DDPG+HER, 3 ReenGAGE c, the SB3 control and TD3+HER (a plugin's)
    assert len(grid) == 3 * 6 * 12
    assert seed_chunks(list(range(20)), 10) == [tuple(range(10)), tuple(range(10, 20))]
    assert seed_chunks([0, 1, 2], 2) == [(0, 1), (2,)]
    cell = next(c for c in grid if c.c == 0.2 and c.dim == 20 and c.lr == 0.00025)
    assert cell.method_dir == "reengage_her_c0.2"
    args = train_arguments(config, cell, (0, 1))
    assert "--c 0.2" in args and "--lr 0.00025" in args and "--steps 400000" in args
    # Only the jobs of a plugin's method name the plugin (it registered nothing else).
    assert "--plugin" not in args
    td3 = next(c for c in grid if c.method == "td3_her")
    assert "--plugin plugins.td3" in train_arguments(config, td3, (0, 1))
    assert format_number(0.001) == "0.001" and format_number(256) == "256"
    assert format_number(1e-12) == "0.000000000001" and format_number(10.0) == "10"
    # Unset, the input layout and HER variant are the CLI's defaults and are not passed.
    assert "--inputs" not in args and "--her-" not in args


def test_input_layout_her_variant_and_method_settings_reach_the_command():
    config = apply_defaults({"experiments": {"cs": {
        "env": "ContinuousSeek", "dims": [5], "steps": 1000, "seeds": 2,
        "inputs": "obs_goal", "her_future": "next_to_penultimate", "her_relabel": "exact",
        "settings": {"hidden": [64, 64], "compile": False},
        "methods": [{"name": "ddpg_her"},
                    {"name": "reengage_her", "c": [0.2], "settings": {"compile": True}}],
    }}})
    validate_config(config)
    by_method = {cell.method: train_arguments(config, cell, (0, 1)) for cell in cells(config)}
    for args in by_method.values():
        assert "--inputs obs_goal" in args and "--her-future next_to_penultimate" in args
        assert "--her-relabel exact" in args and "'hidden=[64, 64]'" in args
    assert "compile=false" in by_method["ddpg_her"]
    assert "compile=true" in by_method["reengage_her"]  # the method's own setting wins
    assert "compile=false" not in by_method["reengage_her"]
    bad = yaml.safe_load(yaml.safe_dump(config))
    bad["experiments"]["cs"]["inputs"] = "goal_obs"
    with pytest.raises(ConfigError, match="experiments.cs.inputs"):
        validate_config(bad)


def _per_method_config() -> dict:
    return {"seeds_per_job": 2, "experiments": {"cs": {
        "env": "ContinuousSeek", "dims": [2, 5], "steps": 1000, "seeds": 4,
        "batch_sizes": [128], "lrs": [0.001],
        "methods": [
            {"name": "ddpg_her", "batch_sizes": {2: [64], 5: [256, 512]},
             "lrs": {2: [0.0005], 5: [0.001]}},
            {"name": "reengage_her", "c": [0.2], "lrs": [0.0015]},
            {"name": "sb3_ddpg_her", "seeds": [0, 1]},
        ]}}}


def test_a_method_may_set_its_own_cells_and_seeds():
    config = _per_method_config()
    validate_config(config)
    config = apply_defaults(config)
    grid = {(c.method, c.dim, c.batch, c.lr) for c in cells(config)}
    assert grid == {
        ("ddpg_her", 2, 64, 0.0005), ("ddpg_her", 5, 256, 0.001), ("ddpg_her", 5, 512, 0.001),
        ("reengage_her", 2, 128, 0.0015), ("reengage_her", 5, 128, 0.0015),  # own lrs only
        ("sb3_ddpg_her", 2, 128, 0.001), ("sb3_ddpg_her", 5, 128, 0.001),    # experiment's
    }
    assert train_chunks(config) == {
        (0, 1): {"cs": {"ddpg_her", "reengage_her_c0.2", "sb3_ddpg_her"}},
        (2, 3): {"cs": {"ddpg_her", "reengage_her_c0.2"}},  # the control trains seeds 0, 1
    }
    files = progress_files(config, "cs")
    assert len(files) == (3 + 2) * 4 + 2 * 2
    assert not [f for f in files if "sb3_ddpg_her" in f and "seed2" in f]


def test_an_experiment_may_set_its_own_seeds_per_job():
    config = _per_method_config()
    second = {**config["experiments"]["cs"], "seeds_per_job": 1,
              "methods": [{"name": "ddpg_her"}]}
    config["experiments"]["one_each"] = second
    validate_config(config)
    config = apply_defaults(config)
    chunks = train_chunks(config)
    # cs keeps the config's pairs; one_each trains every seed as its own job.
    assert {chunk for chunk, experiments in chunks.items() if "cs" in experiments} == {
        (0, 1), (2, 3)}
    assert {chunk for chunk, experiments in chunks.items() if "one_each" in experiments} == {
        (0,), (1,), (2,), (3,)}
    config["experiments"]["one_each"]["seeds_per_job"] = 0
    with pytest.raises(ConfigError, match="experiments.one_each.seeds_per_job"):
        validate_config(config)


@pytest.mark.parametrize("change, key", [
    (lambda m: m[0].update(batch_sizes={2: [64]}), "experiments.cs.methods.0.batch_sizes"),
    (lambda m: m[1].update(lrs=[-1.0]), "experiments.cs.methods.1.lrs"),
    (lambda m: m[0].update(lrs={5: [0.001], 2: [float("inf")]}),
     "experiments.cs.methods.0.lrs.2.0"),
    (lambda m: m[2].update(seeds=0), "experiments.cs.methods.2.seeds"),
])
def test_a_methods_bad_cells_name_its_key(change, key):
    config = _per_method_config()
    change(config["experiments"]["cs"]["methods"])
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert error.value.option == key


def test_reproduce_config_plans_each_method_at_its_cell(tmp_path):
    result = _snakemake("-n", "--cores", "2", "--configfile", "config/reproduce.yaml",
                        "--directory", str(tmp_path))
    assert result.returncode == 0, result.stderr
    counts = _job_counts(result.stdout + result.stderr)
    seeds_0_9 = "_".join(map(str, range(10)))
    seeds_10_19 = "_".join(map(str, range(10, 20)))
    # ContinuousSeek: 2 d x (DDPG+HER, 3 ReenGAGE c) x one cell x 2 populations of 10, and
    # the 10-seed control at both d; goal sets: DDPG + Multi-ReenGAGE on DriveSeek with
    # shared and with separate encoders, and on NoisySeek with the greedy agent.
    assert _chunk_jobs(counts, seeds_10_19) == 2 * 4
    assert _chunk_jobs(counts, seeds_0_9) == 2 * 4 + 2 + 2 + 2 + 3
    config = apply_defaults(yaml.safe_load((REPO / "config" / "reproduce.yaml").read_text()))
    cs = {(c.method_dir, c.dim): (c.batch, c.lr) for c in cells(config, "continuous_seek")}
    assert cs[("ddpg_her", 10)] == (256, 0.0005) and cs[("reengage_her_c0.3", 5)] == (512, 0.0015)
    assert cs[("sb3_ddpg_her", 5)] == (512, 0.001)


PLUGIN = '''
"""A user's baseline: DDPG+HER with smaller networks, registered under a new name."""
from reengage.registry import Method, register_method, build_ddpg
from dataclasses import replace


def build(spec):
    return build_ddpg(replace(spec, extra={**spec.extra, "hidden": (32, 32)}))


register_method(Method(name="small_ddpg_her", build=build, takes_c=False, her=True,
                       label=lambda c: "SmallDDPG+HER"))
'''


def test_new_method_column_reaches_tables_stats_and_figure(tmp_path):
    (tmp_path / "my_baseline.py").write_text(textwrap.dedent(PLUGIN))
    config = {
        "results": "results", "seeds_per_job": 2, "bootstrap_reps": 50,
        "plugins": ["my_baseline"], "theory": {"enabled": False},
        "experiments": {"tiny": {
            "env": "ContinuousSeek", "dims": [2], "steps": 200, "seeds": 2,
            "learning_starts": 50, "eval_every": 100, "eval_episodes": 5,
            "batch_sizes": [32], "lrs": [0.001], "note": "test grid",
            "methods": [{"name": "ddpg_her"}, {"name": "small_ddpg_her"}],
        }},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake("--cores", "2", "--configfile", str(tmp_path / "config.yaml"),
                        "--directory", str(tmp_path), env={"PYTHONPATH": str(tmp_path)},
                        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = tmp_path / "results"
    curves = pd.read_parquet(results / "tables" / "tiny" / "curves.parquet")
    assert set(curves["label"]) == {"DDPG+HER", "SmallDDPG+HER"}
    stats = pd.read_csv(results / "tables" / "tiny" / "stats.csv")
    assert "SmallDDPG+HER" in set(stats["label"])
    assert (results / "figures" / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (results / "report.md").read_text()
    assert "tiny" in report
    figure_log = (results / "logs" / "figures" / "tiny.log")
    assert figure_log.exists()
    from reengage.analysis.figures import draw_experiment

    figure = draw_experiment(curves, pd.read_csv(results / "tables" / "tiny" / "selection.csv"))
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert "SmallDDPG+HER" in legend and "DDPG+HER" in legend

    def planned_training_jobs(**changes) -> int:
        changed = tmp_path / "changed.yaml"
        changed.write_text(yaml.safe_dump({**config, **changes}))
        result = _snakemake("-n", "--cores", "2", "--configfile", str(changed),
                            "--directory", str(tmp_path), env={"PYTHONPATH": str(tmp_path)})
        assert result.returncode == 0, result.stderr[-3000:]
        counts = _job_counts(result.stdout + result.stderr)
        return sum(n for rule, n in counts.items() if rule.startswith("train_"))

    # How a job runs is not what it computes: finished jobs stay finished...
    assert planned_training_jobs(threads_per_job=2, checkpoint_every=50,
                                 wandb={"enabled": True, "mode": "online"},
                                 train_resources={"mem_mb": 1000, "runtime": 5}) == 0
    # ...while a setting that changes results retrains every job it touches.
    longer = {"tiny": {**config["experiments"]["tiny"], "steps": 300}}
    assert planned_training_jobs(experiments=longer) == 2
    shutil.rmtree(results / "runs")


def _tiny_continuous_seek(methods: list[dict], plugins: list[str]) -> dict:
    return {
        "results": "results", "seeds_per_job": 2, "bootstrap_reps": 50, "plugins": plugins,
        "theory": {"enabled": False},
        "experiments": {"tiny": {
            "env": "ContinuousSeek", "dims": [2], "steps": 200, "seeds": 2,
            "learning_starts": 50, "eval_every": 100, "eval_episodes": 5,
            "batch_sizes": [32], "lrs": [0.001], "note": "test grid", "methods": methods,
        }},
    }


def test_adding_a_plugin_method_trains_only_its_jobs(tmp_path):
    """A finished workflow, then TD3+HER (plugins/td3.py, in the checkout) added by the
    README's recipe: one `plugins` entry and one method line. The dry run plans training
    for the new column alone, and the real run leaves the finished jobs untouched and puts
    TD3+HER in the curves, the statistics, the figure and the report."""
    ddpg = {"name": "ddpg_her", "settings": {"hidden": [32, 32], "compile": False}}
    before = _tiny_continuous_seek([ddpg], [])
    after = _tiny_continuous_seek([ddpg, {"name": "td3_her", "settings": {"hidden": [32, 32]}}],
                                  ["plugins.td3"])
    for name, config in (("before", before), ("after", after)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
    finished = progress_files(apply_defaults(copy.deepcopy(before)), "tiny")
    # No PYTHONPATH: the workflow and its jobs (which run in tmp_path) find plugins.td3 in
    # the checkout.
    result = _snakemake("--cores", "2", "--configfile", str(tmp_path / "before.yaml"),
                        "--directory", str(tmp_path), *finished, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    stamps = {path: (tmp_path / path).stat().st_mtime_ns for path in finished}

    def planned_training(config: str) -> list[str]:
        """The outputs of every training job a dry run plans, one string per job."""
        result = _snakemake("-n", "--cores", "2", "--configfile", str(tmp_path / config),
                            "--directory", str(tmp_path))
        assert result.returncode == 0, result.stderr[-3000:]
        jobs, rule = [], None
        for line in (result.stdout + result.stderr).splitlines():
            if line.startswith(("rule ", "localrule ")):
                rule = line.split()[1].rstrip(":")
            elif rule and rule.startswith("train_") and line.strip().startswith("output:"):
                jobs.append(line)
        counts = _job_counts(result.stdout + result.stderr)
        assert len(jobs) == sum(n for name, n in counts.items() if name.startswith("train_"))
        return jobs

    assert planned_training("before.yaml") == []  # finished
    (job,) = planned_training("after.yaml")  # the new column's population, nothing else
    assert "/td3_her/b32_lr0.001/seed0/progress.csv" in job and "/ddpg_her/" not in job

    result = _snakemake("--cores", "2", "--configfile", str(tmp_path / "after.yaml"),
                        "--directory", str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert stamps == {path: (tmp_path / path).stat().st_mtime_ns for path in finished}
    results = tmp_path / "results"
    curves = pd.read_parquet(results / "tables" / "tiny" / "curves.parquet")
    assert set(curves["label"]) == {"DDPG+HER", "TD3+HER"}
    assert curves.loc[curves["method"] == "td3_her", "critic_loss"].notna().any()
    stats = pd.read_csv(results / "tables" / "tiny" / "stats.csv")
    assert "TD3+HER" in set(stats["label"])
    assert "TD3+HER" in (results / "report.md").read_text()
    from reengage.analysis.figures import draw_experiment

    figure = draw_experiment(curves, pd.read_csv(results / "tables" / "tiny" / "selection.csv"))
    assert "TD3+HER" in [text.get_text() for text in figure.legends[0].get_texts()]
    record = json.loads((results / "runs" / "tiny" / "ContinuousSeek-d2" / "td3_her"
                         / "b32_lr0.001" / "seed0" / "run.json").read_text())
    assert record["provenance"]["plugins"] == ["plugins.td3"]
    assert record["provenance"]["method_module"] == "plugins.td3"


def test_killed_workflow_resumes_with_rerun_incomplete(tmp_path):
    """SIGKILL the whole Snakemake process group mid-training, unlock, re-run with
    --rerun-incomplete: the job resumes from its checkpoint and writes what an
    uninterrupted run writes."""
    import json
    import signal
    import time

    config = {
        "results": "results", "seeds_per_job": 2, "checkpoint_every": 50,
        "theory": {"enabled": False},
        "experiments": {"tiny": {
            "env": "ContinuousSeek", "dims": [2], "steps": 800, "seeds": 2,
            "learning_starts": 100, "eval_every": 100, "eval_episodes": 5,
            "batch_sizes": [32], "lrs": [0.001],
            "methods": [{"name": "reengage_her", "c": [0.2]}], "baseline": "reengage_her",
        }},
    }
    cell = "results/runs/tiny/ContinuousSeek-d2/reengage_her_c0.2/b32_lr0.001"
    targets = [f"{cell}/seed{s}/progress.csv" for s in (0, 1)]
    runs = {}
    for name in ("reference", "killed"):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "config.yaml").write_text(yaml.safe_dump(config))
        runs[name] = directory
    args = ["--cores", "1", "--configfile", "config.yaml"]
    # Targets go first: --configfile takes every following word as another file.
    result = _snakemake(*targets, *args, cwd=runs["reference"])
    assert result.returncode == 0, result.stderr[-2000:]

    killed = runs["killed"]
    environment = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    process = subprocess.Popen(
        [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *targets, *args],
        cwd=killed, env=environment,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoints = killed / cell / ".checkpoints"
    try:
        deadline = time.time() + 240
        while not any(checkpoints.glob("*.pt")) and time.time() < deadline:
            time.sleep(0.05)
        assert any(checkpoints.glob("*.pt")), "no checkpoint was written"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (killed / targets[0]).exists()
    assert _snakemake("--unlock", *args, cwd=killed).returncode == 0
    result = _snakemake(*targets, "--rerun-incomplete", *args, cwd=killed)
    assert result.returncode == 0, result.stderr[-2000:]
    for target in targets:
        a = pd.read_csv(runs["reference"] / target).drop(columns=["wall_time_s",
                                                                  "updates_per_s"])
        b = pd.read_csv(killed / target).drop(columns=["wall_time_s", "updates_per_s"])
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    record = json.loads((killed / cell / "seed0" / "run.json").read_text())
    assert record["resume_count"] == 1
    assert not checkpoints.exists()


def test_longest_training_jobs_get_the_highest_priority():
    config = apply_defaults(yaml.safe_load((REPO / "config" / "default.yaml").read_text()))
    priority = {(cell.env, cell.dim, cell.method_dir): job_priority(config, cell, tuple(
        range(config["experiments"][cell.experiment]["seeds"]))) for cell in cells(config)}
    # In the order their wall times had in a default run on 2 cores (0d2e712, goal sets at
    # 10k steps): goal sets 240-320 s and SB3 at d = 5 300 s (5 seeds one by one) first, in
    # either order (at 8k steps they are about equal), then ours at d = 5 180-210 s (seeds
    # at once), then d = 2 at 3k steps 80-160 s.
    goal_set = priority[("DriveSeek", 50, "ddpg")]
    sb3 = priority[("ContinuousSeek", 5, "sb3_ddpg_her")]  # trains its seeds one by one
    ours = priority[("ContinuousSeek", 5, "reengage_her_c0.2")]  # trains them at once
    assert min(goal_set, sb3) > ours > priority[("ContinuousSeek", 2, "ddpg_her")]
    assert priority[("NoisySeek", 50, "greedy")] == 0  # evaluates only


def test_check_config_prints_jobs_and_seed_steps(capsys):
    from reengage.cli import main

    assert main(["check-config", str(REPO / "config" / "paper.yaml")]) == 0
    # ContinuousSeek: 6 method variants x 12 cells x 20 seeds x (25k + 50k + 400k) steps, and
    # SAC's 4 variants x 35 cells x 10 seeds over the same steps; DriveSeek 4 and NoisySeek 5
    # variants x 10 seeds x 160k steps; BitFlip 15 variants x 10 seeds x (200k + 1.6M) steps;
    # HandReach and the block 9 variants x 5 seeds x epochs x 50 cycles x 19 workers x 2
    # envs x T (50 epochs of T = 50; 200 of T = 100), one seed a job (9 x 5 x 2 = 90 jobs
    # where 5-seed populations made 18).
    seed_steps = ((6 * 12 * 20 + 4 * 35 * 10) * (25_000 + 50_000 + 400_000)
                  + (4 + 5) * 10 * 160_000 + 15 * 10 * (200_000 + 1_600_000)
                  + 9 * 5 * 50 * 19 * 2 * (50 * 50 + 200 * 100))
    assert capsys.readouterr().out.strip().endswith(
        f"valid; 981 training jobs, {seed_steps / 1e6:,.1f}M seed-steps")


def _ablation_config() -> dict:
    """Two tiny DriveSeek experiments, the goal encoder shared and not, and the ablation
    that compares them."""
    shared = {
        "env": "DriveSeek", "dims": [5], "steps": 160, "seeds": 2, "batch_sizes": [16],
        "lrs": [0.001], "eval_every": 80, "eval_episodes": 2, "learning_starts": 40,
        "buffer_size": 1000, "metric": "mean_return", "baseline": "ddpg",
        "settings": {"networks": {"encoder_hidden": 8, "head_hidden": 8, "embedding": 4}},
        "methods": [{"name": "ddpg"}, {"name": "multi_reengage", "c": [10]}],
        "note": "test grid",
    }
    separate = {**shared, "note": "separate goal encoders",
                "settings": {"networks": {**shared["settings"]["networks"],
                                          "share_encoder": False}}}
    return {"results": "results", "seeds_per_job": 2, "bootstrap_reps": 20,
            "theory": {"enabled": False},
            "experiments": {"shared": shared, "separate": separate},
            "ablations": {"sharing": {"reference": "shared", "ablated": "separate"}}}


def test_an_ablation_is_planned_and_reaches_the_report(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_ablation_config()))
    result = _snakemake("-n", "-p", "--cores", "2", "--configfile",
                        str(tmp_path / "config.yaml"), "--directory", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    counts = _job_counts(output)
    assert counts["ablation"] == 1 and counts["report"] == 1
    assert _chunk_jobs(counts, "0_1") == 2 * 2  # two experiments, DDPG and Multi-ReenGAGE
    assert ("--change 'networks.share_encoder: true -> false' --reference "
            "results/tables/shared --ablated results/tables/separate") in output
    assert "--out results/tables/ablations/sharing.csv" in output
    assert "--ablations results/tables/ablations" in output

    # Without ablations the workflow plans what it planned before, and the report is
    # not told of any.
    default = _snakemake("-n", "-p", "--cores", "2", "--configfile",
                         str(REPO / "config" / "default.yaml"), "--directory", str(tmp_path))
    assert default.returncode == 0, default.stderr[-3000:]
    assert "ablation" not in _job_counts(default.stdout + default.stderr)
    assert "--ablations" not in default.stdout + default.stderr


def test_an_ablation_runs_from_training_to_the_report(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_ablation_config()))
    result = _snakemake("--cores", "2", "--configfile", str(tmp_path / "config.yaml"),
                        "--directory", str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = tmp_path / "results"
    table = pd.read_csv(results / "tables" / "ablations" / "sharing.csv")
    assert set(table["change"]) == {"networks.share_encoder: true -> false"}
    assert set(table["variant"]) == {"ddpg", "multi_reengage_c10"}
    assert set(table["reference_n_runs"]) == {2} and set(table["ablated_n_runs"]) == {2}
    text = (results / "report.md").read_text()
    assert "## Ablations" in text and "### sharing" in text
    # 2 seeds a side: the claim's part is decided, and reads too few seeds.
    assert "sharing the goal encoder helps both methods: **too few seeds**" in text
