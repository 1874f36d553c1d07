"""The experiment grid behind the Snakefile: validation, expansion into cells and jobs, and
the training command of each job. Plain Python, so it is tested without Snakemake.
"""

from __future__ import annotations

import importlib
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .config import ConfigError
from .registry import ENVS, METHODS

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"
RUN_PATTERN = "{results}/runs/{experiment}/{env}-d{dim}/{method}/b{batch}_lr{lr}/seed{seed}"


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def normalize_config(config: dict[str, Any]) -> dict[str, Any]:
    """YAML reads `steps: {5: 25000}` with integer keys; JSON schema wants strings."""
    for experiment in (config.get("experiments") or {}).values():
        if isinstance(experiment, dict) and isinstance(experiment.get("steps"), dict):
            experiment["steps"] = {str(k): v for k, v in experiment["steps"].items()}
    return config


def validate_config(config: dict[str, Any]) -> None:
    """Schema first (unknown keys, types, ranges), then what a schema cannot say: known
    envs and methods, `c` exactly where a method takes it, steps for every d."""
    normalize_config(config)
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        raise ConfigError(_key_path(error), error.message)
    import_plugins(config.get("plugins", []))
    for name, experiment in config["experiments"].items():
        where = f"experiments.{name}"
        if experiment["env"] not in ENVS:
            raise ConfigError(f"{where}.env", f"unknown env {experiment['env']!r}; choose from "
                              f"{', '.join(ENVS)}")
        steps = experiment["steps"]
        if isinstance(steps, dict):
            missing = [d for d in experiment["dims"] if str(d) not in map(str, steps)]
            if missing:
                raise ConfigError(f"{where}.steps", f"no steps given for d = {missing}")
        episode = ENVS[experiment["env"]].episode_steps
        for d in experiment["dims"]:
            if steps_for(experiment, d) % episode:
                raise ConfigError(f"{where}.steps", f"{steps_for(experiment, d)} (d = {d}) is "
                                  f"not a multiple of the episode length {episode}")
        names = [m["name"] for m in experiment["methods"]]
        if experiment.get("baseline", "ddpg_her") not in names:
            raise ConfigError(f"{where}.baseline", f"{experiment.get('baseline', 'ddpg_her')!r}"
                              f" is not one of the experiment's methods {names}")
        for i, method in enumerate(experiment["methods"]):
            key = f"{where}.methods.{i}"
            if method["name"] not in METHODS:
                raise ConfigError(f"{key}.name", f"unknown method {method['name']!r}; choose "
                                  f"from {', '.join(METHODS)} or register one in a plugin")
            takes_c = METHODS[method["name"]].takes_c
            if takes_c and "c" not in method:
                raise ConfigError(f"{key}.c", f"method {method['name']} needs a list of c")
            if not takes_c and "c" in method:
                raise ConfigError(f"{key}.c", f"method {method['name']} takes no c")


def import_plugins(modules: list[str]) -> None:
    """Import user modules that register methods (see the README's worked example)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError("plugins", f"cannot import {module!r}: {error}") from error


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


def seeds_of(experiment: dict[str, Any]) -> list[int]:
    seeds = experiment["seeds"]
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


def seed_chunks(seeds: list[int], per_job: int) -> list[tuple[int, ...]]:
    return [tuple(seeds[i:i + per_job]) for i in range(0, len(seeds), per_job)]


def format_number(x: float) -> str:
    """Numbers as they appear in paths and labels: 0.001, 0.2, 5 (never 1e-03)."""
    return f"{x:.10f}".rstrip("0").rstrip(".") if isinstance(x, float) else str(x)


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
                for c in method.get("c", [None]):
                    for batch in exp["batch_sizes"]:
                        for lr in exp["lrs"]:
                            yield Cell(name, exp["env"], dim, method["name"], c, batch, lr)


def progress_files(config: dict[str, Any], experiment: str) -> list[str]:
    seeds = seeds_of(config["experiments"][experiment])
    return [f"{cell.run_dir(config['results'])}/seed{seed}/progress.csv"
            for cell in cells(config, experiment) for seed in seeds]


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
    """The `reengage train` options of one job (everything but --out)."""
    exp = config["experiments"][cell.experiment]
    options = [
        f"--env {cell.env}", f"--dim {cell.dim}", f"--method {cell.method}",
        f"--batch-size {cell.batch}", f"--lr {format_number(cell.lr)}",
        f"--seeds {','.join(map(str, seeds))}", f"--steps {steps_for(exp, cell.dim)}",
        f"--eval-every {exp['eval_every']}", f"--eval-episodes {exp['eval_episodes']}",
        f"--learning-starts {exp['learning_starts']}", f"--buffer-size {exp['buffer_size']}",
        f"--threads {config['threads_per_job']}",
        f"--checkpoint-every {config['checkpoint_every']}",
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
    method = next(m for m in exp["methods"] if m["name"] == cell.method)
    settings = {**_dotted(exp["settings"]), **_dotted(method.get("settings", {}))}
    options += [f"--set {shlex.quote(f'{key}={value}')}" for key, value in settings.items()]
    if config["wandb"]["enabled"]:
        group = cell.run_dir("").strip("/").removeprefix("runs/")
        options.append(f"--wandb-project {config['wandb']['project']} --wandb-group {group}")
        # offline is the CLI's default: passing it too would change the recorded command
        # of every existing job and make Snakemake retrain them.
        mode = config["wandb"].get("mode", "offline")
        if mode != "offline":
            options.append(f"--wandb-mode {mode}")
    options += exp["extra_args"]
    return " ".join(options)
