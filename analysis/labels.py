"""Names every analysis stage shares: table columns, grouping keys, how a method variant is
named, how metrics are spelled on figures and in the report, and how each method looks
(colour, marker, label) on every figure.

Kept in one place because the stages talk to each other only through files (parquet and
CSV): a column renamed here is renamed for every reader at once, and a method keeps its
colour from the learning curves to the statistics, diagnostics, theory and throughput
figures.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

# The baseline every comparison is made against, by method name (configurable on each CLI).
DEFAULT_BASELINE = "ddpg_her"

# Control columns: an independent implementation of one of our methods -> that method. A
# control checks our implementation (is ours inside its interval?); it is never a contender
# in a claim's comparison.
CONTROLS = {"sb3_ddpg_her": "ddpg_her"}

# A method with its coefficient is one "variant" (`reengage_her` at c = 0.2 and at c = 0.3 are
# two curves). `c` is missing for methods without one, and pandas drops missing keys from
# group-bys by default, so every stage groups by the `variant` string instead of (method, c).
VARIANT_KEYS = ["experiment", "env", "dim", "variant"]
CELL_KEYS = [*VARIANT_KEYS, "batch_size", "lr"]
RUN_KEYS = [*CELL_KEYS, "seed"]
# Carried beside the keys; constant within a variant.
VARIANT_ATTRIBUTES = ["method", "c", "label"]

PROGRESS_COLUMNS = [
    "step", "success_rate", "mean_return", "critic_loss", "goal_grad_loss", "actor_loss",
    "q_mean", "wall_time_s", "updates_per_s",
]
# The robotics tasks' loop (the Baselines regime) also logs the epoch of each row (0 for the
# evaluation before training); its figures are drawn against it, as the paper's are.
EPOCH = "epoch"
# Per-seed facts from run.json, repeated on each of the seed's rows of the tidy table.
RUN_COLUMNS = [
    "status", "diverged_at_step", "diverged_reason", "run_wall_time_s", "population",
    "population_size", "config_steps", "eval_every", "eval_episodes", "run_dir",
]
STATUSES = ("finished", "diverged", "interrupted")

METRIC_NAMES = {"success_rate": "success rate", "mean_return": "mean episode return"}
# Metrics whose values are probabilities: bands are clipped to [0, 1] and the score a
# diverged seed gets for model selection is 0 (it no longer succeeds).
BOUNDED_METRICS = {"success_rate"}


def variant_name(method: str, c: float | None) -> str:
    """`reengage_her` + 0.2 -> `reengage_her_c0.2`, the same spelling as the run directories;
    a method without a coefficient is its own variant."""
    if c is None or (isinstance(c, float) and math.isnan(c)):
        return method
    return f"{method}_c{c:g}"


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric.replace("_", " "))


def task_name(env: str, dim: int) -> str:
    """One task of the statistics: an environment at one goal dimension."""
    return f"{env}-d{dim}"


# Each experiment's figures beside its learning curves (`{experiment}.png`), by kind, as
# `{experiment}-{kind}.png`: no experiment name holds a hyphen, so one experiment's
# diagnostics are never taken for another experiment's learning curves.
EXPERIMENT_FIGURES = {
    "intervals": "IQM, median, mean (and optimality gap) with 95 % CIs",
    "improvement": "probability of improvement over the baseline",
    "profiles": "performance profiles",
    "diagnostics": "training diagnostics: Q mean, critic loss, goal-gradient loss",
}


def figure_name(experiment: str, kind: str | None = None) -> str:
    """File name (without suffix) of an experiment's figure of one kind (None: its curves)."""
    return experiment if kind is None else f"{experiment}-{kind}"


# On the goal-set tasks the harness's `dim` is n_max, the number of goal slots.
GOAL_SET_ENVS = ("DriveSeek", "NoisySeek")


def dim_name(env: str) -> str:
    return "n_max" if env in GOAL_SET_ENVS else "d"


# -- how a method looks ----------------------------------------------------------------------
@dataclass(frozen=True)
class MethodStyle:
    """What a reader sees of a method on every figure."""

    label: str
    color: str  # "#rrggbb"
    marker: str


# Okabe-Ito colours, distinguishable with every common colour-vision deficiency. A colour
# belongs to a method family: the DDPG baseline is the same vermillion with HER on
# ContinuousSeek, without it on the goal sets, and as the TD loss of the theory figures;
# ReenGAGE is the same blue whether it regularises goal coordinates or goal-set gates.
DDPG_FAMILY = MethodStyle("DDPG", "#d55e00", "o")
REENGAGE_FAMILY = MethodStyle("ReenGAGE", "#0072b2", "s")
METHOD_STYLES = {
    "ddpg_her": MethodStyle("DDPG+HER", DDPG_FAMILY.color, DDPG_FAMILY.marker),
    "ddpg": MethodStyle("DDPG", DDPG_FAMILY.color, DDPG_FAMILY.marker),
    "reengage_her": MethodStyle("ReenGAGE+HER", REENGAGE_FAMILY.color, REENGAGE_FAMILY.marker),
    # Normalized ReenGAGE (robotics) beside plain ReenGAGE on the same figure: its own hue.
    "reengage_her_normalized": MethodStyle("Normalized ReenGAGE+HER", "#117733", "^"),
    "multi_reengage": MethodStyle("Multi-ReenGAGE", REENGAGE_FAMILY.color,
                                  REENGAGE_FAMILY.marker),
    # SAC keeps the families' colours (baseline vermillion, ReenGAGE blue), told apart from
    # DDPG by its markers.
    "sac_her": MethodStyle("SAC+HER", DDPG_FAMILY.color, "v"),
    "reengage_sac_her": MethodStyle("ReenGAGE+SAC+HER", REENGAGE_FAMILY.color, "P"),
    # BitFlip's DQN: the baseline in the DDPG vermillion; ReenGAGE's soft-target uses told
    # apart by hue (gradient term only: blues, the hard max τ = 0 in black; both terms:
    # greens; with Boltzmann actions: purples), τ by shade, c by line style.
    "dqn_her": MethodStyle("DQN+HER", DDPG_FAMILY.color, "o"),
    "dqn_reengage_her_t0": MethodStyle("DQN+ReenGAGE τ=0", "#000000", "s"),
    "dqn_reengage_her_t05": MethodStyle("DQN+ReenGAGE τ=0.5", REENGAGE_FAMILY.color, "s"),
    "dqn_reengage_her_t1": MethodStyle("DQN+ReenGAGE τ=1", "#56b4e9", "s"),
    "dqn_reengage_her_both_t05": MethodStyle("DQN+ReenGAGE both τ=0.5", "#117733", "^"),
    "dqn_reengage_her_both_t1": MethodStyle("DQN+ReenGAGE both τ=1", "#44aa99", "^"),
    "dqn_reengage_her_boltzmann_t05": MethodStyle("DQN+ReenGAGE Boltzmann τ=0.5", "#882e72",
                                                  "D"),
    "dqn_reengage_her_boltzmann_t1": MethodStyle("DQN+ReenGAGE Boltzmann τ=1", "#b87aa9", "D"),
    "sb3_ddpg_her": MethodStyle("SB3 DDPG+HER", "#cc79a7", "^"),
    "greedy": MethodStyle("Perfect greedy agent", "#009e73", "D"),
}
# Methods a plugin registers draw from these, none of which a known method uses (nor is
# close to one: no sky blue beside ReenGAGE's lighter shades).
EXTRA_COLORS = ("#e69f00", "#8c564b", "#9467bd", "#bcbd22", "#17becf", "#7f7f7f", "#882255")
EXTRA_MARKERS = ("v", "P", "X", "*", "h", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")


def _digest(name: str) -> bytes:
    # Python's hash() of a string changes between processes; a figure drawn twice, or by
    # two stages, must give a method the same colour.
    return hashlib.sha256(name.encode("utf-8")).digest()


def method_style(method: str) -> MethodStyle:
    """The method's style; an unknown method gets a fixed colour and marker of its own,
    derived from its name, that no known method uses."""
    if method in METHOD_STYLES:
        return METHOD_STYLES[method]
    digest = _digest(method)
    return MethodStyle(method, EXTRA_COLORS[digest[0] % len(EXTRA_COLORS)],
                       EXTRA_MARKERS[digest[1] % len(EXTRA_MARKERS)])


def shade(color: str, amount: float) -> str:
    """`color` mixed with white (amount > 0) or black (amount < 0) by |amount| in [0, 1]."""
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    target = 255 if amount > 0 else 0
    mixed = [round(c + (target - c) * abs(amount)) for c in rgb]
    return "#" + "".join(f"{c:02x}" for c in mixed)


@dataclass(frozen=True)
class VariantStyle:
    """One curve: its method's colour (shaded when the method has several coefficients) and
    marker, and a line style that tells the coefficients apart."""

    color: str
    marker: str
    linestyle: str


def variant_styles(variants: Iterable[tuple[str, str, float | None]]) -> dict[str, VariantStyle]:
    """(variant, method, c) triples -> their styles.

    The variants of one method share its hue: ordered by c, they run from lighter to darker
    and take solid, dashed, dash-dot and dotted lines in turn. A method with one variant is
    drawn in its own colour with a solid line.
    """
    by_method: dict[str, list[tuple[float, str]]] = {}
    seen = set()
    for variant, method, c in variants:
        if variant in seen:  # by name: a missing c (NaN) never equals itself
            continue
        seen.add(variant)
        key = -math.inf if c is None or (isinstance(c, float) and math.isnan(c)) else float(c)
        by_method.setdefault(method, []).append((key, variant))
    styles = {}
    for method, members in by_method.items():
        base = method_style(method)
        members.sort()
        count = len(members)
        for k, (_, variant) in enumerate(members):
            # Lighter for the smallest c, darker for the largest, the plain colour between.
            amount = 0.0 if count == 1 else 0.4 - 0.75 * k / (count - 1)
            styles[variant] = VariantStyle(shade(base.color, amount), base.marker,
                                           LINESTYLES[k % len(LINESTYLES)])
    return styles
