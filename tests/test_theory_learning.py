"""The closed-form learner of Propositions 1 and 2, the identifiability ranks, the slope fit,
the N* search and the figures."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from reengage.agents.closed_form import (
    ClosedFormLearner,
    RotationQ,
    Transitions,
    gradient_residual,
    rank_profile,
    residual_jacobian,
    tangent_dimension,
    td_residual,
)
from reengage.analysis.theory_figure import plot_mlp, plot_theory
from reengage.envs.rotation import (
    RotationReachEnv,
    TwoPhaseRotationEnv,
    haar_orthogonal,
    rotation_reach_step,
    two_phase_step,
    unit_sphere,
)
from reengage.theory import (
    MLPSettings,
    SweepSettings,
    build_seed_data,
    fit_loglog_slope,
    main,
    mlp_sweep,
    policy_cosine,
    recovered,
)

GAMMA = 0.95


@pytest.fixture(autouse=True)
def one_thread():
    """These workloads are tiny: with several threads, OpenMP spin-waiting on a busy
    machine made them up to 100x slower. Restored afterwards for other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tensor(x):
    return torch.tensor(np.asarray(x), dtype=torch.float64)


def _random_tuples(dim, n, two_phase, seed=0):
    rng = np.random.default_rng(seed)
    rotation = haar_orthogonal(dim, rng)
    action = unit_sphere(rng, (n,), dim) * rng.uniform(0.2, 1.0, (n, 1))
    goal = unit_sphere(rng, (n,), dim) * rng.uniform(0.5, 2.0, (n, 1))
    if two_phase:
        state = np.concatenate([rng.normal(size=(n, dim)), rng.normal(size=(n, dim))], -1)
        state[: n // 2, :dim] = 0.0  # half waiting (s¹ = 0), half moving
        next_state = two_phase_step(state, action, rotation)
    else:
        state = rng.normal(size=(n, dim))
        next_state = rotation_reach_step(state, action, rotation)
    batch = Transitions(*(_tensor(x)[None] for x in (state, action, goal, next_state)))
    return _tensor(rotation)[None], batch


@pytest.mark.parametrize("two_phase", [False, True])
def test_optimal_q_satisfies_bellman_equation_for_true_rotation(two_phase):
    dim = 5
    rotation, batch = _random_tuples(dim, 64, two_phase)
    model = RotationQ(dim, two_phase=two_phase, gamma=GAMMA)
    q = model.value(rotation, batch.state, batch.action, batch.goal)
    next_q = model.value(rotation, batch.next_state, model.policy(rotation, batch.goal), batch.goal)
    bellman = model.reward(batch.next_state, batch.goal) + GAMMA * next_q
    np.testing.assert_allclose(q.numpy(), bellman.numpy(), atol=1e-5, rtol=0)
    if two_phase:  # both branches were exercised
        first = batch.state[0, :, :dim]
        assert (first == 0).all(-1).any() and (first != 0).any(-1).any()


@pytest.mark.parametrize("two_phase", [False, True])
def test_optimal_action_maximises_q(two_phase):
    dim = 4
    rotation, batch = _random_tuples(dim, 32, two_phase)
    model = RotationQ(dim, two_phase=two_phase, gamma=GAMMA)
    best = model.value(rotation, batch.state, model.policy(rotation, batch.goal), batch.goal)
    for k in range(20):
        other = _tensor(unit_sphere(np.random.default_rng(k), (32,), dim))[None]
        assert (model.value(rotation, batch.state, other, batch.goal) <= best + 1e-9).all()


@pytest.mark.parametrize("env_cls", [RotationReachEnv, TwoPhaseRotationEnv])
def test_model_reward_is_the_envs_reward(env_cls):
    env = env_cls(dim=3)
    two_phase = env_cls is TwoPhaseRotationEnv
    _, batch = _random_tuples(3, 20, two_phase)
    model = RotationQ(3, two_phase=two_phase)
    expected = env.compute_reward(env.achieved(batch.next_state.numpy()), batch.goal.numpy())
    np.testing.assert_allclose(model.reward(batch.next_state, batch.goal).numpy(), expected)


def test_autograd_losses_reduce_to_proposition_1():
    # TD residual = gᵀ(Ũ-U)a/(1-γ): one scalar per tuple. Gradient residual = (Ũ-U)a/(1-γ):
    # d scalars; it is only this once the reward's gradient s' is included in the target.
    dim = 6
    rotation, batch = _random_tuples(dim, 40, two_phase=False)
    estimate = _tensor(haar_orthogonal(dim, np.random.default_rng(9)))[None]
    target = _tensor(haar_orthogonal(dim, np.random.default_rng(10)))[None]  # any Ū
    model = RotationQ(dim, gamma=GAMMA)
    diff = batch.action @ (estimate - rotation).mT
    np.testing.assert_allclose(
        td_residual(model, estimate, target, batch).detach().numpy(),
        ((batch.goal * diff).sum(-1) / (1 - GAMMA)).numpy(), atol=1e-9)
    np.testing.assert_allclose(
        gradient_residual(model, estimate, target, batch).detach().numpy(),
        (diff / (1 - GAMMA)).numpy(), atol=1e-9)


def test_autograd_gradient_loss_reduces_to_proposition_2():
    dim = 5
    rotation, batch = _random_tuples(dim, 40, two_phase=True)
    estimate = _tensor(haar_orthogonal(dim, np.random.default_rng(9)))[None]
    model = RotationQ(dim, two_phase=True, gamma=GAMMA)
    residual = gradient_residual(model, estimate, estimate, batch)[0].detach()
    moving = (batch.state[0, :, :dim] != 0).any(-1)
    diff = batch.action[0] @ (estimate[0] - rotation[0]).T
    np.testing.assert_allclose(residual[moving].numpy(),
                               (GAMMA * diff[moving] / (1 - GAMMA**2)).numpy(), atol=1e-9)
    np.testing.assert_allclose(residual[~moving].numpy(), 0.0, atol=1e-9)


def test_rank_of_linearised_systems():
    dim = 6
    full = tangent_dimension(dim)  # 15
    rotation, batch = _random_tuples(dim, 2 * full, two_phase=False, seed=3)
    model = RotationQ(dim, gamma=GAMMA)
    td = rank_profile(residual_jacobian("td", model, rotation[0], batch))
    # One new direction per tuple: rank deficient below d(d-1)/2, full at it.
    assert td[: full - 1] == list(range(1, full))
    assert td[full - 1] == full and td[-1] == full
    gradient = rank_profile(residual_jacobian("gradient", model, rotation[0], batch))
    # Tuple j adds d-j directions: 5, 9, 12, 14, 15 -> full after d-1 tuples.
    assert gradient[: dim - 1] == [5, 9, 12, 14, 15]


def test_rank_two_phase_counts_only_moving_tuples():
    dim = 4
    rotation, batch = _random_tuples(dim, 40, two_phase=True, seed=4)
    model = RotationQ(dim, two_phase=True, gamma=GAMMA)
    ranks = rank_profile(residual_jacobian("td", model, rotation[0], batch))
    assert ranks[19] == 0  # the first 20 tuples are waiting ones (s¹ = 0)
    assert ranks[19 + tangent_dimension(dim)] == tangent_dimension(dim)


@pytest.mark.parametrize("env_name", ["RotationReach", "TwoPhaseRotation"])
@pytest.mark.parametrize(("kind", "size"), [("td", 120), ("gradient", 24)])
def test_both_losses_recover_rotation_well_above_bound(env_name, kind, size):
    # d = 6: bounds 15 (td) and 5 (gradient); sizes are 4-8x those (x2 for TwoPhase).
    dim = 6
    data = build_seed_data(env_name, dim, [0, 1, 2], 400, 256)
    model = RotationQ(dim, two_phase=env_name == "TwoPhaseRotation", gamma=GAMMA)
    seeds = torch.arange(3)
    ok = recovered(model, kind, data, seeds, torch.full((3,), size), SweepSettings())
    assert ok.all()
    # Too few tuples: not even the gradient loss can recover U.
    ok = recovered(model, kind, data, seeds, torch.full((3,), 2), SweepSettings())
    assert not ok.any()


def test_learner_members_are_independent():
    dim = 4
    data = build_seed_data("RotationReach", dim, [0, 1], 60, 16)
    model = RotationQ(dim, gamma=GAMMA)
    weights = torch.full((2, 30), 1 / 30, dtype=torch.float64)
    batch = data.buffer.select(torch.arange(2), 30)
    start = torch.stack([torch.eye(dim, dtype=torch.float64)] * 2)
    together = ClosedFormLearner(model, start)
    alone = ClosedFormLearner(model, start[:1])
    for _ in range(8):
        together.step("td", batch, weights)
        alone.step("td", batch.select(torch.tensor([0])), weights[:1])
    torch.testing.assert_close(together.params[0], alone.params[0])
    assert not torch.allclose(together.params[0], together.params[1])
    goal = batch.goal[:1]
    torch.testing.assert_close(together.policy(goal.expand(2, -1, -1))[:1], alone.policy(goal))


def test_policy_cosine_is_one_for_truth_and_low_for_other():
    dim = 5
    truth = _tensor(haar_orthogonal(dim, np.random.default_rng(0)))[None]
    other = _tensor(haar_orthogonal(dim, np.random.default_rng(1)))[None]
    goals = _tensor(unit_sphere(np.random.default_rng(2), (500,), dim))[None]
    model = RotationQ(dim)
    assert policy_cosine(model, truth, truth, goals).item() == pytest.approx(1.0)
    assert policy_cosine(model, other, truth, goals).item() < 0.9


@pytest.mark.parametrize(("power", "scale"), [(2, 3.0), (1, 5.0)])
def test_slope_fit_recovers_synthetic_power_law(power, scale):
    rng = np.random.default_rng(0)
    dims = np.repeat([2, 4, 8, 16, 32], 5)
    values = scale * dims.astype(float) ** power * np.exp(rng.normal(0, 0.1, dims.size))
    slope, low, high = fit_loglog_slope(dims, values)
    assert slope == pytest.approx(power, abs=0.1)
    assert low < power < high and high - low < 0.3
    exact = fit_loglog_slope(dims, scale * dims.astype(float) ** power)
    assert exact[0] == pytest.approx(power, abs=1e-9)


def test_cli_writes_tables_with_the_agreed_columns(tmp_path):
    paths = {k: tmp_path / f"{k}.csv" for k in ("points", "slopes", "rank")}
    code = main(["--dims", "2", "4", "8", "--seeds", "2", "--quiet",
                 "--out-points", str(paths["points"]), "--out-slopes", str(paths["slopes"]),
                 "--out-rank", str(paths["rank"])])
    assert code == 0
    slopes = pd.read_csv(paths["slopes"])
    assert list(slopes.columns) == ["env", "loss", "slope", "ci_low", "ci_high"]
    assert set(slopes["env"]) == {"RotationReach", "TwoPhaseRotation"}
    assert set(slopes["loss"]) == {"td", "gradient"}
    points = pd.read_csv(paths["points"])
    assert len(points) == 2 * 2 * 3 * 2 and points["n_star"].notna().all()
    assert {"env", "loss", "d", "seed", "n_star"} <= set(points.columns)
    td = points[(points["env"] == "RotationReach") & (points["loss"] == "td") & (points["d"] == 8)]
    gradient = points[(points["env"] == "RotationReach") & (points["loss"] == "gradient")
                      & (points["d"] == 8)]
    assert td["n_star"].min() > gradient["n_star"].max()
    ranks = pd.read_csv(paths["rank"])
    assert (ranks["rank"] <= ranks["tangent_dim"]).all()


def test_mlp_sweep_smoke():
    table = mlp_sweep(MLPSettings(dims=(2,), sizes=(8, 16), seeds=(0,), steps=5, batch=8))
    assert len(table) == 2 * 2
    assert set(table["method"]) == {"ddpg", "reengage"}
    assert table["cosine"].between(-1, 1).all()


def _synthetic_tables(tmp_path):
    rows = []
    for env in ("RotationReach", "TwoPhaseRotation"):
        for loss, power in (("td", 2), ("gradient", 1)):
            for d in (2, 4, 8):
                for seed in range(3):
                    rows.append({"env": env, "loss": loss, "d": d, "seed": seed,
                                 "n_star": (seed + 1) * d**power, "n_full_rank": d**power,
                                 "bound": d**power})
    points = tmp_path / "points.csv"
    pd.DataFrame(rows).to_csv(points, index=False)
    slopes = tmp_path / "slopes.csv"
    pd.DataFrame([{"env": e, "loss": loss, "slope": p, "ci_low": p - 0.1, "ci_high": p + 0.1}
                  for e in ("RotationReach", "TwoPhaseRotation")
                  for loss, p in (("td", 2.0), ("gradient", 1.0))]).to_csv(slopes, index=False)
    return points, slopes


def test_theory_figure_writes_png_and_pdf(tmp_path):
    points, slopes = _synthetic_tables(tmp_path)
    png, pdf = tmp_path / "fig.png", tmp_path / "fig.pdf"
    plot_theory(points, slopes, png, pdf)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert pdf.stat().st_size > 1_000


def test_mlp_figure_writes_png(tmp_path):
    table = tmp_path / "mlp.csv"
    pd.DataFrame([{"env": "RotationReach", "d": d, "method": m, "n": n, "seed": s,
                   "cosine": 0.1 * np.log2(n)} for d in (4, 8) for m in ("ddpg", "reengage")
                  for n in (16, 64) for s in (0, 1)]).to_csv(table, index=False)
    png = tmp_path / "mlp.png"
    plot_mlp(table, png)
    assert png.stat().st_size > 10_000


def test_figure_module_needs_neither_torch_nor_envs():
    code = ("import sys, reengage.analysis.theory_figure; "
            "sys.exit(any(m == 'torch' or m.startswith('reengage.envs') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
