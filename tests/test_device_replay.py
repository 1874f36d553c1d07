"""The device episode replay (reengage/device/replay.py): HER `future` relabelling checked
directly on episodes whose observations name their episode and step, and in distribution
against agents/replay.py's EpisodeReplay on the same stored episodes."""

import numpy as np
import pytest
import torch

from reengage.agents.replay import EpisodeReplay
from reengage.device.replay import DeviceEpisodeReplay
from reengage.device.streams import CounterStreams

T = 5


def _reward_np(achieved: np.ndarray, goal: np.ndarray) -> np.ndarray:
    return -(np.abs(achieved - goal).max(axis=-1) > 0.1).astype(np.float32)


def _reward(achieved: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    return -((achieved - goal).abs().amax(dim=-1) > 0.1).to(torch.float32)


def _device_replay(members=2, episodes=4, seeds=None, **kwargs) -> DeviceEpisodeReplay:
    seeds = list(range(members)) if seeds is None else seeds
    return DeviceEpisodeReplay(members, episodes * T, T, obs_dim=3, goal_dim=2, action_dim=1,
                               reward_fn=_reward, streams=CounterStreams(seeds, "cpu"),
                               device="cpu", achieved_dim=2, **kwargs)


def _episode(member: int, episode: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations (episode, step, member) for steps 0..T, actions 100·episode + step,
    desired goal (-1000 - episode, -1): every stored number says where it came from."""
    obs = np.array([[episode, t, member] for t in range(T + 1)], np.float32)
    actions = np.array([[100 * episode + t] for t in range(T)], np.float32)
    return obs, actions, np.array([-1000 - episode, -1], np.float32)


def _fill(replay, first: int, count: int, numpy_replay: EpisodeReplay | None = None,
          steps: int = T) -> None:
    """Store episodes first..first+count-1 of every member (the last one only `steps`
    steps far), into both buffers when a numpy one is given."""
    members = replay.members
    for e in range(first, first + count):
        parts = [_episode(m, e) for m in range(members)]
        obs = np.stack([p[0] for p in parts])
        actions = np.stack([p[1] for p in parts])
        desired = np.stack([p[2] for p in parts])
        replay.start_episode(torch.from_numpy(obs[:, 0]), torch.from_numpy(desired))
        if numpy_replay is not None:
            numpy_replay.start_episode(obs[:, 0], obs[:, 0, :2], desired)
        last = steps if e == first + count - 1 else T
        for t in range(last):
            replay.add_step(torch.from_numpy(actions[:, t]), torch.from_numpy(obs[:, t + 1]))
            if numpy_replay is not None:
                numpy_replay.add_step(actions[:, t], obs[:, t + 1], obs[:, t + 1, :2])


@pytest.mark.parametrize("her_future", ["next_to_final", "next_to_penultimate"])
def test_relabelled_goals_are_later_achieved_goals_of_the_same_episode(her_future):
    replay = _device_replay(her_future=her_future)
    _fill(replay, 0, 3)
    last = T if her_future == "next_to_final" else T - 1
    relabelled = total = 0
    for k in range(50):
        batch = replay.sample(64, torch.tensor(k))
        episode, step, member = batch.obs[..., 0], batch.obs[..., 1], batch.obs[..., 2]
        assert torch.equal(member, torch.arange(2.0)[:, None].expand(2, 64))
        assert torch.equal(batch.next_obs[..., 0], episode)
        assert torch.equal(batch.next_obs[..., 1], step + 1)
        assert torch.equal(batch.action[..., 0], 100 * episode + step)
        assert torch.equal(batch.achieved, batch.obs[..., :2])
        assert torch.equal(batch.next_achieved, batch.next_obs[..., :2])
        r = batch.relabelled
        # A relabelled goal: the achieved goal (episode, step') of a later step of the same
        # episode, up to the final state (next_to_final) or the one before it.
        assert torch.equal(batch.goal[..., 0][r], episode[r])
        future = batch.goal[..., 1][r]
        assert (future >= step[r] + 1).all() and (future <= last).all()
        # Otherwise the episode's desired goal.
        assert torch.equal(batch.goal[..., 0][~r], -1000 - episode[~r])
        assert (batch.goal[..., 1][~r] == -1).all()
        # Rewards are recomputed from the next achieved goal and the goal used.
        np.testing.assert_array_equal(batch.reward.numpy(), _reward_np(
            batch.next_achieved.numpy(), batch.goal.numpy()))
        if her_future == "next_to_penultimate":
            assert not (r & (step == T - 1)).any()  # the last transition is never relabelled
        relabelled += int(r.sum())
        total += r.numel()
        assert set(episode.unique().tolist()) <= {0.0, 1.0, 2.0}
    # k = 4: relabelled with probability 0.8 (binomial sd over 6400 samples: 0.005).
    assert abs(relabelled / total - 0.8) < 0.02
    assert (batch.reward == 0).any() and (batch.reward == -1).any()


def test_exact_relabelling_takes_int_p_b_samples():
    replay = _device_replay(her_relabel="exact")
    _fill(replay, 0, 2)
    batch = replay.sample(64, torch.tensor(0))
    assert batch.relabelled.sum(dim=1).tolist() == [int(0.8 * 64)] * 2


def test_no_her_keeps_the_desired_goal():
    replay = _device_replay(her_k=0)
    _fill(replay, 0, 2)
    batch = replay.sample(64, torch.tensor(0))
    assert not batch.relabelled.any()
    assert torch.equal(batch.goal[..., 0], -1000 - batch.obs[..., 0])


def test_the_ring_keeps_complete_episodes_and_never_serves_the_one_being_collected():
    replay = _device_replay(episodes=3)
    before = [t.data_ptr() for t in replay.state_tensors()]
    _fill(replay, 0, 6, steps=3)  # episodes 0-4 complete, episode 5 three steps in
    assert int(replay.size) == 3
    seen = torch.cat([replay.sample(128, torch.tensor(k)).obs[..., 0].flatten()
                      for k in range(10)])
    # The three newest complete episodes, the oldest still there while 5 is collected.
    assert set(seen.unique().tolist()) == {2.0, 3.0, 4.0}
    for t in (3, 4):  # episode 5 complete
        obs, actions = zip(*[_episode(m, 5)[:2] for m in range(2)], strict=True)
        replay.add_step(torch.from_numpy(np.stack(actions)[:, t]),
                        torch.from_numpy(np.stack(obs)[:, t + 1]))
    seen = torch.cat([replay.sample(128, torch.tensor(k)).obs[..., 0].flatten()
                      for k in range(10)])
    assert set(seen.unique().tolist()) == {3.0, 4.0, 5.0}
    # Filling and wrapping re-allocated nothing (fixed shapes: a CUDA graph can capture it).
    assert [t.data_ptr() for t in replay.state_tensors()] == before


def test_a_member_samples_what_it_would_alone():
    together = _device_replay(members=3, seeds=[4, 7, 9])
    alone = _device_replay(members=1, seeds=[7])
    _fill(together, 0, 3)
    _fill(alone, 0, 3)
    a, b = together.sample(32, torch.tensor(3)), alone.sample(32, torch.tensor(3))
    # Member 1's observations say member 1; alone it is member 0, otherwise the same.
    assert torch.equal(a.obs[1, :, :2], b.obs[0, :, :2])
    assert torch.equal(a.goal[1], b.goal[0]) and torch.equal(a.reward[1], b.reward[0])
    assert not torch.equal(a.obs[0, :, :2], b.obs[0, :, :2])


def _statistics(step, future, relabelled, episode, last):
    """Frequencies: relabel rate, transition step, episode, and the future offset of
    relabelled samples (bins 1..last)."""
    step, future, relabelled, episode = (np.asarray(x).ravel() for x in
                                         (step, future, relabelled, episode))
    offset = (future - step)[relabelled]
    return (relabelled.mean(),
            np.bincount(step.astype(int), minlength=T) / step.size,
            np.bincount(episode.astype(int), minlength=4) / episode.size,
            np.bincount(offset.astype(int), minlength=last + 1) / max(offset.size, 1),
            np.bincount(step[relabelled].astype(int), minlength=T) / max(relabelled.sum(), 1))


@pytest.mark.parametrize("her_future", ["next_to_final", "next_to_penultimate"])
def test_sampling_matches_the_numpy_replay_in_distribution(her_future):
    """Same episodes in both buffers; 40,000 samples from each. The frequencies of the
    relabel flag, the step, the episode, the future offset and the steps of relabelled
    samples agree within 0.012 (binomial sd at these sizes is below 0.004)."""
    device_replay = _device_replay(members=2, episodes=4, her_future=her_future)
    numpy_replay = EpisodeReplay(2, 4 * T, T, 3, 2, 1, _reward_np,
                                 [np.random.default_rng(s) for s in (0, 1)], her_k=4,
                                 achieved_dim=2, achieved_in_obs=True, her_future=her_future)
    _fill(device_replay, 0, 4, numpy_replay)
    last = T if her_future == "next_to_final" else T - 1
    d_parts, n_parts = [], []
    for k in range(80):
        d = device_replay.sample(250, torch.tensor(k))
        n = numpy_replay.sample(250)
        # Relabelled goals: the (episode, step) of the future state.
        d_parts.append((d.obs[..., 1].numpy(), d.goal[..., 1].numpy(), d.relabelled.numpy(),
                        d.obs[..., 0].numpy()))
        n_parts.append((n.obs[..., 1], n.goal[..., 1], n.relabelled, n.obs[..., 0]))
        np.testing.assert_array_equal(n.reward, _reward_np(n.next_achieved, n.goal))
    d_stats = _statistics(*(np.concatenate(x) for x in zip(*d_parts, strict=True)), last)
    n_stats = _statistics(*(np.concatenate(x) for x in zip(*n_parts, strict=True)), last)
    for ours, reference in zip(d_stats, n_stats, strict=True):
        np.testing.assert_allclose(ours, reference, atol=0.012)
    assert abs(d_stats[0] - 0.8) < 0.01
