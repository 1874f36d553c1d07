"""Propositions 1 and 2, measured: how many transitions each critic loss needs, versus d.

docs/paper.md §3 states (no figure) that on RotationReach and TwoPhaseRotation the TD loss needs
`~d²/2` transitions to pin down the unknown rotation `U`, and ReenGAGE's goal-gradient loss
only `O(d)`. This module turns that into numbers:

* **N*(d)**: for every (env, loss, d, seed) the smallest buffer size for which the
  closed-form learner (`reengage.agents.closed_form`: spectral start, then L-BFGS on the
  loss) trained on the first N transitions recovers the optimal policy: the mean cosine
  between `π_Ũ(g)` and `π_U(g)` on 1024 fresh goals reaches `--threshold` (0.99). Why
  0.99: a learner that found `U` reaches 1 - 1e-10, while wrong fits stay below (the
  reflection left free at N = d-1 scores (d-2)/d, local minima of the TD loss scored
  0.4-0.9 in our runs); thresholds 0.97 and 0.999 moved every slope by at most 0.02, and
  so did 200 instead of 60 L-BFGS iterations.
  The buffer is one fixed sample per (env, d, seed) shared by both losses (a paired
  comparison), made of 20-step episodes with random unit actions, each tuple relabelled
  with its own fresh goal (the propositions assume one goal per tuple), shuffled; a
  buffer of size N is its first N tuples. N is searched per seed by doubling, then
  bisection to `--tolerance`; the seeds of one (env, loss, d) train together in one batch,
  and the search starts from the previous dimension's answer (warm start; it only saves
  work). Recovery is not exactly monotone in N for the TD loss (a spectral start can fall
  into a local minimum at one N and not at a smaller one), so N* is the bisection's
  answer, and the spread over seeds shows that noise.
* **Slopes**: OLS of log N* on log d over all (d, seed) points, with a 95% t-interval.
  Over d in 2..32 the exact bounds `d(d-1)/2` and `d-1` themselves have OLS log-log
  slopes 2.22 and 1.22 (the `-1` matters at small d), so read the measured slopes against
  those as well as against 2 and 1; the progress log prints them.
* **Identifiability**: the rank of the linear system each loss induces around the true
  `U` (the Jacobian of the residuals, by autograd) versus the number of tuples. Full rank
  `d(d-1)/2` is reached after `d(d-1)/2` tuples for TD and `d-1` for the gradient loss on
  RotationReach; on TwoPhaseRotation only the tuples with `s¹ ≠ 0` (about half) count.
* **MLP critics** (`--mlp`): the same question for generic networks, DDPG versus ReenGAGE
  (TD + c·gradient term) trained offline from the same kind of buffer.

Run `python -m reengage.theory --help`. The default sweep (both envs and losses, d up to
32, 5 seeds) takes about 20 s on one core; `--dims ... 64` takes several minutes more and
`--mlp` about 30 s.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from reengage.agents.closed_form import (
    LOSS_KINDS,
    ClosedFormLearner,
    LossKind,
    RankTracker,
    RotationQ,
    Transitions,
    identifiability_bound,
    residual_jacobian,
    spectral_start,
    tangent_dimension,
)
from reengage.agents.ensemble import EnsembleMLP
from reengage.envs.rotation import (
    EPISODE_STEPS,
    RotationReachEnv,
    TwoPhaseRotationEnv,
    unit_sphere,
)

ENVS = {"RotationReach": RotationReachEnv, "TwoPhaseRotation": TwoPhaseRotationEnv}
DEFAULT_DIMS = (2, 4, 8, 16, 32)
DTYPE = torch.float64


@dataclass(frozen=True)
class SweepSettings:
    """What the N* search measures and how hard it tries."""

    threshold: float = 0.99
    """Mean policy cosine on fresh goals that counts as recovering the optimal policy."""
    iterations: int = 60
    """L-BFGS iterations per training at most (members stop early once recovered or stalled)."""
    tolerance: float = 1 / 16
    """Bisection stops when the bracket is at most max(1, tolerance·N) wide."""
    capacity: float = 6.0
    """Buffer size per seed, in units of d² (+ 64); a search that fails at it is censored."""
    eval_goals: int = 1024
    """Fresh goals on which the policy cosine is measured."""
    gamma: float = 0.95
    """Discount of the closed-form model (the paper's toy-task value)."""


@dataclass(frozen=True)
class SeedData:
    """Everything one (env, d) needs for all seeds, stacked on a leading seed axis."""

    buffer: Transitions
    truth: torch.Tensor
    goals: torch.Tensor


def collect_transitions(
    env: RotationReachEnv | TwoPhaseRotationEnv, size: int, rng: np.random.Generator
) -> Transitions:
    """`size` shuffled tuples from 20-step episodes with random unit actions (general
    position, full speed), each with its own fresh goal; shape `[1, size, ...]`."""
    episodes = math.ceil(size / EPISODE_STEPS)
    state = np.stack([env.start_state(rng) for _ in range(episodes)])
    states, actions, next_states = [], [], []
    for _ in range(EPISODE_STEPS):
        action = unit_sphere(rng, (episodes,), env.dim)
        next_state = env.transition(state, action)
        states.append(state)
        actions.append(action)
        next_states.append(next_state)
        state = next_state
    order = rng.permutation(episodes * EPISODE_STEPS)[:size]
    goal = torch.tensor(unit_sphere(rng, (size,), env.dim), dtype=DTYPE)[None]

    def shuffled(x: list[np.ndarray]) -> torch.Tensor:
        return torch.tensor(np.concatenate(x)[order], dtype=DTYPE)[None]

    return Transitions(shuffled(states), shuffled(actions), goal, shuffled(next_states))


def build_seed_data(
    env_name: str, dim: int, seeds: Sequence[int], capacity: int, eval_goals: int
) -> SeedData:
    """One buffer, true rotation and evaluation goal set per seed (`rotation_seed = seed`)."""
    buffers, truths, goals = [], [], []
    for seed in seeds:
        env = ENVS[env_name](dim=dim, rotation_seed=seed)
        data_rng, goal_rng = (np.random.default_rng([seed, dim, k]) for k in (1, 2))
        buffers.append(collect_transitions(env, capacity, data_rng))
        truths.append(torch.tensor(env.rotation, dtype=DTYPE))
        goals.append(torch.tensor(unit_sphere(goal_rng, (eval_goals,), dim), dtype=DTYPE))
    fields = zip(*(b.fields() for b in buffers), strict=True)
    return SeedData(Transitions(*(torch.cat(x) for x in fields)), torch.stack(truths),
                    torch.stack(goals))


def policy_cosine(
    model: RotationQ, rotation: torch.Tensor, truth: torch.Tensor, goals: torch.Tensor
) -> torch.Tensor:
    """Mean cosine between `π_Ũ(g)` and the optimal `π_U(g)` over goals `[M, K, d]`."""
    learned, optimal = model.policy(rotation, goals), model.policy(truth, goals)
    return nn.functional.cosine_similarity(learned, optimal, dim=-1).mean(-1)


def recovered(
    model: RotationQ,
    kind: LossKind,
    data: SeedData,
    seeds: torch.Tensor,
    sizes: torch.Tensor,
    settings: SweepSettings,
) -> torch.Tensor:
    """Train one learner per entry of `seeds` on its first `sizes` tuples; which recover?

    A member stops as soon as its policy cosine reaches the threshold (it is then in the
    basin of the exact solution, where the loss is zero), or once L-BFGS makes no more
    progress (a minimum that is not `U`), or after `settings.iterations`.
    """
    batch = data.buffer.select(seeds, int(sizes.max()))
    positions = torch.arange(batch.state.shape[1])
    weights = (positions < sizes[:, None]).to(DTYPE) / sizes[:, None].to(DTYPE)
    truth, goals = data.truth[seeds], data.goals[seeds]
    learner = ClosedFormLearner(model, spectral_start(kind, model, batch, weights))
    alive = torch.arange(len(seeds))  # which of the requested members are still training
    success = torch.zeros(len(seeds), dtype=torch.bool)

    def check() -> torch.Tensor:
        hit = policy_cosine(model, learner.rotation(), truth, goals) >= settings.threshold
        success[alive[hit]] = True
        return hit

    stop = check()
    previous = torch.full((len(seeds),), math.inf, dtype=DTYPE)
    for _ in range(settings.iterations):
        keep = ~stop
        if not keep.any():
            break
        if not keep.all():
            index = keep.nonzero().squeeze(-1)
            learner.keep(keep)
            alive, previous = alive[index], previous[index]
            batch, weights = batch.select(index), weights[index]
            truth, goals = truth[index], goals[index]
        loss = learner.step(kind, batch, weights)
        stop = check() | (loss >= previous * (1 - 1e-9))
        previous = loss
    return success


def search_transitions(
    model: RotationQ,
    kind: LossKind,
    data: SeedData,
    guess: int,
    settings: SweepSettings,
) -> np.ndarray:
    """N* per seed: double from `guess` until recovery, then bisect (all seeds batched).

    `lo` is the largest size known to fail (0: no data always fails), `hi` the smallest
    known to succeed; NaN marks a seed that failed at the full buffer (censored).
    """
    count, capacity = data.truth.shape[0], data.buffer.state.shape[1]
    lo = np.zeros(count, dtype=np.int64)
    hi = np.full(count, -1, dtype=np.int64)
    censored = np.zeros(count, dtype=bool)
    while True:
        proposal = np.full(count, -1, dtype=np.int64)
        for i in range(count):
            if censored[i]:
                continue
            if hi[i] < 0:
                proposal[i] = min(capacity, guess if lo[i] == 0 else 2 * lo[i])
            elif hi[i] - lo[i] > max(1, int(settings.tolerance * hi[i])):
                proposal[i] = (lo[i] + hi[i]) // 2
        todo = np.flatnonzero(proposal > 0)
        if len(todo) == 0:
            break
        sizes = proposal[todo]
        ok = recovered(
            model, kind, data, torch.as_tensor(todo), torch.as_tensor(sizes), settings
        ).numpy()
        hi[todo[ok]] = sizes[ok]
        lo[todo[~ok]] = sizes[~ok]
        censored[todo[~ok & (sizes == capacity)]] = True
    return np.where(censored, np.nan, hi.astype(float))


def fit_loglog_slope(
    dims: Sequence[float], values: Sequence[float], level: float = 0.95
) -> tuple[float, float, float]:
    """Slope of log(values) on log(dims) by OLS, with its `level` t-interval.

    Every (d, seed) point is one observation: the seeds' spread at each d is the noise.
    """
    x, y = np.log(np.asarray(dims, float)), np.log(np.asarray(values, float))
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0:
        raise ValueError("need at least 3 finite points at 2 or more dimensions")
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.5 + level / 2, len(x) - 2) * fit.stderr
    return float(fit.slope), float(fit.slope - half), float(fit.slope + half)


def rank_rows(
    env_name: str, kind: LossKind, dim: int, seed: int, data: SeedData, index: int, gamma: float
) -> list[dict]:
    """Rank of the linearised system versus tuples n, up to the first full rank (or the
    whole buffer). The Jacobian is built in chunks so memory stays small at d = 64."""
    model = RotationQ(dim, two_phase=env_name == "TwoPhaseRotation", gamma=gamma)
    tracker = RankTracker(tangent_dimension(dim))
    capacity, chunk = data.buffer.state.shape[1], identifiability_bound(kind, dim) + 16
    ranks: list[int] = []
    member = data.buffer.select(torch.tensor([index]))
    for start in range(0, capacity, chunk):
        part = Transitions(*(x[:, start : start + chunk] for x in member.fields()))
        ranks += tracker.add(residual_jacobian(kind, model, data.truth[index], part))
        if tracker.full:
            break
    return [
        {"env": env_name, "loss": kind, "d": dim, "seed": seed, "n": n + 1, "rank": r,
         "tangent_dim": tracker.width}
        for n, r in enumerate(ranks)
    ]


def run_sweep(
    dims: Sequence[int],
    seeds: Sequence[int],
    envs: Sequence[str] = tuple(ENVS),
    losses: Sequence[LossKind] = LOSS_KINDS,
    settings: SweepSettings | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The whole measurement: per-point N*, per-(env, loss) slopes, rank profiles."""
    settings = settings or SweepSettings()
    points, slopes, ranks = [], [], []
    for env_name in envs:
        history: dict[str, list[tuple[int, float]]] = {kind: [] for kind in losses}
        for dim in sorted(dims):
            capacity = int(settings.capacity * dim * dim) + 64
            data = build_seed_data(env_name, dim, seeds, capacity, settings.eval_goals)
            model = RotationQ(dim, two_phase=env_name == "TwoPhaseRotation",
                              gamma=settings.gamma)
            for kind in losses:
                start = time.perf_counter()
                guess = _warm_guess(history[kind], dim)
                n_star = search_transitions(model, kind, data, guess, settings)
                history[kind].append((dim, float(np.nanmedian(n_star))))
                full_at = []
                for index, (seed, value) in enumerate(zip(seeds, n_star, strict=True)):
                    profile = rank_rows(env_name, kind, dim, seed, data, index, settings.gamma)
                    ranks += profile
                    full = next((r["n"] for r in profile if r["rank"] == r["tangent_dim"]),
                                math.nan)
                    full_at.append(full)
                    points.append({
                        "env": env_name, "loss": kind, "d": dim, "seed": seed, "n_star": value,
                        "n_full_rank": full, "bound": identifiability_bound(kind, dim),
                    })
                if log is not None and np.isnan(n_star).any():
                    log(f"warning: {env_name} {kind} d={dim}: {np.isnan(n_star).sum()} seed(s) "
                        f"never recovered within {capacity} tuples (censored, left out of "
                        "the slope fit)")
                if log is not None:
                    log(f"{env_name:>16} {kind:>8} d={dim:<3} N* median {np.nanmedian(n_star):7.0f}"
                        f" (min {np.nanmin(n_star):.0f}, max {np.nanmax(n_star):.0f}),"
                        f" exact full rank at {np.nanmedian(full_at):.0f},"
                        f" {time.perf_counter() - start:5.1f}s")
        for kind in losses:
            table = [p for p in points if p["env"] == env_name and p["loss"] == kind]
            slope, low, high = fit_loglog_slope([p["d"] for p in table],
                                                [p["n_star"] for p in table])
            slopes.append({"env": env_name, "loss": kind, "slope": slope, "ci_low": low,
                           "ci_high": high})
    return pd.DataFrame(points), pd.DataFrame(slopes), pd.DataFrame(ranks)


def _warm_guess(history: list[tuple[int, float]], dim: int) -> int:
    """Where to start the search at `dim`: the last answer extrapolated with the last
    local slope (1.5 before two answers exist), so the bracket is usually found at once."""
    if not history or not math.isfinite(history[-1][1]):
        return 1
    last_dim, last = history[-1]
    growth = 1.5
    if len(history) >= 2 and math.isfinite(history[-2][1]):
        growth = math.log(last / history[-2][1]) / math.log(last_dim / history[-2][0])
    return max(1, round(last * (dim / last_dim) ** min(max(growth, 1.0), 2.5)))


@dataclass(frozen=True)
class MLPSettings:
    """Offline DDPG / ReenGAGE with generic MLP critics on RotationReach (kept cheap)."""

    dims: tuple[int, ...] = (4, 8)
    """Dimensions d of RotationReach."""
    sizes: tuple[int, ...] = (32, 128, 512, 2048)
    """Buffer sizes N (first N tuples of one fixed buffer per seed)."""
    seeds: tuple[int, ...] = (0, 1)
    """Seeds: the task's rotation, the buffer and the networks' initial weights."""
    steps: int = 1500
    """Gradient steps (actor and critic, one each), offline: no new data is collected."""
    batch: int = 128
    """Minibatch per member, drawn uniformly from its first N tuples."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of actor and critic (ReLU)."""
    lr: float = 1e-3
    """Adam learning rate of actor and critic."""
    tau: float = 0.05
    """Polyak coefficient of the targets (larger than the online 0.005: few steps here)."""
    gamma: float = 0.5
    """Shorter horizon than the closed form's 0.95: the value scale then stays small and
    the step budget goes into learning `U`, not into propagating a 1/(1-γ)² constant."""
    coef: float = 1.0
    """ReenGAGE's c (α = c/d: the gradient term averages over goal coordinates); c = 0.3,
    3 and 10 gave the same curves within the seeds' spread."""


MLP_REPORT_LEVEL = 0.8


def transitions_to_reach(table: pd.DataFrame, level: float) -> float:
    """Buffer size at which the seed-mean cosine first reaches `level`, interpolated
    linearly in log N between the two sizes that bracket it (NaN if never reached)."""
    means = table.groupby("n")["cosine"].mean().sort_index()
    sizes, values = np.log(means.index.to_numpy(float)), means.to_numpy()
    above = np.flatnonzero(values >= level)
    if len(above) == 0:
        return math.nan
    i = above[0]
    if i == 0:
        return float(means.index[0])
    fraction = (level - values[i - 1]) / (values[i] - values[i - 1])
    return float(np.exp(sizes[i - 1] + fraction * (sizes[i] - sizes[i - 1])))


class _MLPAgent(nn.Module):
    """Actor `π(s, g)` (tanh, then rescaled into the unit ball) and critic `Q(s, a, g)` for
    a population of members, with Polyak targets."""

    def __init__(self, members: int, dim: int, settings: MLPSettings, seed: int):
        super().__init__()
        self.actor = EnsembleMLP(members, 2 * dim, settings.hidden, dim, nn.Tanh())
        self.critic = EnsembleMLP(members, 3 * dim, settings.hidden, 1)
        for member in range(members):
            generator = torch.Generator().manual_seed(seed * 1000 + member)
            self.actor.reset_member(member, generator)
            self.critic.reset_member(member, generator)
        self.actor_target = EnsembleMLP(members, 2 * dim, settings.hidden, dim, nn.Tanh())
        self.critic_target = EnsembleMLP(members, 3 * dim, settings.hidden, 1)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_target.requires_grad_(False)
        self.critic_target.requires_grad_(False)

    @staticmethod
    def act(actor: nn.Module, state: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        raw = actor(torch.cat([state, goal], -1))
        return raw / raw.norm(dim=-1, keepdim=True).clamp_min(1.0)

    @staticmethod
    def value(critic: nn.Module, state: torch.Tensor, action: torch.Tensor,
              goal: torch.Tensor) -> torch.Tensor:
        return critic(torch.cat([state, action, goal], -1)).squeeze(-1)


def _mlp_update(
    agent: _MLPAgent,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    batch: Transitions,
    model: RotationQ,
    settings: MLPSettings,
    coef: float,
) -> None:
    """One DDPG step; with `coef > 0` the critic also matches `∇_g` of the teacher
    `R(s',g) + γQ'(s', π'(s',g), g)`, taken through the reward (`∇_g R = s'`, dense here,
    so no gating), the target critic and the target actor."""
    critic_opt, actor_opt = optimizers
    goal = batch.goal.detach().requires_grad_(coef > 0)
    with torch.set_grad_enabled(coef > 0):
        next_action = agent.act(agent.actor_target, batch.next_state, goal)
        target = model.reward(batch.next_state, goal) + settings.gamma * agent.value(
            agent.critic_target, batch.next_state, next_action, goal)
        target_grad = torch.autograd.grad(target.sum(), goal)[0] if coef > 0 else None
    q_goal = batch.goal.detach().requires_grad_(coef > 0)
    q = agent.value(agent.critic, batch.state, batch.action, q_goal)
    critic_loss = (q - target.detach()).square().mean(-1)
    if target_grad is not None:
        (q_grad,) = torch.autograd.grad(q.sum(), q_goal, create_graph=True)
        critic_loss = critic_loss + coef * (q_grad - target_grad).square().mean((-1, -2))
    critic_opt.zero_grad(set_to_none=True)
    critic_loss.sum().backward()
    critic_opt.step()

    action = agent.act(agent.actor, batch.state, batch.goal)
    actor_loss = -agent.value(agent.critic, batch.state, action, batch.goal).mean(-1)
    actor_opt.zero_grad(set_to_none=True)
    actor_loss.sum().backward()
    actor_opt.step()
    with torch.no_grad():
        for online, target_net in ((agent.actor, agent.actor_target),
                                   (agent.critic, agent.critic_target)):
            for p, p_target in zip(online.parameters(), target_net.parameters(), strict=True):
                p_target.lerp_(p, settings.tau)


def mlp_sweep(
    settings: MLPSettings | None = None, log: Callable[[str], None] | None = None
) -> pd.DataFrame:
    """Policy cosine after offline training, per (d, method, N, seed), on RotationReach.

    Every (size, seed) pair is one member of a population trained in one batch; member
    m samples minibatches from the first N tuples of its seed's buffer only.
    """
    settings = settings or MLPSettings()
    rows = []
    for dim in settings.dims:
        data = build_seed_data("RotationReach", dim, settings.seeds, max(settings.sizes), 1024)
        model = RotationQ(dim, gamma=settings.gamma)
        pairs = [(n, i) for n in settings.sizes for i in range(len(settings.seeds))]
        members = len(pairs)
        owner = torch.tensor([i for _, i in pairs])
        limit = torch.tensor([n for n, _ in pairs])
        buffer = Transitions(*(x.float() for x in data.buffer.select(owner).fields()))
        # Fresh states from other seeds' random walks: their law does not depend on U.
        eval_states = build_seed_data(
            "RotationReach", dim, [s + 10_000 for s in settings.seeds], 1024, 1
        ).buffer.state.float()[owner]
        goals, truth = data.goals.float()[owner], data.truth.float()[owner]
        for method, coef in (("ddpg", 0.0), ("reengage", settings.coef)):
            start = time.perf_counter()
            agent = _MLPAgent(members, dim, settings, seed=dim)
            optimizers = (torch.optim.Adam(agent.critic.parameters(), lr=settings.lr),
                          torch.optim.Adam(agent.actor.parameters(), lr=settings.lr))
            generator = torch.Generator().manual_seed(dim)
            rows_index = torch.arange(members)[:, None]
            for _ in range(settings.steps):
                draw = torch.rand(members, settings.batch, generator=generator)
                index = (draw * limit[:, None]).long()
                batch = Transitions(*(x[rows_index, index] for x in buffer.fields()))
                _mlp_update(agent, optimizers, batch, model, settings, coef)
            with torch.no_grad():
                action = agent.act(agent.actor, eval_states, goals)
                optimal = model.policy(truth, goals)
                cosine = nn.functional.cosine_similarity(action, optimal, dim=-1).mean(-1)
            for (n, i), value in zip(pairs, cosine.tolist(), strict=True):
                rows.append({"env": "RotationReach", "d": dim, "method": method, "n": n,
                             "seed": settings.seeds[i], "cosine": value})
            if log is not None:
                done = pd.DataFrame(rows[-members:])
                means = done.groupby("n")["cosine"].mean()
                reach = transitions_to_reach(done, MLP_REPORT_LEVEL)
                log(f"MLP d={dim} {method:>8}: mean cosine by N "
                    + ", ".join(f"{n}: {v:.2f}" for n, v in means.items())
                    + f"; N for {MLP_REPORT_LEVEL}: {reach:.0f}"
                    + f"  {time.perf_counter() - start:5.1f}s")
    return pd.DataFrame(rows)


def _write(table: pd.DataFrame, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reengage.theory",
        description=(
            "Measure Propositions 1 and 2 (docs/paper.md §3): the number of transitions N* the "
            "TD loss and ReenGAGE's goal-gradient loss need to recover the optimal policy "
            "on RotationReach and TwoPhaseRotation, versus the dimension d; fit log-log "
            "slopes (expected about 2 and 1) and compute the exact identifiability rank."
        ),
        epilog=(
            "example: python -m reengage.theory --dims 2 4 8 16 32 --seeds 5 "
            "--out-points results/tables/theory_points.csv "
            "--out-slopes results/tables/theory_slopes.csv "
            "--out-rank results/tables/theory_rank.csv  (about 20 s on one core; "
            "adding 64 to --dims costs several minutes more; --mlp adds about 30 s)"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dims", type=int, nargs="+", default=list(DEFAULT_DIMS),
                        help="dimensions d to sweep (adding 64 costs several minutes)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..S-1 per (env, loss, d)")
    parser.add_argument("--envs", nargs="+", choices=list(ENVS), default=list(ENVS))
    parser.add_argument("--losses", nargs="+", choices=list(LOSS_KINDS), default=list(LOSS_KINDS))
    defaults = SweepSettings()
    parser.add_argument("--threshold", type=float, default=defaults.threshold,
                        help="mean policy cosine on fresh goals that counts as recovered")
    parser.add_argument("--iterations", type=int, default=defaults.iterations,
                        help="L-BFGS iterations per training at most")
    parser.add_argument("--tolerance", type=float, default=defaults.tolerance,
                        help="relative width at which the bisection on N stops")
    parser.add_argument("--out-points", help="CSV: one row per (env, loss, d, seed) with N*")
    parser.add_argument("--out-slopes", help="CSV: env, loss, slope, ci_low, ci_high")
    parser.add_argument("--out-rank", help="CSV: rank of the linearised system versus n")
    parser.add_argument("--mlp", action="store_true",
                        help="also run the MLP-critic sweep (DDPG vs ReenGAGE) on RotationReach")
    parser.add_argument("--out-mlp", help="CSV of the MLP sweep: d, method, n, seed, cosine")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry: run the sweep, write the tables, print the slopes."""
    args = build_parser().parse_args(argv)
    if len(set(args.dims)) < 2 or min(args.dims) < 2 or args.seeds * len(set(args.dims)) < 3:
        build_parser().error("the slope fit needs two or more distinct --dims (all >= 2) "
                             "and at least 3 points (dims x seeds)")
    torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    start = time.perf_counter()
    dims = sorted(set(args.dims))
    settings = SweepSettings(threshold=args.threshold, iterations=args.iterations,
                             tolerance=args.tolerance)
    points, slopes, ranks = run_sweep(
        dims, list(range(args.seeds)), args.envs, args.losses, settings, log
    )
    _write(points, args.out_points)
    _write(slopes, args.out_slopes)
    _write(ranks, args.out_rank)
    for row in slopes.itertuples():
        reference = fit_loglog_slope(dims, [identifiability_bound(row.loss, d) for d in dims])
        log(f"slope {row.env:>16} {row.loss:>8}: {row.slope:.2f} "
            f"[{row.ci_low:.2f}, {row.ci_high:.2f}]   (the bound's own slope: {reference[0]:.2f})")
    if args.mlp:
        _write(mlp_sweep(log=log), args.out_mlp)
    log(f"done in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
