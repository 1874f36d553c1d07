"""Weights & Biases, offline: one wandb run per seed, grouped by cell, same metrics."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("wandb")


def test_offline_wandb_run_per_seed(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "WANDB_DIR": str(tmp_path / "wandb"), "WANDB_SILENT": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "reengage.cli", "train", "--env", "ContinuousSeek", "--dim", "2",
         "--method", "ddpg_her", "--seeds", "0,1", "--steps", "100", "--learning-starts", "50",
         "--eval-every", "50", "--eval-episodes", "2", "--batch-size", "16", "--quiet",
         "--out", str(out), "--wandb-project", "reengage-test", "--wandb-group", "cell-a"],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    runs = sorted((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    for run in runs:
        files = list(run.glob("run-*.wandb"))
        assert files and files[0].stat().st_size > 0
        # The run's history holds the progress.csv metrics.
        assert b"success_rate" in files[0].read_bytes()
