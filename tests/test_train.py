"""End-to-end training of one grid cell: population equivalence, determinism, learning."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reengage.cli import main

WALL_CLOCK = ["wall_time_s", "updates_per_s"]


def _train(out: Path, seeds: str, method="reengage_her", *extra: str) -> None:
    args = ["train", "--env", "ContinuousSeek", "--dim", "3", "--method", method,
            "--seeds", seeds, "--steps", "400", "--learning-starts", "100",
            "--eval-every", "200", "--eval-episodes", "5", "--batch-size", "64",
            "--threads", "1", "--out", str(out), "--quiet", *extra]
    if method == "reengage_her":
        args += ["--c", "0.3"]
    assert main(args) == 0


def _progress(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=WALL_CLOCK)


def test_population_member_equals_the_seed_alone(tmp_path):
    _train(tmp_path / "population", "0-2")
    _train(tmp_path / "alone", "1")
    together = _progress(tmp_path / "population" / "seed1" / "progress.csv")
    alone = _progress(tmp_path / "alone" / "seed1" / "progress.csv")
    assert list(together["step"]) == [0, 200, 400]
    assert together["critic_loss"].notna().sum() == 2  # 300 updates were logged
    pd.testing.assert_frame_equal(together, alone, rtol=1e-5, atol=1e-5)
    other = _progress(tmp_path / "population" / "seed0" / "progress.csv")
    assert not np.allclose(other["critic_loss"].iloc[1:], alone["critic_loss"].iloc[1:])


def test_same_command_twice_gives_identical_progress(tmp_path):
    _train(tmp_path / "a", "0,4", "ddpg_her")
    _train(tmp_path / "b", "0,4", "ddpg_her")
    for seed in (0, 4):
        a = _progress(tmp_path / "a" / f"seed{seed}" / "progress.csv")
        b = _progress(tmp_path / "b" / f"seed{seed}" / "progress.csv")
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_outputs_per_seed(tmp_path):
    import json

    _train(tmp_path / "run", "2")
    progress = pd.read_csv(tmp_path / "run" / "seed2" / "progress.csv")
    for column in ("step", "success_rate", "mean_return", "critic_loss", "goal_grad_loss",
                   "wall_time_s"):
        assert column in progress
    assert progress["step"].iloc[0] == 0 and np.isnan(progress["critic_loss"].iloc[0])
    record = json.loads((tmp_path / "run" / "seed2" / "run.json").read_text())
    assert record["status"] == "finished" and record["seed"] == 2
    assert record["config"]["c"] == 0.3 and record["config"]["method"] == "reengage_her"
    assert {"torch", "numpy", "gymnasium", "reengage"} <= set(record["versions"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ddpg_her", "reengage_her"])
def test_learns_continuous_seek_d2(tmp_path, method):
    args = ["train", "--env", "ContinuousSeek", "--dim", "2", "--method", method,
            "--seeds", "0,1", "--steps", "3000", "--eval-every", "1500",
            "--eval-episodes", "50", "--out", str(tmp_path), "--quiet"]
    if method == "reengage_her":
        args += ["--c", "0.2"]
    assert main(args) == 0
    final = [pd.read_csv(tmp_path / f"seed{s}" / "progress.csv")["success_rate"].iloc[-1]
             for s in (0, 1)]
    assert pd.read_csv(tmp_path / "seed0" / "progress.csv")["success_rate"].iloc[0] < 0.2
    assert min(final) >= 0.9, final
