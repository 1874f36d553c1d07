"""TD3+HER, the plugin of plugins/td3.py: Stable-Baselines3's delayed actor and target
updates, and a population member equal to the seed trained alone."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from reengage.cli import main
from reengage.registry import METHODS, LearnerSpec
from reengage.workflow import import_plugins

WALL_CLOCK = ["wall_time_s", "updates_per_s"]


@pytest.fixture(scope="module")
def td3():
    import_plugins(["plugins.td3"])  # from the checkout, as a config's `plugins` does
    return METHODS["td3_her"]


def _spec(members: int = 2) -> LearnerSpec:
    return LearnerSpec(members=members, obs_dim=4, goal_dim=2, action_dim=2, lr=1e-3,
                       gamma=0.95, tau=0.005, c=None,
                       generators=[torch.Generator().manual_seed(m) for m in range(members)],
                       extra={"hidden": (16, 16)}, achieved_dim=2, goal_at=2)


def _batch(members: int = 2, n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"obs": torch.randn(members, n, 4, generator=g),
            "action": torch.rand(members, n, 2, generator=g) * 2 - 1,
            "next_obs": torch.randn(members, n, 4, generator=g),
            "goal": torch.randn(members, n, 2, generator=g),
            "reward": -torch.ones(members, n)}


def test_the_actor_and_the_targets_move_on_every_second_update(td3):
    learner = td3.build(_spec())
    assert learner.config.policy_delay == 2 and learner.config.target_noise == 0.2
    b = _batch()
    actor = [p.detach().clone() for p in learner.actor.parameters()]
    targets = [p.detach().clone() for p in learner.critics_target.parameters()]
    critic = learner.critics[0].layers[0].weight.detach().clone()
    first = learner.update(**b)
    assert not torch.equal(critic, learner.critics[0].layers[0].weight)  # critics every time
    assert all(torch.equal(a, p) for a, p in zip(actor, learner.actor.parameters(), strict=True))
    assert all(torch.equal(a, p) for a, p in zip(
        targets, learner.critics_target.parameters(), strict=True))
    assert torch.all(first["actor_loss"] == 0)  # no actor step yet
    second = learner.update(**b)
    assert not torch.equal(actor[0], learner.actor.layers[0].weight)
    assert not torch.equal(targets[0], learner.critics_target[0].layers[0].weight)
    assert torch.all(second["actor_loss"] != 0)


def _train(out: Path, seeds: str) -> None:
    assert main(["train", "--env", "ContinuousSeek", "--dim", "3", "--method", "td3_her",
                 "--plugin", "plugins.td3", "--seeds", seeds, "--steps", "400",
                 "--learning-starts", "100", "--eval-every", "200", "--eval-episodes", "5",
                 "--batch-size", "64", "--threads", "1", "--out", str(out), "--quiet"]) == 0


def test_population_member_equals_the_seed_alone(tmp_path, td3):
    _train(tmp_path / "population", "0-2")
    _train(tmp_path / "alone", "1")

    def progress(path: Path) -> pd.DataFrame:
        return pd.read_csv(path).drop(columns=WALL_CLOCK)

    together = progress(tmp_path / "population" / "seed1" / "progress.csv")
    alone = progress(tmp_path / "alone" / "seed1" / "progress.csv")
    assert together["critic_loss"].notna().sum() == 2  # updates ran and were logged
    pd.testing.assert_frame_equal(together, alone, check_exact=True)
    other = progress(tmp_path / "population" / "seed0" / "progress.csv")
    assert not np.allclose(other["critic_loss"].iloc[1:], alone["critic_loss"].iloc[1:])
