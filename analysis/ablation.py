"""An ablation: one experiment (the reference, as the paper runs it) against another that
differs from it in one thing (the ablated), method variant by method variant, with the
statistics stats.py computes against a baseline.

For every (env, variant) both experiments ran, over the d values both ran with usable
seeds (the tasks of the bootstrap), for the normalised AUC and the final value, over all d
and per d (rows `ABLATION_COLUMNS`, `statistic`):
* `iqm_reference`, `iqm_ablated`: each side's interquartile mean;
* `iqm_diff`: IQM of the reference minus IQM of the ablated;
* `poi`: P(a seed of the reference scores higher than a seed of the ablated on the same
  task, ties 1/2), rliable's probability of improvement, averaged over tasks;
each with its 95 % stratified-bootstrap interval. The machinery is stats.py's own
(`collect_scores`, the pair statistic, the bootstrap), so an ablation reads as the
comparisons against the baseline in stats.csv read.

Each side keeps the model selection of its own experiment (its selection.csv: the best
batch x lr cell per variant and d), as the paper compares methods at their best settings.
Diverged and incomplete seeds are left out of the matrices and counted, as in stats.py;
`reference_n_runs` and `ablated_n_runs` are the usable seeds per d that entered them.

Usage:
    python -m reengage.analysis.ablation --name encoder_sharing \
        --change "networks.share_encoder: true -> false" \
        --reference results/tables/drive_seek \
        --ablated results/tables/drive_seek_separate_encoders \
        --out results/tables/ablations/encoder_sharing.csv [--reps 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reengage.analysis.aggregate import (
    AnalysisError,
    OneLineParser,
    read_curves,
    require_file,
    require_suffix,
    run_cli,
    write_csv,
)
from reengage.analysis.select import check_metric, read_selection

# stats.py's comparison machinery, reused rather than copied so that an ablation's numbers
# mean what stats.csv's mean.
from reengage.analysis.stats import (
    SCORES,
    VariantScores,
    add_bootstrap_arguments,
    bootstrap_interval,
    check_bootstrap,
    collect_scores,
    compare_pair,
    single_statistic,
)

ABLATION_COLUMNS = [
    "ablation", "change", "reference", "ablated", "env", "variant", "method", "c", "label",
    "metric", "statistic", "score", "scope", "dim", "tasks", "estimate", "ci_low", "ci_high",
    "reference_n_runs", "ablated_n_runs", "reference_n_seeds", "ablated_n_seeds",
    "reference_n_diverged", "ablated_n_diverged", "reps", "confidence", "note",
]
# stats.py's pair statistics that an ablation reports (its margin growth with d is about
# how a method's lead over a baseline scales, not about what one change does).
PAIR_STATISTICS = ("poi", "iqm_diff")


@dataclass
class ExperimentTables:
    """One experiment's tables: its curves and its model selection."""

    name: str
    curves: pd.DataFrame
    selection: pd.DataFrame

    @property
    def metric(self) -> str:
        return str(self.selection["metric"].iloc[0])


def read_experiment_tables(directory: Path, option: str) -> ExperimentTables:
    """`directory`/curves.parquet and selection.csv, checked to be one experiment's."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AnalysisError(f"{option} {directory}: not a directory")
    for name in ("curves.parquet", "selection.csv"):
        require_file(directory / name, option)
    curves = read_curves(directory / "curves.parquet")
    selection = read_selection(directory / "selection.csv")
    names = list(selection.loc[selection["selected"], "experiment"].unique())
    if len(names) != 1:
        raise AnalysisError(f"{option} {directory}: selection.csv selects cells of "
                            f"{len(names)} experiments {names}; expected one")
    if set(curves["experiment"].unique()) != set(names):
        raise AnalysisError(f"{option} {directory}: curves.parquet holds experiment(s) "
                            f"{sorted(curves['experiment'].unique())}, selection.csv "
                            f"{names[0]!r}")
    return ExperimentTables(str(names[0]), curves, selection)


def compare_ablation(name: str, change: str, reference: ExperimentTables,
                     ablated: ExperimentTables, metric: str | None = None, reps: int = 2000,
                     seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """The ablation table (columns `ABLATION_COLUMNS`); see the module docstring."""
    check_bootstrap(reps, confidence)
    if reference.name == ablated.name:
        raise AnalysisError(f"--reference and --ablated are the same experiment "
                            f"({reference.name!r})")
    if metric is None:
        if reference.metric != ablated.metric:
            raise AnalysisError(f"the experiments were selected on different metrics "
                                f"({reference.name}: {reference.metric}, {ablated.name}: "
                                f"{ablated.metric}); give --metric")
        metric = reference.metric
    for side in (reference, ablated):
        check_metric(side.curves, metric)
    ours = collect_scores(reference.curves, reference.selection, metric)
    theirs = collect_scores(ablated.curves, ablated.selection, metric)
    pairs = [(env, variant) for env, variants in ours.items() for variant in variants
             if variant in theirs.get(env, {})]
    if not pairs:
        raise AnalysisError(
            f"no (env, method variant) was run by both {reference.name!r} "
            f"({_variants(ours)}) and {ablated.name!r} ({_variants(theirs)})")

    common = {"ablation": name, "change": change, "reference": reference.name,
              "ablated": ablated.name, "metric": metric, "reps": reps,
              "confidence": confidence}
    rows: list[dict] = []
    for index, (env, variant) in enumerate(pairs):
        before, after = ours[env][variant], theirs[env][variant]
        dims = [d for d in before.dims
                if d in after.dims and len(before.usable[d]) and len(after.usable[d])]
        if not dims:
            print(f"note: {variant} on {env} has no d with usable seeds on both sides",
                  file=sys.stderr)
            continue
        rows += [{**common, **row} for row in
                 _variant_rows(env, before, after, dims, reps, confidence, seed + index)]
    if not rows:
        raise AnalysisError("no variant has usable seeds on both sides")
    table = pd.DataFrame(rows)
    table["dim"] = table["dim"].astype("Int64")
    return table.reindex(columns=ABLATION_COLUMNS)


def _variant_rows(env: str, before: VariantScores, after: VariantScores, dims: list[int],
                  reps: int, confidence: float, seed: int) -> list[dict]:
    """The rows of one variant: each side's IQM, then the pair statistics, over all of
    `dims` and per d."""
    rows: list[dict] = []

    def add(statistic: str, score: str, scope: int | None, point: float, ci) -> None:
        scope_dims = dims if scope is None else [scope]
        rows.append({
            "env": env, "variant": before.variant, "method": before.method, "c": before.c,
            "label": before.label, "statistic": statistic, "score": score,
            "scope": "all_d" if scope is None else "d", "dim": scope,
            "tasks": ";".join(f"d{d}" for d in scope_dims), "estimate": float(point),
            "ci_low": float(ci[0]), "ci_high": float(ci[1]),
            **_counts(before, after, dims, scope_dims),
        })

    for side, vs in (("reference", before), ("ablated", after)):
        matrix, _ = vs.matrix(dims)
        # IQM over all d, then per d, (auc, final) each: stats.py's single-variant layout.
        point, ci = bootstrap_interval({vs.variant: matrix}, single_statistic(len(dims), {}),
                                       reps, confidence, seed)
        for scope in [None, *dims]:
            offset = 0 if scope is None else 2 + 2 * dims.index(scope)
            for k, score in enumerate(SCORES):
                add(f"iqm_{side}", score, scope, point[offset + k], ci[:, offset + k])

    def add_pair(_env, _dims, scope, statistic, score, _vs, point, ci, _extra) -> None:
        if statistic in PAIR_STATISTICS:
            add(statistic, score, scope, point, ci)

    # The reference takes the treatment's place and the ablated the baseline's, so `poi`
    # is P(reference > ablated) and `iqm_diff` reference minus ablated.
    compare_pair(before, after, env, reps, confidence, seed, add_pair)
    return rows


def _variants(scores: dict[str, dict[str, VariantScores]]) -> str:
    return ", ".join(f"{env} {variant}" for env, variants in scores.items()
                     for variant in variants) or "none"


def _counts(before: VariantScores, after: VariantScores, dims: list[int],
            scope_dims: list[int]) -> dict:
    """Seeds on each side: per d in the matrices (the smallest per-d count of usable seeds
    over `dims`, stats.py's rule), in all and diverged over `scope_dims`; what was left
    out, as a note."""
    mine, theirs = before.counts(scope_dims), after.counts(scope_dims)
    notes = [f"{side}: {note}" for side, vs in (("reference", before), ("ablated", after))
             if (note := vs.note(scope_dims))]
    return {"reference_n_runs": len(before.matrix(dims)[0]),
            "ablated_n_runs": len(after.matrix(dims)[0]),
            "reference_n_seeds": mine["n_seeds"], "ablated_n_seeds": theirs["n_seeds"],
            "reference_n_diverged": mine["n_diverged"],
            "ablated_n_diverged": theirs["n_diverged"], "note": "; ".join(notes)}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m reengage.analysis.ablation",
        description="Compare two experiments that differ in one thing (the config's "
        "`ablations`): for every method variant both ran, the IQM of the normalised AUC and "
        "of the final value on each side, their difference, and the probability that a seed "
        "of the reference scores higher than a seed of the ablated, with stratified-"
        "bootstrap CIs (stats.py's machinery; each side at its own selected cells). "
        "Diverged seeds are left out and counted.",
        epilog="example: python -m reengage.analysis.ablation --name encoder_sharing "
        "--change 'networks.share_encoder: true -> false' --reference "
        "results/tables/drive_seek --ablated results/tables/drive_seek_separate_encoders "
        "--out results/tables/ablations/encoder_sharing.csv",
    )
    parser.add_argument("--name", required=True, help="the ablation's name in the config")
    parser.add_argument("--change", required=True,
                        help="what the ablated experiment changes, as reengage.workflow's "
                        "ablation_change writes it (e.g. 'networks.share_encoder: true -> "
                        "false'); stored in the table for the report")
    parser.add_argument("--reference", required=True, type=Path,
                        help="the reference experiment's tables directory (curves.parquet, "
                        "selection.csv)")
    parser.add_argument("--ablated", required=True, type=Path,
                        help="the ablated experiment's tables directory")
    parser.add_argument("--out", required=True, type=Path, help="output .csv")
    parser.add_argument("--metric", default=None,
                        help="score column (default: the metric both selections were made on)")
    add_bootstrap_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> None:
        require_suffix(args.out, [".csv"], "--out")
        if not args.name.strip():
            raise AnalysisError("--name: must not be empty")
        table = compare_ablation(
            args.name, args.change, read_experiment_tables(args.reference, "--reference"),
            read_experiment_tables(args.ablated, "--ablated"), args.metric, args.reps,
            args.seed, args.confidence)
        write_csv(table, args.out)
        print(f"wrote {len(table)} rows to {args.out}", file=sys.stderr)

    return run_cli(parser.prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
