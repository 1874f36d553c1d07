"""Each seed's final policy (reengage/policy.py) and `reengage evaluate`: the file loads with the
safe loader, a population member's weights are those of its seed trained alone, and the
reloaded policy scores exactly what the run's last evaluation measured."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from reengage.cli import main
from reengage.config import TrainConfig
from reengage.evaluate import evaluate_run
from reengage.run import train

LINE = re.compile(r"^seed (\d+): success_rate (\d\.\d{3}) mean_return (-?\d+\.\d{3}) "
                  r"\((\d+) episodes; policy at step (\d+), (finished|diverged at step \d+)\)$")


def _train(out: Path, seeds: str) -> None:
    # d = 1 learns within these steps, so the scores below are not all the same. Eager
    # gradients: compiled kernels for other population sizes round differently.
    assert main(["train", "--env", "ContinuousSeek", "--dim", "1", "--method", "reengage_her",
                 "--c", "0.2", "--seeds", seeds, "--steps", "600", "--learning-starts", "200",
                 "--eval-every", "300", "--eval-episodes", "10", "--batch-size", "32",
                 "--set", "hidden=[32,32]", "--set", "compile=false", "--threads", "1",
                 "--checkpoint-every", "300", "--out", str(out), "--quiet"]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("policy")
    _train(root / "population", "0,1")
    _train(root / "alone", "1")
    return {"population": root / "population", "alone": root / "alone"}


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_every_seed_leaves_a_safe_policy_file_and_no_checkpoint(runs):
    out = runs["population"]
    assert not (out / ".checkpoints").exists()  # checkpoints stay temporary
    for seed in (0, 1):
        directory = out / f"seed{seed}"
        assert not (directory / "progress.partial.csv").exists()
        policy = _load(directory / "policy.pt")
        record = json.loads((directory / "run.json").read_text())
        assert policy["kind"] == "population" and policy["seed"] == seed
        assert policy["status"] == "finished" and policy["step"] == 600
        assert policy["config"] == record["config"]
        assert policy["learner"]["obs_dim"] == 2 and policy["learner"]["goal_at"] == 1
        names = set(policy["weights"])
        assert any(n.startswith("actor.") for n in names)
        assert any(n.startswith("critic.") for n in names)
        assert not any("target" in n for n in names)  # the policy, not a training state
        assert all(t.shape[0] == 1 for t in policy["weights"].values())
        # Only this seed's values are stored, not a view of the population's tensors.
        assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size()
                   for t in policy["weights"].values())


def test_a_population_member_saves_the_weights_of_its_seed_alone(runs):
    together = _load(runs["population"] / "seed1" / "policy.pt")["weights"]
    alone = _load(runs["alone"] / "seed1" / "policy.pt")["weights"]
    other = _load(runs["population"] / "seed0" / "policy.pt")["weights"]
    assert set(together) == set(alone)
    for name in together:
        assert torch.equal(together[name], alone[name]), name
    assert not all(torch.equal(together[n], other[n]) for n in together)


def test_evaluate_reproduces_the_last_evaluation_of_progress_csv(runs, capsys):
    out = runs["population"]
    assert main(["evaluate", str(out), "--evaluation", "last"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for seed, line in zip((0, 1), lines, strict=True):
        match = LINE.match(line)
        assert match, line
        assert int(match.group(1)) == seed and match.group(4) == "10"
        assert match.group(5) == "600" and match.group(6) == "finished"
    scores = evaluate_run(out, evaluation="last")
    for score in scores:
        last = pd.read_csv(score.directory / "progress.csv").iloc[-1]
        assert (score.success_rate, score.mean_return) == (last["success_rate"],
                                                           last["mean_return"])
    # The trained policies do better than a random one would, so the comparison has teeth.
    assert max(score.mean_return for score in scores) > -10.0


def test_evaluate_one_seed_on_other_episodes(runs, capsys):
    directory = runs["population"] / "seed1"
    assert main(["evaluate", str(directory), "--episodes", "7", "--seed", "5"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    match = LINE.match(line)
    assert match and match.group(1) == "1" and match.group(4) == "7"


@pytest.mark.parametrize("case", ["missing_dir", "no_policy", "corrupted", "code", "episodes"])
def test_evaluate_refuses_bad_input_with_one_line(runs, tmp_path, capsys, case):
    target = tmp_path / "run"
    extra: list[str] = []
    if case == "no_policy":
        (target / "seed0").mkdir(parents=True)
    elif case in ("corrupted", "code"):
        (target / "seed0").mkdir(parents=True)
        policy = target / "seed0" / "policy.pt"
        if case == "corrupted":
            policy.write_bytes((runs["alone"] / "seed1" / "policy.pt").read_bytes()[:500])
        else:
            class Exploit:
                def __reduce__(self):
                    return (os.system, (f"touch {tmp_path / 'pwned'}",))

            policy.write_bytes(pickle.dumps(Exploit()))
    elif case == "episodes":
        target, extra = runs["alone"], ["--episodes", "0"]
    assert main(["evaluate", str(target), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("reengage evaluate: ")
    assert not (tmp_path / "pwned").exists()


def test_a_diverged_seed_leaves_its_policy_marked(tmp_path):
    def poison_member_1(step, learner):
        if step == 150:
            with torch.no_grad():
                learner.critic.net.layers[0].weight[1, 0, 0] = float("nan")

    cfg = TrainConfig(env="ContinuousSeek", dim=2, method="ddpg_her", seeds=[0, 1], steps=200,
                      learning_starts=100, batch_size=16, eval_every=100, eval_episodes=3,
                      threads=1, checkpoint_every=0, extra={"hidden": (16, 16)})
    train(cfg, tmp_path, progress=False, step_hook=poison_member_1)
    healthy, diverged = (_load(tmp_path / f"seed{s}" / "policy.pt") for s in (0, 1))
    assert healthy["status"] == "finished" and healthy["diverged_at_step"] is None
    assert diverged["status"] == "diverged" and diverged["diverged_at_step"] in (150, 151)
    (score,) = evaluate_run(tmp_path / "seed1")
    assert score.status.startswith("diverged at step 15")


def test_the_sb3_control_leaves_a_policy_that_evaluate_reloads(tmp_path):
    pytest.importorskip("stable_baselines3")
    cfg = TrainConfig(env="ContinuousSeek", dim=1, method="sb3_ddpg_her", seeds=[3],
                      steps=300, batch_size=32, eval_every=150, eval_episodes=5,
                      learning_starts=100, threads=1, device="cpu", extra={"hidden": (16, 16)})
    train(cfg, tmp_path, progress=False)
    policy = _load(tmp_path / "seed3" / "policy.pt")
    assert policy["kind"] == "sb3" and policy["learner"] == {"hidden": [16, 16]}
    assert any(n.startswith("actor.") for n in policy["weights"])
    assert not any("target" in n for n in policy["weights"])
    (score,) = evaluate_run(tmp_path, evaluation="last")
    last = pd.read_csv(tmp_path / "seed3" / "progress.csv").iloc[-1]
    assert (score.success_rate, score.mean_return) == (last["success_rate"],
                                                       last["mean_return"])
