"""`results/report.md`: each claim of the paper (docs/paper.md section 5) beside what this run
measured, with the numbers and a verdict, generated from the tables only.

Each experiment's tables live in `TABLES/{experiment}/` (`selection.csv`, and when present
`stats.csv`, `runtime.csv`, `runtime.md`); its figure is `FIGURES/{experiment}.png`, and
the figures beside it (`labels.EXPERIMENT_FIGURES`: rliable's views, diagnostics) are
linked where they exist. Which
experiment bears on which claim is decided by environment and method names (`CLAIMS`
below), so a claim whose environment or methods were not run reads "not covered by this
config". With `--ablations DIR`, the ablation tables there (`DIR/{name}.csv`,
reengage.analysis.ablation: an experiment against one that changes one thing in it) get a
section of their own, and one whose change concerns `share_encoder` decides claim 3's
encoder-sharing part.

Verdicts (also written into the report, section "How verdicts are decided"):
* Any verdict drawn from seeds: "too few seeds" when either side has fewer than
  `MIN_SEEDS` (5) usable seeds per d, whatever its interval says. A bootstrap over 3 seeds
  has only 10 distinct resamples of each side, so its interval can collapse to a point
  (P(improvement) 1.00 [1.00, 1.00] from 3 seeds against 3) and read as certainty.
* "A beats B": the probability of improvement of A over B on the normalised AUC, over all d
  of the environment, with its 95 % stratified-bootstrap CI (stats.py). Supported if the CI
  lies above 0.5, not supported if it lies below 0.5, inconclusive if it contains 0.5. With
  several coefficients c, the claim is supported only if every c is, not supported if any
  c is significantly worse, inconclusive otherwise.
* "the margin grows with d": the CI of the margin growth (IQM AUC difference at the largest
  d minus at the smallest d) lies above 0 (supported), below 0 (not supported), or
  contains 0 (inconclusive).
* "no significant gain": supported if no variant's PoI CI lies above 0.5.
* BitFlip's variants against each other (claim 5: τ > 0 against τ = 0, the soft target on the
  gradient term only against both terms, same τ and c, at d = 40): supported if the
  expected better variant's IQM AUC interval lies wholly above the other's, not supported if
  wholly below, inconclusive if they overlap (and MIN_SEEDS).
* "sharing the goal encoder helps both methods" (claim 3): from ablations whose change
  concerns `share_encoder` on DriveSeek or NoisySeek, P(a seed with the shared encoder
  scores a higher AUC than a seed with separate encoders), all d pooled, per variant of
  DDPG and Multi-ReenGAGE, read as "A beats B" (and MIN_SEEDS); supported only if both
  methods are (a method no ablation covers makes a supported reading inconclusive); not
  covered without such an ablation.
* runtime: the median over settings of (wall time with / without) within the paper's
  +34..60 % widened by 10 points, 1.24..1.70 (supported); from 1.0 to the band "cheaper
  than the paper" and from the band to 2.0 "costlier than the paper" (a constant factor
  still, outside the measured range); below 1.0 or above 2.0 (not supported).
* theory: per environment, supported if the TD slope's CI lies above the gradient slope's
  and the slopes are near 2 and 1 (within 0.5); not supported if the TD slope's CI lies
  below the gradient's or a CI lies wholly outside its expected band; else inconclusive.
A claim made of several parts takes its parts' verdict when they agree; otherwise it is not
supported if any part is, too few seeds if any part is, and inconclusive otherwise.
Diverged seeds are left out of the statistics; the report shows how many there were beside
every comparison.

A control column (an independent implementation of one of our methods, `labels.CONTROLS`:
Stable-Baselines3's DDPG+HER for our DDPG+HER) enters no claim: each experiment's section
says per d whether our method's IQM AUC lies inside, above or below the control's interval.

Usage:
    python -m reengage.analysis.report --tables results/tables --figures results/figures \
        --out results/report.md [--theory results/tables/theory_slopes.csv] [--note TEXT] \
        [--ablations results/tables/ablations]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reengage.analysis.ablation import ABLATION_COLUMNS
from reengage.analysis.aggregate import (
    AnalysisError,
    OneLineParser,
    atomic_write_text,
    require_file,
    require_suffix,
    run_cli,
)
from reengage.analysis.labels import (
    CONTROLS,
    EXPERIMENT_FIGURES,
    dim_name,
    figure_name,
    metric_name,
)
from reengage.analysis.runtime import PAPER_RATIO_RANGE, RUNTIME_COLUMNS
from reengage.analysis.select import read_selection
from reengage.analysis.stats import STATS_COLUMNS

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
TOO_FEW_SEEDS = "too few seeds"
CHEAPER, COSTLIER = "cheaper than the paper", "costlier than the paper"
NOT_COVERED = "not covered by this config"
# Below this many usable seeds per d on either side, an interval is not evidence enough.
MIN_SEEDS = 5
RUNTIME_BAND = (PAPER_RATIO_RANGE[0] - 0.10, PAPER_RATIO_RANGE[1] + 0.10)
RUNTIME_FAR = (1.0, 2.0)
THEORY_EXPECTED = {"td": 2.0, "gradient": 1.0}
THEORY_TOLERANCE = 0.5

# What the paper's settings were (docs/paper.md section 4), to say whether this run is reduced.
PAPER_SETUP = {
    "ContinuousSeek": {"dims": [5, 10, 20], "seeds": 20, "batches": 3, "lrs": 4,
                       "steps": {10: 50_000, 20: 400_000}},
    "DriveSeek": {"steps": {None: 160_000}},
    "NoisySeek": {"steps": {None: 160_000}},
    "BitFlip": {"dims": [20, 40], "steps": {20: 200_000, 40: 1_600_000}},
    # A member's env steps: epochs x 50 cycles x 19 workers x 2 envs x T (50; the block 100).
    "HandReach": {"steps": {None: 50 * 50 * 19 * 2 * 50}},
    "HandManipulateBlockRotateXYZ": {"steps": {None: 200 * 50 * 19 * 2 * 100}},
}
# The SAC appendix's grid on ContinuousSeek (docs/paper.md §4): 10 seeds, 7 batch × 5 lr.
PAPER_SAC_GRID = {"seeds": 10, "batches": 7, "lrs": 5}


# -- reading the tables ---------------------------------------------------------------------
@dataclass
class Experiment:
    name: str
    selection: pd.DataFrame
    stats: pd.DataFrame | None
    runtime: pd.DataFrame | None
    runtime_md: str | None
    figure: Path

    @property
    def chosen(self) -> pd.DataFrame:
        return self.selection[self.selection["selected"]]

    def other_figures(self) -> list[tuple[str, Path]]:
        """(what it shows, path) of each figure beside the learning curves that exists."""
        found = [(what, self.figure.with_name(f"{figure_name(self.name, kind)}.png"))
                 for kind, what in EXPERIMENT_FIGURES.items()]
        return [(what, path) for what, path in found if path.is_file()]


def _read_optional_csv(path: Path, columns: list[str] | None = None,
                       producer: str = "") -> pd.DataFrame | None:
    """The table at `path` if there is one, with `columns` checked (a table from an older
    version of a stage is refused rather than half-read)."""
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise AnalysisError(f"{path}: not a readable CSV ({error})") from None
    missing = [c for c in columns or [] if c not in table.columns]
    if missing:
        raise AnalysisError(f"{path}: missing columns {', '.join(missing)}; regenerate it "
                            f"with {producer}")
    return table


def load_experiments(tables: Path, figures: Path,
                     names: list[str] | None = None) -> list[Experiment]:
    """Every `tables/*/selection.csv` (or only the named experiments)."""
    if not tables.is_dir():
        raise AnalysisError(f"--tables {tables}: not a directory")
    if names:
        directories = [tables / name for name in names]
        for directory in directories:
            require_file(directory / "selection.csv", "--experiment")
    else:
        directories = sorted(d for d in tables.iterdir() if (d / "selection.csv").is_file())
    experiments = []
    for directory in directories:
        md = directory / "runtime.md"
        experiments.append(Experiment(
            name=directory.name,
            selection=read_selection(directory / "selection.csv"),
            stats=_read_optional_csv(directory / "stats.csv", STATS_COLUMNS,
                                     "reengage.analysis.stats"),
            runtime=_read_optional_csv(directory / "runtime.csv", RUNTIME_COLUMNS,
                                       "reengage.analysis.runtime"),
            runtime_md=md.read_text(encoding="utf-8") if md.is_file() else None,
            figure=figures / f"{directory.name}.png",
        ))
    return experiments


def read_theory(path: Path) -> pd.DataFrame:
    """theory_slopes.csv: env, loss (td | gradient), slope, ci_low, ci_high."""
    require_file(path, "--theory")
    table = _read_optional_csv(path, ["env", "loss", "slope", "ci_low", "ci_high"],
                               "the theory stage")
    assert table is not None  # require_file above
    unknown = sorted(set(table["loss"]) - set(THEORY_EXPECTED))
    if unknown:
        raise AnalysisError(f"--theory {path}: unknown loss {unknown} (expected td, gradient)")
    return table


@dataclass
class Ablation:
    """One ablation table (reengage.analysis.ablation): `ablated` is `reference` with
    `change` applied."""

    name: str
    change: str
    reference: str
    ablated: str
    table: pd.DataFrame


def load_ablations(directory: Path) -> list[Ablation]:
    """Every `directory/*.csv` written by reengage.analysis.ablation, by name."""
    if not directory.is_dir():
        raise AnalysisError(f"--ablations {directory}: not a directory")
    ablations = []
    for path in sorted(directory.glob("*.csv")):
        table = _read_optional_csv(path, ABLATION_COLUMNS, "reengage.analysis.ablation")
        assert table is not None  # globbed
        if table.empty:
            raise AnalysisError(f"--ablations {path}: no rows")
        first = table.iloc[0]
        ablations.append(Ablation(str(first["ablation"]), str(first["change"]),
                                  str(first["reference"]), str(first["ablated"]), table))
    if not ablations:
        raise AnalysisError(f"--ablations {directory}: no ablation table (*.csv) in it")
    return ablations


# -- formatting -----------------------------------------------------------------------------
def _num(value: float, digits: int = 2) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _ci(row: pd.Series, digits: int = 2) -> str:
    return f"{_num(row['estimate'], digits)} [{_num(row['ci_low'], digits)}, " \
           f"{_num(row['ci_high'], digits)}]"


def _dims(tasks: str) -> str:
    """stats.csv's `d5;d10;d20` -> `5, 10, 20`."""
    return ", ".join(t.removeprefix("d") for t in str(tasks).split(";"))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def combine(verdicts: list[str]) -> str:
    """Parts that agree -> their verdict; else any not supported -> not supported; any too
    few seeds -> too few seeds; else inconclusive."""
    if not verdicts:
        return NOT_COVERED
    if len(set(verdicts)) == 1:
        return verdicts[0]
    if NOT_SUPPORTED in verdicts:
        return NOT_SUPPORTED
    if TOO_FEW_SEEDS in verdicts:
        return TOO_FEW_SEEDS
    return INCONCLUSIVE


def seed_verdict(verdict: str, n_runs: float, baseline_n_runs: float) -> str:
    """`verdict`, unless either side has fewer than MIN_SEEDS seeds: then too few seeds."""
    if min(n_runs, baseline_n_runs) < MIN_SEEDS:
        return TOO_FEW_SEEDS
    return verdict


def _verdict_cell(verdict: str, reading: str, n_runs: float, baseline_n_runs: float) -> str:
    """The table cell: the verdict, and what the interval alone said when seeds were few."""
    if verdict == TOO_FEW_SEEDS and reading != TOO_FEW_SEEDS:
        return (f"{TOO_FEW_SEEDS} ({int(n_runs)} / {int(baseline_n_runs)}; the interval alone "
                f"reads {reading})")
    return verdict


def interval_verdict(low: float, high: float, threshold: float) -> str:
    """Supported if the CI lies above `threshold`, not supported if below, else inconclusive."""
    if low > threshold:
        return SUPPORTED
    if high < threshold:
        return NOT_SUPPORTED
    return INCONCLUSIVE


# -- claims ---------------------------------------------------------------------------------
@dataclass
class Part:
    """One checkable statement of a claim: its verdict (None: not covered) and evidence."""

    statement: str
    verdict: str | None
    evidence: list[str] = field(default_factory=list)
    why_not_covered: str = ""


@dataclass(frozen=True)
class Comparison:
    """A treatment method against a baseline method on environments whose name starts with
    one of `envs` (HandManipulateBlock covers its Rotate/Full variants)."""

    envs: tuple[str, ...]
    baseline: str
    treatment: str

    def env_matches(self, env: str) -> bool:
        return any(env.startswith(prefix) for prefix in self.envs)


def _pair_rows(experiments: list[Experiment], comparison: Comparison) -> pd.DataFrame:
    frames = [e.stats for e in experiments if e.stats is not None and not e.stats.empty]
    if not frames:
        return pd.DataFrame()
    stats = pd.concat(frames, ignore_index=True)
    keep = stats["env"].map(comparison.env_matches) & (stats["method"] == comparison.treatment)
    pairs = keep & (stats["baseline_method"] == comparison.baseline)
    iqm = keep | ((stats["method"] == comparison.baseline) & stats["env"].map(
        comparison.env_matches))
    return stats[pairs | (iqm & (stats["statistic"] == "iqm"))]


def _pick(rows: pd.DataFrame, **where) -> pd.DataFrame:
    mask = np.ones(len(rows), dtype=bool)
    for key, value in where.items():
        # A nullable column (stats' `dim`, Int64) compares to NA on its missing rows.
        mask &= (rows[key].isna() if value is None
                 else rows[key].eq(value).fillna(False)).to_numpy(dtype=bool)
    return rows[mask]


def _variants(rows: pd.DataFrame, method: str) -> pd.DataFrame:
    """(experiment, env, variant, label, c) of `method`, by c."""
    found = rows[rows["method"] == method]
    return found.drop_duplicates(["experiment", "env", "variant"]).sort_values(
        ["experiment", "env", "c"])[["experiment", "env", "variant", "label", "c"]]


def _comparison_table(rows: pd.DataFrame, comparison: Comparison, score: str,
                      verdict_of: Callable[[pd.Series], str] | None,
                      scope: str = "all_d", dim: int | None = None) -> tuple[list[str], list]:
    """Evidence lines (a markdown table) and the per-variant verdicts of a PoI rule."""
    verdicts, body = [], []
    for v in _variants(rows, comparison.treatment).itertuples(index=False):
        here = _pick(rows, experiment=v.experiment, env=v.env, score=score)
        poi = _pick(here, variant=v.variant, statistic="poi", scope=scope,
                    **({"dim": dim} if dim is not None else {}))
        if poi.empty:
            continue
        poi = poi.iloc[0]
        dims = _dims(poi["tasks"])
        mine = _pick(here, variant=v.variant, statistic="iqm", scope=scope,
                     **({"dim": dim} if dim is not None else {}))
        base = _pick(here, variant=poi["baseline_variant"], statistic="iqm", scope=scope,
                     **({"dim": dim} if dim is not None else {}))
        per_d = _pick(here, variant=v.variant, statistic="iqm_diff", scope="d")
        if dim is not None:
            per_d = per_d[per_d["dim"] == dim]
        diffs = ", ".join(f"d={int(r['dim'])}: {float(r['estimate']):+.3f}"
                          for _, r in per_d.sort_values("dim").iterrows())
        row = [
            f"{v.experiment}", f"{v.env} d={dims}", v.label,
            _ci(mine.iloc[0]) if not mine.empty else "–",
            f"{_ci(base.iloc[0]) if not base.empty else '–'}",
            diffs or "–", _ci(poi),
            f"{int(poi['n_runs'])} / {int(poi['baseline_n_runs'])}",
            f"{int(poi['n_diverged'])} / {int(poi['baseline_n_diverged'])}",
        ]
        if verdict_of:
            reading = verdict_of(poi)
            verdicts.append(seed_verdict(reading, poi["n_runs"], poi["baseline_n_runs"]))
            row.append(_verdict_cell(verdicts[-1], reading, poi["n_runs"],
                                     poi["baseline_n_runs"]))
        body.append(row)
    if not body:
        return [], []
    what = "IQM AUC" if score == "auc" else f"IQM {score}"
    header = ["experiment", "task", "method", f"{what} [95% CI]", f"{what} baseline",
              "IQM diff per d", "P(improvement) [95% CI]", "seeds per d (method / baseline)",
              "diverged (method / baseline)"] + (["verdict"] if verdict_of else [])
    return _table(header, body), verdicts


def _beats_part(experiments: list[Experiment], comparison: Comparison, statement: str,
                dim: int | None = None, c_at_most: float | None = None,
                any_c: bool = False) -> Part:
    """"A beats B" (module docstring). `c_at_most` keeps the treatment's variants with c up
    to it (the paper's small α); `any_c` makes the part supported when one c is (else the
    parts' `combine`), for a claim made at some small α rather than at every α."""
    rows = _pair_rows(experiments, comparison)
    if c_at_most is not None and not rows.empty:
        # A relative tolerance: c travels through text (paths, CSV) as a float.
        rows = rows[(rows["method"] != comparison.treatment)
                    | (rows["c"] <= c_at_most * (1 + 1e-9))]
    if rows.empty:
        return Part(statement, None)
    scope = "all_d" if dim is None else "d"

    def rule(poi: pd.Series) -> str:
        return interval_verdict(poi["ci_low"], poi["ci_high"], 0.5)

    lines, verdicts = _comparison_table(rows, comparison, "auc", rule, scope, dim)
    if not verdicts:
        why = (f"needs {comparison.treatment} at c ≤ {c_at_most:g}"
               if c_at_most is not None else "")
        return Part(statement, None, why_not_covered=why)
    if any_c and SUPPORTED in verdicts:
        verdicts = [SUPPORTED]
    final, _ = _comparison_table(rows, comparison, "final", None, scope, dim)
    metrics = sorted(rows["metric"].dropna().unique())
    evidence = [f"Normalised area under the {', '.join(map(metric_name, metrics))} curve "
                "(decides the verdict):", "", *lines, "",
                "Final value (for reference):", "", *final]
    return Part(statement, combine(verdicts), evidence)


def _growth_part(experiments: list[Experiment], comparison: Comparison,
                 statement: str) -> Part:
    rows = _pair_rows(experiments, comparison)
    growth = rows[rows["statistic"] == "margin_growth"] if not rows.empty else rows
    if growth.empty:
        return Part(statement, None,
                    why_not_covered="needs two d values or more" if not rows.empty else "")
    body, verdicts = [], []
    for _, r in growth.sort_values(["experiment", "env", "score", "c"]).iterrows():
        reading = interval_verdict(r["ci_low"], r["ci_high"], 0.0)
        verdict = seed_verdict(reading, r["n_runs"], r["baseline_n_runs"])
        cell = _verdict_cell(verdict, reading, r["n_runs"], r["baseline_n_runs"])
        if r["score"] == "auc":
            verdicts.append(verdict)
        body.append([r["experiment"], f"{r['env']} d={_dims(r['tasks'])}",
                     r["label"], r["score"], _ci(r, 3),
                     cell if r["score"] == "auc" else f"({cell}; not used)"])
    lines = ["Margin growth = IQM difference (method − baseline) at the largest d minus at "
             "the smallest d:", "",
             *_table(["experiment", "tasks", "method", "score", "growth [95% CI]", "verdict"],
                     body)]
    return Part(statement, combine(verdicts), lines)


def _no_gain_part(experiments: list[Experiment], comparison: Comparison,
                  statement: str) -> Part:
    rows = _pair_rows(experiments, comparison)
    if rows.empty:
        return Part(statement, None)

    def rule(poi: pd.Series) -> str:
        return NOT_SUPPORTED if poi["ci_low"] > 0.5 else SUPPORTED

    lines, verdicts = _comparison_table(rows, comparison, "auc", rule)
    if not verdicts:
        return Part(statement, None)
    lines += ["", "(No significant gain is absence of evidence: with few seeds the CIs are "
              "wide.)"]
    return Part(statement, combine(verdicts), lines)


def _instability_part(experiments: list[Experiment], comparison: Comparison,
                      statement: str) -> Part:
    """The largest c against the smallest, per experiment and env: supported if the largest
    lost more seeds to divergence, or its IQM AUC interval lies below the smallest's; not
    supported if its interval lies above; inconclusive otherwise (and MIN_SEEDS run a
    side). Diverged seeds are counted from selection.csv, which has every variant, even one
    whose seeds all diverged (stats.csv leaves those out: no usable seed)."""
    chosen = [e.chosen.assign(experiment=e.name) for e in experiments]
    chosen = pd.concat(chosen, ignore_index=True) if chosen else pd.DataFrame()
    if chosen.empty:
        return Part(statement, None)
    mine = chosen[chosen["env"].map(comparison.env_matches)
                  & (chosen["method"] == comparison.treatment)]
    if mine.empty:
        return Part(statement, None)
    frames = [e.stats for e in experiments if e.stats is not None and not e.stats.empty]
    stats = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    body, verdicts = [], []
    for (experiment, env), group in mine.groupby(["experiment", "env"], sort=True):
        # Pooled over d (a robotics task has one): a variant's seeds and divergences.
        per_c = group.groupby("c").agg(variant=("variant", "first"), label=("label", "first"),
                                       n_seeds=("n_seeds", "sum"),
                                       n_diverged=("n_diverged", "sum")).sort_index()
        if len(per_c) < 2:
            continue
        small, large = per_c.iloc[0], per_c.iloc[-1]

        def iqm(variant: str, experiment: str = experiment, env: str = env) -> pd.Series | None:
            if stats.empty:
                return None
            found = _pick(stats, experiment=experiment, env=env, variant=variant,
                          statistic="iqm", scope="all_d", score="auc")
            return None if found.empty else found.iloc[0]

        low_c, high_c = iqm(small["variant"]), iqm(large["variant"])
        if large["n_diverged"] > small["n_diverged"]:
            reading = SUPPORTED
        elif low_c is not None and high_c is not None and high_c["ci_high"] < low_c["ci_low"]:
            reading = SUPPORTED
        elif low_c is not None and high_c is not None and high_c["ci_low"] > low_c["ci_high"]:
            reading = NOT_SUPPORTED
        else:
            reading = INCONCLUSIVE
        verdicts.append(seed_verdict(reading, large["n_seeds"], small["n_seeds"]))
        cell = _verdict_cell(verdicts[-1], reading, large["n_seeds"], small["n_seeds"])
        for row, scores in ((small, low_c), (large, high_c)):
            body.append([experiment, env, row["label"],
                         _ci(scores) if scores is not None else "– (no seed left)",
                         f"{int(row['n_diverged'])} of {int(row['n_seeds'])}",
                         cell if row is large else ""])
    if not body:
        return Part(statement, None, why_not_covered="needs two values of c or more")
    return Part(statement, combine(verdicts), [
        "The smallest c against the largest (supported if the largest lost more seeds to "
        "divergence, or its IQM AUC interval lies below the smallest's):", "",
        *_table(["experiment", "env", "method", "IQM AUC [95% CI]", "diverged seeds",
                 "verdict"], body)])


def _runtime_part(experiments: list[Experiment], pairs: list[Comparison],
                  statement: str) -> Part:
    frames = [e.runtime for e in experiments if e.runtime is not None and not e.runtime.empty]
    if not frames:
        return Part(statement, None)
    runtime = pd.concat(frames, ignore_index=True)
    wanted = np.zeros(len(runtime), dtype=bool)
    for pair in pairs:
        wanted |= ((runtime["method"] == pair.treatment)
                   & (runtime["baseline_method"] == pair.baseline)).to_numpy()
    rows = runtime[wanted & runtime["ratio"].notna().to_numpy()]
    if rows.empty:
        return Part(statement, None)
    ratios = rows["ratio"].to_numpy(float)
    median = float(np.median(ratios))
    verdict = runtime_verdict(median)
    slowdown = rows["update_slowdown"].dropna()
    body = [[r["experiment"], r["env"], r["dim"], r["batch_size"], r["label"],
             f"{r['wall_time_mean_s']:.1f}", f"{r['baseline_wall_time_mean_s']:.1f}",
             _num(r["ratio"]), _num(r["update_slowdown"]), int(r["n_populations"])]
            for _, r in rows.iterrows()]
    evidence = [
        f"Median wall-time ratio over {len(ratios)} settings: **{median:.2f}** (range "
        f"{ratios.min():.2f}–{ratios.max():.2f}); median update-rate slowdown "
        f"{_num(float(slowdown.median()) if not slowdown.empty else float('nan'))}. "
        f"Paper: {PAPER_RATIO_RANGE[0]:.2f}–{PAPER_RATIO_RANGE[1]:.2f} (on GPUs, one seed "
        "per process; here populations of seeds share a process).",
        "",
        *_table(["experiment", "env", "d", "batch", "method", "with (s)", "without (s)",
                 "ratio", "update slowdown", "populations"], body),
    ]
    if verdict in (CHEAPER, COSTLIER):
        evidence += ["", f"ReenGAGE cost {median - 1:+.0%} here against the paper's "
                     f"{PAPER_RATIO_RANGE[0] - 1:+.0%} … {PAPER_RATIO_RANGE[1] - 1:+.0%}: a "
                     "constant factor as the paper says, but "
                     f"{'below' if verdict == CHEAPER else 'above'} the band "
                     f"{RUNTIME_BAND[0]:.2f}–{RUNTIME_BAND[1]:.2f} the verdict accepts as the "
                     "paper's measurement."]
    if ratios.max() / ratios.min() > 1.5:
        evidence += ["", "The ratios vary by more than 1.5× between settings: timings on a "
                     "shared machine are noisy (were several populations run at once?); "
                     "the verdict uses the median."]
    return Part(statement, verdict, evidence)


def runtime_verdict(median: float) -> str:
    """Claim 6 from the median wall-time ratio (with / without ReenGAGE)."""
    if RUNTIME_BAND[0] <= median <= RUNTIME_BAND[1]:
        return SUPPORTED
    if median < RUNTIME_FAR[0] or median > RUNTIME_FAR[1]:
        return NOT_SUPPORTED
    return CHEAPER if median < RUNTIME_BAND[0] else COSTLIER


def _theory_part(theory: pd.DataFrame | None, statement: str) -> Part:
    if theory is None:
        return Part(statement, None)
    body, verdicts = [], []
    for env, group in theory.groupby("env", sort=True):
        by_loss = {r["loss"]: r for _, r in group.iterrows()}
        td, grad = by_loss.get("td"), by_loss.get("gradient")
        if td is None or grad is None:
            body.append([env, "–", "–", "needs both td and gradient rows"])
            continue

        def outside(row: pd.Series, loss: str) -> bool:
            expected = THEORY_EXPECTED[loss]
            return (row["ci_high"] < expected - THEORY_TOLERANCE
                    or row["ci_low"] > expected + THEORY_TOLERANCE)

        def near(row: pd.Series, loss: str) -> bool:
            return abs(row["slope"] - THEORY_EXPECTED[loss]) <= THEORY_TOLERANCE

        if td["ci_high"] < grad["ci_low"] or outside(td, "td") or outside(grad, "gradient"):
            verdict = NOT_SUPPORTED
        elif td["ci_low"] > grad["ci_high"] and near(td, "td") and near(grad, "gradient"):
            verdict = SUPPORTED
        else:
            verdict = INCONCLUSIVE
        verdicts.append(verdict)
        body.append([env, f"{td['slope']:.2f} [{td['ci_low']:.2f}, {td['ci_high']:.2f}]",
                     f"{grad['slope']:.2f} [{grad['ci_low']:.2f}, {grad['ci_high']:.2f}]",
                     verdict])
    lines = ["Log-log slope of transitions needed versus d (expected about 2 for the TD loss, "
             "1 for the gradient loss):", "",
             *_table(["env", "TD slope [95% CI]", "gradient slope [95% CI]", "verdict"], body)]
    return Part(statement, combine(verdicts) if verdicts else None, lines)


@dataclass(frozen=True)
class Claim:
    number: int
    text: str
    parts: Callable[[list[Experiment], pd.DataFrame | None], list[Part]]
    uncovered_always: tuple[str, ...] = ()
    ablation_parts: Callable[[list[Ablation]], list[Part]] | None = None
    """Parts decided from the ablation tables (read after `parts`)."""


CS = Comparison(("ContinuousSeek",), "ddpg_her", "reengage_her")
HAND_REACH = Comparison(("HandReach",), "ddpg_her", "reengage_her")
HAND_REACH_NORMALIZED = Comparison(("HandReach",), "ddpg_her", "reengage_her_normalized")
HAND_BLOCK = Comparison(("HandManipulateBlock",), "ddpg_her", "reengage_her")
HAND_BLOCK_NORMALIZED = Comparison(("HandManipulateBlock",), "ddpg_her",
                                   "reengage_her_normalized")
# The paper's "small α" on HandReach: weights of order 1e-4/d (docs/paper.md §4), i.e. c up
# to 1e-4 (the release's example weight); larger c belong to the sweep that showed instability.
SMALL_ALPHA_C = 1e-4
DRIVE = Comparison(("DriveSeek",), "ddpg", "multi_reengage")
NOISY = Comparison(("NoisySeek",), "ddpg", "multi_reengage")
SAC = Comparison(("ContinuousSeek",), "sac_her", "reengage_sac_her")
# BitFlip (claim 5): DQN+ReenGAGE's soft target on the gradient term only, at τ > 0, is the
# paper's working variant; τ = 0 (the hard max) and the soft target on both terms are
# compared with it at the same τ and c (reengage.registry names one method per use and τ).
BITFLIP_TAUS = ("05", "1")
BITFLIP = [Comparison(("BitFlip",), "dqn_her", f"dqn_reengage_her_t{t}") for t in BITFLIP_TAUS]
BITFLIP_HARD_MAX = [(f"dqn_reengage_her_t{t}", "dqn_reengage_her_t0") for t in BITFLIP_TAUS]
BITFLIP_BOTH_TERMS = [(f"dqn_reengage_her_t{t}", f"dqn_reengage_her_both_t{t}")
                      for t in BITFLIP_TAUS]
BITFLIP_NOT_RUN = "no BitFlip experiment in this run"
RUNTIME_PAIRS = [CS, HAND_REACH, HAND_BLOCK, DRIVE, NOISY, SAC, *BITFLIP]


def _merged(statement: str, parts: list[Part], why_not_covered: str) -> Part:
    """One part from several comparisons of the same statement: their evidence in turn."""
    covered = [p for p in parts if p.verdict is not None]
    if not covered:
        return Part(statement, None, why_not_covered=why_not_covered)
    evidence = [line for p in covered for line in [*p.evidence, ""]][:-1]
    return Part(statement, combine([p.verdict for p in covered]), evidence)


def _hand_block_no_gain(experiments: list[Experiment]) -> Part:
    """Claim 2's block: no significant gain with or without normalisation, i.e. neither
    ReenGAGE+HER nor Normalized ReenGAGE+HER beats DDPG+HER (each of its c)."""
    statement = ("HandManipulateBlock: no significant gain, ReenGAGE+HER and Normalized "
                 "ReenGAGE+HER against DDPG+HER")
    return _merged(statement, [_no_gain_part(experiments, pair, statement)
                               for pair in (HAND_BLOCK, HAND_BLOCK_NORMALIZED)],
                   "needs DDPG+HER and ReenGAGE+HER or Normalized ReenGAGE+HER on "
                   "HandManipulateBlock")


def _reported_only(part: Part) -> Part:
    """A part shown with its table but without a verdict (the paper states no claim)."""
    if part.verdict is not None:
        part.verdict = None
        part.statement += " — see the table"
    return part


def _bitflip_ran(experiments: list[Experiment]) -> bool:
    return any(e.stats is not None and e.stats["env"].map(BITFLIP[0].env_matches).any()
               for e in experiments)


def _bitflip_against_dqn(experiments: list[Experiment], statement: str, dim: int) -> Part:
    why = (f"needs DQN+HER and the soft target on the gradient term only at d = {dim}"
           if _bitflip_ran(experiments) else BITFLIP_NOT_RUN)
    return _merged(statement, [_beats_part(experiments, pair, statement, dim=dim)
                               for pair in BITFLIP], why)


def _bitflip_beats(experiments: list[Experiment], _theory) -> Part:
    return _bitflip_against_dqn(experiments, "d = 40: the soft target on the gradient term "
                                "only (τ = 0.5, 1) beats DQN+HER", 40)


def _bitflip_minor(experiments: list[Experiment], _theory) -> Part:
    part = _bitflip_against_dqn(experiments, "d = 20: a minor gain (reported, no verdict)", 20)
    if part.verdict is not None:
        part.verdict = None
        part.statement += " — see the table"
    return part


def _interval_part(experiments: list[Experiment], statement: str,
                   pairs: list[tuple[str, str]], dim: int) -> Part:
    """For each (expected better, expected worse) method pair on BitFlip at `dim`, at each c
    both ran: supported if the better one's IQM AUC interval lies above the other's, not
    supported if below, inconclusive if they overlap (stats.csv compares each variant with
    the baseline only, so two variants are told apart by their intervals: conservative)."""
    if not _bitflip_ran(experiments):
        return Part(statement, None, why_not_covered=BITFLIP_NOT_RUN)
    stats = pd.concat([e.stats for e in experiments if e.stats is not None], ignore_index=True)
    rows = stats[stats["env"].map(BITFLIP[0].env_matches) & (stats["statistic"] == "iqm")
                 & (stats["scope"] == "d") & stats["dim"].eq(dim).fillna(False).astype(bool)
                 & (stats["score"] == "auc")]
    body, verdicts = [], []
    for _, here in rows.groupby(["experiment", "c"], sort=True):
        for better, worse in pairs:
            high, low = _pick(here, method=better), _pick(here, method=worse)
            if high.empty or low.empty:
                continue
            high, low = high.iloc[0], low.iloc[0]
            reading = interval_verdict(high["ci_low"] - low["ci_high"],
                                       high["ci_high"] - low["ci_low"], 0.0)
            verdicts.append(seed_verdict(reading, high["n_runs"], low["n_runs"]))
            body.append([high["experiment"], high["label"], _ci(high), low["label"], _ci(low),
                         f"{int(high['n_runs'])} / {int(low['n_runs'])}",
                         f"{int(high['n_diverged'])} / {int(low['n_diverged'])}",
                         _verdict_cell(verdicts[-1], reading, high["n_runs"], low["n_runs"])])
    if not body:
        return Part(statement, None, why_not_covered=f"needs both variants at d = {dim}")
    return Part(statement, combine(verdicts), [
        f"IQM of the normalised AUC at d = {dim} [95% CI], the expected better variant first "
        "(supported when its interval lies wholly above the other's):", "",
        *_table(["experiment", "method", "IQM AUC", "compared with", "IQM AUC",
                 "seeds (method / other)", "diverged (method / other)", "verdict"], body)])


# -- ablations -------------------------------------------------------------------------------
# An item of an ablation's change (reengage.workflow.ablation_change) that toggles the goal
# encoder's sharing, for every method or, prefixed with its name, for one: either way round.
SHARING_CHANGE = re.compile(r"(?:^|; )(?:([a-z][a-z0-9_]*): )?networks\.share_encoder: "
                            r"(true|false) -> (true|false)(?=;|$)")


def sharing_toggles(change: str) -> dict[str | None, bool]:
    """Method (None: every method) -> whether the reference is the side that shares the
    encoder, for each item of `change` that toggles `share_encoder`."""
    return {found.group(1): found.group(2) == "true"
            for found in SHARING_CHANGE.finditer(change) if found.group(2) != found.group(3)}


def _ablation_variants(table: pd.DataFrame) -> list[tuple[str, dict[str, pd.Series]]]:
    """(env, statistic -> row) of each variant of an ablation table: its rows over all d,
    on the normalised AUC, by env and c."""
    auc = table[(table["score"] == "auc") & (table["scope"] == "all_d")]
    found = []
    for (env, _variant), group in auc.sort_values(["env", "method", "c"]).groupby(
            ["env", "variant"], sort=False):
        by = {row["statistic"]: row for _, row in group.iterrows()}
        if {"poi", "iqm_reference", "iqm_ablated"} <= set(by):
            found.append((str(env), by))
    return found


def _flipped(poi: pd.Series) -> pd.Series:
    """P(ablated better) from P(reference better): PoI(y, x) = 1 - PoI(x, y), ties 1/2."""
    flipped = poi.copy()
    flipped["estimate"], flipped["ci_low"], flipped["ci_high"] = (
        1 - poi["estimate"], 1 - poi["ci_high"], 1 - poi["ci_low"])
    return flipped


def _encoder_sharing_part(ablations: list[Ablation], statement: str) -> Part:
    """Claim 3's second half, from any ablation whose change concerns `share_encoder` on
    DriveSeek or NoisySeek: per variant of DDPG and Multi-ReenGAGE, P(a seed with the
    shared encoder scores a higher AUC than one with separate encoders), all d pooled, read
    as "A beats B"; supported only if both methods are (combine)."""
    methods = (DRIVE.baseline, DRIVE.treatment)
    body, verdicts, seen, changes = [], [], set(), []
    for ablation in ablations:
        toggles = sharing_toggles(ablation.change)
        for env, by in _ablation_variants(ablation.table):
            poi = by["poi"]
            shared_is_reference = toggles.get(poi["method"], toggles.get(None))
            if shared_is_reference is None or poi["method"] not in methods or not (
                    DRIVE.env_matches(env) or NOISY.env_matches(env)):
                continue
            shared, separate = (("reference", "ablated") if shared_is_reference
                                else ("ablated", "reference"))
            if not shared_is_reference:
                poi = _flipped(poi)
            reading = interval_verdict(poi["ci_low"], poi["ci_high"], 0.5)
            runs = poi[f"{shared}_n_runs"], poi[f"{separate}_n_runs"]
            verdicts.append(seed_verdict(reading, *runs))
            seen.add(poi["method"])
            body.append([ablation.name, f"{env} {dim_name(env)}={_dims(poi['tasks'])}",
                         poi["label"], _ci(by[f"iqm_{shared}"]), _ci(by[f"iqm_{separate}"]),
                         _ci(poi), f"{int(runs[0])} / {int(runs[1])}",
                         f"{int(poi[f'{shared}_n_diverged'])} / "
                         f"{int(poi[f'{separate}_n_diverged'])}",
                         _verdict_cell(verdicts[-1], reading, *runs)])
        if any(row[0] == ablation.name for row in body):
            changes.append(f"`{ablation.name}`: `{ablation.reference}` against "
                           f"`{ablation.ablated}`, which changes `{ablation.change}`")
    if not body:
        return Part(statement, None, why_not_covered="no ablation of `share_encoder` on "
                    "DriveSeek or NoisySeek; the config's `ablations` names one")
    verdict = combine(verdicts)
    evidence = ["Ablations: " + "; ".join(changes) + ". P(shared better) is the probability "
                "that a seed with the shared goal encoder scores a higher normalised AUC "
                "than a seed with separate encoders (decides the verdict):", "",
                *_table(["ablation", "task", "method", "IQM AUC shared [95% CI]",
                         "IQM AUC separate", "P(shared better) [95% CI]",
                         "seeds per d (shared / separate)", "diverged (shared / separate)",
                         "verdict"], body)]
    if any(";" in ablation.change for ablation in ablations
           if sharing_toggles(ablation.change)):
        evidence += ["", "The experiments differ in more than the encoder (the change "
                     "above): the comparison is not of sharing alone."]
    missing = [m for m in methods if m not in seen]
    if missing:
        evidence += ["", f"No ablation covers {', '.join(missing)}: sharing cannot be said "
                     "to help both methods."]
        if verdict == SUPPORTED:
            verdict = INCONCLUSIVE
    return Part(statement, verdict, evidence)


def _ablations_section(ablations: list[Ablation]) -> list[str]:
    """Each ablation's table: per variant, both sides' IQM AUC, their difference and
    P(reference better), with the verdict of "the reference beats the ablated"."""
    if not ablations:
        return ["(no ablation tables)", ""]
    lines = ["Each ablation compares an experiment (the reference) with one that changes "
             "one thing in it (the ablated), method variant by method variant, each side at "
             "its own selected cells: IQM of the normalised area under the curve, all d "
             "pooled, with 95 % stratified-bootstrap CIs. The verdict reads *the reference "
             "beats the ablated* by the rule of *A beats B*.", ""]
    for ablation in ablations:
        body = []
        for env, by in _ablation_variants(ablation.table):
            poi, diff = by["poi"], by.get("iqm_diff")
            runs = poi["reference_n_runs"], poi["ablated_n_runs"]
            reading = interval_verdict(poi["ci_low"], poi["ci_high"], 0.5)
            body.append([f"{env} {dim_name(env)}={_dims(poi['tasks'])}", poi["label"],
                         _ci(by["iqm_reference"]), _ci(by["iqm_ablated"]),
                         _ci(diff) if diff is not None else "–", _ci(poi),
                         f"{int(runs[0])} / {int(runs[1])}",
                         f"{int(poi['reference_n_diverged'])} / "
                         f"{int(poi['ablated_n_diverged'])}",
                         _verdict_cell(seed_verdict(reading, *runs), reading, *runs)])
        metrics = sorted(ablation.table["metric"].dropna().unique())
        reps = int(ablation.table["reps"].iloc[0])
        lines += [f"### {ablation.name}", "",
                  f"`{ablation.reference}` (reference) against `{ablation.ablated}` "
                  f"(ablated), which changes `{ablation.change}`. Metric: "
                  f"{', '.join(map(metric_name, metrics))}; {reps} bootstrap repetitions.",
                  "",
                  *_table(["task", "method", "IQM AUC reference [95% CI]", "IQM AUC ablated",
                           "IQM diff (reference − ablated)", "P(reference better) [95% CI]",
                           "seeds per d (reference / ablated)",
                           "diverged (reference / ablated)", "verdict: reference better"],
                          body), ""]
    return lines


CLAIMS = [
    Claim(1, "ContinuousSeek: ReenGAGE+HER beats DDPG+HER, and the margin grows with d "
          "(small at d=5, large at d=20).",
          lambda ex, th: [
              _beats_part(ex, CS, "ReenGAGE+HER beats DDPG+HER (every c, all d pooled)"),
              _growth_part(ex, CS, "the margin grows with d"),
          ]),
    Claim(2, "HandReach (15-D goal): ReenGAGE improves over DDPG+HER at small α; too large α "
          "destabilises. HandManipulateBlock (7-D, mixed units): no significant gain, with or "
          "without normalisation.",
          lambda ex, th: [
              _beats_part(ex, HAND_REACH, f"HandReach: ReenGAGE+HER beats DDPG+HER at a small "
                          f"α (some c ≤ {SMALL_ALPHA_C:g})", c_at_most=SMALL_ALPHA_C,
                          any_c=True),
              _instability_part(ex, HAND_REACH, "HandReach: the largest α is less stable than "
                                "the smallest"),
              _hand_block_no_gain(ex),
              _reported_only(_beats_part(ex, HAND_REACH_NORMALIZED, "HandReach: Normalized "
                                         "ReenGAGE+HER against DDPG+HER (docs/paper.md §1: it "
                                         "matched plain ReenGAGE there)")),
          ]),
    Claim(3, "DriveSeek and NoisySeek: Multi-ReenGAGE beats DDPG; NoisySeek also plots the "
          "greedy agent. Sharing the goal encoder helps both methods.",
          lambda ex, th: [
              _beats_part(ex, DRIVE, "DriveSeek: Multi-ReenGAGE beats DDPG"),
              _beats_part(ex, NOISY, "NoisySeek: Multi-ReenGAGE beats DDPG"),
          ], ablation_parts=lambda ab: [
              _encoder_sharing_part(ab, "sharing the goal encoder helps both methods"),
          ]),
    Claim(4, "SAC+ReenGAGE+HER beats SAC+HER on ContinuousSeek.",
          lambda ex, th: [_beats_part(ex, SAC, "SAC+ReenGAGE+HER beats SAC+HER")]),
    Claim(5, "BitFlip d=40: ReenGAGE with soft target on the gradient term only beats DQN+HER "
          "and beats τ = 0; soft target on both terms hurts. d=20: minor gain.",
          lambda ex, th: [
              _bitflip_beats(ex, th),
              _interval_part(ex, "d = 40: τ = 0.5 and 1 beat τ = 0 (the hard max), gradient "
                             "term only", BITFLIP_HARD_MAX, dim=40),
              _interval_part(ex, "d = 40: the soft target on both terms hurts (below the "
                             "gradient term only, same τ)", BITFLIP_BOTH_TERMS, dim=40),
              _bitflip_minor(ex, th),
          ]),
    Claim(6, "Runtime: ReenGAGE costs a constant factor (measured +34 % … +60 %).",
          lambda ex, th: [_runtime_part(ex, RUNTIME_PAIRS, "wall time with / without "
                                        "ReenGAGE at equal settings")]),
    Claim(7, "Theory: O(d²) vs O(d) transitions on the Proposition 1 and 2 environments.",
          lambda ex, th: [_theory_part(th, "TD slope ≈ 2, gradient slope ≈ 1, TD steeper")]),
]


# -- the report -----------------------------------------------------------------------------
def _paper_comparison(env: str, chosen: pd.DataFrame, cells: pd.DataFrame) -> str:
    """'reduced: ...' or 'as in the paper' or 'paper setting not recorded'."""
    setup = PAPER_SETUP.get(env)
    if setup is not None and set(chosen["method"]) <= {SAC.baseline, SAC.treatment}:
        setup = {**setup, **PAPER_SAC_GRID}
    if setup is None:
        return "paper setting not recorded here"
    notes = []
    dims = sorted(chosen["dim"].unique())
    if "dims" in setup and not set(dims) <= set(setup["dims"]):
        notes.append(f"d {', '.join(map(str, dims))} (paper "
                     f"{', '.join(map(str, setup['dims']))})")
    seeds = int(chosen["n_seeds"].max())
    if "seeds" in setup and seeds < setup["seeds"]:
        notes.append(f"{seeds} seeds (paper {setup['seeds']})")
    batches, lrs = cells["batch_size"].nunique(), cells["lr"].nunique()
    if "batches" in setup and batches * lrs < setup["batches"] * setup["lrs"]:
        notes.append(f"grid {batches}×{lrs} (paper {setup['batches']}×{setup['lrs']})")
    for dim in dims:
        paper_steps = setup["steps"].get(dim, setup["steps"].get(None))
        ours = int(chosen.loc[chosen["dim"] == dim, "last_step"].max())
        if paper_steps is not None and ours < paper_steps:
            notes.append(f"{ours:,} steps at d={dim} (paper {paper_steps:,})")
    return "reduced: " + "; ".join(notes) if notes else "as in the paper"


def _configuration(experiments: list[Experiment],
                   notes: dict[str, str] | None = None) -> list[str]:
    """One row per experiment and env: what ran, against the paper's setting, and the
    experiment's own note (the config's `note`, which states a reduction) where it has one."""
    notes = notes or {}
    body = []
    for e in experiments:
        for env, cells in e.selection.groupby("env", sort=True):
            chosen = cells[cells["selected"]]
            if chosen.empty:
                continue
            labels = ", ".join(chosen.drop_duplicates("variant").sort_values(
                ["method", "c"], na_position="first")["label"])
            steps = sorted(chosen["last_step"].unique())
            body.append([
                e.name, env, ", ".join(map(str, sorted(chosen["dim"].unique()))), labels,
                f"{', '.join(map(str, sorted(cells['batch_size'].unique())))} × "
                f"{', '.join(f'{x:g}' for x in sorted(cells['lr'].unique()))}",
                f"{int(chosen['n_seeds'].min())}–{int(chosen['n_seeds'].max())}"
                if chosen["n_seeds"].nunique() > 1 else str(int(chosen["n_seeds"].iloc[0])),
                ", ".join(f"{s:,}" for s in steps),
                metric_name(str(chosen["metric"].iloc[0])),
                _paper_comparison(env, chosen, cells),
            ] + ([notes.get(e.name, "")] if notes else []))
    return _table(["experiment", "env", "d", "methods", "batch × lr", "seeds per cell",
                   "steps", "metric", "compared with the paper"]
                  + (["note"] if notes else []), body)


def reference_checks(experiments: list[Experiment], checks: dict[str, float]) -> list[str]:
    """The "Reference checks" section: each named experiment's every method variant must
    end (its final evaluation, mean over seeds) at or above the threshold, with no seed
    diverged or incomplete; a check whose experiment has no tables fails. A failed check
    reads FAILED, in bold, in the section and the line above the claims."""
    by_name = {e.name: e for e in experiments}
    body, failed = [], 0
    for name, threshold in checks.items():
        experiment = by_name.get(name)
        rows = experiment.chosen if experiment is not None else pd.DataFrame()
        if rows.empty:
            failed += 1
            body.append([name, "–", "–", f"≥ {threshold:g}", "–", "–", "**FAILED** (no tables)"])
            continue
        for _, r in rows.sort_values(["env", "dim", "method", "c"]).iterrows():
            passed = (r["final_mean"] >= threshold and int(r["n_diverged"]) == 0
                      and int(r["n_incomplete"]) == 0 and int(r["n_scored"]) > 0)
            failed += not passed
            body.append([name, f"{r['env']} {dim_name(str(r['env']))}={int(r['dim'])}",
                         r["label"], f"≥ {threshold:g}", f"{r['final_mean']:.2f}",
                         f"{int(r['n_scored'])}/{int(r['n_seeds'])} "
                         f"({int(r['n_diverged'])} diverged)",
                         "passed" if passed else "**FAILED**"])
    summary = ("every check passed" if not failed
               else f"**{failed} check{'s' if failed > 1 else ''} FAILED**")
    return ["## Reference checks", "",
            f"Known-good settings our implementation must reproduce before its claims are "
            f"read: {summary}. Each check is the final {metric_name('success_rate')} of an "
            "experiment of the config (`reference_check`), mean over its seeds, with no seed "
            "diverged.", "",
            *_table(["experiment", "task", "method", "required", "final (mean)",
                     "seeds scored", "check"], body), ""]


def _experiment_section(e: Experiment, out_dir: Path, note: str = "") -> list[str]:
    lines = [f"### {e.name}", ""]
    if note:
        lines += [f"*{note}*", ""]
    if e.figure.is_file():
        rel = Path(os.path.relpath(e.figure, out_dir)).as_posix()
        pdf = Path(os.path.relpath(e.figure.with_suffix(".pdf"), out_dir)).as_posix()
        lines += [f"![{e.name}]({rel})", "", f"Figure: [{rel}]({rel}) ([PDF]({pdf}))", ""]
    else:
        lines += [f"(no figure at {e.figure})", ""]
    others = [f"[{what}]({Path(os.path.relpath(path, out_dir)).as_posix()})"
              for what, path in e.other_figures()]
    if others:
        lines += ["More figures: " + "; ".join(others) + ".", ""]
    chosen = e.chosen.sort_values(["env", "dim", "method", "c"], na_position="first")
    body = [[r["env"], r["dim"], r["label"], r["batch_size"], f"{r['lr']:g}",
             f"{r['auc_mean']:.3f} ± {_num(r['auc_sd'], 3)}",
             f"{r['final_mean']:.3f} ± {_num(r['final_sd'], 3)}",
             f"{int(r['n_scored'])}/{int(r['n_seeds'])}", int(r["n_diverged"])]
            for _, r in chosen.iterrows()]
    lines += ["Selected cells (best mean normalised AUC; a diverged seed counts as failing "
              "from its divergence on):", "",
              *_table(["env", "d", "method", "batch", "lr", "AUC mean ± sd",
                       "final mean ± sd", "seeds scored", "diverged"], body), ""]
    if e.stats is not None and not e.stats.empty:
        iqm = e.stats[(e.stats["statistic"] == "iqm") & (e.stats["scope"] == "all_d")]
        body = []
        for (env, _variant), group in iqm.groupby(["env", "variant"], sort=False):
            by = {r["score"]: r for _, r in group.iterrows()}
            first = group.iloc[0]
            body.append([env, _dims(first["tasks"]),
                         first["label"], _ci(by["auc"]) if "auc" in by else "–",
                         _ci(by["final"]) if "final" in by else "–",
                         f"{int(first['n_runs'])}", int(first["n_diverged"]),
                         first["note"] if isinstance(first["note"], str) else ""])
        reps = int(e.stats["reps"].iloc[0])
        lines += [f"IQM over seeds × d with 95 % stratified-bootstrap CIs ({reps} "
                  "repetitions; diverged seeds left out):", "",
                  *_table(["env", "d", "method", "IQM AUC", "IQM final", "seeds per d",
                           "diverged", "note"], body), ""]
    if e.stats is not None and not e.stats.empty:
        lines += _control_lines(e.stats)
    if e.runtime_md:
        lines += ["Runtime:", "", e.runtime_md.strip(), ""]
    return lines


def control_position(estimate: float, low: float, high: float) -> str:
    """Where our estimate lies against the control's interval: inside, above or below."""
    if any(pd.isna(x) for x in (estimate, low, high)):
        return "–"
    if estimate > high:
        return "above"
    if estimate < low:
        return "below"
    return "inside"


def _control_lines(stats: pd.DataFrame) -> list[str]:
    """'Independent implementation': per d, our method's IQM AUC beside the control's
    (CONTROLS), and whether ours lies inside the control's 95 % interval. A control checks
    our implementation; it takes no part in the claims (their comparisons pick methods by
    name, and a control is neither a treatment nor a baseline there)."""
    iqm = stats[(stats["statistic"] == "iqm") & (stats["score"] == "auc")
                & (stats["scope"] == "d")]
    lines: list[str] = []
    for control, ours in CONTROLS.items():
        theirs_rows, our_rows = iqm[iqm["method"] == control], iqm[iqm["method"] == ours]
        body = []
        for (env, dim), theirs in theirs_rows.groupby(["env", "dim"], sort=True):
            mine = our_rows[(our_rows["env"] == env) & (our_rows["dim"] == dim)]
            if mine.empty:
                continue
            m, t = mine.iloc[0], theirs.iloc[0]
            body.append([env, f"{dim_name(str(env))} = {int(dim)}", _ci(m), _ci(t),
                         control_position(m["estimate"], t["ci_low"], t["ci_high"]),
                         f"{int(m['n_runs'])} / {int(t['n_runs'])}"])
        if not body:
            continue
        our_label, their_label = our_rows["label"].iloc[0], theirs_rows["label"].iloc[0]
        lines += ["#### Independent implementation", "",
                  f"{their_label} is a control: another implementation of {our_label} on the "
                  "same env, grid, seeds and evaluation episodes (each with its own best "
                  "batch × lr cell). IQM of the normalised AUC per d, 95 % CIs:", "",
                  *_table(["env", "d", f"{our_label} (ours)", their_label,
                           f"ours vs {their_label}'s CI", "seeds (ours / control)"], body),
                  "",
                  f"*Inside* means our {our_label} scores what {their_label} does at that d, as "
                  "far as these seeds can tell: the claims' baseline behaves as the reference "
                  "implementation (the one the paper ran) does; *above* or *below* means ours "
                  "learns faster or slower than it, a difference to understand before reading "
                  "the claims (run.json's `implementation` entry lists what "
                  f"{their_label} does differently). The control enters no verdict.", ""]
    return lines


def build_report(experiments: list[Experiment], out: Path, theory: pd.DataFrame | None = None,
                 note: str | None = None, tables: Path | None = None,
                 ablations: list[Ablation] | None = None,
                 notes: dict[str, str] | None = None,
                 checks: dict[str, float] | None = None) -> str:
    """The report's markdown text (see the module docstring for the verdict rules);
    `ablations` None leaves out the Ablations section (no --ablations given). `notes`:
    experiment -> its config's note (a reduction), stated in the configuration table and
    its section; `checks`: experiment -> the final success each of its variants must reach
    (the Reference checks section)."""
    out_dir = Path(out).parent
    lines = ["# ReenGAGE reproduction report", "",
             "Generated by `python -m reengage.analysis.report` from the tables"
             + (f" under `{tables}`" if tables else "") + "; do not edit by hand. Claims are "
             "those of docs/paper.md §5 (Levine & Feizi, AAAI 2023).", ""]
    if note:
        lines += [f"**Note:** {note}", ""]
    lines += ["## Configuration", ""]
    lines += _configuration(experiments, notes) if experiments else ["(no experiment tables)"]
    lines += [""]
    if checks:
        lines += reference_checks(experiments, checks)

    summary, details = [], []
    for claim in CLAIMS:
        parts = claim.parts(experiments, theory)
        if claim.ablation_parts is not None:
            parts += claim.ablation_parts(ablations or [])
        covered = [p for p in parts if p.verdict is not None]
        verdict = combine([p.verdict for p in covered]) if covered else NOT_COVERED
        summary.append([str(claim.number), claim.text, f"**{verdict}**"])
        details += [f"### Claim {claim.number}", "", f"> {claim.text}", "",
                    f"**Verdict: {verdict}**", ""]
        for part in parts:
            if part.verdict is None and not part.evidence:
                why = f" ({part.why_not_covered})" if part.why_not_covered else ""
                details += [f"- {part.statement}: {NOT_COVERED}{why}"]
                continue
            details += [f"- {part.statement}: **{part.verdict or 'no verdict'}**", ""]
            details += part.evidence + [""]
        for text in claim.uncovered_always:
            details += [f"- {text}: {NOT_COVERED}"]
        details += [""]
    lines += ["## Claims", "", *_table(["#", "claim (docs/paper.md §5)", "verdict"], summary), "",
              *details]
    lines += ["## Experiments", ""]
    for e in experiments:
        lines += _experiment_section(e, out_dir, (notes or {}).get(e.name, ""))
    if ablations is not None:
        lines += ["## Ablations", "", *_ablations_section(ablations)]
    lines += ["## How verdicts are decided", "", *_RULES, ""]
    return "\n".join(lines).rstrip() + "\n"


_RULES = [
    "- Scores: the normalised area under the curve (trapezoidal area / training steps: the "
    "time-average of the metric) of the selected batch × lr cell; statistics from rliable "
    "with 95 % stratified-bootstrap CIs over seeds, the d values of an environment as tasks.",
    f"- *Too few seeds*: a verdict drawn from fewer than {MIN_SEEDS} usable seeds per d on "
    "either side reads *too few seeds*, whatever its interval says (the table beside it "
    "gives what the interval alone reads): a bootstrap over 3 seeds has 10 distinct "
    "resamples per side, and its interval can collapse to a point.",
    "- *A beats B*: probability of improvement of A over B on the AUC, all d pooled. "
    "Supported if its CI lies above 0.5, not supported if below 0.5, inconclusive otherwise. "
    "With several c, supported only if every c is; not supported if any c is worse.",
    "- *Sharing the goal encoder helps* (claim 3): from an ablation (the config's "
    "`ablations`) whose change concerns `share_encoder` on DriveSeek or NoisySeek: per "
    "method, P(a seed with the shared encoder scores a higher AUC than a seed with separate "
    "encoders), all d pooled, read as *A beats B* (CI above 0.5: supported; below: not "
    "supported; else inconclusive). Supported only if DDPG and Multi-ReenGAGE both are; "
    "without such an ablation, not covered. The Ablations section reads every ablation "
    "the same way, as *the reference beats the ablated*.",
    "- *Margin grows with d*: CI of (IQM AUC difference at the largest d − at the smallest "
    "d) above 0: supported; below 0: not supported; else inconclusive.",
    "- *No significant gain*: supported unless some variant's PoI CI lies above 0.5.",
    "- *BitFlip variants against each other* (claim 5: τ > 0 against τ = 0; soft target on "
    "the gradient term only against both terms, same τ and c; d = 40): supported if the "
    "expected better variant's IQM AUC interval lies wholly above the other's, not supported "
    "if wholly below, else inconclusive (stats.csv pairs each variant with the baseline "
    "only, so this reading of two intervals is conservative).",
    f"- *Runtime*: median wall-time ratio over settings in {RUNTIME_BAND[0]:.2f}–"
    f"{RUNTIME_BAND[1]:.2f} (the paper's {PAPER_RATIO_RANGE[0]:.2f}–"
    f"{PAPER_RATIO_RANGE[1]:.2f} widened by 0.10): supported; from {RUNTIME_FAR[0]:.1f} up "
    f"to the band: *{CHEAPER}*; from the band up to {RUNTIME_FAR[1]:.1f}: *{COSTLIER}*; "
    f"below {RUNTIME_FAR[0]:.1f} or above {RUNTIME_FAR[1]:.1f}: not supported.",
    f"- *Theory*: TD slope CI above the gradient slope CI and slopes within "
    f"{THEORY_TOLERANCE} of 2 and 1: supported; TD CI below the gradient CI, or a CI wholly "
    "outside its expected band: not supported; else inconclusive.",
    "- A claim of several parts: the parts' verdict where they agree; otherwise not "
    "supported if any part is, too few seeds if any part is, else inconclusive. Diverged "
    "seeds are left out of the statistics and counted in the "
    "tables; model selection counts them as failing from their divergence on.",
]


def _pairs(items: list[str], option: str, kind: Callable[[str], object]) -> dict:
    """`NAME=VALUE` items -> {NAME: kind(VALUE)}; the value may hold '=' (a note)."""
    found = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise AnalysisError(f"{option} {item!r}: expected NAME=VALUE")
        try:
            found[name.strip()] = kind(value)
        except ValueError:
            raise AnalysisError(f"{option} {item!r}: {value!r} is not a number") from None
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m reengage.analysis.report",
        description="Write the claims report: each claim of the paper (docs/paper.md §5) beside "
        "what the tables measured, with a verdict (supported / not supported / inconclusive "
        "/ too few seeds / cheaper or costlier than the paper / not covered by this config).",
        epilog="example: python -m reengage.analysis.report --tables results/tables "
        "--figures results/figures --out results/report.md "
        "--theory results/tables/theory_slopes.csv",
    )
    parser.add_argument("--tables", required=True, type=Path,
                        help="directory of {experiment}/selection.csv (+ stats.csv, "
                        "runtime.csv, runtime.md)")
    parser.add_argument("--figures", required=True, type=Path,
                        help="directory of {experiment}.png (linked with relative paths)")
    parser.add_argument("--out", required=True, type=Path, help="output .md file")
    parser.add_argument("--theory", type=Path, default=None,
                        help="optional theory_slopes.csv (env, loss, slope, ci_low, ci_high)")
    parser.add_argument("--experiment", action="append", default=None, dest="experiments",
                        help="only this experiment (repeatable; default: every directory "
                        "of --tables with a selection.csv)")
    parser.add_argument("--note", default=None,
                        help="a line stated at the top, e.g. 'reduced: 3k steps'")
    parser.add_argument("--experiment-note", action="append", default=[], metavar="NAME=TEXT",
                        help="experiment NAME's note (the config's `note`, e.g. what was "
                        "reduced), stated beside it (repeatable)")
    parser.add_argument("--reference-check", action="append", default=[],
                        metavar="NAME=THRESHOLD",
                        help="experiment NAME is a reference check: every method must end "
                        "at or above THRESHOLD success (repeatable)")
    parser.add_argument("--ablations", type=Path, default=None,
                        help="optional directory of ablation tables ({name}.csv from "
                        "reengage.analysis.ablation): an Ablations section, and claim 3's "
                        "encoder sharing where one changes share_encoder")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> None:
        require_suffix(args.out, [".md"], "--out")
        experiments = load_experiments(args.tables, args.figures, args.experiments)
        theory = read_theory(args.theory) if args.theory else None
        ablations = load_ablations(args.ablations) if args.ablations else None
        if not experiments and theory is None:
            raise AnalysisError(f"--tables {args.tables}: no {{experiment}}/selection.csv "
                                "found and no --theory given")
        notes = _pairs(args.experiment_note, "--experiment-note", str)
        checks = _pairs(args.reference_check, "--reference-check", float)
        text = build_report(experiments, args.out, theory, args.note, args.tables, ablations,
                            notes, checks)
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)

    return run_cli(parser.prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
