"""`reengage evaluate RUN_DIR`: reload each seed's policy.pt and score it on deterministic
episodes, as the training loop's evaluations do.

RUN_DIR is one seed's folder (it holds policy.pt) or a population's or cell's folder (every
`seed<k>/policy.pt` in it). Each policy plays `episodes` episodes on the environment it was
trained on, with the run's inputs, and gets one line: success rate (the goal reached at least
once) and mean return. The episodes are those the run's evaluations used: the goals of its
first evaluation by default, of its k-th or last with `evaluation`, which then replays the
earlier ones (they only advance each copy's stream), so the last with the run's episode
count reproduces progress.csv's last row. `seed` plays another seed's evaluation episodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .config import ConfigError, TrainConfig, validate
from .policy import PolicyError, build_learner, load_policy
from .progress import POLICY_NAME, PROGRESS_NAME

_SEED_DIR = re.compile(r"^seed(\d+)$")


@dataclass(frozen=True)
class Score:
    """One policy's result on `episodes` episodes."""

    directory: Path
    seed: int
    success_rate: float
    mean_return: float
    episodes: int
    step: int
    status: str

    def line(self) -> str:
        return (f"seed {self.seed}: success_rate {self.success_rate:.3f} mean_return "
                f"{self.mean_return:.3f} ({self.episodes} episodes; policy at step "
                f"{self.step}, {self.status})")


def policy_dirs(run_dir: Path) -> list[Path]:
    """The seed folders with a policy under `run_dir`, in seed order; PolicyError if none."""
    if not run_dir.is_dir():
        raise PolicyError(f"{run_dir}: no such directory")
    if (run_dir / POLICY_NAME).is_file():
        return [run_dir]
    found = [(int(m.group(1)), path.parent) for path in run_dir.glob(f"seed*/{POLICY_NAME}")
             if (m := _SEED_DIR.match(path.parent.name))]
    if not found:
        raise PolicyError(f"{run_dir}: no {POLICY_NAME} in it or in its seed<k>/ folders "
                          "(a seed leaves one when it finishes)")
    return [path for _, path in sorted(found)]


def _evaluations_done(directory: Path) -> int:
    """How many evaluations the run made: the rows of its progress.csv."""
    path = directory / PROGRESS_NAME
    if not path.is_file():
        raise PolicyError(f"{directory}: no {PROGRESS_NAME} to count the run's evaluations")
    return len(pd.read_csv(path))


def evaluate_policy(document: dict[str, Any], episodes: int | None = None,
                    seed: int | None = None, evaluation: int = 1,
                    device: torch.device | None = None) -> tuple[float, float]:
    """(success rate, mean return) of a loaded policy.pt on `episodes` episodes (default:
    the run's `eval_episodes`): those of evaluation number `evaluation` (1 = the first) of
    seed `seed` (default: the policy's own)."""
    from .run import Evaluator, MemberStreams  # heavy imports once the input is good

    device = device or torch.device("cpu")
    try:
        cfg = TrainConfig(**document["config"])
        validate(cfg)
    except TypeError as error:
        raise PolicyError(f"the policy's config does not fit this version: {error}") from None
    except ConfigError as error:  # e.g. a method of a plugin that was not imported
        raise PolicyError(f"the policy's config: {error} (--plugin imports a method)"
                          ) from None
    cfg = replace(cfg, eval_episodes=episodes or cfg.eval_episodes)
    source = document["seed"] if seed is None else seed
    if document["kind"] == "sb3":
        from .sb3_control import SB3Evaluator, policy_model

        model = policy_model(document, device)
        sb3 = SB3Evaluator(cfg, source)
        for _ in range(evaluation):
            result = sb3(model)
        sb3.close()
        return result
    learner = build_learner(document, device)
    if cfg.loop == "device":  # its evaluation episodes come from the device loop's streams
        return _evaluate_on_device(learner, cfg, source, evaluation, device)
    ours = Evaluator(cfg, [MemberStreams.from_seed(source, cfg.eval_episodes)], device)
    for _ in range(evaluation):
        success, mean_return = ours(learner)
    ours.env.close()
    return float(success[0]), float(mean_return[0])


def _evaluate_on_device(learner: Any, cfg: TrainConfig, seed: int, evaluation: int,
                        device: torch.device) -> tuple[float, float]:
    """Evaluation number `evaluation` of a device-loop run (reengage/device/evaluator.py):
    its goals are the seed's EVALUATION stream at counter `evaluation - 1`."""
    from .device.driver import policy_inputs
    from .device.evaluator import DeviceEvaluator
    from .device.streams import EVALUATION_MOTION, CounterStreams
    from .device.task import make_task

    streams = CounterStreams([seed], device)
    task = make_task(cfg.env, 1, cfg.eval_episodes, cfg.dim, device, streams,
                     EVALUATION_MOTION)
    evaluator = DeviceEvaluator(task, streams, lambda obs: policy_inputs(obs, cfg.inputs))
    evaluator.count.fill_(evaluation - 1)
    evaluator(learner.act)
    episodes = cfg.eval_episodes
    return (float(evaluator.successes[0]) / episodes,
            float(evaluator.return_sums[0]) / episodes)


def evaluate_run(run_dir: Path, episodes: int | None = None, seed: int | None = None,
                 evaluation: int | str = 1, device: torch.device | None = None
                 ) -> list[Score]:
    """Score every policy under `run_dir`; `evaluation` is a number (1 = first) or "last"."""
    scores = []
    for directory in policy_dirs(run_dir):
        document = load_policy(directory / POLICY_NAME)
        number = _evaluations_done(directory) if evaluation == "last" else int(evaluation)
        success, mean_return = evaluate_policy(document, episodes, seed, number, device)
        status = str(document["status"])
        if document.get("diverged_at_step") is not None:
            status = f"diverged at step {document['diverged_at_step']}"
        scores.append(Score(directory, int(document["seed"]), success, mean_return,
                            episodes or int(document["config"]["eval_episodes"]),
                            int(document["step"]), status))
    return scores
