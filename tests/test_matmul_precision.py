"""`--matmul-precision`: TF32 as an option (float32 by default), set for every run so one
run's choice never carries into the next, recorded in run.json, and part of what a
checkpoint must match (while older checkpoints, written before the option, still do)."""

import json
from dataclasses import replace

import pytest
import torch

from reengage.checkpoint import fingerprint
from reengage.cli import main
from reengage.config import TrainConfig
from reengage.run import train


def _config(**changes) -> TrainConfig:
    cfg = TrainConfig(env="ContinuousSeek", dim=2, method="ddpg_her", seeds=[0], steps=60,
                      learning_starts=20, eval_every=60, eval_episodes=2, batch_size=8,
                      threads=1, device="cpu", checkpoint_every=0,
                      extra={"hidden": (8, 8), "compile": False})
    return replace(cfg, **changes)


@pytest.mark.parametrize("loop", ["numpy", "device"])
def test_each_run_trains_under_its_own_precision(tmp_path, loop):
    seen = []

    def look(step, learner):
        if step == 40:
            seen.append(torch.get_float32_matmul_precision())

    try:
        train(_config(loop=loop, matmul_precision="tf32"), tmp_path / "tf32", progress=False,
              step_hook=look)
        train(_config(loop=loop), tmp_path / "float32", progress=False, step_hook=look)
    finally:
        torch.set_float32_matmul_precision("highest")
    assert seen == ["high", "highest"]
    record = json.loads((tmp_path / "tf32" / "seed0" / "run.json").read_text())
    assert record["config"]["matmul_precision"] == "tf32"


def test_checkpoints_from_before_the_option_still_match():
    settings = _config().to_dict()
    before = {k: v for k, v in settings.items() if k != "matmul_precision"}
    assert fingerprint(settings) == fingerprint(before)
    assert fingerprint({**settings, "matmul_precision": "tf32"}) != fingerprint(before)


def test_the_command_line_refuses_an_unknown_precision(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--env", "ContinuousSeek", "--dim", "2", "--method", "ddpg_her",
              "--steps", "10", "--out", str(tmp_path / "run"), "--matmul-precision", "bf16"])
    assert stopped.value.code == 2 and "--matmul-precision" in capsys.readouterr().err
