"""Runs that survive: SIGKILL at random moments, resume, identical results; checkpoints
that are corrupted or foreign are refused; a diverged member is recorded and isolated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from reengage.config import TrainConfig
from reengage.paths import checkpoint_path
from reengage.run import train

WALL_CLOCK = ["wall_time_s", "updates_per_s"]
SEEDS = "0,1"


def _command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "reengage.cli", "train", "--env", "ContinuousSeek",
            "--dim", "2", "--method", "reengage_her", "--c", "0.2", "--seeds", SEEDS,
            "--steps", "600", "--learning-starts", "100", "--batch-size", "32",
            "--eval-every", "100", "--eval-episodes", "5", "--threads", "1",
            "--checkpoint-every", "50", "--quiet", "--out", str(out), *extra]


def _progress(out: Path, seed: int) -> pd.DataFrame:
    return pd.read_csv(out / f"seed{seed}" / "progress.csv").drop(columns=WALL_CLOCK)


def _finished(out: Path) -> bool:
    records = [out / f"seed{seed}" / "run.json" for seed in (0, 1)]
    return all(r.exists() and json.loads(r.read_text())["status"] == "finished"
               for r in records) and not _checkpoint(out).exists()


def _checkpoint(out: Path) -> Path:
    return checkpoint_path(out, [0, 1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(_command(out), check=True, timeout=300)
    return out


def _interrupted_with_sigterm(out: Path) -> subprocess.CompletedProcess:
    """Start a run and SIGTERM it once it has written its first checkpoint."""
    process = subprocess.Popen(_command(out), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not _checkpoint(out).exists() and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, "", err)


def test_sigkill_at_random_points_then_resume_gives_identical_progress(tmp_path, reference):
    out = tmp_path / "killed"
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    kills, resumed_from = 0, set()
    for attempt in range(4):  # three kills at random moments, then a run to the end
        process = subprocess.Popen(_command(out), stderr=subprocess.DEVNULL)
        try:
            if attempt == 0:  # make sure at least one kill lands after a checkpoint
                while not _checkpoint(out).exists() and process.poll() is None:
                    time.sleep(0.01)
            timeout = [rng.uniform(0.0, 1.0), rng.uniform(1.5, 5.0), rng.uniform(1.5, 5.0),
                       300][attempt]
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            kills += 1
        finally:
            process.wait()
        if process.returncode == 0 or _finished(out):  # a kill may land after the last write
            break
    else:
        pytest.fail("the run never finished")
    assert kills >= 1, "every attempt finished before the kill; lengthen the run"
    for seed in (0, 1):
        pd.testing.assert_frame_equal(_progress(out, seed), _progress(reference, seed),
                                      check_exact=True)
        record = json.loads((out / f"seed{seed}" / "run.json").read_text())
        assert record["status"] == "finished"
        resumed_from |= {r["from_step"] for r in record["resumed"]}
    assert resumed_from and min(resumed_from) > 0
    assert not _checkpoint(out).exists()  # removed once the run finished


def test_sigterm_checkpoints_and_a_half_written_checkpoint_is_ignored(tmp_path, reference):
    out = tmp_path / "terminated"
    result = _interrupted_with_sigterm(out)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    record = json.loads((out / "seed0" / "run.json").read_text())
    assert record["status"] == "interrupted"
    assert not (out / "seed0" / "progress.csv").exists()  # never a finished-looking file
    # A process killed while writing its next checkpoint leaves a partial temporary file.
    partial = _checkpoint(out).with_name(_checkpoint(out).name + ".tmp")
    partial.write_bytes(_checkpoint(out).read_bytes()[:1000])
    subprocess.run(_command(out), check=True, timeout=300)
    for seed in (0, 1):
        pd.testing.assert_frame_equal(_progress(out, seed), _progress(reference, seed),
                                      check_exact=True)
    record = json.loads((out / "seed1" / "run.json").read_text())
    assert record["resume_count"] == 1 and record["resumed"][0]["from_step"] > 0


@pytest.mark.parametrize("damage", ["truncated", "random_bytes", "foreign"])
def test_damaged_or_foreign_checkpoint_is_refused(tmp_path, damage):
    out = tmp_path / "run"
    assert _interrupted_with_sigterm(out).returncode == 128 + signal.SIGTERM
    ckpt = _checkpoint(out)
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "random_bytes":
        ckpt.write_bytes(os.urandom(ckpt.stat().st_size))
    else:
        other = tmp_path / "other"
        command = _command(other)
        command[command.index("--c") + 1] = "0.3"  # another configuration
        process = subprocess.Popen(command)
        while not _checkpoint(other).exists():
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        ckpt.write_bytes(_checkpoint(other).read_bytes())
    result = subprocess.run(_command(out), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--restart" in result.stderr
    expected = "different configuration" if damage == "foreign" else "corrupted"
    assert expected in result.stderr
    assert subprocess.run(_command(out, "--restart"), timeout=300).returncode == 0


def test_checkpoint_with_code_is_not_unpickled(tmp_path):
    """A pickle that would run code on load is refused by the safe loader."""
    import pickle

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    out = tmp_path / "run"
    ckpt = _checkpoint(out)
    ckpt.parent.mkdir(parents=True)
    with open(ckpt, "wb") as f:
        pickle.dump(Exploit(), f)
    result = subprocess.run(_command(out), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "corrupted" in result.stderr
    assert not (tmp_path / "pwned").exists()


def _nan_config(seeds: list[int]) -> TrainConfig:
    return TrainConfig(env="ContinuousSeek", dim=2, method="reengage_her", c=0.2, seeds=seeds,
                       steps=400, learning_starts=100, batch_size=32, eval_every=100,
                       eval_episodes=5, threads=1, checkpoint_every=0)


def test_nan_in_one_member_leaves_the_others_unaffected(tmp_path):
    def poison_member_1(step, learner):
        if step == 150:
            with torch.no_grad():
                learner.critic.net.layers[0].weight[1, 0, 0] = float("nan")

    records = train(_nan_config([0, 1, 2]), tmp_path / "poisoned", progress=False,
                    step_hook=poison_member_1)
    train(_nan_config([0, 2]), tmp_path / "clean", progress=False)
    assert [r["status"] for r in records] == ["finished", "diverged", "finished"]
    assert records[1]["diverged_at_step"] in (150, 151)
    assert "nan" in records[1]["diverged_reason"]
    for seed in (0, 2):
        pd.testing.assert_frame_equal(_progress(tmp_path / "poisoned", seed),
                                      _progress(tmp_path / "clean", seed), check_exact=True)
    poisoned = pd.read_csv(tmp_path / "poisoned" / "seed1" / "progress.csv")
    after = poisoned[poisoned["step"] >= 200]
    assert len(after) == 3 and after["success_rate"].isna().all()  # missing, not zero
    assert poisoned[poisoned["step"] <= 100]["success_rate"].notna().all()


def test_settings_added_later_keep_older_checkpoints_resumable():
    """A checkpoint written before the cycle settings existed hashed a config without them:
    while they hold the value that trains as that code did, the fingerprint is unchanged."""
    from reengage.checkpoint import fingerprint

    now = TrainConfig(env="ContinuousSeek", dim=2, method="ddpg_her", seeds=[0], steps=100)
    before = {k: v for k, v in now.to_dict().items()
              if k not in ("cycle_episodes", "cycle_updates")}
    assert now.cycle_episodes == 0 and "cycle_episodes" in now.to_dict()
    assert fingerprint(now.to_dict()) == fingerprint(before)
    # Without cycles the number of updates per cycle changes nothing, so it is not hashed...
    assert fingerprint({**now.to_dict(), "cycle_updates": 7}) == fingerprint(before)
    # ...and with cycles both settings are part of the run's identity.
    cycles = {**now.to_dict(), "cycle_episodes": 16}
    assert fingerprint(cycles) != fingerprint(before)
    assert fingerprint({**cycles, "cycle_updates": 7}) != fingerprint(cycles)
