"""HER `future` relabelling semantics of EpisodeReplay."""

import numpy as np
import pytest

from reengage.agents.replay import EpisodeReplay
from reengage.envs.continuous_seek import continuous_seek_reward

T, D = 10, 2


def _filled(members=1, episodes=20, seed=0, her_k=4):
    rngs = [np.random.default_rng(seed + m) for m in range(members)]
    replay = EpisodeReplay(members, 10_000, T, D, D, D, continuous_seek_reward, rngs, her_k)
    data = np.random.default_rng(123)
    for _ in range(episodes):
        # Achieved goals on an integer grid so that relabelled goals are identifiable.
        path = data.integers(-5, 6, (members, T + 1, D)).astype(np.float32)
        desired = data.uniform(-5, 5, (members, D)).astype(np.float32)
        replay.start_episode(path[:, 0], path[:, 0], desired)
        for t in range(T):
            replay.add_step(data.uniform(-1, 1, (members, D)), path[:, t + 1], path[:, t + 1])
    return replay


def _locate(replay, batch, m, i):
    """(episode, step) of sample i: the stored obs and next obs identify it uniquely here."""
    hits = np.argwhere(
        (replay.obs[m, :, :-1] == batch.obs[m, i]).all(-1)
        & (replay.obs[m, :, 1:] == batch.next_obs[m, i]).all(-1)
        & (replay.actions[m] == batch.action[m, i]).all(-1)
    )
    assert len(hits) == 1
    return tuple(hits[0])


def test_relabelled_goal_is_a_future_achieved_goal_of_the_same_episode():
    replay = _filled()
    batch = replay.sample(2000)
    for i in range(300):
        episode, step = _locate(replay, batch, 0, i)
        if batch.relabelled[0, i]:
            future = replay.achieved[0, episode, step + 1:]
            assert (future == batch.goal[0, i]).all(-1).any()
        else:
            np.testing.assert_array_equal(batch.goal[0, i], replay.desired[0, episode])


def test_relabelled_goals_can_be_the_next_state_and_the_last_state():
    replay = EpisodeReplay(1, 1000, T, 1, 1, 1, continuous_seek_reward,
                           [np.random.default_rng(0)], her_k=4)
    replay.start_episode(np.zeros((1, 1)), np.zeros((1, 1)), np.full((1, 1), -9.0))
    for t in range(T):
        replay.add_step(np.zeros((1, 1)), np.full((1, 1), t + 1.0), np.full((1, 1), t + 1.0))
    batch = replay.sample(20000)
    relabelled = batch.relabelled[0]
    offset = batch.goal[0, relabelled, 0] - batch.obs[0, relabelled, 0]
    assert offset.min() == 1 and (batch.goal[0, relabelled, 0] == T).any()
    assert offset.max() <= T
    # Uniform over the remaining future: from step 0 every later state is equally likely.
    from_start = batch.goal[0, relabelled & (batch.obs[0, :, 0] == 0), 0]
    counts = np.bincount(from_start.astype(int), minlength=T + 1)[1:]
    assert counts.min() > 0.6 * counts.mean()


def test_rewards_are_recomputed_with_compute_reward():
    replay = _filled()
    batch = replay.sample(5000)
    np.testing.assert_array_equal(batch.reward, continuous_seek_reward(batch.next_obs, batch.goal))
    relabelled_success = (batch.reward[batch.relabelled] == 0).mean()
    assert relabelled_success > 0.05  # relabelling does produce successes


def test_relabelled_fraction_is_0_8():
    replay = _filled(members=2)
    fraction = replay.sample(50_000).relabelled.mean(axis=1)
    np.testing.assert_allclose(fraction, 0.8, atol=0.03)


def test_no_relabelling_without_her():
    batch = _filled(her_k=0).sample(1000)
    assert not batch.relabelled.any()


def test_storage_desired_goal_once_and_no_duplicated_next_observations():
    replay = _filled(members=3, episodes=4)
    assert replay.desired.shape == (3, replay.capacity, D)
    assert replay.obs.shape == (3, replay.capacity, T + 1, D)
    assert replay.actions.shape == (3, replay.capacity, T, D)


def test_incomplete_episode_is_not_sampleable():
    replay = EpisodeReplay(1, 1000, T, D, D, D, continuous_seek_reward,
                           [np.random.default_rng(0)])
    replay.start_episode(np.zeros((1, D)), np.zeros((1, D)), np.zeros((1, D)))
    for _ in range(T - 1):
        replay.add_step(np.zeros((1, D)), np.ones((1, D)), np.ones((1, D)))
    with pytest.raises(RuntimeError):
        replay.sample(4)
    replay.add_step(np.zeros((1, D)), np.ones((1, D)), np.ones((1, D)))
    assert replay.transitions == T


def test_ring_overwrites_oldest_episode():
    replay = EpisodeReplay(1, 2 * T, T, 1, 1, 1, continuous_seek_reward,
                           [np.random.default_rng(0)])
    for e in range(3):
        replay.start_episode(np.full((1, 1), e), np.full((1, 1), e), np.full((1, 1), e))
        for _ in range(T):
            replay.add_step(np.zeros((1, 1)), np.full((1, 1), e), np.full((1, 1), e))
    assert replay.size == 2
    assert sorted(replay.desired[0, :, 0]) == [1.0, 2.0]


def test_member_sampling_matches_the_member_alone():
    together = _filled(members=3, seed=0)
    data = np.random.default_rng(123)
    alone = EpisodeReplay(1, 10_000, T, D, D, D, continuous_seek_reward,
                          [np.random.default_rng(1)])
    for _ in range(20):
        path = data.integers(-5, 6, (3, T + 1, D)).astype(np.float32)
        desired = data.uniform(-5, 5, (3, D)).astype(np.float32)
        actions = [data.uniform(-1, 1, (3, D)) for _ in range(T)]
        alone.start_episode(path[1:2, 0], path[1:2, 0], desired[1:2])
        for t in range(T):
            alone.add_step(actions[t][1:2], path[1:2, t + 1], path[1:2, t + 1])
    a, b = together.sample(64), alone.sample(64)
    np.testing.assert_array_equal(a.goal[1], b.goal[0])
    np.testing.assert_array_equal(a.obs[1], b.obs[0])


def test_achieved_goal_stored_once_when_it_is_the_observation():
    def fill(in_obs):
        replay = EpisodeReplay(2, 1000, T, D, D, D, continuous_seek_reward,
                               [np.random.default_rng(m) for m in range(2)],
                               achieved_in_obs=in_obs)
        data = np.random.default_rng(5)
        for _ in range(6):
            path = data.integers(-5, 6, (2, T + 1, D)).astype(np.float32)
            replay.start_episode(path[:, 0], path[:, 0], data.uniform(-5, 5, (2, D)))
            for t in range(T):
                replay.add_step(data.uniform(-1, 1, (2, D)), path[:, t + 1], path[:, t + 1])
        return replay

    separate, shared = fill(False), fill(True)
    a, b = separate.sample(500), shared.sample(500)
    for field in ("obs", "action", "next_obs", "goal", "reward", "relabelled"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    saved = separate.achieved.nbytes
    assert shared.nbytes == separate.nbytes - saved
    assert "achieved" not in shared.state_dict()


@pytest.mark.parametrize("achieved_in_obs", [False, True])
def test_sampled_rows_are_the_drawn_transitions_of_each_member(achieved_in_obs):
    """The flat-row gathers pick, for every member, the (episode, step, future) its own
    generator drew: checked against indexing the stored arrays by (member, episode, step),
    on a ring that has wrapped and an observation longer than the achieved goal."""
    members, obs_dim, capacity = 3, D + 1, 4
    replay = EpisodeReplay(members, capacity * T, T, obs_dim, D, D, continuous_seek_reward,
                           [np.random.default_rng(m) for m in range(members)],
                           achieved_in_obs=achieved_in_obs)
    data = np.random.default_rng(7)
    for _ in range(capacity + 2):
        path = data.normal(size=(members, T + 1, obs_dim)).astype(np.float32)
        achieved = path[..., :D] if achieved_in_obs else data.normal(size=(members, T + 1, D))
        replay.start_episode(path[:, 0], achieved[:, 0], data.normal(size=(members, D)))
        for t in range(T):
            replay.add_step(data.normal(size=(members, D)), path[:, t + 1], achieved[:, t + 1])
    assert replay.size == capacity and replay.cursor == 2

    draws = [np.random.default_rng(m) for m in range(members)]
    batch = replay.sample(300)
    for m, rng in enumerate(draws):
        episode, step = rng.integers(0, capacity, 300), rng.integers(0, T, 300)
        relabel = rng.random(300) < 0.8
        future = step + 1 + np.floor(rng.random(300) * (T - step)).astype(np.int64)
        goal = np.where(relabel[:, None], replay.achieved[m, episode, future],
                        replay.desired[m, episode])
        np.testing.assert_array_equal(batch.relabelled[m], relabel)
        np.testing.assert_array_equal(batch.obs[m], replay.obs[m, episode, step])
        np.testing.assert_array_equal(batch.next_obs[m], replay.obs[m, episode, step + 1])
        np.testing.assert_array_equal(batch.action[m], replay.actions[m, episode, step])
        np.testing.assert_array_equal(batch.goal[m], goal)
        np.testing.assert_array_equal(
            batch.reward[m],
            continuous_seek_reward(replay.achieved[m, episode, step + 1], goal))
        np.testing.assert_array_equal(batch.achieved[m], replay.achieved[m, episode, step])
        np.testing.assert_array_equal(batch.next_achieved[m],
                                      replay.achieved[m, episode, step + 1])


def _counting_episode(her_future="next_to_final", her_relabel="probability", seed=0):
    """One episode whose achieved goal at state t is t, and a desired goal never reached."""
    replay = EpisodeReplay(1, 1000, T, 1, 1, 1, continuous_seek_reward,
                           [np.random.default_rng(seed)], her_k=4, her_future=her_future,
                           her_relabel=her_relabel)
    replay.start_episode(np.zeros((1, 1)), np.zeros((1, 1)), np.full((1, 1), -9.0))
    for t in range(T):
        replay.add_step(np.zeros((1, 1)), np.full((1, 1), t + 1.0), np.full((1, 1), t + 1.0))
    return replay


def test_release_future_never_relabels_with_the_final_state_nor_the_last_transition():
    """SB3 1.3 (the paper's release): a relabelled goal comes from the states after the
    transition's up to the one before the final state; the last transition keeps its goal."""
    batch = _counting_episode("next_to_penultimate").sample(20000)
    relabelled = batch.relabelled[0]
    step, goal = batch.obs[0, :, 0], batch.goal[0, :, 0]
    assert relabelled.mean() == pytest.approx(0.8, abs=0.02)
    assert goal[relabelled].max() == T - 1  # the penultimate state, never the final one T
    assert (goal[relabelled] - step[relabelled]).min() == 1
    assert step[relabelled].max() == T - 2  # the last transition (step T - 1) is never
    assert (step[~relabelled] == T - 1).any()  # relabelled, but is still sampled
    # From step 0 every state 1 .. T-1 is equally likely as the goal.
    counts = np.bincount(goal[relabelled & (step == 0)].astype(int), minlength=T)[1:]
    assert len(counts) == T - 1 and counts.min() > 0.6 * counts.mean()
    np.testing.assert_array_equal(batch.reward, continuous_seek_reward(batch.next_obs,
                                                                       batch.goal))


def test_default_future_includes_the_final_state():
    batch = _counting_episode("next_to_final").sample(20000)
    relabelled = batch.relabelled[0]
    assert batch.goal[0, relabelled, 0].max() == T
    assert batch.obs[0, relabelled, 0].max() == T - 1


@pytest.mark.parametrize("her_future", ["next_to_final", "next_to_penultimate"])
def test_exact_relabelling_relabels_int_of_0_8_b_of_every_batch(her_future):
    replay = _counting_episode(her_future, "exact")
    for batch_size in (256, 7, 512):
        batch = replay.sample(batch_size)
        assert batch.relabelled.sum() == int(0.8 * batch_size)
        relabelled = batch.relabelled[0]
        # Relabelled goals are still future achieved goals of the sample's own episode.
        assert (batch.goal[0, relabelled, 0] > batch.obs[0, relabelled, 0]).all()
        assert (batch.goal[0, ~relabelled, 0] == -9.0).all()


def test_probability_relabelling_varies_from_batch_to_batch():
    replay = _counting_episode()
    counts = {int(replay.sample(256).relabelled.sum()) for _ in range(20)}
    assert len(counts) > 3 and int(0.8 * 256) - 30 < min(counts) <= max(counts) < 256


def test_release_future_does_not_relabel_one_step_episodes():
    replay = EpisodeReplay(1, 100, 1, 1, 1, 1, continuous_seek_reward,
                           [np.random.default_rng(0)], her_k=4,
                           her_future="next_to_penultimate")
    replay.start_episode(np.zeros((1, 1)), np.zeros((1, 1)), np.full((1, 1), -9.0))
    replay.add_step(np.zeros((1, 1)), np.ones((1, 1)), np.ones((1, 1)))
    batch = replay.sample(100)
    assert not batch.relabelled.any() and (batch.goal == -9.0).all()


def test_unknown_her_variants_are_refused():
    with pytest.raises(ValueError, match="her_future"):
        _counting_episode(her_future="final")
    with pytest.raises(ValueError, match="her_relabel"):
        _counting_episode(her_relabel="half")
