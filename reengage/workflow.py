"""The experiment grid behind the Snakefile: validation, expansion into cells and jobs, and
the training command of each job. Plain Python, so it is tested without Snakemake.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from .config import ConfigError, TrainConfig, from_arguments, validate
from .provenance import IMPORTED_PLUGINS
from .registry import METHODS

# Inside the package, so an installed wheel carries it (package-data in pyproject.toml).
SCHEMA_PATH = Path(__file__).resolve().parent / "schema.yaml"
RUN_PATTERN = "{results}/runs/{experiment}/{env}-d{dim}/{method}/b{batch}_lr{lr}/seed{seed}"


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def normalize_config(config: dict[str, Any]) -> dict[str, Any]:
    """YAML reads `steps: {5: 25000}` with integer keys; JSON schema wants strings."""
    experiments = config.get("experiments")
    if not isinstance(experiments, dict):  # the schema says what is wrong with it
        return config
    for experiment in experiments.values():
        if not isinstance(experiment, dict):
            continue
        if isinstance(experiment.get("steps"), dict):
            experiment["steps"] = {str(k): v for k, v in experiment["steps"].items()}
        methods = experiment.get("methods")
        for method in methods if isinstance(methods, list) else []:
            for key in ("batch_sizes", "lrs"):
                if isinstance(method, dict) and isinstance(method.get(key), dict):
                    method[key] = {str(k): v for k, v in method[key].items()}
    return config


def yaml_problem(error: Exception) -> str:
    """A YAML parser's error in one line: what and where (its own text spans several)."""
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(error).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def validate_config(config: dict[str, Any]) -> None:
    """Schema first (unknown keys, types, ranges), then what a schema cannot say: steps for
    every d, and every job the config plans, checked as `reengage train` checks the options
    `train_arguments` writes for it, so that a config the workflow accepts never meets a
    refusal from the command line, nor the other way round. Last, the baseline."""
    normalize_config(config)
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        raise ConfigError(_key_path(error), error.message)
    import_plugins(config.get("plugins", []))
    for name, experiment in config["experiments"].items():
        steps = experiment["steps"]
        if isinstance(steps, dict):
            missing = [d for d in experiment["dims"] if str(d) not in map(str, steps)]
            if missing:
                raise ConfigError(f"experiments.{name}.steps", f"no steps given for d = {missing}")
        for index, method in enumerate(experiment["methods"]):
            for key in ("batch_sizes", "lrs"):
                if isinstance(method.get(key), dict):
                    missing = [d for d in experiment["dims"] if str(d) not in method[key]]
                    if missing:
                        raise ConfigError(f"experiments.{name}.methods.{index}.{key}",
                                          f"no {key} given for d = {missing}")
    filled = apply_defaults(copy.deepcopy(config))
    _validate_jobs(filled)
    for name, experiment in filled["experiments"].items():
        names = [m["name"] for m in experiment["methods"]]
        if experiment["baseline"] not in names:
            raise ConfigError(f"experiments.{name}.baseline", f"{experiment['baseline']!r} is "
                              f"not one of the experiment's methods {names}")


def _validate_jobs(config: dict[str, Any]) -> None:
    """Every planned job through the command line's own parsing and `validate`."""
    from .cli import build_parser  # the command line imports this module

    parser = build_parser()
    for cell in cells(config):
        experiment = config["experiments"][cell.experiment]
        for seeds in seed_chunks(seeds_of(experiment, cell.method), config["seeds_per_job"]):
            try:
                validate(job_config(parser, config, cell, seeds))
            except ConfigError as error:
                flag = f"`reengage train {error.option}`, " if error.option[0] == "-" else ""
                raise ConfigError(_job_key(config, cell, error.option),
                                  f"{error.message} ({flag}d = {cell.dim})") from None


def job_config(parser: argparse.ArgumentParser, config: dict[str, Any], cell: Cell,
               seeds: tuple[int, ...]) -> TrainConfig:
    """The TrainConfig a job's command builds: its `train_arguments`, parsed by `parser`
    (`reengage.cli.build_parser()`) with the `run_options` and threads the Snakefile adds.
    `config` has its defaults filled in."""
    command = ["train", *shlex.split(train_arguments(config, cell, seeds)),
               *shlex.split(run_options(config)), "--threads", str(config["threads_per_job"]),
               "--out", "-"]
    message = io.StringIO()
    try:
        with contextlib.redirect_stderr(message):  # argparse prints, then exits
            args = parser.parse_args(command)
    except SystemExit:
        text = message.getvalue().strip().removesuffix(" (see --help)")
        text = text.removeprefix("reengage train: ").removeprefix("reengage: ")
        if text.startswith("argument "):  # "argument --dim: invalid int value: 'x'"
            option, _, text = text.removeprefix("argument ").partition(": ")
            raise ConfigError(option, text) from None
        raise ConfigError("(command)", text) from None
    return from_arguments(args)


# The key a `reengage train` option of a job comes from: of the experiment, of the method
# (methods.<i>.), or of the whole config (top level).
_EXPERIMENT_KEYS = {
    "--env": "env", "--dim": "dims", "--steps": "steps", "--seeds": "seeds",
    "--batch-size": "batch_sizes", "--lr": "lrs", "--eval-every": "eval_every",
    "--eval-episodes": "eval_episodes", "--learning-starts": "learning_starts",
    "--buffer-size": "buffer_size", "--action-noise": "action_noise", "--inputs": "inputs",
    "--her-future": "her_future", "--her-relabel": "her_relabel", "--set": "settings",
}
_METHOD_KEYS = {"--method": "name", "--c": "c"}
# Experiment keys a method may set for itself (`methods.<i>.batch_sizes` and so on).
_METHOD_OVERRIDES = ("batch_sizes", "lrs", "seeds")
_TOP_LEVEL_KEYS = {"--threads": "threads_per_job", "--checkpoint-every": "checkpoint_every",
                   "--plugin": "plugins"}


def _job_key(config: dict[str, Any], cell: Cell, option: str) -> str:
    """The config key path behind a refused option of `cell`'s job, down to the list item
    (`experiments.cs.lrs.1`) where the option's value is one item of a list."""
    experiment = config["experiments"][cell.experiment]
    where = f"experiments.{cell.experiment}"
    flags = [item.split("=")[0] for arg in experiment["extra_args"] for item in shlex.split(arg)]
    if option in flags or (option == "(command)" and flags):  # passed through unchanged
        return f"{where}.extra_args"
    if option in _TOP_LEVEL_KEYS:
        return _TOP_LEVEL_KEYS[option]
    index = next(i for i, m in enumerate(experiment["methods"]) if m["name"] == cell.method)
    method = experiment["methods"][index]
    if option in _METHOD_KEYS:
        where = f"{where}.methods.{index}"
        key = _METHOD_KEYS[option]
        values = method.get(key)
    elif option in _EXPERIMENT_KEYS:
        key = _EXPERIMENT_KEYS[option]
        values = experiment.get(key)
        if key in _METHOD_OVERRIDES and key in method:  # the method's own, not the experiment's
            where = f"{where}.methods.{index}"
            values = method[key]
            if isinstance(values, dict):  # a map d -> list
                dim = next(k for k in values if str(k) == str(cell.dim))
                where, values = f"{where}.{key}.{dim}", values[dim]
                return _item_key(where, values, cell, key)
    else:
        return where
    return _item_key(f"{where}.{key}", values, cell, key)


def _item_key(where: str, values: Any, cell: Cell, key: str) -> str:
    """`where`, down to the list item that holds the cell's value of `key`."""
    value = {"dims": cell.dim, "batch_sizes": cell.batch, "lrs": cell.lr, "c": cell.c}.get(key)
    if isinstance(values, list) and value in values:
        return f"{where}.{values.index(value)}"
    return where


def import_plugins(modules: list[str]) -> None:
    """Import user modules that register methods (see the README's worked example)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError("plugins", f"cannot import {module!r}: {error}") from error
        if module not in IMPORTED_PLUGINS:
            IMPORTED_PLUGINS.append(module)


def apply_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """Fill in the schema's defaults (what snakemake.utils.validate does in the workflow)."""
    schema = load_schema()

    def fill(node: dict[str, Any], sub: dict[str, Any]) -> None:
        for key, prop in sub.get("properties", {}).items():
            if key not in node and "default" in prop:
                node[key] = yaml.safe_load(yaml.safe_dump(prop["default"]))
            if isinstance(node.get(key), dict) and "properties" in prop:
                fill(node[key], prop)

    fill(config, schema)
    experiment_schema = schema["properties"]["experiments"]["additionalProperties"]
    for experiment in config["experiments"].values():
        fill(experiment, experiment_schema)
    return config


def steps_for(experiment: dict[str, Any], dim: int) -> int:
    steps = experiment["steps"]
    return int(steps) if isinstance(steps, int) else int({str(k): v for k, v in
                                                          steps.items()}[str(dim)])


def method_entry(experiment: dict[str, Any], name: str) -> dict[str, Any]:
    """The `methods` item of the experiment that names `name`."""
    return next(m for m in experiment["methods"] if m["name"] == name)


def seeds_of(experiment: dict[str, Any], method: str | None = None) -> list[int]:
    """The experiment's seeds, or `method`'s own where it sets `seeds` (the paper's best
    cells with 20 seeds beside a 10-seed control column, say)."""
    seeds = experiment["seeds"]
    if method is not None:
        seeds = method_entry(experiment, method).get("seeds", seeds)
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


def _for_dim(values: list[Any] | dict[Any, list[Any]], dim: int) -> list[Any]:
    """A list for every d, or the list a map d -> list gives for `dim`."""
    if isinstance(values, list):
        return values
    return {str(k): v for k, v in values.items()}[str(dim)]


def grid_of(experiment: dict[str, Any], method: dict[str, Any],
            dim: int) -> tuple[list[int], list[float]]:
    """(batch sizes, learning rates) of `method` at `dim`: the method's own where it sets
    them (each method at its best cell, as the paper reports them), else the experiment's."""
    return (_for_dim(method.get("batch_sizes", experiment["batch_sizes"]), dim),
            _for_dim(method.get("lrs", experiment["lrs"]), dim))


def seed_chunks(seeds: list[int], per_job: int) -> list[tuple[int, ...]]:
    return [tuple(seeds[i:i + per_job]) for i in range(0, len(seeds), per_job)]


def format_number(x: float) -> str:
    """Numbers as they appear in paths and labels: 0.001, 0.2, 5 (never 1e-03), with every
    significant digit a float has (1e-12 is 0.000000000001, not 0)."""
    if not isinstance(x, float):
        return str(x)
    return np.format_float_positional(x, trim="-")


@dataclass(frozen=True)
class Cell:
    """One (experiment, env, d, method, c, batch, lr) grid cell."""

    experiment: str
    env: str
    dim: int
    method: str
    c: float | None
    batch: int
    lr: float

    @property
    def method_dir(self) -> str:
        return self.method if self.c is None else f"{self.method}_c{format_number(self.c)}"

    def run_dir(self, results: str) -> str:
        return RUN_PATTERN.format(
            results=results, experiment=self.experiment, env=self.env, dim=self.dim,
            method=self.method_dir, batch=self.batch, lr=format_number(self.lr), seed="",
        ).removesuffix("/seed")


def cells(config: dict[str, Any], experiment: str | None = None) -> Iterator[Cell]:
    for name, exp in config["experiments"].items():
        if experiment is not None and name != experiment:
            continue
        for dim in exp["dims"]:
            for method in exp["methods"]:
                batches, lrs = grid_of(exp, method, dim)
                for c in method.get("c", [None]):
                    for batch in batches:
                        for lr in lrs:
                            yield Cell(name, exp["env"], dim, method["name"], c, batch, lr)


def progress_files(config: dict[str, Any], experiment: str) -> list[str]:
    exp = config["experiments"][experiment]
    return [f"{cell.run_dir(config['results'])}/seed{seed}/progress.csv"
            for cell in cells(config, experiment) for seed in seeds_of(exp, cell.method)]


def train_chunks(config: dict[str, Any]) -> dict[tuple[int, ...], dict[str, set[str]]]:
    """Every population of seeds the config trains: chunk -> experiment -> the method
    folders (`Cell.method_dir`) trained in that chunk. The Snakefile writes one rule per
    chunk and limits its wildcards to these names."""
    chunks: dict[tuple[int, ...], dict[str, set[str]]] = {}
    for cell in cells(config):
        seeds = seeds_of(config["experiments"][cell.experiment], cell.method)
        for chunk in seed_chunks(seeds, config["seeds_per_job"]):
            chunks.setdefault(chunk, {}).setdefault(cell.experiment, set()).add(cell.method_dir)
    return chunks


def find_cell(config: dict[str, Any], wildcards: Any) -> Cell:
    """The cell a train job's wildcards name (they are strings; numbers compare as text)."""
    for cell in cells(config, wildcards.experiment):
        if (str(cell.dim) == wildcards.dim and cell.method_dir == wildcards.method
                and str(cell.batch) == wildcards.batch
                and format_number(cell.lr) == wildcards.lr):
            return cell
    raise KeyError(f"no grid cell matches {dict(wildcards.items())}")


def _dotted(settings: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{networks: {encoder_hidden: 64}} -> {"networks.encoder_hidden": "64"} (YAML values)."""
    flat: dict[str, str] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = yaml.safe_dump(value, default_flow_style=True).strip()
            flat[f"{prefix}{key}"] = flat[f"{prefix}{key}"].removesuffix("\n...").strip()
    return flat


def train_arguments(config: dict[str, Any], cell: Cell, seeds: tuple[int, ...]) -> str:
    """The `reengage train` options of one job that decide its results (everything but
    --out and the `run_options`). Snakemake records them (params) and retrains a finished
    job when they change."""
    exp = config["experiments"][cell.experiment]
    options = [
        f"--env {cell.env}", f"--dim {cell.dim}", f"--method {cell.method}",
        f"--batch-size {cell.batch}", f"--lr {format_number(cell.lr)}",
        f"--seeds {','.join(map(str, seeds))}", f"--steps {steps_for(exp, cell.dim)}",
        f"--eval-every {exp['eval_every']}", f"--eval-episodes {exp['eval_episodes']}",
        f"--learning-starts {exp['learning_starts']}", f"--buffer-size {exp['buffer_size']}",
    ]
    if cell.c is not None:
        options.append(f"--c {format_number(cell.c)}")
    if "action_noise" in exp:
        options.append(f"--action-noise {exp['action_noise']}")
    # Passed only where the experiment sets them, so that adding these keys to the schema
    # left every existing job's command (and Snakemake's record of it) unchanged.
    for key in ("inputs", "her_future", "her_relabel"):
        if key in exp:
            options.append(f"--{key.replace('_', '-')} {exp[key]}")
    options += [f"--plugin {module}" for module in config["plugins"]]
    method = method_entry(exp, cell.method)
    settings = {**_dotted(exp["settings"]), **_dotted(method.get("settings", {}))}
    options += [f"--set {shlex.quote(f'{key}={value}')}" for key, value in settings.items()]
    options += exp["extra_args"]
    return " ".join(options)


def run_options(config: dict[str, Any]) -> str:
    """The `reengage train` options that change how a job runs but not what it computes:
    checkpoint interval and Weights & Biases logging (threads come from the rule's
    `threads`). The Snakefile passes them as a resource rather than params, which Snakemake
    would compare with the finished jobs' and retrain them for."""
    options = [f"--checkpoint-every {config['checkpoint_every']}"]
    if config["wandb"]["enabled"]:
        options.append(f"--wandb-project {shlex.quote(config['wandb']['project'])} "
                       f"--wandb-mode {config['wandb'].get('mode', 'offline')}")
    return " ".join(options)


def job_priority(config: dict[str, Any], cell: Cell, seeds: tuple[int, ...]) -> int:
    """Snakemake's priority for a training job: its env steps in thousands, times its
    seeds where a method trains them one after the other (a runner of its own, such as
    Stable-Baselines3's), since a population trains its seeds at once. The longest jobs
    start first, so the last minutes of a run do not leave cores idle behind one of them."""
    method = METHODS[cell.method]
    if not method.trains:
        return 0  # a fixed policy only evaluates: seconds
    steps = steps_for(config["experiments"][cell.experiment], cell.dim)
    sequential = method.runner is not None
    return max(1, steps * (len(seeds) if sequential else 1) // 1000)


def wandb_group(cell: Cell) -> str:
    """A cell's Weights & Biases group: its folder under runs/ (experiment/env-dD/method/
    bB_lrLR), the same for every population of its seeds."""
    return cell.run_dir("").strip("/").removeprefix("runs/")
