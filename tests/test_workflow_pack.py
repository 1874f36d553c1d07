"""Packed grids in the workflow (`pack: true` with `loop: device`): which cells pack, the
jobs and commands the Snakefile plans for them, and a real run whose every seed writes its
own cell's files."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reengage.config import ConfigError
from reengage.workflow import (
    apply_defaults,
    cells,
    job_resources,
    pack_cell_arguments,
    pack_jobs,
    train_arguments,
    train_chunks,
    validate_config,
)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SMALL = {"hidden": [16, 16], "compile": False}


def _config(**experiment) -> dict:
    methods = [
        {"name": "ddpg_her", "lrs": [0.001, 0.003], "settings": SMALL},
        {"name": "reengage_her", "c": [0.1, 0.3], "settings": SMALL},
        {"name": "sb3_ddpg_her"},
    ]
    return {
        "results": "results", "seeds_per_job": 2, "bootstrap_reps": 50,
        "theory": {"enabled": False},
        "experiments": {"packed": {
            "env": "ContinuousSeek", "dims": [1], "steps": 100, "seeds": 4,
            "learning_starts": 50, "eval_every": 50, "eval_episodes": 3,
            "batch_sizes": [16], "lrs": [0.001], "note": "test grid", "methods": methods,
            "loop": "device", "pack": True, **experiment,
        }},
    }


def test_cells_of_one_method_d_and_batch_pack_per_seed_chunk():
    config = apply_defaults(_config())
    validate_config(copy.deepcopy(config))
    jobs = pack_jobs(config)
    # DDPG+HER (2 lr) and ReenGAGE+HER (2 c) pack apart, each per chunk of 2 seeds.
    assert sorted((job.cells[0].method, len(job.cells), job.seeds) for job in jobs) == [
        ("ddpg_her", 2, (0, 1)), ("ddpg_her", 2, (2, 3)),
        ("reengage_her", 2, (0, 1)), ("reengage_her", 2, (2, 3))]
    assert sorted({cell.lr for job in jobs for cell in job.cells
                   if cell.method == "ddpg_her"}) == [0.001, 0.003]
    # The SB3 column is not a device-loop method: it keeps one job per cell and its loop.
    chunks = train_chunks(config)
    assert chunks == {(0, 1): {"packed": {"sb3_ddpg_her"}}, (2, 3): {"packed": {"sb3_ddpg_her"}}}
    (sb3,) = [c for c in cells(config) if c.method == "sb3_ddpg_her"]
    assert "--loop" not in train_arguments(config, sb3, (0, 1))
    text = pack_cell_arguments(config, jobs[0])
    assert text.count("--cell ") == 2 and text.count("--loop device") == 2
    assert "--out results/runs/packed/ContinuousSeek-d1/" in text


@pytest.mark.parametrize("change, key", [
    ({"loop": "numpy"}, "experiments.packed.pack"),
    ({"env": "BitFlip", "dims": [4], "methods": [{"name": "dqn_her"}]},
     "experiments.packed.loop"),
])
def test_pack_and_loop_refused_where_they_cannot_apply(change, key):
    with pytest.raises(ConfigError) as error:
        validate_config(_config(**change))
    assert error.value.option == key


def test_goal_set_cells_pack_by_method():
    """Multi-ReenGAGE cells of different c pack into one population, DDPG's apart; the
    greedy agent (no device loop) keeps its own job."""
    config = apply_defaults(_config(env="NoisySeek", dims=[4], steps=80, eval_every=40,
                                    learning_starts=40, baseline="ddpg", methods=[
        {"name": "ddpg"}, {"name": "multi_reengage", "c": [5, 10]}, {"name": "greedy"}]))
    validate_config(copy.deepcopy(config))
    jobs = pack_jobs(config)
    assert sorted((job.cells[0].method, len(job.cells), job.seeds) for job in jobs) == [
        ("ddpg", 1, (0, 1)), ("ddpg", 1, (2, 3)),
        ("multi_reengage", 2, (0, 1)), ("multi_reengage", 2, (2, 3))]
    assert train_chunks(config) == {(0, 1): {"packed": {"greedy"}},
                                    (2, 3): {"packed": {"greedy"}}}


def test_gpu_true_moves_device_loop_experiments_onto_packed_gpu_jobs():
    """`gpu: true` (e.g. `snakemake --config gpu=true`): experiments on device-loop tasks
    that leave `loop` unset pack, one GPU per job; the others keep what they say."""
    config = _config()
    packed = config["experiments"].pop("packed")
    for key in ("loop", "pack"):
        packed.pop(key)
    config["experiments"] = {
        "seek": packed,
        "seek_numpy": {**copy.deepcopy(packed), "loop": "numpy"},
        "bits": {"env": "BitFlip", "dims": [4], "steps": 96, "seeds": 2, "eval_every": 48,
                 "learning_starts": 48, "eval_episodes": 3, "batch_sizes": [16],
                 "lrs": [0.001], "methods": [{"name": "dqn_her"}], "baseline": "dqn_her"},
    }
    before = apply_defaults(copy.deepcopy(config))
    assert pack_jobs(before) == [] and job_resources(before, "seek")["gpu"] == 0
    config["gpu"] = True
    validate_config(config)  # in place, as the Snakefile validates its config
    assert config["experiments"]["seek"]["loop"] == "device"
    filled = apply_defaults(copy.deepcopy(config))
    assert {job.cells[0].experiment for job in pack_jobs(filled)} == {"seek"}
    assert len(pack_jobs(filled)) == 4  # ddpg_her and reengage_her, 2 chunks each
    assert [job_resources(filled, name)["gpu"] for name in ("seek", "seek_numpy", "bits")] == [
        1, 0, 0]
    assert "loop" not in filled["experiments"]["bits"]


def test_check_config_counts_packs_as_jobs(tmp_path, capsys):
    from reengage.cli import main

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_config()))
    assert main(["check-config", str(path)]) == 0
    # 4 packs and 2 SB3 populations; 5 variants x 4 seeds x 100 steps (lrs 2 for DDPG).
    assert "6 training jobs (4 of them packs of cells), 0.0M seed-steps" in capsys.readouterr().out


def test_a_packed_experiment_trains_through_snakemake(tmp_path):
    config = _config(seeds=2, methods=[
        {"name": "ddpg_her", "lrs": [0.001, 0.003], "settings": SMALL},
        {"name": "reengage_her", "c": [0.1, 0.3], "settings": SMALL}])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    environment = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    run = subprocess.run(
        [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--cores", "2",
         "--configfile", str(tmp_path / "config.yaml"), "--directory", str(tmp_path),
         "-p", "results/tables/packed/curves.parquet"],
        env=environment, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    output = run.stdout + run.stderr
    assert output.count("reengage train-pack ") == 2 and "rule train_pack_packed_" in output
    runs = tmp_path / "results" / "runs" / "packed" / "ContinuousSeek-d1"
    seen = set()
    for folder in ("ddpg_her/b16_lr0.001", "ddpg_her/b16_lr0.003",
                   "reengage_her_c0.1/b16_lr0.001", "reengage_her_c0.3/b16_lr0.001"):
        for seed in (0, 1):
            record = json.loads((runs / folder / f"seed{seed}" / "run.json").read_text())
            assert record["status"] == "finished" and record["config"]["loop"] == "device"
            assert (runs / folder / f"seed{seed}" / "progress.csv").exists()
            seen.add((record["config"]["lr"], record["config"]["c"]))
    assert seen == {(0.001, None), (0.003, None), (0.001, 0.1), (0.001, 0.3)}
    assert not (runs.parent.parent / ".packs").exists() or not any(
        (runs.parent.parent / ".packs").rglob("*.pt"))


def test_the_gpu_config_plans_packs_that_each_ask_for_a_gpu(tmp_path):
    """config/gpu_d20.yaml: two packs (DDPG+HER alone, the three ReenGAGE c together), each
    job with the `gpu` resource the SLURM executor turns into `--gpus=1`; a config that
    does not set it asks for none."""
    environment = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}

    def dry_run(*args: str) -> str:
        run = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-n",
                              "--cores", "2", "--directory", str(tmp_path), *args],
                             env=environment, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stdout + run.stderr

    output = dry_run("--configfile", str(REPO / "config" / "gpu_d20.yaml"))
    jobs = [block for block in output.split("\nrule ")[1:] if block.startswith("train_")]
    assert sorted(block.split(":")[0] for block in jobs) == [
        "train_pack_continuous_seek_d20_ContinuousSeek_d20_ddpg_her_b256_seeds0_1_2_3_4",
        "train_pack_continuous_seek_d20_ContinuousSeek_d20_reengage_her_b128_seeds0_1_2_3_4"]
    assert all("gpu=1" in block for block in jobs)
    reengage = next(block for block in jobs if "reengage_her" in block.split(":")[0])
    assert all(f"reengage_her_c{c}/b128_lr0.0005/seed4/progress.csv" in reengage
               for c in ("0.1", "0.2", "0.3"))
    default = dry_run("--configfile", str(REPO / "config" / "default.yaml"))
    assert "gpu=0" in default and "gpu=1" not in default
