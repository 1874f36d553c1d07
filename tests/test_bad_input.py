"""Bad input, every time: `reengage train` and `reengage check-config` answer it with one line
on stderr naming the option (or key path, or file), exit status 2, and nothing written; and
check-config refuses a workflow config exactly when `reengage train` would refuse its jobs."""

import math
import os
import shlex
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from reengage.cli import main
from reengage.config import (
    EVAL_COPY_BYTES,
    ConfigError,
    TrainConfig,
    check_memory,
    replay_bytes_per_member,
)
from reengage.workflow import apply_defaults, cells, seed_chunks, seeds_of, train_arguments

REPO = Path(__file__).resolve().parent.parent
GOOD = {"--env": "ContinuousSeek", "--dim": "2", "--method": "reengage_her", "--c": "0.2",
        "--seeds": "0-1", "--steps": "100", "--eval-every": "50"}


def _run(args):
    """Exit status of the command line: argparse exits for malformed numbers, our checks
    return the status."""
    try:
        return main(args)
    except SystemExit as exit_:
        return exit_.code


def _refused_in_one_line(capsys, args, name):
    code = _run(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert name in err, err
    return err


def _train(out, *changes):
    """`reengage train` on GOOD, with `changes` (flag, value, ...) over it; a value of None
    leaves the option out."""
    options = {**GOOD, **dict(zip(changes[::2], changes[1::2], strict=True))}
    args = ["train", "--out", str(out), "--quiet"]
    for flag, value in options.items():
        if value is not None:
            args += [flag, value]
    return args


@pytest.mark.parametrize("changes, option", [
    # Every float option must be finite: nan compares false with every bound, inf passes
    # lower bounds, and either used to be trained on until the run "diverged" (or crashed).
    (("--c", "nan"), "--c"),
    (("--c", "inf"), "--c"),
    (("--c", "-inf"), "--c"),
    (("--lr", "inf"), "--lr"),
    (("--lr", "nan"), "--lr"),
    (("--gamma", "nan"), "--gamma"),
    (("--tau", "inf"), "--tau"),
    (("--action-noise", "nan"), "--action-noise"),
    (("--action-noise", "inf"), "--action-noise"),
    # A method on a task it cannot learn, from the registry's flags.
    (("--method", "multi_reengage", "--c", "1"), "--env"),
    (("--method", "ddpg", "--c", None), "--env"),
    (("--method", "greedy", "--c", None), "--env"),
    (("--env", "DriveSeek", "--method", "ddpg_her", "--c", None, "--steps", "400"), "--env"),
    (("--env", "NoisySeek", "--method", "reengage_her", "--steps", "400"), "--env"),
    (("--env", "DriveSeek", "--method", "sb3_ddpg_her", "--c", None, "--steps", "400"),
     "--env"),
    # Settings only the Baselines HER loop serves (it feeds the normaliser and steps the
    # targets per cycle): under `reengage train` they would silently train something else.
    (("--set", "normalize_inputs=true"), "--set"),
    (("--set", "normalized_goal_gradient=true"), "--set"),
    (("--set", "target_update_every_step=false"), "--set"),
    # Malformed devices; cuda:99 is refused with or without CUDA.
    (("--device", "cuda:abc"), "--device"),
    (("--device", "cuda:99"), "--device"),
    # Sizes: argparse's int refuses scientific notation, and the memory a run needs is
    # checked against the machine's before anything is allocated.
    (("--buffer-size", "1e12"), "--buffer-size"),
    (("--buffer-size", "1000000000000"), "--buffer-size"),
    (("--dim", "1e8"), "--dim"),
    (("--dim", "100000000"), "--dim"),
    (("--eval-episodes", "1e9"), "--eval-episodes"),
    (("--eval-episodes", "1000000000"), "--eval-episodes"),
    (("--seeds", "0-1000000"), "--seeds"),
    (("--method", "sb3_ddpg_her", "--c", None, "--buffer-size", "1000000000000"),
     "--buffer-size"),
], ids=lambda case: " ".join(map(str, case)) if isinstance(case, tuple) else case)
def test_train_refuses_in_one_line(tmp_path, capsys, changes, option):
    out = tmp_path / "out"
    _refused_in_one_line(capsys, _train(out, *changes), option)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    err = _refused_in_one_line(capsys, _train(out, "--device", "cuda"), "--device")
    assert "CUDA" in err
    assert not out.exists()


def test_out_under_a_file_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("kept\n")
    for out in (blocker, blocker / "out", blocker / "a" / "b"):
        _refused_in_one_line(capsys, _train(out), "--out")
        assert blocker.read_text() == "kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot write into: permission bits where they bind, and where
    they do not (root), a kernel file system that refuses new entries."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    elif Path("/sys/kernel").is_dir():
        yield Path("/sys")
    else:
        pytest.skip("no folder that root cannot write into")


def test_unwritable_out_is_refused(unwritable, capsys):
    for out in (unwritable / "reengage-out", unwritable / "reengage-out" / "cell"):
        err = _refused_in_one_line(capsys, _train(out), "--out")
        assert str(unwritable) in err
        assert not out.exists()
    assert not list(unwritable.glob(".reengage-write-check-*"))  # the probe left nothing


def test_memory_check_counts_seeds_and_names_the_cause():
    cfg = TrainConfig(env="ContinuousSeek", dim=2, method="ddpg_her", seeds=list(range(100)),
                      steps=100_000)
    needed = 100 * replay_bytes_per_member(cfg)
    check_memory(cfg, available=2 * needed)
    with pytest.raises(ConfigError) as error:
        check_memory(cfg, available=needed // 2)
    assert error.value.option == "--seeds" and "100 seed(s)" in str(error.value)


@pytest.mark.parametrize("inputs", ["sb3", "obs_goal"])
def test_network_bytes_count_what_a_learner_holds(inputs):
    """The device memory check's per-member network bytes equal a built learner's: its
    online weights five times over (weights, targets, gradients, two Adam moments)."""
    from reengage.config import network_bytes_per_member
    from reengage.device.driver import DeviceTraining

    cfg = TrainConfig(env="ContinuousSeek", dim=4, method="reengage_her", c=0.1, seeds=[0],
                      steps=100, inputs=inputs, device="cpu", loop="device",
                      extra={"hidden": (32, 16), "compile": False})
    learner = DeviceTraining(cfg, torch.device("cpu")).learner
    online = sum(p.numel() for p in [*learner.actor.parameters(), *learner.critic.parameters()])
    targets = sum(p.numel() for p in [*learner.actor_target.parameters(),
                                       *learner.critic_target.parameters()])
    assert targets == online
    assert network_bytes_per_member(cfg) == 5 * online * 4


@pytest.mark.parametrize("share_encoder", [True, False])
def test_network_bytes_count_what_a_goal_set_learner_holds(share_encoder):
    """The same for the DeepSets actor-critic (one or two goal encoders)."""
    from reengage.config import network_bytes_per_member
    from reengage.device.driver import DeviceTraining

    networks = {"encoder_hidden": 12, "head_hidden": 10, "embedding": 6,
                "share_encoder": share_encoder}
    cfg = TrainConfig(env="DriveSeek", dim=5, method="multi_reengage", c=1.0, seeds=[0],
                      steps=100, device="cpu", loop="device", eval_episodes=2,
                      extra={"networks": networks})
    learner = DeviceTraining(cfg, torch.device("cpu")).learner
    online = sum(p.numel() for p in learner.model.parameters())
    assert sum(p.numel() for p in learner.target.parameters()) == online
    assert network_bytes_per_member(cfg) == 5 * online * 4


def test_device_loop_memory_check_says_how_many_members_fit():
    from reengage.config import check_device_memory, network_bytes_per_member

    cfg = TrainConfig(env="ContinuousSeek", dim=20, method="reengage_her", c=0.1,
                      seeds=list(range(1000)), steps=400_000, buffer_size=400_000,
                      device="cuda", loop="device")
    member = replay_bytes_per_member(cfg) + network_bytes_per_member(cfg)
    check_device_memory(cfg, available=1000 * member)
    with pytest.raises(ConfigError) as error:
        check_device_memory(cfg, available=999 * member + 1)
    assert error.value.option == "--seeds" and "at most 999 fit" in str(error.value)
    # Only the device loop on CUDA keeps the population on the GPU.
    check_device_memory(replace(cfg, loop="numpy"), available=1)
    check_device_memory(replace(cfg, device="cpu"), available=1)
    # ... and then the host's memory is not its replay's.
    check_memory(cfg, available=1)


@pytest.mark.parametrize("env, dim, method, c", [
    ("ContinuousSeek", 3, "ddpg_her", None),
    ("DriveSeek", 4, "multi_reengage", 1.0),
    ("NoisySeek", 3, "greedy", None),
])
def test_replay_estimate_is_what_the_replay_allocates(tmp_path, env, dim, method, c):
    from reengage.run import PopulationRun

    cfg = TrainConfig(env=env, dim=dim, method=method, seeds=[0, 1], steps=400, c=c,
                      buffer_size=5000, eval_episodes=2, extra={"compile": False}
                      if method == "ddpg_her" else {})
    run = PopulationRun(cfg, tmp_path / "out", progress=False)
    assert replay_bytes_per_member(cfg) == run.replay.nbytes // 2


def test_evaluation_estimate_is_a_lower_bound():
    """Each evaluation episode's env copy keeps a numpy Generator of its own."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        streams = [np.random.default_rng() for _ in range(2000)]
        per_copy = (tracemalloc.get_traced_memory()[0] - before) / len(streams)
    finally:
        tracemalloc.stop()
    assert EVAL_COPY_BYTES <= per_copy


# -- check-config --------------------------------------------------------------------------

def _check_config(tmp_path, capsys, text, name):
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return _refused_in_one_line(capsys, ["check-config", str(path)], name)


def _experiment(env="ContinuousSeek", methods=({"name": "ddpg_her"},), **keys):
    steps = 400 if env != "ContinuousSeek" else 100
    return {"experiments": {"x": {"env": env, "dims": [2], "steps": steps, "seeds": 2,
                                  "methods": list(methods), **keys}}}


@pytest.mark.parametrize("text, name", [
    ("experiments: [1, 2]\n", "experiments: [1, 2] is not of type 'object'"),
    ("experiments: {a: [1, 2}\n", "not valid YAML"),
    ("experiments:\n  x: {env: ContinuousSeek\n  dims: [2]\n", "not valid YAML"),
    (b"\xff\xfeexperiments: {}\n", "not valid YAML"),
    ("- 1\n- 2\n", "(top level)"),
])
def test_check_config_refuses_files_that_are_not_configs(tmp_path, capsys, text, name):
    err = _check_config(tmp_path, capsys, text, name)
    assert str(tmp_path / "config.yaml") in err


BAD_CONFIGS = [
    (_experiment(methods=[{"name": "ddpg"}, {"name": "multi_reengage", "c": [1.0]}],
                 baseline="ddpg"), "experiments.x.env", "--env"),
    (_experiment("DriveSeek"), "experiments.x.env", "--env"),
    (_experiment(lrs=[0.001, math.inf]), "experiments.x.lrs.1", "--lr"),
    (_experiment(methods=[{"name": "ddpg_her"}, {"name": "reengage_her", "c": [0.1, math.nan]}]),
     "experiments.x.methods.1.c.1", "--c"),
    (_experiment(action_noise=math.nan), "experiments.x.action_noise", "--action-noise"),
    (_experiment(extra_args=["--tau inf"]), "experiments.x.extra_args", "--tau"),
    (_experiment(extra_args=["--no-such-option"]), "experiments.x.extra_args", None),
]


@pytest.mark.parametrize("config, key, flag", BAD_CONFIGS)
def test_check_config_refuses_what_train_refuses(tmp_path, capsys, monkeypatch, config, key,
                                                 flag):
    _check_config(tmp_path, capsys, yaml.safe_dump(config), key)
    refused = [(code, err) for code, err in _train_every_job(tmp_path, capsys, monkeypatch,
                                                             config) if code != 0]
    assert refused, "check-config refused a config whose every job `reengage train` accepts"
    assert all(code == 2 and len(err.strip().splitlines()) == 1 for code, err in refused)
    assert flag is None or all(flag in err for _, err in refused)


@pytest.mark.parametrize("name", ["default.yaml", "paper.yaml", "robotics.yaml",
                                  "gpu_d20.yaml"])
def test_shipped_configs_pass_both_checks(tmp_path, capsys, monkeypatch, name):
    # The config against the command line, not against this machine: config/paper.yaml's
    # robotics populations are cluster jobs (the block's 5 seeds fill about 31 GiB of replay).
    import reengage.config

    monkeypatch.setattr(reengage.config, "machine_memory_bytes", lambda: None)
    config = yaml.safe_load((REPO / "config" / name).read_text())
    assert _run(["check-config", str(REPO / "config" / name)]) == 0
    assert all(code == 0 for code, _ in _train_every_job(tmp_path, capsys, monkeypatch, config))


def _train_every_job(tmp_path, capsys, monkeypatch, config):
    """(exit status, stderr) of `reengage train` on every job's command, with training
    itself replaced by nothing: only the command line's checks run."""
    import reengage.run

    monkeypatch.setattr(reengage.run, "train", lambda *args, **kwargs: [])
    config = apply_defaults(yaml.safe_load(yaml.safe_dump(config)))
    results = []
    for i, cell in enumerate(cells(config)):
        for seeds in seed_chunks(seeds_of(config["experiments"][cell.experiment]),
                                 config["seeds_per_job"]):
            args = train_arguments(config, cell, seeds)
            code = _run(["train", *shlex.split(args), "--out", str(tmp_path / f"job{i}"),
                         "--quiet"])
            results.append((code, capsys.readouterr().err))
            assert not (tmp_path / f"job{i}").exists()
    return results
