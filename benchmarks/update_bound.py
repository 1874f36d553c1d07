"""How fast could one update be? The matrix products of an update, timed alone.

Records the matrix products (`bmm`, `baddbmm`, `mm`, `addmm`) that one update of a
population dispatches, for DDPG+HER and ReenGAGE+HER on ContinuousSeek shapes (d = 20,
batch 256, 2×256 networks by default), then times, in alternating rounds:

* the update itself (`DDPG.update`, as the training loop calls it, compiled by default);
* its products alone, replayed back to back on tensors of the same shapes and strides.

The products are work the exact loss cannot skip, so "products alone" bounds the
seed-updates/s any implementation of the same update reaches on this machine, and their
ReenGAGE/DDPG ratio bounds the cost ratio of the two. What the update spends beyond them
is elementwise work, the autograd engine and Python.

    python benchmarks/update_bound.py [--population 10] [--threads 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from reengage.agents.ddpg import DDPG, DDPGConfig
from reengage.allocator import retain_freed_memory

Product = tuple[Callable[..., torch.Tensor], tuple[Any, ...]]
_PRODUCTS = {torch.ops.aten.bmm, torch.ops.aten.mm, torch.ops.aten.baddbmm,
             torch.ops.aten.addmm}


def _like(value: Any) -> Any:
    """A fresh tensor with `value`'s shape, strides and dtype (random contents)."""
    if not isinstance(value, torch.Tensor):
        return value
    storage = torch.randn(value.untyped_storage().nbytes() // value.element_size())
    return torch.as_strided(storage.to(value.dtype), value.shape, value.stride())


class _RecordProducts(TorchDispatchMode):
    """Keeps every matrix product dispatched inside the mode, with look-alike operands."""

    def __init__(self) -> None:
        super().__init__()
        self.products: list[Product] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in _PRODUCTS:
            self.products.append((func, tuple(_like(a) for a in args)))
        return func(*args, **(kwargs or {}))


def product_flops(products: list[Product]) -> int:
    """2·m·k·n summed over the recorded products (batched ones per batch entry)."""
    total = 0
    for func, args in products:
        a, b = (args[0], args[1]) if func.overloadpacket in (torch.ops.aten.bmm,
                                                             torch.ops.aten.mm) else args[1:3]
        total += 2 * a.numel() * b.shape[-1]
    return total


def make_update(method: str, population: int, dim: int, hidden: tuple[int, ...],
                batch: int, compile: bool = True) -> Callable[[], object]:
    """A closure running one update of a fresh population on a fixed random batch, with the
    default inputs (`inputs: sb3`): the state is (achieved goal, observation), the goal
    enters after the achieved goal."""
    c = 0.2 if method == "reengage_her" else 0.0
    generators = [torch.Generator().manual_seed(m) for m in range(population)]
    learner = DDPG(population, 2 * dim, dim, dim,
                   DDPGConfig(goal_gradient_coef=c, hidden=hidden, compile=compile), generators,
                   goal_at=dim)
    learner.prepare(batch)
    data = torch.Generator().manual_seed(0)

    def x(width: int = dim) -> torch.Tensor:
        return torch.rand(population, batch, width, generator=data) * 2 - 1

    reward = -(torch.rand(population, batch, generator=data) < 0.9).float()
    position, next_position = x(), x()  # ContinuousSeek: the achieved goal is the position
    batch_tensors = {"obs": torch.cat([position, position], -1), "action": x(),
                     "next_obs": torch.cat([next_position, next_position], -1), "goal": x(),
                     "reward": reward}
    return lambda: learner.update(**batch_tensors)


def _seconds_per_call(run: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / calls


def measure(method: str, population: int, dim: int, hidden: tuple[int, ...], batch: int,
            rounds: int, calls: int) -> dict[str, Any]:
    update = make_update(method, population, dim, hidden, batch)
    for _ in range(5):
        update()  # optimiser state and allocator warm
    # A compiled update calls its products from generated code, out of the recorder's
    # sight; the eager update dispatches the same products.
    recorder = _RecordProducts()
    eager_update = make_update(method, population, dim, hidden, batch, compile=False)
    with recorder:
        eager_update()
    products = recorder.products

    def replay() -> None:
        for func, args in products:
            func(*args)

    replay()
    full, alone = [], []
    for _ in range(rounds):  # alternating, so drift in machine speed hits both alike
        full.append(_seconds_per_call(update, calls))
        alone.append(_seconds_per_call(replay, calls))
    full_s, alone_s = statistics.median(full), statistics.median(alone)
    flops = product_flops(products)
    return {
        "contender": method, "population": population, "dim": dim, "hidden": list(hidden),
        "batch_size": batch, "threads": torch.get_num_threads(), "rounds": rounds,
        "products": len(products), "product_gflop": flops / 1e9,
        "update_ms_median": 1e3 * full_s, "products_ms_median": 1e3 * alone_s,
        "products_share": alone_s / full_s,
        "products_gflops": flops / alone_s / 1e9,
        "seed_updates_per_s": population / full_s,
        "seed_updates_per_s_bound": population / alone_s,
    }


def format_table(records: list[dict[str, Any]]) -> str:
    lines = ["| contender | pop | update ms | products alone ms | share | products GFLOP/s "
             "| seed-updates/s | bound |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(
            f"| {r['contender']} | {r['population']} | {r['update_ms_median']:.2f} "
            f"| {r['products_ms_median']:.2f} | {100 * r['products_share']:.0f} % "
            f"| {r['products_gflops']:.0f} | {r['seed_updates_per_s']:.0f} "
            f"| {r['seed_updates_per_s_bound']:.0f} |")
    by = {r["contender"]: r for r in records}
    if {"ddpg_her", "reengage_her"} <= set(by):
        d, g = by["ddpg_her"], by["reengage_her"]
        lines.append(
            f"\nReenGAGE / DDPG per update: {g['update_ms_median'] / d['update_ms_median']:.3f}"
            f" measured, {g['products_ms_median'] / d['products_ms_median']:.3f} for the "
            f"products alone, {g['product_gflop'] / d['product_gflop']:.3f} in FLOPs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=10)
    parser.add_argument("--dim", type=int, default=20, help="ContinuousSeek d")
    parser.add_argument("--hidden", default="256,256", help="hidden widths, comma-separated")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--calls", type=int, default=50, help="updates (or replays) per round")
    parser.add_argument("--contenders", default="ddpg_her,reengage_her")
    parser.add_argument("--json", type=Path, help="also write the records here")
    args = parser.parse_args(argv)
    contenders = args.contenders.split(",")
    unknown = set(contenders) - {"ddpg_her", "reengage_her"}
    if unknown:
        parser.error(f"unknown contender(s) {sorted(unknown)}; choose ddpg_her, reengage_her")
    if min(args.population, args.batch_size, args.rounds, args.calls, args.threads) < 1:
        parser.error("--population, --batch-size, --rounds, --calls, --threads must be ≥ 1")
    hidden = tuple(int(h) for h in args.hidden.split(","))
    torch.set_num_threads(args.threads)
    retain_freed_memory()
    records = []
    for method in contenders:
        print(f"measuring {method} (population {args.population}) …", flush=True)
        records.append(measure(method, args.population, args.dim, hidden, args.batch_size,
                               args.rounds, args.calls))
    print(format_table(records))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
