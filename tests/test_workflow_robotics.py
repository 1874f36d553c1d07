"""Robotics experiments in the workflow: epochs turned into steps, the epoch checks and their
errors, the Baselines settings passed through `--set`, per-experiment threads and resources,
and the planned jobs of the robotics configs."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reengage.config import ConfigError, TrainConfig, validate
from reengage.workflow import (
    apply_defaults,
    cells,
    epoch_length,
    job_resources,
    job_threads,
    report_options,
    resolve_epochs,
    train_arguments,
    validate_config,
)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _train_side_accepts_robotics() -> bool:
    """Whether `reengage train` (reengage.config.validate) takes the robotics tasks and
    Normalized ReenGAGE: every planned job is checked through it."""
    cfg = TrainConfig(env="HandReach", dim=15, method="reengage_her_normalized", seeds=[0],
                      steps=5000, c=1e-4, eval_every=5000,
                      extra={"workers": 1, "envs_per_worker": 2, "cycles": 50})
    try:
        validate(cfg)
    except (ConfigError, KeyError):
        return False
    return True


needs_robotics_training = pytest.mark.skipif(
    not _train_side_accepts_robotics(),
    reason="reengage train does not take the robotics tasks and reengage_her_normalized yet")


def _hand_reach(**changes) -> dict:
    experiment = {"env": "HandReach", "dims": [15], "epochs": 3, "seeds": 2,
                  "settings": {"workers": 1, "envs_per_worker": 2},
                  "methods": [{"name": "ddpg_her"}, {"name": "reengage_her", "c": [0.0001]}]}
    experiment.update(changes)
    return experiment


def _config(experiment: dict) -> dict:
    return {"seeds_per_job": 2, "theory": {"enabled": False}, "experiments": {"hr": experiment}}


def test_epochs_become_steps_and_one_epoch_between_evaluations():
    experiment = _hand_reach(settings={"workers": 19, "envs_per_worker": 2, "cycles": 50})
    resolve_epochs(experiment, "experiments.hr")
    # 50 cycles x 19 workers x 2 envs x T = 50 steps: the paper's epoch of one member.
    assert epoch_length(experiment) == 95_000
    assert experiment["steps"] == 3 * 95_000
    assert experiment["eval_every"] == 95_000
    block = {"env": "HandManipulateBlockRotateXYZ", "dims": [7], "epochs": 2, "seeds": 1,
             "methods": [{"name": "ddpg_her"}]}
    resolve_epochs(block, "experiments.b")
    # The workflow's defaults (50 cycles, 1 worker, 2 envs) and the block's T of 100 steps.
    assert block["steps"] == 2 * 50 * 1 * 2 * 100 and block["eval_every"] == 10_000


def test_steps_given_in_whole_epochs_are_kept_and_evaluated_every_epoch():
    experiment = _hand_reach(steps=10_000)
    del experiment["epochs"]
    resolve_epochs(experiment, "experiments.hr")
    assert experiment["steps"] == 10_000 and experiment["eval_every"] == 5_000


@pytest.mark.parametrize("changes, key, words", [
    ({"epochs": None, "steps": 12_000}, "experiments.hr.steps",
     "12,000 env steps is not a whole number of epochs: an epoch of HandReach here is 50 "
     "cycles x 1 workers x 2 envs per worker x 50 steps = 5,000 env steps"),
    ({"eval_every": 2_500}, "experiments.hr.eval_every",
     "2,500 env steps is not a whole number of epochs"),
    ({"eval_every": 10_000}, "experiments.hr.eval_every", "does not divide the 15,000 steps"),
    ({"steps": 20_000}, "experiments.hr.steps", "is not the 3 epochs given"),
    ({"eval_episodes": 10}, "experiments.hr.eval_episodes", "test_rollouts"),
    ({"learning_starts": 0}, "experiments.hr.learning_starts", "Baselines regime"),
    ({"settings": {"workers": 0}}, "experiments.hr.settings.workers", "positive integer"),
    ({"methods": [{"name": "ddpg_her", "settings": {"envs_per_worker": 1}}]},
     "experiments.hr.methods.0.settings.envs_per_worker", "every method trains the same"),
])
def test_a_robotics_schedule_that_is_not_whole_epochs_names_its_key(changes, key, words):
    experiment = _hand_reach(**changes)
    if experiment.get("epochs") is None:
        experiment.pop("epochs")
    with pytest.raises(ConfigError) as error:
        validate_config(_config(experiment))
    assert error.value.option == key
    assert words in error.value.message


def test_only_robotics_tasks_take_epochs_and_every_task_needs_a_length():
    config = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    config["experiments"]["continuous_seek"]["epochs"] = 2
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert error.value.option == "experiments.continuous_seek.epochs"
    del config["experiments"]["continuous_seek"]["epochs"]
    del config["experiments"]["continuous_seek"]["steps"]
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert error.value.option == "experiments.continuous_seek"
    assert "'steps' is a required property" in error.value.message
    experiment = _hand_reach()
    del experiment["epochs"]
    with pytest.raises(ConfigError) as error:
        validate_config(_config(experiment))
    assert error.value.option == "experiments.hr" and "epochs" in error.value.message


def test_a_robotics_job_passes_the_epoch_settings_and_none_of_the_toy_loops_options():
    experiment = _hand_reach(settings={"workers": 19, "envs_per_worker": 2, "batches": 40,
                                       "vectorization_mode": "async"})
    resolve_epochs(experiment, "experiments.hr")
    config = apply_defaults(_config(experiment))
    by_method = {cell.method: cell for cell in cells(config)}
    command = train_arguments(config, by_method["reengage_her"], (0, 1))
    assert command.startswith("--env HandReach --dim 15 --method reengage_her --batch-size 256 "
                              "--lr 0.001 --seeds 0,1 --steps 285000 --eval-every 95000 "
                              "--c 0.0001 ")
    # The epoch's settings always (cycles from the workflow's default), then the rest.
    assert ("--set cycles=50 --set workers=19 --set envs_per_worker=2 --set batches=40 "
            "--set vectorization_mode=async") in command
    for option in ("--eval-episodes", "--learning-starts", "--buffer-size", "--action-noise"):
        assert option not in command
    assert "--c" not in train_arguments(config, by_method["ddpg_her"], (0, 1))


def test_an_experiment_may_reserve_its_own_cores_and_resources():
    experiment = _hand_reach(threads_per_job=8, train_resources={"mem_mb": 32000})
    config = apply_defaults({**_config(experiment), "threads_per_job": 1,
                             "experiments": {"hr": experiment, "other": _hand_reach()}})
    assert job_threads(config, "hr") == 8 and job_threads(config, "other") == 1
    assert job_resources(config, "hr") == {"mem_mb": 32000, "runtime": 720, "gpu": 0}
    assert job_resources(config, "other") == {"mem_mb": 4000, "runtime": 720, "gpu": 0}


def test_the_report_is_told_each_note_and_reference_check():
    checked = _hand_reach(env="FetchReach", dims=[3], note="reduced: it's 2 epochs",
                          reference_check={"min_final": 0.9})
    options = report_options({"experiments": {"fr": checked, "hr": _hand_reach()}})
    assert options == ("--experiment-note 'fr=reduced: it'\"'\"'s 2 epochs' "
                       "--reference-check fr=0.9")


# -- with the training side: every planned job checked as `reengage train` checks it --------
def _snakemake(*args: str, cwd: Path = REPO):
    environment = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *args],
                          cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=300)


@needs_robotics_training
def test_a_goal_width_other_than_the_tasks_names_dims():
    with pytest.raises(ConfigError) as error:
        validate_config(_config(_hand_reach(dims=[14])))
    assert error.value.option == "experiments.hr.dims.0"


@needs_robotics_training
def test_the_reduced_robotics_config_plans_its_jobs(tmp_path):
    config = yaml.safe_load((REPO / "config" / "robotics.yaml").read_text())
    validate_config(copy.deepcopy(config))
    result = _snakemake("-n", "-p", "--cores", "2", "--configfile",
                        str(REPO / "config" / "robotics.yaml"), "--directory", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "reengage train --env HandReach --dim 15 --method ddpg_her" in output
    assert "--set workers=1 --set envs_per_worker=2" in output
    assert "--experiment-note 'hand_reach=reduced:" in output


@needs_robotics_training
def test_the_default_runs_the_fetch_reach_check_and_tells_the_report(tmp_path):
    result = _snakemake("-n", "-p", "--cores", "2", "--directory", str(tmp_path),
                        "--configfile", str(REPO / "config" / "default.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    # Two epochs of 50 cycles x 1 worker x 1 env x 50 steps, tested after each.
    assert ("reengage train --env FetchReach --dim 3 --method ddpg_her --batch-size 256 "
            "--lr 0.001 --seeds 0 --steps 5000 --eval-every 2500 --set cycles=50 "
            "--set workers=1 --set envs_per_worker=1") in output
    assert "--reference-check fetch_reach_check=0.9" in output
    # A check compares no methods: no statistics of its own.
    assert "results/tables/fetch_reach_check/stats.csv" not in output
    assert "results/figures/fetch_reach_check.png" in output
