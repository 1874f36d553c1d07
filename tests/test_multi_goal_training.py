"""Goal-set tasks inside the harness: checkpointable env state, the greedy method, member
equivalence. The DriveSeek learning check is tests/test_drive_seek_learning.py."""

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import reengage.envs  # noqa: F401
from reengage.config import TrainConfig
from reengage.run import train

WALL_CLOCK = ["wall_time_s", "updates_per_s"]
SMALL = {"networks": {"encoder_hidden": 32, "head_hidden": 32, "embedding": 8}}


@pytest.mark.parametrize("env_id", ["reengage/DriveSeek-v0", "reengage/NoisySeek-v0"])
def test_vector_env_state_round_trip(env_id):
    def make():
        return gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point",
                            n_max=30)

    env = make()
    env.reset(seed=[1, 2, 3])
    rng = np.random.default_rng(0)
    for _ in range(7):
        env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
    state = env.get_state()
    clone = make()
    clone.reset(seed=[9, 9, 9])
    clone.set_state(state)
    actions = rng.uniform(-1, 1, (40, *env.action_space.shape)).astype(np.float32)
    for action in actions:  # past the episode end: autoreset and new goal sets too
        a, b = env.step(action), clone.step(action)
        for key in a[0]:
            np.testing.assert_array_equal(a[0][key], b[0][key])
        np.testing.assert_array_equal(a[1], b[1])


def _config(method, seeds, **changes):
    base = dict(env="DriveSeek", dim=40, method=method, seeds=seeds, steps=200,
                learning_starts=80, batch_size=16, eval_every=80, eval_episodes=4,
                action_noise=0.05, threads=1, checkpoint_every=0, extra=SMALL, device="cpu")
    return TrainConfig(**{**base, **changes})


def test_greedy_method_beats_a_random_policy_on_noisy_seek(tmp_path):
    records = train(_config("greedy", [0, 1], env="NoisySeek", dim=100, steps=80,
                            eval_every=40, eval_episodes=50, extra={}), tmp_path, progress=False)
    assert all(r["fixed_policy"] for r in records)
    greedy = pd.read_csv(tmp_path / "seed0" / "progress.csv")["mean_return"].mean()
    env = gym.make_vec("reengage/NoisySeek-v0", num_envs=200,
                       vectorization_mode="vector_entry_point", n_max=100)
    env.reset(seed=0)
    rng, total = np.random.default_rng(0), np.zeros(200)
    for _ in range(40):
        total += env.step(rng.uniform(-1, 1, (200, 2)).astype(np.float32))[1]
    assert greedy > 2 * total.mean()


@pytest.mark.parametrize("method, c", [("ddpg", None), ("multi_reengage", 10.0)])
def test_population_member_equals_the_seed_alone(tmp_path, method, c):
    train(_config(method, [0, 1], c=c), tmp_path / "population", progress=False)
    train(_config(method, [1], c=c), tmp_path / "alone", progress=False)
    together = pd.read_csv(tmp_path / "population" / "seed1" / "progress.csv")
    alone = pd.read_csv(tmp_path / "alone" / "seed1" / "progress.csv")
    assert together["critic_loss"].notna().sum() >= 1
    pd.testing.assert_frame_equal(together.drop(columns=WALL_CLOCK),
                                  alone.drop(columns=WALL_CLOCK), rtol=1e-5, atol=1e-5)


def test_paper_scale_drive_seek_replay_fits_in_two_gib():
    """160k steps x 10 seeds at n_max 200 (docs/paper.md §4): the goal set (200 x 3 floats) is
    stored once per 40-step episode, observations T + 1 times per episode."""
    from reengage.agents.replay import EpisodeReplay
    from reengage.envs.multi_goal import item_reward

    env = gym.make("reengage/DriveSeek-v0", n_max=200)
    space = env.observation_space
    members, steps, episode = 10, 160_000, 40
    replay = EpisodeReplay(
        members, steps, episode, space["observation"].shape[-1],
        int(np.prod(space["desired_goal"].shape)), env.action_space.shape[-1],
        reward_fn=item_reward, rngs=[np.random.default_rng(m) for m in range(members)],
        her_k=0, achieved_dim=space["achieved_goal"].shape[-1],
    )
    episodes = members * steps // episode
    expected = 4 * episodes * ((episode + 1) * (4 + 2) + episode * 1 + 200 * 3)
    assert replay.nbytes == expected
    assert replay.nbytes < 2 * 2**30
