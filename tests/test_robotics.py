"""The gymnasium-robotics tasks (envs/robotics.py, reengage.registry.ROBOTICS_ENVS) and the
Baselines loop on them (reengage/baselines_her.py). Skipped where the `robotics` extra is not
installed."""

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium_robotics")

from reengage.baselines_her import BaselinesConfig, BaselinesRun  # noqa: E402
from reengage.envs.robotics import batched_reward  # noqa: E402
from reengage.registry import ROBOTICS_ENVS  # noqa: E402

# (observation, achieved goal, desired goal, action) widths, as measured (docs/paper.md §2).
WIDTHS = {"HandReach": (63, 15, 15, 20), "HandManipulateBlockRotateXYZ": (61, 7, 7, 20),
          "FetchReach": (10, 3, 3, 4)}
# Time limits: the block's is 100 steps (docs/paper.md §2 says 50 for every task).
STEPS = {"HandReach": 50, "HandManipulateBlockRotateXYZ": 100, "FetchReach": 50}


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_each_task_builds_headless_with_its_widths_and_passes_check_env(name):
    from gymnasium.utils.env_checker import check_env

    spec = ROBOTICS_ENVS[name]
    env = gym.make(spec.gym_id)
    space = env.observation_space
    widths = (space["observation"].shape[-1], space["achieved_goal"].shape[-1],
              space["desired_goal"].shape[-1], env.action_space.shape[-1])
    assert widths == WIDTHS[name] == spec.widths  # the registry's, which the CLI checks
    assert env.spec.max_episode_steps == spec.episode_steps == STEPS[name]
    assert env.render_mode is None
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("name", ["HandReach", "FetchReach"])
def test_batched_reward_equals_the_reward_of_step(name):
    env = gym.make(ROBOTICS_ENVS[name].gym_id)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    achieved, desired, rewards = [], [], []
    for _ in range(20):
        obs, reward, _, _, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        achieved.append(obs["achieved_goal"])
        desired.append(obs["desired_goal"])
        rewards.append(reward)
    # Also a goal reached exactly, so that both reward values occur.
    achieved.append(obs["achieved_goal"])
    desired.append(obs["achieved_goal"])
    rewards.append(0.0)
    a = np.array(achieved).reshape(3, 7, -1)
    d = np.array(desired).reshape(3, 7, -1)
    got = batched_reward(env, a, d)
    assert got.shape == (3, 7)
    np.testing.assert_array_equal(got.flatten(), np.array(rewards, np.float32))
    assert set(got.flatten().tolist()) == {-1.0, 0.0}


def test_vectorised_and_single_envs_agree_for_one_seed():
    gym_id = ROBOTICS_ENVS["HandReach"].gym_id
    single = gym.make(gym_id)
    vector = gym.make_vec(gym_id, num_envs=2, vectorization_mode="sync")
    obs, _ = single.reset(seed=11)
    vobs, _ = vector.reset(seed=[11, 12])
    rng = np.random.default_rng(1)
    for _ in range(10):
        for key in obs:
            np.testing.assert_array_equal(vobs[key][0], obs[key])
        action = rng.uniform(-1, 1, (2, 20))
        obs, reward, *_ = single.step(action[0])
        vobs, vreward, *_ = vector.step(action)
        assert vreward[0] == reward
    assert not np.array_equal(vobs["observation"][0], vobs["observation"][1])


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_an_episode_depends_on_its_reset_seed_alone(name):
    """After an episode, a reset with seed s and the same actions give bitwise what a fresh env
    gives: the Baselines loop re-seeds every episode and keeps no simulator state in its
    checkpoints, so a resumed run (fresh envs) relies on this. The block's reset, unlike the
    others', does not call mj_resetData; this is where that would show."""
    gym_id = ROBOTICS_ENVS[name].gym_id
    used, fresh = gym.make(gym_id), gym.make(gym_id)
    rng = np.random.default_rng(0)
    used.reset(seed=1)
    for _ in range(30):
        used.step(rng.uniform(-1, 1, used.action_space.shape))
    actions = rng.uniform(-1, 1, (30, *used.action_space.shape))
    trajectories = []
    for env in (used, fresh):
        obs, _ = env.reset(seed=5)
        steps = [obs["observation"]]
        for action in actions:
            steps.append(env.step(action)[0]["observation"])
        trajectories.append(np.array(steps))
        env.close()
    np.testing.assert_array_equal(*trajectories)


def _tiny(**kwargs):
    settings = dict(env="FetchReach", seeds=[0, 1], epochs=1, cycles=2, batches=3,
                    batch_size=16, envs_per_worker=2, test_rollouts=1, buffer_size=10_000,
                    hidden=(32, 32, 32), compile=False)
    settings.update(kwargs)
    return BaselinesConfig(**settings)


def test_one_epoch_runs_cycles_of_episodes_updates_and_one_target_step_per_cycle(
        tmp_path, monkeypatch):
    run = BaselinesRun(_tiny())
    calls = {"update": 0, "targets": 0}
    update, update_targets = run.learner.update, run.learner.update_targets

    def counted_update(**batch):
        calls["update"] += 1
        return update(**batch)

    def counted_targets():
        calls["targets"] += 1
        update_targets()

    monkeypatch.setattr(run.learner, "update", counted_update)
    monkeypatch.setattr(run.learner, "update_targets", counted_targets)
    rows = run.run(tmp_path, quiet=True)
    run.close()
    assert calls == {"update": 2 * 3, "targets": 2}
    assert run.replay.size == 2 * 2  # cycles × envs per member, per member
    # The normaliser saw as many samples as the episodes hold steps (plus Baselines' one: a
    # run of one worker).
    expected_count = 1 + 2 * 2 * 50
    assert run.learner.state_normalizer.count[:, 0].tolist() == [expected_count] * 2
    assert run.learner.goal_normalizer.count[:, 0].tolist() == [expected_count] * 2
    assert [len(r) for r in rows] == [2, 2]
    assert [row["step"] for row in rows[0]] == [0, 2 * 2 * 50]
    assert np.isfinite(rows[0][1]["critic_loss"]) and np.isnan(rows[0][0]["critic_loss"])
    assert (tmp_path / "seed1" / "progress.csv").read_text().count("\n") == 3
    assert run.timings["env_steps"] == 200 and run.timings["updates"] == 6


class _ScriptedTestEnv:
    """Stands in for the test env: `is_success` true mid-episode only for env 0 of each
    member and at the last step only for env 1."""

    def __init__(self, inner):
        self.inner, self.t = inner, 0

    def reset(self, seed=None):
        self.t = 0
        return self.inner.reset(seed=seed)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.inner.step(action)
        self.t += 1
        success = np.zeros(action.shape[0], bool)
        success[0::2] = self.t == 10
        success[1::2] = self.t == 50
        return obs, reward, terminated, truncated, {**info, "is_success": success}

    def close(self):
        self.inner.close()


def test_test_success_is_is_success_at_the_last_step():
    run = BaselinesRun(_tiny(test_rollouts=2))
    run.test_env = _ScriptedTestEnv(run.test_env)
    success, returns = run.test()
    run.close()
    np.testing.assert_array_equal(success, [0.5, 0.5])  # env 1 of 2 succeeds, each member
    assert run.test_env.t == 50
    assert returns.shape == (2,)


def test_a_population_member_trains_as_its_seed_alone():
    """Member 1 of seeds (0, 1) and seed 1 alone: the same envs, exploration, normaliser and
    weights (float32 rounding of batched products aside)."""
    both, alone = BaselinesRun(_tiny(seeds=[0, 1])), BaselinesRun(_tiny(seeds=[1]))
    for run in (both, alone):
        run.rollout()
        run.train_cycle()
    for name, value in alone.learner.state_dict().items():
        torch.testing.assert_close(both.learner.state_dict()[name][1:], value,
                                   rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.allclose(both.learner.state_normalizer.mean[0],
                              both.learner.state_normalizer.mean[1])
    both.close()
    alone.close()


# The reference learning check (FetchReach ≥ 0.9 by epoch 2 on one worker) runs through
# `reengage train`: tests/test_robotics_train.py.


def test_async_envs_collect_the_episodes_sync_envs_do():
    """`vectorization_mode: async` (a process per env) is a speed choice only: one cycle's
    stored episodes and the normaliser's statistics equal the sync run's."""
    runs = {mode: BaselinesRun(_tiny(seeds=[3], vectorization_mode=mode))
            for mode in ("sync", "async")}
    assert type(runs["sync"].env).__name__ == "SyncVectorEnv"
    assert type(runs["async"].env).__name__ == "AsyncVectorEnv"
    for run in runs.values():
        run.rollout()
    sync, async_ = (runs[m] for m in ("sync", "async"))
    n = sync.replay.size
    assert n == async_.replay.size == 2
    for name in ("obs", "achieved", "actions", "desired"):
        np.testing.assert_array_equal(getattr(sync.replay, name)[:, :n],
                                      getattr(async_.replay, name)[:, :n])
    torch.testing.assert_close(sync.learner.state_normalizer.mean,
                               async_.learner.state_normalizer.mean, rtol=0, atol=0)
    for run in runs.values():
        run.close()


def test_the_normaliser_is_fed_the_her_sample_of_the_cycles_episodes(monkeypatch):
    """What Baselines' store_episode does: as many samples as the new episodes hold steps,
    relabelled with probability k/(k+1) = 0.8, their observations (at the sampled step) and
    their goals going to the two normalisers."""
    import reengage.baselines_her as loop
    from reengage.agents.normalizer import her_statistics_sample

    run = BaselinesRun(_tiny(seeds=[0, 1]))
    seen = {}

    def spy(achieved, desired, rngs, samples, relabel_probability):
        out = her_statistics_sample(achieved, desired, rngs, samples, relabel_probability)
        seen.update(achieved=achieved, samples=samples, p=relabel_probability, out=out)
        return out

    fed = {}
    monkeypatch.setattr(loop, "her_statistics_sample", spy)
    monkeypatch.setattr(run.learner, "update_normalizer",
                        lambda state, goal: fed.update(state=state, goal=goal))
    run.rollout()
    run.close()
    assert seen["samples"] == 2 * 50 and seen["p"] == pytest.approx(0.8)
    assert seen["achieved"].shape == (2, 2, 51, 3)
    episode, step, goal = seen["out"]
    torch.testing.assert_close(fed["goal"], torch.as_tensor(goal, dtype=torch.float32))
    stored = run.replay.obs[:, :2]  # [members, episodes, T + 1, obs_dim], stored in order
    members = np.arange(2)[:, None]
    torch.testing.assert_close(fed["state"], torch.as_tensor(stored[members, episode, step]))
    relabelled = ~np.isclose(goal, run.replay.desired[members, episode]).all(-1)
    assert 0.6 < relabelled.mean() < 0.95  # HER goals, not only the desired ones
