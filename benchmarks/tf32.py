"""TF32 against float32 for ReenGAGE: the error it puts into ∇_g Q, and the speed it buys.

On Ampere and later GPUs, `torch.set_float32_matmul_precision("high")` lets float32 matrix
products run as TF32 (10-bit mantissa inputs, float32 accumulation). PyTorch 1.7-1.11, the
paper's era, did so by default, so TF32 may be the faithful setting for the paper's GPU
runs; this measures what it changes. For a DDPG population at ContinuousSeek shapes
(d = 20 by default, `inputs: sb3`, 2x256 networks, batch 256) it reports

* the relative error of the critic's goal gradient ∇_g Q (the quantity ReenGAGE regresses)
  and of Q, under TF32 and under float32, both against a float64 evaluation of the same
  networks on the same batch (per member: ‖x - x64‖ / ‖x64‖; median and max over members);
* the update's time (DDPG+HER and ReenGAGE+HER, `DDPG.update` as the loops call it) under
  each precision, alternating rounds, median over repeats.

On a CPU the precision setting changes nothing measurable; the script still runs (its
numbers then show float32 twice).

    python benchmarks/tf32.py --device cuda [--population 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from reengage.agents.ddpg import DDPG, DDPGConfig
from reengage.agents.losses import q_and_goal_gradient

PRECISIONS = {"float32": "highest", "tf32": "high"}


def _learner(members: int, dim: int, c: float, device: torch.device,
             dtype: torch.dtype = torch.float32) -> DDPG:
    generators = [torch.Generator().manual_seed(seed) for seed in range(members)]
    config = DDPGConfig(goal_gradient_coef=c, compile=False)
    # The sb3 layout: the state is (achieved goal, observation), the goal enters after the
    # achieved goal (reengage/run.py learner_state).
    learner = DDPG(members, 2 * dim, dim, dim, config, generators, goal_at=dim)
    return learner.to(device=device, dtype=dtype)


def _batch(members: int, batch: int, dim: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)

    def uniform(*shape: int, scale: float) -> torch.Tensor:
        return (scale * (2 * torch.rand(*shape, generator=generator) - 1)).to(device)

    return {"obs": uniform(members, batch, 2 * dim, scale=5.0),
            "goal": uniform(members, batch, dim, scale=5.0),
            "action": uniform(members, batch, dim, scale=1.0),
            "next_obs": uniform(members, batch, 2 * dim, scale=5.0),
            "reward": -(torch.rand(members, batch, generator=generator) < 0.9).float().to(device)}


def _relative_errors(x: torch.Tensor, reference: torch.Tensor) -> list[float]:
    members = x.shape[0]
    diff = (x.double() - reference).reshape(members, -1).norm(dim=1)
    return (diff / reference.reshape(members, -1).norm(dim=1)).tolist()


def gradient_errors(members: int, batch: int, dim: int,
                    device: torch.device) -> dict[str, dict[str, float]]:
    """Relative errors of Q and ∇_g Q under each precision against float64."""
    learner = _learner(members, dim, 0.2, device)
    reference = _learner(members, dim, 0.2, device, torch.float64)
    reference.load_state_dict({k: v.double() for k, v in learner.state_dict().items()})
    data = _batch(members, batch, dim, device)
    q64, g64 = q_and_goal_gradient(reference.critic, data["obs"].double(),
                                   data["goal"].double(), data["action"].double())
    results = {}
    for name, precision in PRECISIONS.items():
        torch.set_float32_matmul_precision(precision)
        q, g = q_and_goal_gradient(learner.critic, data["obs"], data["goal"], data["action"])
        q_err, g_err = _relative_errors(q.detach(), q64.detach()), _relative_errors(
            g.detach(), g64.detach())
        results[name] = {"q_median": statistics.median(q_err), "q_max": max(q_err),
                         "goal_gradient_median": statistics.median(g_err),
                         "goal_gradient_max": max(g_err)}
    torch.set_float32_matmul_precision("highest")
    return results


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def update_times(members: int, batch: int, dim: int, device: torch.device, updates: int,
                 repeats: int) -> dict[str, dict[str, float]]:
    """Milliseconds per update, median over `repeats` rounds of `updates` updates, the
    precisions alternating round by round."""
    data = _batch(members, batch, dim, device)
    times: dict[str, dict[str, list[float]]] = {}
    learners = {method: _learner(members, dim, c, device)
                for method, c in (("ddpg_her", 0.0), ("reengage_her", 0.2))}
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        for method, learner in learners.items():
            for name, precision in PRECISIONS.items():
                torch.set_float32_matmul_precision(precision)
                _sync(device)
                start = time.perf_counter()
                for _ in range(updates):
                    learner.update(**data)
                _sync(device)
                times.setdefault(method, {}).setdefault(name, []).append(
                    1000 * (time.perf_counter() - start) / updates)
    torch.set_float32_matmul_precision("highest")
    return {method: {name: statistics.median(samples[1:]) for name, samples in by.items()}
            for method, by in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--population", type=int, default=10)
    parser.add_argument("--dim", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--updates", type=int, default=50, help="updates per timed round")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    errors = gradient_errors(args.population, args.batch_size, args.dim, device)
    times = update_times(args.population, args.batch_size, args.dim, device, args.updates,
                         args.repeats)
    result: dict[str, Any] = {
        "run_info": {"device": str(device), "torch": torch.__version__,
                     "python": platform.python_version(),
                     "gpu": torch.cuda.get_device_name(device) if device.type == "cuda"
                     else None, "population": args.population, "dim": args.dim,
                     "batch_size": args.batch_size, "updates": args.updates,
                     "repeats": args.repeats},
        "relative_error_vs_float64": errors,
        "update_ms": times,
    }
    for name, values in errors.items():
        print(f"{name}: ∇_g Q error median {values['goal_gradient_median']:.2e} max "
              f"{values['goal_gradient_max']:.2e}; Q error median {values['q_median']:.2e}")
    for method, by in times.items():
        ratio = by["float32"] / by["tf32"]
        print(f"{method}: {by['float32']:.2f} ms float32, {by['tf32']:.2f} ms tf32 "
              f"({ratio:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
