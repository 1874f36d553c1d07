"""The goal-set learner learns: a one-step bandit where the reward is 1 when the rounded
action lands on the one present goal among the four unit neighbours of the origin. A
random action succeeds a quarter of the time or less; both DDPG and Multi-ReenGAGE must
reach 90 %. Learning on DriveSeek itself is tests/test_drive_seek_learning.py."""

import numpy as np
import pytest
import torch

from reengage.agents.deepsets import DeepSetsConfig
from reengage.agents.multi_goal import MultiGoalConfig, MultiGoalDDPG

N_MAX, BATCH = 8, 128
CELLS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)


def _goal_sets(rng: np.random.Generator, n: int) -> np.ndarray:
    sets = np.zeros((n, N_MAX, 3), np.float32)
    sets[:, 0, 0] = 1.0
    sets[:, 0, 1:] = CELLS[rng.integers(0, 4, n)]
    return sets


def _item_reward(action: np.ndarray, sets: np.ndarray) -> np.ndarray:
    hit = (np.rint(action)[:, None, :] == sets[:, :, 1:]).all(-1) & (sets[:, :, 0] != 0)
    return hit.astype(np.float32)


@pytest.mark.parametrize("gate_coef", [0.0, 5.0])
def test_goal_set_learner_solves_a_one_step_bandit(gate_coef):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    config = MultiGoalConfig(gamma=0.0, gate_coef=gate_coef, networks=DeepSetsConfig(
        encoder_hidden=64, head_hidden=64, embedding=16))
    agent = MultiGoalDDPG(1, 2, 2, N_MAX, config, [torch.Generator().manual_seed(0)])

    def success_rate() -> float:
        sets = _goal_sets(rng, 1000)
        action = agent.act(torch.zeros(1, 1000, 2), torch.as_tensor(sets.reshape(1, 1000, -1)))
        return float(_item_reward(action[0].numpy(), sets).sum(-1).mean())

    before = success_rate()
    for _ in range(600):
        sets = _goal_sets(rng, BATCH)
        action = rng.uniform(-1, 1, (BATCH, 2)).astype(np.float32)
        as_batch = lambda x: torch.as_tensor(x)[None]  # noqa: E731
        agent.update(obs=torch.zeros(1, BATCH, 2), action=as_batch(action),
                     next_obs=as_batch(action), goal=as_batch(sets.reshape(BATCH, -1)),
                     reward=as_batch(_item_reward(action, sets)))
    assert before <= 0.5
    assert success_rate() >= 0.9
