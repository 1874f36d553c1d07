"""Names every analysis stage shares: table columns, grouping keys, how a method variant is
named, and how metrics are spelled on figures and in the report.

Kept in one place because the stages talk to each other only through files (parquet and
CSV): a column renamed here is renamed for every reader at once.
"""

from __future__ import annotations

import math

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


# On the goal-set tasks the harness's `dim` is n_max, the number of goal slots.
GOAL_SET_ENVS = ("DriveSeek", "NoisySeek")


def dim_name(env: str) -> str:
    return "n_max" if env in GOAL_SET_ENVS else "d"
