# The ReenGAGE workflow: a config grid -> training jobs -> tidy tables -> model selection
# -> figures, statistics, runtime table -> a claims report.
#
#   snakemake --cores 2                                   # the embedded default (minutes)
#   snakemake --cores 2 --configfile config/paper.yaml    # the paper's grids (a cluster job)
#   snakemake --profile profiles/slurm --configfile config/paper.yaml
#
# The grid logic lives in reengage/workflow.py (tested without Snakemake).

import re

from snakemake.utils import min_version, validate

from reengage.analysis.labels import EXPERIMENT_FIGURES
from reengage.workflow import (
    ablation_change,
    find_cell,
    job_priority,
    job_resources,
    job_threads,
    pack_cell_arguments,
    pack_jobs,
    progress_files,
    report_options,
    run_options,
    train_chunks,
    train_arguments,
    validate_config,
    wandb_group,
)

min_version("9.0")

# --configfile replaces the default instead of being merged into it: a merged grid would
# silently add the default's experiments to the paper's.
if not config:

    configfile: "config/default.yaml"


validate_config(config)  # clear messages naming the key path, before any job runs
validate(config, "reengage/schema.yaml")  # also fills in the schema's defaults

RESULTS = config["results"]
RUN_OPTIONS = run_options(config)
EXPERIMENTS = list(config["experiments"])
# name -> {reference, ablated}: two experiments compared variant by variant (empty: none).
ABLATIONS = config["ablations"]
ENV = "environment.yaml"


wildcard_constraints:
    experiment="[A-Za-z0-9_]+",
    env="[A-Za-z0-9]+",
    dim="[0-9]+",
    method="[a-z][a-z0-9_]*(_c[0-9.]+)?",
    batch="[0-9]+",
    lr="[0-9.]+",
    ablation="[A-Za-z0-9_]+",


# A reference check (an experiment with `reference_check`, e.g. DDPG+HER on FetchReach) is
# one method and a seed or two: its curves and selection say whether it passed; statistics,
# runtime ratios and rliable's views compare methods, so it gets none.
CHECKS = [e for e in EXPERIMENTS if "reference_check" in config["experiments"][e]]
COMPARED = [e for e in EXPERIMENTS if e not in CHECKS]


def report_inputs(wildcards):
    inputs = {
        "tables": expand(
            "{results}/tables/{experiment}/{table}",
            results=RESULTS,
            experiment=COMPARED,
            table=["selection.csv", "stats.csv", "runtime.csv"],
        )
        + expand("{results}/tables/{experiment}/selection.csv", results=RESULTS, experiment=CHECKS)
    }
    inputs["figures"] = expand(
        "{results}/figures/{e}{kind}.png",
        results=RESULTS,
        e=COMPARED,
        kind=["", *(f"-{kind}" for kind in EXPERIMENT_FIGURES)],
    ) + expand("{results}/figures/{e}.png", results=RESULTS, e=CHECKS)
    if config["theory"]["enabled"]:
        inputs["theory"] = f"{RESULTS}/tables/theory_slopes.csv"
        inputs["theory_figure"] = f"{RESULTS}/figures/theory.png"
    if ABLATIONS:
        inputs["ablations"] = expand(
            "{results}/tables/ablations/{ablation}.csv", results=RESULTS, ablation=ABLATIONS
        )
    return inputs


rule all:
    input:
        f"{RESULTS}/report.md",
    default_target: True


# One rule per distinct population of seeds and experiment: every seed keeps its own files,
# and one job trains the whole population in one process (docs/design.md).
# A method may train seeds of its own (methods.<i>.seeds), so a rule's wildcards are limited
# to the experiment and method folders that train its population (and so never match a
# packed cell's files, which the pack rules below write).
for chunk, chunk_experiment, chunk_methods in [
    (chunk, experiment, methods)
    for chunk, chunk_cells in train_chunks(config).items()
    for experiment, methods in chunk_cells.items()
]:
    chunk_name = "_".join(map(str, chunk))

    rule:
        name:
            f"train_seeds_{chunk_name}_{chunk_experiment}"
        wildcard_constraints:
            experiment=re.escape(chunk_experiment),
            method="|".join(map(re.escape, sorted(chunk_methods))),
        output:
            progress=[
                f"{RESULTS}/runs/{{experiment}}/{{env}}-d{{dim}}/{{method}}/b{{batch}}_lr{{lr}}/seed{s}/progress.csv"
                for s in chunk
            ],
            record=[
                f"{RESULTS}/runs/{{experiment}}/{{env}}-d{{dim}}/{{method}}/b{{batch}}_lr{{lr}}/seed{s}/run.json"
                for s in chunk
            ],
        log:
            f"{RESULTS}/logs/train/{{experiment}}/{{env}}-d{{dim}}/{{method}}/b{{batch}}_lr{{lr}}/seeds{chunk_name}.log",
        params:
            arguments=lambda wildcards, chunk=chunk: train_arguments(
                config, find_cell(config, wildcards), chunk
            ),
            out=lambda wildcards: f"{RESULTS}/runs/{wildcards.experiment}/{wildcards.env}-d{wildcards.dim}/{wildcards.method}/b{wildcards.batch}_lr{wildcards.lr}",
        # An experiment may reserve more cores than the config's threads_per_job (a robotics
        # population with async vector envs runs a process per env).
        threads: lambda wildcards: job_threads(config, wildcards.experiment)
        priority:
            # The longest jobs first (reengage/workflow.py: job_priority).
            lambda wildcards, chunk=chunk: job_priority(config, find_cell(config, wildcards), chunk)
        resources:
            # A rule per population has no stable name for --set-resources: the config's
            # train_resources (or the experiment's own) sets them for every training job.
            mem_mb=lambda wildcards: job_resources(config, wildcards.experiment)["mem_mb"],
            runtime=lambda wildcards: job_resources(config, wildcards.experiment)["runtime"],
            gpu=lambda wildcards: job_resources(config, wildcards.experiment).get("gpu", 0),
            # Options that change how a job runs, not what it computes (checkpointing,
            # wandb): resources rather than params, which Snakemake compares with the
            # finished jobs' and would retrain them for. Executors forward only numbers.
            run_options=RUN_OPTIONS,
            wandb_group=lambda wildcards: wandb_group(find_cell(config, wildcards)),
        conda:
            ENV
        shell:
            # --force: other populations of the same cell write beside this one; a
            # checkpoint of this population (left by a killed job) is resumed.
            "reengage train {params.arguments} {resources.run_options} --threads {threads} "
            "--wandb-group {resources.wandb_group} --out {params.out} --force --quiet "
            "> {log} 2>&1"


# An experiment with `pack: true`: the cells of one d, method and batch size (lr and c vary)
# train as one population per chunk of seeds (`reengage train-pack`), each seed writing the
# files of its own cell.
for pack in pack_jobs(config):
    pack_cell = pack.cells[0]

    rule:
        name:
            f"train_pack_{pack.name}"
        output:
            progress=[f"{cell.run_dir(RESULTS)}/seed{s}/progress.csv" for cell in pack.cells
                      for s in pack.seeds],
            record=[f"{cell.run_dir(RESULTS)}/seed{s}/run.json" for cell in pack.cells
                    for s in pack.seeds],
        log:
            f"{RESULTS}/logs/train/packs/{pack.name}.log",
        params:
            cells=pack_cell_arguments(config, pack),
            checkpoint_dir=f"{RESULTS}/runs/.packs/{pack.name}",
        threads: job_threads(config, pack_cell.experiment)
        priority: job_priority(config, pack_cell, pack.seeds)
        resources:
            mem_mb=job_resources(config, pack_cell.experiment)["mem_mb"],
            runtime=job_resources(config, pack_cell.experiment)["runtime"],
            gpu=job_resources(config, pack_cell.experiment).get("gpu", 0),
            run_options=RUN_OPTIONS,
        conda:
            ENV
        shell:
            # --force: the pack writes into its cells' folders beside other packs' seeds.
            "reengage train-pack --checkpoint-dir {params.checkpoint_dir} --cell-options "
            "'{resources.run_options} --threads {threads} --force' {params.cells} --quiet "
            "> {log} 2>&1"


rule aggregate:
    input:
        lambda wildcards: progress_files(config, wildcards.experiment),
    output:
        f"{RESULTS}/tables/{{experiment}}/curves.parquet",
    log:
        f"{RESULTS}/logs/aggregate/{{experiment}}.log",
    params:
        runs=lambda wildcards: f"{RESULTS}/runs/{wildcards.experiment}",
    conda:
        ENV
    shell:
        "python -m reengage.analysis.aggregate --runs {params.runs} "
        "--experiment {wildcards.experiment} --out {output} > {log} 2>&1"


rule select:
    input:
        f"{RESULTS}/tables/{{experiment}}/curves.parquet",
    output:
        f"{RESULTS}/tables/{{experiment}}/selection.csv",
    log:
        f"{RESULTS}/logs/select/{{experiment}}.log",
    params:
        metric=lambda wildcards: config["experiments"][wildcards.experiment]["metric"],
    conda:
        ENV
    shell:
        "python -m reengage.analysis.select --curves {input} --metric {params.metric} "
        "--out {output} > {log} 2>&1"


# Figures are registered with report(): `snakemake --report report.html` (after a run)
# shows each under its kind, one entry per experiment.
def figure_report(path, category, figure):
    return report(
        path,
        category=category,
        subcategory="{experiment}",
        labels={"experiment": "{experiment}", "figure": figure},
    )


rule figures:
    input:
        curves=f"{RESULTS}/tables/{{experiment}}/curves.parquet",
        selection=f"{RESULTS}/tables/{{experiment}}/selection.csv",
    output:
        png=figure_report(
            f"{RESULTS}/figures/{{experiment}}.png", "Learning curves", "learning curves"
        ),
        pdf=f"{RESULTS}/figures/{{experiment}}.pdf",
    log:
        f"{RESULTS}/logs/figures/{{experiment}}.log",
    params:
        note=lambda wildcards: config["experiments"][wildcards.experiment]["note"],
        baseline=lambda wildcards: config["experiments"][wildcards.experiment]["baseline"],
    conda:
        ENV
    shell:
        # :q quotes for the shell: a note may hold an apostrophe, a quote or a $. An empty
        # note quotes to nothing, hence `--note=` (a bare `--note` would take no value).
        "python -m reengage.analysis.figures --curves {input.curves} "
        "--selection {input.selection} --out {output.png} --note={params.note:q} "
        "--baseline {params.baseline} > {log} 2>&1"


rule diagnostics:
    input:
        curves=f"{RESULTS}/tables/{{experiment}}/curves.parquet",
        selection=f"{RESULTS}/tables/{{experiment}}/selection.csv",
    output:
        png=figure_report(
            f"{RESULTS}/figures/{{experiment}}-diagnostics.png",
            "Training diagnostics",
            EXPERIMENT_FIGURES["diagnostics"],
        ),
        pdf=f"{RESULTS}/figures/{{experiment}}-diagnostics.pdf",
    log:
        f"{RESULTS}/logs/diagnostics/{{experiment}}.log",
    params:
        note=lambda wildcards: config["experiments"][wildcards.experiment]["note"],
        baseline=lambda wildcards: config["experiments"][wildcards.experiment]["baseline"],
    conda:
        ENV
    shell:
        "python -m reengage.analysis.diagnostics_figure --curves {input.curves} "
        "--selection {input.selection} --out {output.png} --note={params.note:q} "
        "--baseline {params.baseline} > {log} 2>&1"


rule rliable_figures:
    input:
        curves=f"{RESULTS}/tables/{{experiment}}/curves.parquet",
        selection=f"{RESULTS}/tables/{{experiment}}/selection.csv",
        stats=f"{RESULTS}/tables/{{experiment}}/stats.csv",
    output:
        intervals=figure_report(
            f"{RESULTS}/figures/{{experiment}}-intervals.png",
            "Aggregate scores (rliable)",
            EXPERIMENT_FIGURES["intervals"],
        ),
        improvement=figure_report(
            f"{RESULTS}/figures/{{experiment}}-improvement.png",
            "Probability of improvement (rliable)",
            EXPERIMENT_FIGURES["improvement"],
        ),
        profiles=figure_report(
            f"{RESULTS}/figures/{{experiment}}-profiles.png",
            "Performance profiles (rliable)",
            EXPERIMENT_FIGURES["profiles"],
        ),
        pdfs=[
            f"{RESULTS}/figures/{{experiment}}-{kind}.pdf"
            for kind in ("intervals", "improvement", "profiles")
        ],
    log:
        f"{RESULTS}/logs/rliable_figures/{{experiment}}.log",
    params:
        reps=config["bootstrap_reps"],
        baseline=lambda wildcards: config["experiments"][wildcards.experiment]["baseline"],
    conda:
        ENV
    shell:
        "python -m reengage.analysis.rliable_figures --stats {input.stats} "
        "--curves {input.curves} --selection {input.selection} "
        "--intervals {output.intervals} --improvement {output.improvement} "
        "--profiles {output.profiles} --reps {params.reps} "
        "--baseline {params.baseline} > {log} 2>&1"


rule stats:
    input:
        curves=f"{RESULTS}/tables/{{experiment}}/curves.parquet",
        selection=f"{RESULTS}/tables/{{experiment}}/selection.csv",
    output:
        f"{RESULTS}/tables/{{experiment}}/stats.csv",
    log:
        f"{RESULTS}/logs/stats/{{experiment}}.log",
    params:
        reps=config["bootstrap_reps"],
        baseline=lambda wildcards: config["experiments"][wildcards.experiment]["baseline"],
    conda:
        ENV
    shell:
        "python -m reengage.analysis.stats --curves {input.curves} "
        "--selection {input.selection} --reps {params.reps} --baseline {params.baseline} "
        "--out {output} > {log} 2>&1"


rule runtime:
    input:
        f"{RESULTS}/tables/{{experiment}}/curves.parquet",
    output:
        table=f"{RESULTS}/tables/{{experiment}}/runtime.csv",
        markdown=f"{RESULTS}/tables/{{experiment}}/runtime.md",
    log:
        f"{RESULTS}/logs/runtime/{{experiment}}.log",
    params:
        baseline=lambda wildcards: config["experiments"][wildcards.experiment]["baseline"],
    conda:
        ENV
    shell:
        "python -m reengage.analysis.runtime --curves {input} --out {output.table} "
        "--markdown {output.markdown} --baseline {params.baseline} > {log} 2>&1"


def ablation_folder(side):
    """The tables folder of one side ("reference" or "ablated") of a job's ablation."""
    return lambda wildcards: f"{RESULTS}/tables/{ABLATIONS[wildcards.ablation][side]}"


def ablation_tables(wildcards):
    """The curves and the selection of both experiments of a job's ablation."""
    return {
        side: [
            f"{ablation_folder(side)(wildcards)}/{table}"
            for table in ("curves.parquet", "selection.csv")
        ]
        for side in ("reference", "ablated")
    }


def ablation_description(wildcards):
    """What the ablated experiment changes, as reengage.workflow.ablation_change says it."""
    ablation = ABLATIONS[wildcards.ablation]
    return ablation_change(config, ablation["reference"], ablation["ablated"])


rule ablation:
    input:
        unpack(ablation_tables),
    output:
        f"{RESULTS}/tables/ablations/{{ablation}}.csv",
    log:
        f"{RESULTS}/logs/ablation/{{ablation}}.log",
    params:
        # In the table and the report; a config whose change reads differently reruns it.
        change=ablation_description,
        reference=ablation_folder("reference"),
        ablated=ablation_folder("ablated"),
        reps=config["bootstrap_reps"],
    conda:
        ENV
    shell:
        "python -m reengage.analysis.ablation --name {wildcards.ablation} "
        "--change {params.change:q} --reference {params.reference} "
        "--ablated {params.ablated} --reps {params.reps} --out {output} > {log} 2>&1"


THEORY_MLP = config["theory"]["mlp"]


rule theory:
    # Above every training job: it needs no training output, so it runs beside the first
    # jobs instead of in the analysis tail, where it was the last job the report waited on.
    priority: 1000
    output:
        points=f"{RESULTS}/tables/theory_points.csv",
        slopes=f"{RESULTS}/tables/theory_slopes.csv",
        rank=f"{RESULTS}/tables/theory_rank.csv",
        mlp=[f"{RESULTS}/tables/theory_mlp.csv"] if THEORY_MLP else [],
    log:
        f"{RESULTS}/logs/theory.log",
    params:
        dims=" ".join(map(str, config["theory"]["dims"])),
        seeds=config["theory"]["seeds"],
        mlp=f"--mlp --out-mlp {RESULTS}/tables/theory_mlp.csv" if THEORY_MLP else "",
    threads: 1
    conda:
        ENV
    shell:
        "python -m reengage.theory --dims {params.dims} --seeds {params.seeds} "
        "--out-points {output.points} --out-slopes {output.slopes} "
        "--out-rank {output.rank} {params.mlp} --quiet > {log} 2>&1"


rule theory_figure:
    input:
        points=f"{RESULTS}/tables/theory_points.csv",
        slopes=f"{RESULTS}/tables/theory_slopes.csv",
        mlp=[f"{RESULTS}/tables/theory_mlp.csv"] if THEORY_MLP else [],
    output:
        png=report(
            f"{RESULTS}/figures/theory.png",
            category="Theory",
            labels={"figure": "transitions needed versus d"},
        ),
        pdf=f"{RESULTS}/figures/theory.pdf",
        mlp=(
            [
                report(
                    f"{RESULTS}/figures/theory_mlp.png",
                    category="Theory",
                    labels={"figure": "MLP critics on a fixed buffer"},
                )
            ]
            if THEORY_MLP
            else []
        ),
    log:
        f"{RESULTS}/logs/theory_figure.log",
    params:
        mlp=(
            f"--mlp {RESULTS}/tables/theory_mlp.csv "
            f"--mlp-out-png {RESULTS}/figures/theory_mlp.png "
            f"--mlp-out-pdf {RESULTS}/figures/theory_mlp.pdf"
            if THEORY_MLP
            else ""
        ),
    conda:
        ENV
    shell:
        "python -m reengage.analysis.theory_figure --points {input.points} "
        "--slopes {input.slopes} --out-png {output.png} --out-pdf {output.pdf} "
        "{params.mlp} > {log} 2>&1"


rule report:
    input:
        unpack(report_inputs),
    output:
        f"{RESULTS}/report.md",
    log:
        f"{RESULTS}/logs/report.log",
    params:
        tables=f"{RESULTS}/tables",
        figures=f"{RESULTS}/figures",
        theory=(
            f"--theory {RESULTS}/tables/theory_slopes.csv"
            if config["theory"]["enabled"]
            else ""
        ),
        ablations=f"--ablations {RESULTS}/tables/ablations" if ABLATIONS else "",
        # Each experiment's note (its reduction) and reference-check threshold, quoted.
        experiments=report_options(config),
    conda:
        ENV
    shell:
        "python -m reengage.analysis.report --tables {params.tables} "
        "--figures {params.figures} --out {output} {params.theory} {params.ablations} "
        "{params.experiments} > {log} 2>&1"


# Not part of the default target: minutes of benchmarking, one command away:
#   snakemake --cores 2 throughput
rule throughput:
    output:
        json=f"{RESULTS}/benchmarks/throughput.json",
        png=report(
            f"{RESULTS}/figures/throughput.png",
            category="Throughput",
            labels={"figure": "seed-steps/s against population size"},
        ),
    log:
        f"{RESULTS}/logs/throughput.log",
    params:
        quick="--quick" if config["benchmark"]["quick"] else "",
        threads=config["benchmark"]["threads"],
    threads: 2
    conda:
        ENV
    shell:
        "(reengage bench --threads {params.threads} {params.quick} --json {output.json} && "
        "python -m reengage.analysis.throughput_figure {output.json} "
        "--out {output.png}) > {log} 2>&1"
