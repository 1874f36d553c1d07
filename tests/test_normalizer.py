"""The running normaliser of the Baselines regime (agents/normalizer.py) against numpy on a
stream, its input gradient against autograd and finite differences, and the HER sample that
feeds it."""

import numpy as np
import pytest
import torch

from reengage.agents.normalizer import RunningNormalizer, her_statistics_sample


def _stream(members, size, seed):
    """Chunks of uneven length and scale, some entries beyond the ±200 input clip."""
    rng = np.random.default_rng(seed)
    chunks = []
    for n in (1, 7, 50, 3, 200):
        x = rng.normal(loc=rng.normal(size=size) * 3, scale=rng.uniform(0.001, 4, size),
                       size=(members, n, size))
        x[..., 0] *= 100  # coordinate 0 often outside ±200
        x[..., -1] = 1.5  # a constant coordinate: its std is the ε floor
        chunks.append(x)
    return chunks


def test_statistics_equal_numpys_over_a_stream_with_baselines_phantom_zero_sample():
    members, size = 3, 5
    normalizer = RunningNormalizer(members, size, eps=0.01, clip=5.0, clip_input=200.0)
    seen = [[np.zeros((1, size))] for _ in range(members)]  # Baselines' count starts at 1
    for chunk in _stream(members, size, seed=0):
        normalizer.update(torch.tensor(chunk, dtype=torch.float32))
        for m in range(members):
            seen[m].append(np.clip(chunk[m].astype(np.float32), -200, 200))
            data = np.concatenate(seen[m]).astype(np.float64)
            np.testing.assert_allclose(normalizer.mean[m, 0].numpy(), data.mean(axis=0),
                                       rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(normalizer.std[m, 0].numpy(),
                                       np.maximum(data.std(axis=0), 0.01), rtol=1e-4)
    assert normalizer.count[:, 0].tolist() == [1 + 1 + 7 + 50 + 3 + 200] * members
    assert (normalizer.std[:, 0, -1] > 0.01).all()  # 1.5 against the phantom zero: not flat
    assert (normalizer.mean[:, 0, 0].abs() > 1).all()


def test_a_coordinate_without_spread_gets_the_eps_floor():
    normalizer = RunningNormalizer(1, 2, eps=0.01)
    normalizer.count.zero_()  # without the phantom zero sample, a constant stream
    normalizer.update(torch.full((1, 100, 2), 3.0))
    torch.testing.assert_close(normalizer.std, torch.full((1, 1, 2), 0.01))
    torch.testing.assert_close(normalizer.mean, torch.full((1, 1, 2), 3.0))


def test_normalised_values_are_clipped_and_members_keep_their_own_statistics():
    normalizer = RunningNormalizer(2, 3, clip=5.0)
    data = torch.randn(2, 400, 3) * torch.tensor([[[1.0]], [[30.0]]]) + 4.0
    normalizer.update(data)
    x = torch.tensor([[[4.0, 100.0, -1e4]], [[4.0, 100.0, -1e4]]])
    y = normalizer(x)
    expected = ((x.clamp(-200, 200) - normalizer.mean) / normalizer.std).clamp(-5, 5)
    torch.testing.assert_close(y, expected)
    assert y[0, 0, 1] == 5.0 and y[0, 0, 2] == -5.0  # clipped
    assert y[1, 0, 1] < 5.0  # member 1's wider statistics leave 100 inside the clip
    alone = RunningNormalizer(1, 3)
    alone.update(data[1:])
    torch.testing.assert_close(alone.std, normalizer.std[1:], rtol=0, atol=0)


def test_input_gradient_is_the_derivative_of_the_normaliser():
    normalizer = RunningNormalizer(2, 4).double()
    normalizer.update(torch.randn(2, 300, 4, dtype=torch.float64) * 0.5 + 1.0)
    x = torch.randn(2, 9, 4, dtype=torch.float64) * 3 + 1.0  # some beyond ±5 σ
    x[0, 0, 0] = normalizer.mean[0, 0, 0] + 7 * normalizer.std[0, 0, 0]  # surely clipped
    scale = normalizer.input_gradient(x)
    inputs = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(normalizer(inputs).sum(), inputs)
    torch.testing.assert_close(scale, grad, rtol=1e-12, atol=0)
    assert scale[0, 0, 0] == 0
    assert (scale == 0).any() and (scale > 0).any()
    h = 1e-6
    finite = (normalizer(x + h) - normalizer(x - h)) / (2 * h)
    torch.testing.assert_close(scale, finite, rtol=1e-5, atol=1e-6)


def test_update_refuses_another_shape():
    with pytest.raises(ValueError, match="members=2"):
        RunningNormalizer(2, 3).update(torch.zeros(1, 5, 3))


def _episodes(members, episodes, T, goal_dim=2):
    """Achieved goals that name their (member, episode, index); desired goals negative."""
    m, e, t = np.meshgrid(np.arange(members), np.arange(episodes), np.arange(T + 1),
                          indexing="ij")
    achieved = np.stack([m * 1000 + e * 100 + t, np.full(t.shape, 7)], axis=-1)[..., :goal_dim]
    desired = -1.0 - np.stack([np.arange(episodes)] * goal_dim, axis=-1)[None].repeat(
        members, axis=0)
    return achieved.astype(np.float64), desired.astype(np.float64)


def test_her_statistics_sample_relabels_with_later_achieved_goals_of_the_same_episode():
    members, episodes, T, n = 2, 3, 5, 20000
    achieved, desired = _episodes(members, episodes, T)
    rngs = [np.random.default_rng(s) for s in range(members)]
    episode, step, goal = her_statistics_sample(achieved, desired, rngs, n, 0.8)
    assert episode.shape == step.shape == (members, n) and goal.shape == (members, n, 2)
    assert step.min() == 0 and step.max() == T - 1
    relabelled = goal[..., 0] >= 0
    assert abs(relabelled.mean() - 0.8) < 0.01
    for m in range(members):
        kept = ~relabelled[m]
        np.testing.assert_array_equal(goal[m, kept, 0], -1.0 - episode[m, kept])
        code = goal[m, relabelled[m], 0].astype(int)
        assert (code // 1000 == m).all()
        assert (code % 1000 // 100 == episode[m, relabelled[m]]).all()  # same episode
        future = code % 100
        assert (future > step[m, relabelled[m]]).all() and future.max() == T  # final included
        # A uniform later index: from t = 0 each of the T later states is equally likely.
        first = future[step[m, relabelled[m]] == 0]
        counts = np.bincount(first, minlength=T + 1)[1:]
        assert counts.min() > 0.7 * counts.mean()


def test_her_statistics_sample_of_a_member_ignores_the_others():
    achieved, desired = _episodes(2, 3, 5)
    both = her_statistics_sample(achieved, desired,
                                 [np.random.default_rng(s) for s in (4, 9)], 50, 0.8)
    alone = her_statistics_sample(achieved[1:], desired[1:], [np.random.default_rng(9)], 50,
                                  0.8)
    np.testing.assert_array_equal(both[0][1:], alone[0])
    np.testing.assert_array_equal(both[1][1:], alone[1])
    np.testing.assert_array_equal(both[2][1:], alone[2])
