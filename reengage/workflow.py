"""The experiment grid behind the Snakefile: validation, expansion into cells and jobs, and
the training command of each job. Plain Python, so it is tested without Snakemake.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import os
import shlex
import sys
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from .config import (
    DEVICE_LOOP_ENVS,
    DEVICE_LOOP_METHODS,
    ConfigError,
    TrainConfig,
    from_arguments,
    validate,
)
from .provenance import IMPORTED_PLUGINS
from .registry import ENVS, METHODS, ROBOTICS_ENVS

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
    """Schema first (unknown keys, types, ranges), then what a schema cannot say: a robotics
    experiment's epochs (`resolve_epochs`, which writes its `steps` and `eval_every` into
    `config`), steps for every d, and every job the config plans, checked as `reengage
    train` checks the options `train_arguments` writes for it, so that a config the
    workflow accepts never meets a refusal from the command line, nor the other way round.
    Last, the baseline and the ablations."""
    normalize_config(config)
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        raise ConfigError(_key_path(error), error.message)
    import_plugins(config.get("plugins", []))
    apply_gpu(config)
    for name, experiment in config["experiments"].items():
        where = f"experiments.{name}"
        _check_loop(experiment, where)
        resolve_epochs(experiment, where)
        _require_every_dim(experiment["steps"], experiment["dims"], f"{where}.steps")
        for index, method in enumerate(experiment["methods"]):
            for key in ("batch_sizes", "lrs"):
                _require_every_dim(method.get(key), experiment["dims"],
                                   f"{where}.methods.{index}.{key}")
    filled = apply_defaults(copy.deepcopy(config))
    _validate_jobs(filled)
    for name, experiment in filled["experiments"].items():
        names = [m["name"] for m in experiment["methods"]]
        if experiment["baseline"] not in names:
            raise ConfigError(f"experiments.{name}.baseline", f"{experiment['baseline']!r} is "
                              f"not one of the experiment's methods {names}")
    validate_ablations(filled)


def apply_gpu(config: dict[str, Any]) -> dict[str, Any]:
    """`gpu: true` (schema): experiments on tasks the device loop trains that leave `loop`
    unset train on it, packed unless they set `pack`, with one GPU per training job unless
    they ask for their own number. Writes into `config` (as `resolve_epochs` does), so the
    Snakefile, which validates its config in place, plans what `check-config` plans."""
    if not config.get("gpu"):
        return config
    for experiment in config["experiments"].values():
        if experiment.get("env") not in DEVICE_LOOP_ENVS or "loop" in experiment:
            continue
        experiment["loop"] = "device"
        experiment.setdefault("pack", True)
        resources = experiment.setdefault("train_resources", {})
        resources.setdefault("gpu", 1)
    return config


def _check_loop(experiment: dict[str, Any], where: str) -> None:
    """`loop: device` on a task the device loop trains; `pack` only with it."""
    loop = experiment.get("loop", "numpy")
    if loop == "device" and experiment["env"] not in DEVICE_LOOP_ENVS:
        raise ConfigError(f"{where}.loop", f"the device loop trains "
                          f"{', '.join(DEVICE_LOOP_ENVS)} (got {experiment['env']})")
    if experiment.get("pack") and loop != "device":
        raise ConfigError(f"{where}.pack", "packing trains on the device loop: set "
                          "loop: device in this experiment")


def _require_every_dim(values: Any, dims: list[int], key: str) -> None:
    """A map d -> value (steps, a method's batch sizes or lrs) must give every d."""
    if isinstance(values, dict):
        missing = [d for d in dims if str(d) not in map(str, values)]
        if missing:
            raise ConfigError(key, f"no {key.rsplit('.', 1)[1]} given for d = {missing}")


def _validate_jobs(config: dict[str, Any]) -> None:
    """Every planned job through the command line's own parsing and `validate`."""
    from .cli import build_parser  # the command line imports this module

    parser = build_parser()
    for cell in cells(config):
        experiment = config["experiments"][cell.experiment]
        for seeds in seed_chunks(seeds_of(experiment, cell.method),
                                 seeds_per_job(config, cell.experiment)):
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
               *shlex.split(run_options(config)), "--threads",
               str(job_threads(config, cell.experiment)), "--out", "-"]
    return from_arguments(parse_train_command(parser, command))


def parse_train_command(parser: argparse.ArgumentParser,
                        command: list[str]) -> argparse.Namespace:
    """`command` (`["train", ...]`) parsed by `parser` (`reengage.cli.build_parser()`);
    a usage error becomes a ConfigError naming the option (argparse would print and exit)."""
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
    return args


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


@dataclass(frozen=True)
class Registered:
    """The method and env names a plugin module registered when it was imported."""

    methods: frozenset[str]
    envs: frozenset[str]


PLUGIN_REGISTRATIONS: dict[str, Registered] = {}
"""Plugin module -> what it registered, as `import_plugins` saw it (first import only)."""


def import_plugins(modules: list[str]) -> None:
    """Import user modules that register methods (see the README's worked example), and
    note what each one registered, so that only the jobs that need a module name it.

    Modules are looked for on `sys.path` and, after it, in the working directory (as
    `python -m` would) and in the checkout this package runs from: a module in the directory
    the workflow runs from, or one shipped in the checkout (`plugins.td3`), is found by the
    workflow and by its jobs alike, without a PYTHONPATH."""
    for folder in (os.getcwd(), *_checkout_with_plugins()):
        if modules and folder not in sys.path:
            sys.path.append(folder)
    for module in modules:
        methods, envs = dict(METHODS), dict(ENVS)
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError("plugins", f"cannot import {module!r}: {error}") from error
        if module not in IMPORTED_PLUGINS:
            IMPORTED_PLUGINS.append(module)
        if module not in PLUGIN_REGISTRATIONS:
            # What changed during the import; a module imported before (by another plugin,
            # say) changes nothing now, so its methods are also found by where their
            # builder or runner is defined (run.json's `method_module`).
            PLUGIN_REGISTRATIONS[module] = Registered(
                methods=frozenset(name for name, method in METHODS.items()
                                  if methods.get(name) is not method
                                  or _entry_module(name) == module),
                envs=frozenset(name for name, env in ENVS.items() if envs.get(name) is not env))


def _checkout_with_plugins() -> list[str]:
    """The source checkout this package was imported from, where it ships a `plugins`
    folder (an installed copy has none)."""
    root = Path(__file__).resolve().parent.parent
    return [str(root)] if (root / "plugins" / "__init__.py").is_file() else []


def _entry_module(method: str) -> str | None:
    registered = METHODS[method]
    entry = registered.runner if registered.runner is not None else registered.build
    return getattr(entry, "__module__", None)


def plugins_for(config: dict[str, Any], cell: Cell) -> list[str]:
    """The config's plugin modules that `cell`'s job needs: those that registered its method
    or its env. A job's command names only these, so adding a plugin (a new method column)
    leaves the other jobs' commands, which Snakemake compares with finished jobs' records,
    as they were: nothing already trained is retrained."""
    import_plugins(config["plugins"])
    return [module for module in config["plugins"]
            if cell.method in PLUGIN_REGISTRATIONS[module].methods
            or cell.env in PLUGIN_REGISTRATIONS[module].envs]


def apply_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """Fill in the schema's defaults (what snakemake.utils.validate does in the workflow),
    after a robotics experiment's epochs became its steps and eval_every (`resolve_epochs`,
    which `validate_config` runs first; here again for a config that skipped it)."""
    for name, experiment in config["experiments"].items():
        if is_robotics(experiment):
            resolve_epochs(experiment, f"experiments.{name}")
    apply_gpu(config)
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


def packed(config: dict[str, Any], cell: Cell) -> bool:
    """Whether `cell` trains inside a pack (`pack_jobs`) rather than in a job of its own."""
    experiment = config["experiments"][cell.experiment]
    return bool(experiment.get("pack")) and cell.method in DEVICE_LOOP_METHODS


@dataclass(frozen=True)
class PackJob:
    """One `reengage train-pack` job: cells of one experiment, d, method and batch size
    (their lr and c differ), each training the seeds `seeds`."""

    cells: tuple[Cell, ...]
    seeds: tuple[int, ...]

    @property
    def name(self) -> str:
        """A rule name: experiment, task, method, batch and seeds (lr and c vary inside)."""
        cell = self.cells[0]
        seeds = "_".join(map(str, self.seeds))
        return (f"{cell.experiment}_{cell.env}_d{cell.dim}_{cell.method}_b{cell.batch}_"
                f"seeds{seeds}")


def pack_jobs(config: dict[str, Any]) -> list[PackJob]:
    """Every pack the config trains (experiments with `pack: true`): the cells that differ
    only in lr and c, per chunk of seeds (`seeds_per_job`)."""
    groups: dict[tuple[Any, ...], list[Cell]] = {}
    for cell in cells(config):
        if not packed(config, cell):
            continue
        seeds = seeds_of(config["experiments"][cell.experiment], cell.method)
        for chunk in seed_chunks(seeds, seeds_per_job(config, cell.experiment)):
            key = (cell.experiment, cell.env, cell.dim, cell.method, cell.batch, chunk)
            groups.setdefault(key, []).append(cell)
    return [PackJob(tuple(group), key[-1]) for key, group in groups.items()]


def pack_cell_arguments(config: dict[str, Any], job: PackJob) -> str:
    """The `--cell` options of a pack's command: each cell's `reengage train` options
    (`train_arguments`, what decides its results) and its --out."""
    results = config["results"]
    return " ".join(
        "--cell " + shlex.quote(f"{train_arguments(config, cell, job.seeds)} --out "
                                f"{cell.run_dir(results)}")
        for cell in job.cells)


def train_chunks(config: dict[str, Any]) -> dict[tuple[int, ...], dict[str, set[str]]]:
    """Every population of seeds the config trains outside packs: chunk -> experiment ->
    the method folders (`Cell.method_dir`) trained in that chunk. The Snakefile writes one
    rule per chunk and limits its wildcards to these names."""
    chunks: dict[tuple[int, ...], dict[str, set[str]]] = {}
    for cell in cells(config):
        if packed(config, cell):
            continue
        seeds = seeds_of(config["experiments"][cell.experiment], cell.method)
        for chunk in seed_chunks(seeds, seeds_per_job(config, cell.experiment)):
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
            flat[f"{prefix}{key}"] = _yaml_scalar(value)
    return flat


def _yaml_scalar(value: Any) -> str:
    """A config value as it reads in YAML on one line (`false`, `[64, 64]`, `null`)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def train_arguments(config: dict[str, Any], cell: Cell, seeds: tuple[int, ...]) -> str:
    """The `reengage train` options of one job that decide its results (everything but
    --out and the `run_options`). Snakemake records them (params) and retrains a finished
    job when they change."""
    exp = config["experiments"][cell.experiment]
    options = [
        f"--env {cell.env}", f"--dim {cell.dim}", f"--method {cell.method}",
        f"--batch-size {cell.batch}", f"--lr {format_number(cell.lr)}",
        f"--seeds {','.join(map(str, seeds))}", f"--steps {steps_for(exp, cell.dim)}",
        f"--eval-every {exp['eval_every']}",
    ]
    if is_robotics(exp):
        # The Baselines loop tests `test_rollouts` rounds per epoch, explores from the first
        # cycle and keeps Baselines' buffer: none of these options reaches it (the schema's
        # defaults for them are filled in all the same, so they are left out here).
        return " ".join([*options, *_c_plugins_settings(config, cell, exp)])
    options += [
        f"--eval-episodes {exp['eval_episodes']}",
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
    if exp.get("loop", "numpy") != "numpy" and cell.method in DEVICE_LOOP_METHODS:
        options.append(f"--loop {exp['loop']}")  # other methods (SB3's column) keep theirs
    options += [f"--plugin {module}" for module in plugins_for(config, cell)]
    method = method_entry(exp, cell.method)
    settings = {**_dotted(exp["settings"]), **_dotted(method.get("settings", {}))}
    options += [f"--set {shlex.quote(f'{key}={value}')}" for key, value in settings.items()]
    options += exp["extra_args"]
    return " ".join(options)


def _c_plugins_settings(config: dict[str, Any], cell: Cell, exp: dict[str, Any]) -> list[str]:
    """A robotics job's --c, --plugin, --set and extra options. The settings that make an
    epoch (`EPOCH_SETTINGS`) are always passed, the workflow's defaults where the config
    leaves them out, so that the epoch the workflow checked steps against is the one the
    job trains."""
    options = [f"--c {format_number(cell.c)}"] if cell.c is not None else []
    options += [f"--plugin {module}" for module in plugins_for(config, cell)]
    method = method_entry(exp, cell.method)
    settings = {**_dotted(EPOCH_SETTINGS), **_dotted(exp["settings"]),
                **_dotted(method.get("settings", {}))}
    options += [f"--set {shlex.quote(f'{key}={value}')}" for key, value in settings.items()]
    return options + exp["extra_args"]


# -- robotics: the Baselines regime, in epochs ------------------------------------------------
EPOCH_SETTINGS = {"cycles": 50, "workers": 1, "envs_per_worker": 2}
"""The settings that make a robotics epoch (cycles x workers x envs per worker episodes of T
steps), with the workflow's defaults: Baselines' own for one MPI worker (50 cycles,
`rollout_batch_size` 2). The paper ran 19 workers (config/paper.yaml sets them)."""
# Experiment keys of the toy tasks' loop that the Baselines loop has no use for; what stands
# in for each, said in the error.
_NOT_ROBOTICS = {
    "eval_episodes": "settings: {test_rollouts: N} (test rounds of one episode per env)",
    "learning_starts": "nothing: the Baselines loop updates from the first cycle",
    "buffer_size": "settings: {buffer_size: N} (per worker, as Baselines' buffer)",
    "action_noise": "settings: {noise_eps: X, random_eps: Y}",
    "inputs": "nothing: the networks see (observation, goal), as Baselines builds them",
    "her_future": "nothing: the Baselines loop relabels as Baselines does",
    "her_relabel": "nothing: the Baselines loop relabels as Baselines does",
}


def is_robotics(experiment: dict[str, Any]) -> bool:
    """A gymnasium-robotics task (reengage.registry.ROBOTICS_ENVS): trained in the Baselines
    regime, in epochs of cycles, rather than one update per env step."""
    return experiment.get("env") in ROBOTICS_ENVS


def epoch_settings(experiment: dict[str, Any]) -> dict[str, int]:
    """cycles, workers, envs_per_worker of a robotics experiment (the workflow's defaults
    where its `settings` leave them out)."""
    settings = experiment.get("settings") or {}
    return {key: settings.get(key, default) for key, default in EPOCH_SETTINGS.items()}


def epoch_length(experiment: dict[str, Any]) -> int:
    """Env steps of one member in one epoch: cycles x workers x envs per worker x T."""
    settings = epoch_settings(experiment)
    return (settings["cycles"] * settings["workers"] * settings["envs_per_worker"]
            * int(ROBOTICS_ENVS[experiment["env"]].episode_steps))


def _epoch_text(experiment: dict[str, Any]) -> str:
    settings = epoch_settings(experiment)
    return (f"an epoch of {experiment['env']} here is {settings['cycles']} cycles x "
            f"{settings['workers']} workers x {settings['envs_per_worker']} envs per worker x "
            f"{ROBOTICS_ENVS[experiment['env']].episode_steps} steps = "
            f"{epoch_length(experiment):,} env steps")


def resolve_epochs(experiment: dict[str, Any], where: str) -> None:
    """Check a robotics experiment's schedule in whole epochs and write it as steps.

    `epochs` (the unit of the paper's robotics figures) becomes `steps` = epochs x
    `epoch_length`; `eval_every`, unset, becomes one epoch (Baselines tests after every
    epoch). Steps and `eval_every` given in env steps must be whole epochs, and `eval_every`
    must divide the steps. Keys the Baselines loop has no use for, and the epoch settings
    set per method (every method of an experiment trains the same epochs), are refused.
    Other experiments may not set `epochs`. Changes `experiment` in place."""
    if not is_robotics(experiment):
        if "epochs" in experiment:
            raise ConfigError(f"{where}.epochs", f"only the robotics tasks "
                              f"({', '.join(ROBOTICS_ENVS)}) train in epochs; "
                              f"{experiment['env']} takes steps")
        if "steps" not in experiment:
            raise ConfigError(where, "'steps' is a required property")
        return
    for key, instead in _NOT_ROBOTICS.items():
        if key in experiment:
            raise ConfigError(f"{where}.{key}", f"{experiment['env']} trains in the Baselines "
                              f"regime, which takes no {key}; use {instead}")
    for index, method in enumerate(experiment["methods"]):
        for key in EPOCH_SETTINGS:
            if key in method.get("settings", {}):
                raise ConfigError(f"{where}.methods.{index}.settings.{key}",
                                  "set it for the whole experiment (its settings): every "
                                  "method trains the same epochs")
    for key, value in epoch_settings(experiment).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}.settings.{key}",
                              f"must be a positive integer (got {value!r})")
    length = epoch_length(experiment)
    if "epochs" in experiment:
        steps = experiment["epochs"] * length
        given = experiment.get("steps", steps)
        if any(s != steps for s in (given.values() if isinstance(given, dict) else [given])):
            raise ConfigError(f"{where}.steps", f"{given} is not the {experiment['epochs']} "
                              f"epochs given ({steps:,} env steps: {_epoch_text(experiment)}); "
                              "give one of epochs and steps")
        experiment["steps"] = steps
    elif "steps" not in experiment:
        raise ConfigError(where, "a robotics experiment needs 'epochs' (or 'steps')")
    experiment.setdefault("eval_every", length)
    steps = experiment["steps"]
    for key, value in (steps.items() if isinstance(steps, dict) else [(None, steps)]):
        at = f"{where}.steps" + (f".{key}" if key is not None else "")
        if value % length:
            raise ConfigError(at, f"{value:,} env steps is not a whole number of epochs: "
                              f"{_epoch_text(experiment)}")
        if value % experiment["eval_every"]:
            raise ConfigError(f"{where}.eval_every", f"{experiment['eval_every']:,} does not "
                              f"divide the {value:,} steps")
    if experiment["eval_every"] % length:
        raise ConfigError(f"{where}.eval_every", f"{experiment['eval_every']:,} env steps is "
                          f"not a whole number of epochs: {_epoch_text(experiment)} (leave "
                          "eval_every out to test after every epoch, as Baselines does)")


def report_options(config: dict[str, Any]) -> str:
    """The report's options that come from the experiments: each one's note (a reduction,
    stated beside it) and each reference check's threshold."""
    options = []
    for name, experiment in config["experiments"].items():
        note = experiment.get("note", "")
        if note:
            options.append(f"--experiment-note {shlex.quote(f'{name}={note}')}")
        check = experiment.get("reference_check")
        if check:
            options.append(f"--reference-check {name}={format_number(float(check['min_final']))}")
    return " ".join(options)


def seeds_per_job(config: dict[str, Any], experiment: str) -> int:
    """Seeds of one cell trained as one population (one job) in `experiment`: its own
    `seeds_per_job`, else the config's (a robotics seed alone can fill a node)."""
    return int(config["experiments"][experiment].get("seeds_per_job",
                                                     config["seeds_per_job"]))


def job_threads(config: dict[str, Any], experiment: str) -> int:
    """Cores a training job of `experiment` reserves (and its torch threads): the
    experiment's own `threads_per_job`, else the config's."""
    return int(config["experiments"][experiment].get("threads_per_job",
                                                     config["threads_per_job"]))


def job_resources(config: dict[str, Any], experiment: str) -> dict[str, int]:
    """mem_mb and runtime of a training job of `experiment`: the experiment's own
    `train_resources` over the config's."""
    return {**config["train_resources"],
            **config["experiments"][experiment].get("train_resources", {})}


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


# One seed-step of a sequential runner costs about a third of one step of a population
# (the default run on 2 cores: Stable-Baselines3 9.8 ms per seed-step at d = 5; our
# populations of 5 seeds 28 ms per step at d = 5, the goal sets' of 3 seeds 22-30 ms).
SEQUENTIAL_STEP_SHARE = 3


def job_priority(config: dict[str, Any], cell: Cell, seeds: tuple[int, ...]) -> int:
    """Snakemake's priority for a training job: its env steps in thousands, where a
    population trains its seeds at once; where a method trains them one after the other
    (a runner of its own, such as Stable-Baselines3's), its seed-steps in thousands over
    `SEQUENTIAL_STEP_SHARE`. The longest jobs start first, so the last minutes of a run do
    not leave cores idle behind one of them."""
    method = METHODS[cell.method]
    if not method.trains:
        return 0  # a fixed policy only evaluates: seconds
    steps = steps_for(config["experiments"][cell.experiment], cell.dim)
    if method.runner is not None:
        return max(1, steps * len(seeds) // (1000 * SEQUENTIAL_STEP_SHARE))
    return max(1, steps // 1000)


def wandb_group(cell: Cell) -> str:
    """A cell's Weights & Biases group: its folder under runs/ (experiment/env-dD/method/
    bB_lrLR), the same for every population of its seeds."""
    return cell.run_dir("").strip("/").removeprefix("runs/")


# -- ablations: one experiment against another that differs from it in what it trains ------
# An experiment's CSV tables (tables/{experiment}/{table}.csv): no ablation takes their names.
_EXPERIMENT_CSV_TABLES = ("selection", "stats", "runtime")


def validate_ablations(config: dict[str, Any]) -> None:
    """Each entry of `ablations` (in a config with its defaults filled in) names two
    different experiments of the same env that share a method and differ in what they
    train; errors name the key path, as the schema's do."""
    experiments = config["experiments"]
    ablations = config.get("ablations", {})
    if ablations and "ablations" in experiments:
        raise ConfigError("experiments.ablations", "the name is taken by the ablation tables "
                          "(tables/ablations/); rename the experiment")
    for name, ablation in ablations.items():
        where = f"ablations.{name}"
        if name in _EXPERIMENT_CSV_TABLES:
            raise ConfigError(where, f"{name!r} names an experiment's table "
                              f"(tables/{{experiment}}/{name}.csv); choose another name")
        for side in ("reference", "ablated"):
            if ablation[side] not in experiments:
                raise ConfigError(f"{where}.{side}", f"{ablation[side]!r} is not one of the "
                                  f"experiments {list(experiments)}")
        reference, ablated = ablation["reference"], ablation["ablated"]
        if reference == ablated:
            raise ConfigError(f"{where}.ablated", f"{ablated!r} is the reference itself; an "
                              "ablation compares two experiments")
        envs = experiments[reference]["env"], experiments[ablated]["env"]
        if envs[0] != envs[1]:
            raise ConfigError(f"{where}.ablated", f"{ablated!r} runs {envs[1]} and the "
                              f"reference {reference!r} runs {envs[0]}; an ablation compares "
                              "one env")
        theirs = {m["name"] for m in experiments[ablated]["methods"]}
        if not any(m["name"] in theirs for m in experiments[reference]["methods"]):
            raise ConfigError(f"{where}.ablated", f"{ablated!r} runs none of the methods of "
                              f"the reference {reference!r}")
        if not ablation_change(config, reference, ablated):
            raise ConfigError(f"{where}.ablated", f"{ablated!r} trains what {reference!r} "
                              "trains (they differ in their note at most): nothing to compare")


# Experiment keys compared per method, as they reach its jobs (a method may set its own).
_PER_METHOD_KEYS = ("seeds", "batch_sizes", "lrs", "settings")
# Experiment keys that change how its jobs run, or how the report reads them, not what they
# compute.
_HOW_A_JOB_RUNS = ("threads_per_job", "seeds_per_job", "train_resources", "reference_check")


def ablation_change(config: dict[str, Any], reference: str, ablated: str) -> str:
    """What experiment `ablated` changes against `reference`: `key: before -> after` items
    joined by "; " (`networks.share_encoder: true -> false`), empty when nothing differs.

    An unset key compares as its default: the schema's, else `reengage train`'s
    (TrainConfig) for an experiment key, the learner's for a setting. A method's seeds,
    grid and settings compare as its jobs get them (its own where it sets them, else the
    experiment's); a change every shared method has is named once, one that only some
    have is prefixed with each method's name. `note` names an experiment, so it is not
    compared."""
    filled = apply_defaults(normalize_config(copy.deepcopy(config)))
    before, after = filled["experiments"][reference], filled["experiments"][ablated]
    schema = load_schema()["properties"]["experiments"]["additionalProperties"]["properties"]
    changes = []
    for key in schema:
        if key in ("note", "methods", *_PER_METHOD_KEYS, *_HOW_A_JOB_RUNS):
            continue
        old, new = _experiment_value(before, key), _experiment_value(after, key)
        if old != new:
            changes.append(f"{key}: {old} -> {new}")
    names = [m["name"] for m in before["methods"]]
    theirs = [m["name"] for m in after["methods"]]
    shared = [name for name in names if name in theirs]
    dropped = [name for name in names if name not in theirs]
    added = [name for name in theirs if name not in names]
    if dropped:
        changes.append(f"methods without {', '.join(dropped)}")
    if added:
        changes.append(f"methods with {', '.join(added)}")
    by_method = {name: _method_changes(before, after, name) for name in shared}
    # A change every shared method has is the experiment's (its settings, say): named once.
    everywhere = [c for c in by_method[shared[0]]
                  if all(c in by_method[n] for n in shared)] if shared else []
    changes += everywhere
    changes += [f"{name}: {c}" for name in shared for c in by_method[name] if c not in everywhere]
    return "; ".join(changes)


def _yaml_text(value: Any) -> str:
    """A config value as it reads in YAML (`false`, `[64, 64]`); `unset` for None."""
    return "unset" if value is None else _yaml_scalar(value)


# `reengage train`'s default of an experiment key the schema leaves unset (inputs,
# her_future, her_relabel, action_noise).
_TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def _experiment_value(experiment: dict[str, Any], key: str) -> str:
    return _yaml_text(experiment.get(key, _TRAIN_DEFAULTS.get(key)))


def _method_changes(before: dict[str, Any], after: dict[str, Any], name: str) -> list[str]:
    """`key: before -> after` for what reaches method `name`'s jobs differently."""
    changes = []
    for key in ("c", "seeds", "batch_sizes", "lrs"):
        old, new = _method_value(before, name, key), _method_value(after, name, key)
        if old != new:
            changes.append(f"{key}: {old} -> {new}")
    old_settings, new_settings = _method_settings(before, name), _method_settings(after, name)
    defaults = learner_defaults()
    for key in [*old_settings, *(k for k in new_settings if k not in old_settings)]:
        old = old_settings.get(key, defaults.get(key, "unset"))
        new = new_settings.get(key, defaults.get(key, "unset"))
        if old != new:
            changes.append(f"{key}: {old} -> {new}")
    return changes


def _method_value(experiment: dict[str, Any], name: str, key: str) -> str:
    method = method_entry(experiment, name)
    if key == "c":
        return _yaml_text(method.get("c"))
    if key == "seeds":  # 10 and [0, ..., 9] are the same seeds
        seeds = seeds_of(experiment, name)
        return _yaml_text(len(seeds) if seeds == list(range(len(seeds))) else seeds)
    return _yaml_text(method.get(key, experiment[key]))


def _method_settings(experiment: dict[str, Any], name: str) -> dict[str, str]:
    """The dotted `--set` settings of method `name`'s jobs (train_arguments' rule)."""
    method = method_entry(experiment, name)
    return {**_dotted(experiment["settings"]), **_dotted(method.get("settings", {}))}


def learner_defaults() -> dict[str, str]:
    """Dotted learner setting -> its default as YAML text, from the learners' config
    dataclasses (`networks.share_encoder` -> `true`); a setting two learners default
    differently is left out (it has no one default)."""
    from reengage.agents.ddpg import DDPGConfig
    from reengage.agents.multi_goal import MultiGoalConfig

    defaults: dict[str, str] = {}
    ambiguous: set[str] = set()
    for learner in (DDPGConfig(), MultiGoalConfig()):
        for key, value in _dotted(asdict(learner)).items():
            if defaults.setdefault(key, value) != value:
                ambiguous.add(key)
    return {key: value for key, value in defaults.items() if key not in ambiguous}
