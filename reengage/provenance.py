"""Where a run came from, for its run.json: the code's git revision (when it runs from a
checkout), the command line, the plugin modules that registered methods, and every setting
of the learner as it was built (defaults included, so a plugin's own choices show)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from .registry import METHODS

IMPORTED_PLUGINS: list[str] = []
"""Modules imported through `--plugin` / the config's `plugins`, in import order
(reengage.workflow.import_plugins appends to it)."""

_SOURCE = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(_SOURCE), *args], capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


@lru_cache(maxsize=1)
def source_revision() -> dict[str, Any] | None:
    """{commit, dirty} of the git checkout this package was imported from; None for an
    installed copy (or without git). `dirty`: tracked files differ from the commit, so the
    commit alone does not name the code that ran."""
    if _git("rev-parse", "--show-toplevel") != str(_SOURCE):
        return None  # not a checkout of this project (e.g. site-packages inside some repo)
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def _settings(config: Any) -> Any:
    """A learner's settings dataclass as JSON-ready values (tuples become lists)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return _settings(dataclasses.asdict(config))
    if isinstance(config, dict):
        return {str(key): _settings(value) for key, value in config.items()}
    if isinstance(config, list | tuple):
        return [_settings(value) for value in config]
    if config is None or isinstance(config, bool | int | float | str):
        return config
    return repr(config)


def learner_description(learner: Any) -> dict[str, Any]:
    """The learner's class and, when it keeps its settings in a dataclass `config` (as
    DDPG and the goal-set learners do), every one of them."""
    kind = type(learner)
    description: dict[str, Any] = {"class": f"{kind.__module__}.{kind.__qualname__}"}
    config = getattr(learner, "config", None)
    if dataclasses.is_dataclass(config):
        description["settings"] = _settings(config)
    return description


def provenance(method: str, learner: Any | None = None) -> dict[str, Any]:
    """The run.json block that says which code, command and settings made a run."""
    registered = METHODS[method]
    entry = registered.runner if registered.runner is not None else registered.build
    record: dict[str, Any] = {
        "git": source_revision(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else [],
        "plugins": list(IMPORTED_PLUGINS),
        "method_module": getattr(entry, "__module__", None),
    }
    if learner is not None:
        record["learner"] = learner_description(learner)
    return record
