"""Packed grids on the device loop (reengage/device/pack.py, `reengage train-pack`): cells
that differ in seeds, learning rate and c train as one population, and every seed's files
equal those of its cell trained alone, bit for bit on the CPU, through an interruption and
resume; cells that cannot pack are refused, naming the setting."""

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from run_files import policy_weights, progress, sigterm_at

from reengage.cli import main
from reengage.config import ConfigError, TrainConfig
from reengage.device import PackedCell, train_on_device, train_pack
from reengage.run import RunInterrupted


def _config(**changes) -> TrainConfig:
    # d = 1: the policy succeeds now and then within 400 steps, so the rows tell runs apart.
    cfg = TrainConfig(env="ContinuousSeek", dim=1, method="reengage_her", c=0.1, seeds=[0],
                      steps=400, learning_starts=100, eval_every=100, eval_episodes=5,
                      batch_size=32, buffer_size=400, threads=1, device="cpu",
                      checkpoint_every=0, loop="device",
                      extra={"hidden": (32, 32), "compile": False})
    return replace(cfg, **changes)





@pytest.mark.parametrize("method, settings", [
    ("reengage_her", [{"c": 0.1, "lr": 1e-3, "seeds": [0, 1]}, {"c": 0.3, "lr": 3e-3, "seeds": [0]},
                      {"c": 0.2, "lr": 1e-3, "seeds": [2]}]),
    ("ddpg_her", [{"c": None, "lr": 1e-3, "seeds": [0, 1]}, {"c": None, "lr": 3e-3, "seeds": [0]}]),
])
def test_a_packed_cell_equals_the_cell_trained_alone(tmp_path, method, settings):
    cells = [PackedCell(_config(method=method, **s), tmp_path / "pack" / f"cell{i}")
             for i, s in enumerate(settings)]
    # The pack is interrupted mid-episode and resumed; the cells alone run straight through.
    with pytest.raises(RunInterrupted):
        train_pack(cells, tmp_path / "pack", progress=False, step_hook=sigterm_at(155))
    records = train_pack(cells, tmp_path / "pack", progress=False)
    assert len(records) == sum(len(s["seeds"]) for s in settings)
    assert {r["resumed"][0]["from_step"] for r in records} == {155}
    for i, cell in enumerate(cells):
        alone = tmp_path / "alone" / f"cell{i}"
        train_on_device(cell.cfg, alone, progress=False)
        for seed in cell.cfg.seeds:
            packed = progress(cell.out, seed)
            assert list(packed["step"]) == [0, 100, 200, 300, 400]
            pd.testing.assert_frame_equal(packed, progress(alone, seed), check_exact=True)
            a, b = policy_weights(cell.out, seed), policy_weights(alone, seed)
            for name in a:
                assert torch.equal(a[name], b[name]), (i, seed, name)
            record = json.loads((cell.out / f"seed{seed}" / "run.json").read_text())
            assert record["status"] == "finished"
            assert record["config"]["lr"] == cell.cfg.lr and record["config"]["c"] == cell.cfg.c
            assert record["population"] == cell.cfg.seeds
    # Seed 0 of the first two cells (other lr, and c) learned differently: the members'
    # own settings were applied, not the first cell's.
    first, second = progress(cells[0].out, 0), progress(cells[1].out, 0)
    assert not first["critic_loss"].equals(second["critic_loss"])
    assert not (tmp_path / "pack" / ".checkpoints").exists()


@pytest.mark.parametrize("change, option", [
    ({"batch_size": 64}, "--batch-size"),
    ({"method": "ddpg_her", "c": None}, "--method"),
    ({"extra": {"hidden": (16, 16), "compile": False}}, "--set"),
    ({"steps": 500}, "--steps"),
])
def test_cells_that_differ_in_more_than_seeds_lr_and_c_are_refused(tmp_path, change, option):
    cells = [PackedCell(_config(), tmp_path / "a"),
             PackedCell(_config(seeds=[1], **change), tmp_path / "b")]
    with pytest.raises(ConfigError) as error:
        train_pack(cells, tmp_path, progress=False)
    assert error.value.option == option and "only seeds, lr, c may differ" in str(error.value)
    assert not (tmp_path / "a").exists()


def test_two_cells_writing_one_seed_folder_are_refused(tmp_path):
    cells = [PackedCell(_config(c=0.1), tmp_path / "same"),
             PackedCell(_config(c=0.3), tmp_path / "same")]
    with pytest.raises(ConfigError) as error:
        train_pack(cells, tmp_path, progress=False)
    assert error.value.option == "--out" and "seed 0" in str(error.value)


def _cell(out: Path, c: str, lr: str, seeds: str) -> str:
    return (f"--env ContinuousSeek --dim 1 --method reengage_her --c {c} --lr {lr} "
            f"--seeds {seeds} --steps 100 --learning-starts 50 --eval-every 50 "
            f"--eval-episodes 3 --batch-size 16 --threads 1 --device cpu "
            f"--set hidden=[16,16] --set compile=false --out {out}")


def test_the_command_line_trains_a_pack(tmp_path, capsys):
    code = main(["train-pack", "--checkpoint-dir", str(tmp_path / "pack"), "--quiet",
                 "--cell", _cell(tmp_path / "c0.1", "0.1", "0.001", "0-1"),
                 "--cell", _cell(tmp_path / "c0.3", "0.3", "0.003", "0")])
    assert code == 0
    for out, seeds, c in ((tmp_path / "c0.1", (0, 1), 0.1), (tmp_path / "c0.3", (0,), 0.3)):
        for seed in seeds:
            record = json.loads((out / f"seed{seed}" / "run.json").read_text())
            assert record["status"] == "finished" and record["config"]["c"] == c
            assert record["config"]["loop"] == "device"
            assert list(progress(out, seed)["step"]) == [0, 50, 100]
    # One line per cell and evaluation, each naming its cell's lr and c.
    err = capsys.readouterr().err
    assert "lr 0.001 c 0.1" in err and "lr 0.003 c 0.3" in err


@pytest.mark.parametrize("second, option", [
    ("--dim x", "--cell"),
    (None, "--batch-size"),
])
def test_the_command_line_refuses_a_bad_pack_in_one_line(tmp_path, capsys, second, option):
    if second is None:
        second = _cell(tmp_path / "b", "0.3", "0.001", "0").replace("--batch-size 16",
                                                                    "--batch-size 32")
    code = main(["train-pack", "--checkpoint-dir", str(tmp_path / "pack"),
                 "--cell", _cell(tmp_path / "a", "0.1", "0.001", "0"), "--cell", second])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and option in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "pack").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_a_pack_resumes_and_its_first_updates_match_its_cells_alone(tmp_path):
    """On CUDA (captured steps; per-member Adam rates inside the graph): a pack interrupted
    and resumed finishes, and its members' diagnostics over the first 100 updates equal
    their cells trained alone within rtol 1e-4 (other population sizes may choose other
    GEMM kernels, so bitwise equality is not promised there; later rows are free to drift
    as small differences change actions)."""
    settings = [{"c": 0.1, "lr": 1e-3, "seeds": [0, 1]}, {"c": 0.3, "lr": 3e-3, "seeds": [0]}]
    cells = [PackedCell(_config(device="cuda", **s), tmp_path / "pack" / f"cell{i}")
             for i, s in enumerate(settings)]
    with pytest.raises(RunInterrupted):
        train_pack(cells, tmp_path / "pack", progress=False, step_hook=sigterm_at(255))
    records = train_pack(cells, tmp_path / "pack", progress=False)
    assert [r["status"] for r in records] == ["finished"] * 3
    for i, cell in enumerate(cells):
        alone = tmp_path / "alone" / f"cell{i}"
        train_on_device(cell.cfg, alone, progress=False)
        for seed in cell.cfg.seeds:
            packed, single = progress(cell.out, seed), progress(alone, seed)
            first = packed["step"] == 200  # the mean over updates 1-100
            for column in ("critic_loss", "goal_grad_loss", "actor_loss", "q_mean"):
                assert packed.loc[first, column].item() == pytest.approx(
                    single.loc[first, column].item(), rel=1e-4), (i, seed, column)


def test_a_learner_that_ignores_per_member_settings_is_refused(monkeypatch):
    """A method whose builder drops member_lrs would train a whole pack at one lr."""
    from reengage.device.driver import DeviceTraining
    from reengage.registry import METHODS

    method = METHODS["reengage_her"]

    def build_ignoring(spec):
        return method.build(replace(spec, member_lrs=None))

    monkeypatch.setitem(METHODS, "reengage_her", replace(method, build=build_ignoring))
    cfg = _config(seeds=[0, 1])
    DeviceTraining(cfg, torch.device("cpu"), member_cs=(0.1, 0.2))  # c still reaches it
    with pytest.raises(ConfigError, match="their own lr"):
        DeviceTraining(cfg, torch.device("cpu"), member_lrs=(1e-3, 3e-3))
