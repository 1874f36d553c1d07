"""The device DriveSeek and NoisySeek against the numpy cores and samplers
(reengage/device/goal_sets.py, envs/multi_goal.py)."""

import math

import numpy as np
import pytest
import torch

from reengage.device.goal_sets import (
    CELLS,
    KEY_OFFSET,
    DriveSeekTask,
    NoisySeekTask,
    _draw_noisy_seek,
    draw_drive_seek_goals,
    draw_noisy_seek_goals,
    item_reward,
    multi_goal_reward,
)
from reengage.device.graphs import StepGraphs
from reengage.device.streams import (
    EVALUATION,
    EVALUATION_MOTION,
    GOALS,
    MOTION,
    CounterStreams,
)
from reengage.envs import multi_goal
from reengage.envs.multi_goal import (
    CENTRE_SIGMA,
    CLUSTER_SIGMA,
    EPISODE_STEPS,
    GRID,
    DriveSeekCore,
    NoisySeekCore,
    pack_goal_set,
    sample_noisy_seek_goals,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _one_thread():
    """The draws are many small kernels; on busy CPUs a second thread makes each wait for a
    core (measured 70 times slower beside two training runs), so these tests run on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

POSITION_ATOL = 4e-6
"""torch's CPU float64 cos, sin and sqrt are not always rounded as numpy's (about 0.2% of
cos/sin values and 0.8% of square roots differ by an ulp in torch 2.13's AVX-512 kernels;
CUDA's cos/sin need not round as glibc's either). Such a difference moves a float32
position only when it crosses a float32 rounding boundary, by one float32 ulp (2^-20 at
|x| < 16, 2^-18 below 64), and the dynamics never amplify it; so positions are compared
to a few ulps, and everything discrete (cells, rewards, success) exactly."""


def _block_goal_set(n_max: int) -> np.ndarray:
    """Every cell of [-2, 2]^2: a goal set whose items a walk from the origin meets."""
    cells = [(x, y) for x in range(-2, 3) for y in range(-2, 3)]
    return pack_goal_set(cells, n_max)


def _check_layout(goals: torch.Tensor, n_max: int, bound: float) -> torch.Tensor:
    """The packed layout over every copy at once; returns the counts."""
    assert goals.dtype == torch.float32 and goals.shape[-2:] == (n_max, 3)
    gates, x, y = goals.unbind(-1)
    count = gates.sum(-1)
    assert count.min() >= 1 and count.max() <= n_max
    assert torch.equal(gates, (torch.arange(n_max) < count.unsqueeze(-1)).float())
    assert not goals[gates == 0].any()  # padding rows are zero
    present = gates == 1
    assert torch.equal(x, x.round()) and torch.equal(y, y.round())
    assert x[present].abs().max() <= bound and y[present].abs().max() <= bound
    # Consecutive present rows strictly increase in (x, y): sorted, and so distinct.
    both = present[..., 1:]
    increasing = (x[..., 1:] > x[..., :-1]) | ((x[..., 1:] == x[..., :-1])
                                              & (y[..., 1:] > y[..., :-1]))
    assert increasing[both].all()
    return count


def test_rewards_match_the_numpy_rewards_and_broadcast():
    rng = np.random.default_rng(0)
    n_max = 6
    # Small cells so that hits are common; gate-0 rows with real coordinates must not count.
    goal_set = rng.integers(-2, 3, (5, 1, n_max, 3)).astype(np.float32)
    goal_set[..., 0] = rng.integers(0, 2, (5, 1, n_max))
    achieved = rng.integers(-2, 3, (5, 7, 2)).astype(np.float32)
    expected = multi_goal.item_reward(achieved, goal_set)
    assert 0 < expected.sum() < expected.size
    got = item_reward(torch.from_numpy(achieved), torch.from_numpy(goal_set))
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(
        multi_goal_reward(torch.from_numpy(achieved), torch.from_numpy(goal_set)).numpy(),
        multi_goal.multi_goal_reward(achieved, goal_set))
    # One goal set against a batch of cells, and one cell against a batch of goal sets.
    single = torch.from_numpy(goal_set[0, 0])
    np.testing.assert_array_equal(multi_goal_reward(torch.from_numpy(achieved), single).numpy(),
                                  multi_goal.multi_goal_reward(achieved, goal_set[0, 0]))
    np.testing.assert_array_equal(
        multi_goal_reward(torch.from_numpy(achieved[0, 0]), torch.from_numpy(goal_set)).numpy(),
        multi_goal.multi_goal_reward(achieved[0, 0], goal_set))


def test_drive_seek_matches_the_numpy_core():
    members, copies, n_max = 2, 3, 200
    streams = CounterStreams([0, 1], "cpu")
    task = DriveSeekTask(members, copies, n_max, "cpu")
    core = DriveSeekCore(members * copies, n_max)
    rng = np.random.default_rng(0)
    rewards = 0
    for episode in range(2):
        goals = task.draw_goals(streams, GOALS, torch.tensor(episode))
        goals[0, 0] = torch.from_numpy(_block_goal_set(n_max))
        task.begin(goals)
        core.reset_copies(np.ones(members * copies, dtype=bool))
        core.goal_set[:] = goals.view(-1, n_max, 3).numpy()
        for t in range(EPISODE_STEPS):
            # Beyond [-1, 1] tests the clip; long straight runs test the wrap.
            action = rng.uniform(-1.6, 1.6, (members * copies, 1)).astype(np.float32)
            action[1] = 0.0
            reward = core.step(action, np.ones(members * copies, dtype=bool))
            t_reward, t_truncated = task.step(torch.from_numpy(action).view(members, copies, 1))
            obs, t_obs = core.observation(), task.observation()
            np.testing.assert_allclose(t_obs["observation"].view(-1, 4).numpy(),
                                       obs["observation"], rtol=0, atol=POSITION_ATOL)
            np.testing.assert_array_equal(task.heading.view(-1).numpy(), core.heading)
            np.testing.assert_array_equal(t_obs["achieved_goal"].view(-1, 2).numpy(),
                                          obs["achieved_goal"])
            np.testing.assert_array_equal(t_obs["desired_goal"].view(-1, n_max, 3).numpy(),
                                          obs["desired_goal"])
            np.testing.assert_array_equal(t_reward.view(-1).numpy(), reward)
            np.testing.assert_array_equal(task.reached.view(-1).numpy(), core.reached)
            assert t_truncated.all() == (t == EPISODE_STEPS - 1) and t_truncated.dtype == torch.bool
            rewards += int(reward.sum())
        assert core.reached[0]
        assert task.position.abs().max() <= 10.5  # copy 1 drove straight round the torus
    assert rewards > 0


class _GivenNormals:
    """Stands in for a numpy core copy's generator: `normal(loc, scale, size)` as numpy forms
    it, from standard normals the test supplies."""

    def __init__(self):
        self.z = np.zeros(2)

    def normal(self, loc, scale, size):
        assert size == 2
        return loc + scale * self.z


def test_noisy_seek_matches_the_numpy_core_given_the_same_noise():
    members, copies, n_max, sigma = 2, 3, 50, 0.7
    streams = CounterStreams([4, 5], "cpu")
    task = NoisySeekTask(members, copies, n_max, "cpu", streams, MOTION, noise_sigma=sigma)
    core = NoisySeekCore(members * copies, n_max, noise_sigma=sigma)
    own, given = core.rngs, [_GivenNormals() for _ in range(members * copies)]
    rng = np.random.default_rng(1)
    rewards = 0
    for episode in range(2):
        goals = task.draw_goals(streams, GOALS, torch.tensor(episode))
        goals[0, 0] = torch.from_numpy(_block_goal_set(n_max))
        task.begin(goals)
        core.rngs = own  # the goal sets drawn here are replaced by the task's
        core.reset_copies(np.ones(members * copies, dtype=bool))
        core.rngs = given
        core.goal_set[:] = goals.view(-1, n_max, 3).numpy()
        for t in range(EPISODE_STEPS):
            moves = episode * EPISODE_STEPS + t
            assert task.moves.item() == moves  # counts every step; begin leaves it alone
            z = streams.normal(MOTION, torch.tensor(moves), copies * 2).view(-1, 2).numpy()
            for copy, row in zip(given, z, strict=True):
                copy.z = row
            # Norms on both sides of 1: rescaled and unchanged actions.
            action = rng.uniform(-1.5, 1.5, (members * copies, 2)).astype(np.float32)
            reward = core.step(action, np.ones(members * copies, dtype=bool))
            t_reward, t_truncated = task.step(torch.from_numpy(action).view(members, copies, 2))
            obs, t_obs = core.observation(), task.observation()
            np.testing.assert_allclose(t_obs["observation"].view(-1, 2).numpy(),
                                       obs["observation"], rtol=0, atol=POSITION_ATOL)
            np.testing.assert_array_equal(t_obs["achieved_goal"].view(-1, 2).numpy(),
                                          obs["achieved_goal"])
            np.testing.assert_array_equal(t_reward.view(-1).numpy(), reward)
            np.testing.assert_array_equal(task.reached.view(-1).numpy(), core.reached)
            assert t_truncated.all() == (t == EPISODE_STEPS - 1)
            rewards += int(reward.sum())
    assert rewards > 0 and core.reached[0]
    assert task.moves.item() == 2 * EPISODE_STEPS


def test_noisy_seek_noise_is_keyed_by_purpose_and_move():
    streams = CounterStreams([3], "cpu")
    goals = torch.zeros(1, 4, 5, 3)
    tasks = [NoisySeekTask(1, 4, 5, "cpu", streams, purpose) for purpose in
             (MOTION, MOTION, EVALUATION_MOTION)]
    for task in tasks:
        task.begin(goals)
        task.step(torch.zeros(1, 4, 2))
    expected = streams.normal(MOTION, torch.tensor(0), 8).float().view(1, 4, 2)
    assert torch.equal(tasks[0].position, expected)
    assert torch.equal(tasks[1].position, tasks[0].position)
    assert not torch.equal(tasks[2].position, tasks[0].position)
    tasks[0].step(torch.zeros(1, 4, 2))  # the next move draws fresh noise
    assert not torch.equal(tasks[0].position, 2 * expected)


@pytest.mark.parametrize("kind", ["drive", "noisy"])
def test_tensors_are_allocated_once_and_begin_starts_afresh(kind):
    streams = CounterStreams([0, 1], "cpu")
    if kind == "drive":
        task = DriveSeekTask(2, 3, 8, "cpu")
    else:
        task = NoisySeekTask(2, 3, 8, "cpu", streams, MOTION)
        assert any(t is task.moves for t in task.state_tensors())
    addresses = [t.data_ptr() for t in task.state_tensors()]
    action = torch.ones(2, 3, task.action_dim)
    for episode in range(2):
        goals = task.draw_goals(streams, GOALS, torch.tensor(episode))
        task.begin(goals)
        assert torch.equal(task.goal_set, goals) and not task.position.any()
        assert not task.elapsed.any() and not task.reached.any()
        for _ in range(3):
            reward, truncated = task.step(action)
        assert reward.shape == truncated.shape == (2, 3) and reward.dtype == torch.float32
        assert task.elapsed.eq(3).all() and task.position.any()
    assert [t.data_ptr() for t in task.state_tensors()] == addresses
    obs = task.observation()
    assert obs["observation"].shape == (2, 3, task.obs_dim)
    assert obs["achieved_goal"].shape == (2, 3, task.achieved_dim)
    assert obs["desired_goal"].shape == (2, 3, *task.goal_shape) == (2, 3, 8, 3)
    assert not task.achieved_is_observation


def test_drive_seek_goal_sets_are_uniform_subsets_of_the_grid():
    n_max = 20
    streams = CounterStreams([0, 1], "cpu")
    goals = draw_drive_seek_goals(streams, GOALS, torch.tensor(0), 2000, n_max)
    count = _check_layout(goals, n_max, GRID).long()
    # Counts ~ U{1..n_max}; cells equally likely. Chi-square statistics with 19 and 440
    # degrees of freedom; bounds about 5 standard deviations above their means.
    observed = torch.bincount(count.flatten() - 1, minlength=n_max).double()
    expected = count.numel() / n_max
    assert ((observed - expected) ** 2 / expected).sum() < 19 + 5 * math.sqrt(2 * 19)
    present = goals[..., 0] == 1
    cells = (goals[..., 1][present] + GRID) * (2 * GRID + 1) + goals[..., 2][present] + GRID
    observed = torch.bincount(cells.long(), minlength=CELLS).double()
    expected = present.sum() / CELLS
    assert ((observed - expected) ** 2 / expected).sum() < 440 + 5 * math.sqrt(2 * 440)
    # The largest n_max: the whole grid can be drawn.
    full = draw_drive_seek_goals(streams, GOALS, torch.tensor(1), 200, CELLS)
    assert _check_layout(full, CELLS, GRID).max() > 0.95 * CELLS
    for bad in (0, CELLS + 1):
        with pytest.raises(ValueError, match="n_max"):
            DriveSeekTask(1, 1, bad, "cpu")
        with pytest.raises(ValueError, match="n_max"):
            draw_drive_seek_goals(streams, GOALS, torch.tensor(0), 1, bad)


def test_noisy_seek_goal_sets_follow_the_numpy_sampler():
    """Statistics of 3000 draws against 3000 of the numpy sampler at the paper's n_max, each
    bound about 4 standard errors of the difference. The dedup ratio Σ count / Σ n' is the
    sharp one (standard error 0.0035 a side): it is 0.68 here and 1 without dedup, 0.45 with
    every item in one cluster, 0.61 with clusters capped at 4, 0.72 / 0.65 with K one too
    many / too few, 0.73 with equal cluster weights."""
    n_max, draws = 200, 3000
    streams = CounterStreams([0, 1], "cpu")
    goals, requested = _draw_noisy_seek(streams, GOALS, torch.tensor(0), draws // 2, n_max)
    count = _check_layout(goals, n_max, (CENTRE_SIGMA + CLUSTER_SIGMA) * 8.6).double()
    assert (count <= requested).all()
    rng = np.random.default_rng(0)
    np_goals, np_requested = [], []
    for _ in range(draws):
        state = rng.bit_generator.state
        np_requested.append(rng.integers(1, n_max + 1))  # the sampler's first draw is n'
        rng.bit_generator.state = state
        np_goals.append(sample_noisy_seek_goals(rng, n_max))
    np_goals = torch.from_numpy(np.stack(np_goals))
    np_requested = torch.from_numpy(np.array(np_requested)).double()
    np_count = np_goals[..., 0].sum(-1).double()

    def mean_abs_x(g, c):
        return ((g[..., 1].abs() * g[..., 0]).sum(-1) / c).mean().item()

    assert abs(requested.double().mean().item() - (n_max + 1) / 2) < 4
    ratio = (count.sum() / requested.sum()).item()
    assert abs(ratio - (np_count.sum() / np_requested.sum()).item()) < 0.02
    assert abs(count.mean().item() - np_count.mean().item()) < 4
    assert abs(mean_abs_x(goals, count) - mean_abs_x(np_goals, np_count)) < 0.5
    all_kept = (count == requested).double().mean().item()
    assert abs(all_kept - (np_count == np_requested).double().mean().item()) < 0.025


def test_noisy_seek_small_n_max_and_the_key_bound():
    streams = CounterStreams([2], "cpu")
    one = draw_noisy_seek_goals(streams, GOALS, torch.tensor(0), 50, 1)
    assert torch.equal(one[..., 0], torch.ones(1, 50, 1))  # n' = 1: one item, always kept
    _check_layout(draw_noisy_seek_goals(streams, GOALS, torch.tensor(1), 300, 7), 7, 200)
    with pytest.raises(ValueError, match="n_max"):
        NoisySeekTask(1, 1, 0, "cpu", streams, MOTION)
    # The largest normal a stream can give bounds every coordinate far inside the encoding.
    largest_normal = math.sqrt(-2 * math.log(2.0**-53))
    assert (CENTRE_SIGMA + CLUSTER_SIGMA) * largest_normal < 110 < KEY_OFFSET


@pytest.mark.parametrize("draw", [draw_drive_seek_goals, draw_noisy_seek_goals])
def test_goals_depend_on_seed_purpose_and_counter_alone(draw):
    together = CounterStreams([5, 9, 11], "cpu")
    alone = CounterStreams([9], "cpu")
    counter = torch.tensor(17)
    goals = draw(together, GOALS, counter, 16, 30)
    assert torch.equal(goals, draw(together, GOALS, counter, 16, 30))
    assert torch.equal(goals[1], draw(alone, GOALS, counter, 16, 30)[0])
    assert not torch.equal(goals, draw(together, GOALS, counter + 1, 16, 30))
    assert not torch.equal(goals, draw(together, EVALUATION, counter, 16, 30))
    assert not torch.equal(goals[0], goals[2])
    # A counter per member: each member's goals are those of its own counter.
    per_member = draw(together, GOALS, torch.tensor([17, 3, 17]), 16, 30)
    assert torch.equal(per_member[0], goals[0]) and torch.equal(per_member[2], goals[2])
    assert torch.equal(per_member[1], draw(together, GOALS, torch.tensor(3), 16, 30)[1])


def _episode_rows(kind: str, device: torch.device, capture: bool) -> torch.Tensor:
    """Four one-step episodes (draw, begin, step) run through StepGraphs: each row holds
    the goal sets, positions and rewards, `[4, members, ...]`."""
    streams = CounterStreams([0, 1], device)
    if kind == "drive":
        task = DriveSeekTask(2, 5, 30, device)
    else:
        task = NoisySeekTask(2, 5, 30, device, streams, MOTION)
    episode = torch.zeros((), dtype=torch.int64, device=device)
    out = torch.zeros(2, 5 * 30 * 3 + 5 * 2 + 5, device=device)

    def episode_step(_):
        task.begin(task.draw_goals(streams, GOALS, episode))
        u = streams.uniform(EVALUATION, episode, 5 * task.action_dim)
        reward, _ = task.step((4 * u - 2).float().view(2, 5, -1))
        out.copy_(torch.cat([task.goal_set.flatten(1), task.position.flatten(1), reward], 1))
        episode.add_(1)

    runner = StepGraphs(episode_step, device, warmup=1, capture=capture)
    rows = []
    for _ in range(4):
        runner(None)
        rows.append(out.clone())
    assert runner.captures == (1 if capture else 0)
    return torch.stack(rows)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kind", ["drive", "noisy"])
def test_draws_and_steps_replay_as_a_cuda_graph(kind):
    """Drawing, beginning and stepping capture in a CUDA graph (no host reads, fixed
    shapes) and the replays give what eager runs give; DriveSeek's integer-only draws give
    the CPU's bits."""
    device = torch.device("cuda")
    replayed = _episode_rows(kind, device, capture=True)
    assert torch.equal(replayed, _episode_rows(kind, device, capture=False))
    if kind == "drive":
        cpu = draw_drive_seek_goals(CounterStreams([0, 1], "cpu"), GOALS, torch.tensor(3), 5, 30)
        assert torch.equal(cpu, replayed[3, :, :5 * 30 * 3].view(2, 5, 30, 3).cpu())
