"""Which grid cells can train as one population, and the population they make.

Cells pack when they differ only in seeds, learning rate and c (`PACKABLE`): same task, d,
method, batch size, steps and every other setting. The population's members are the
cells' seeds one after another; each member keeps its cell's learning rate (Adam's step,
agents/optim.py) and c (the goal-gradient term's weight, agents/ddpg.py), and its random
streams come from its seed alone, so a member trains exactly as its cell trained alone
(tests/test_device_pack.py). DDPG+HER (c = 0) and ReenGAGE+HER (c > 0) are different
methods and so never share a population: a c = 0 member in a ReenGAGE population would pay
for the double backward and would not be bitwise equal to DDPG alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from reengage.config import ConfigError, TrainConfig

PACKABLE = ("seeds", "lr", "c")
"""The settings in which the cells of one population may differ."""

@dataclass(frozen=True)
class PackedCell:
    """One grid cell of a population: its configuration (its own seeds, lr and c), the
    folder its seeds' files go to (`out/seed<k>/`), and who else hears of its seeds'
    progress (reengage/progress.py listeners, e.g. a Weights & Biases tracker)."""

    cfg: TrainConfig
    out: Path
    listeners: tuple[Any, ...] = ()


def pack_checkpoint(directory: Path) -> Path:
    """A pack's checkpoint file under its `--checkpoint-dir`."""
    return directory / ".checkpoints" / "pack.pt"


def _option(name: str) -> str:
    return "--set" if name == "extra" else "--" + name.replace("_", "-")


def population_config(cells: list[PackedCell]) -> tuple[
        TrainConfig, tuple[float, ...] | None, tuple[float, ...] | None]:
    """The population of `cells`: its configuration (the first cell's, with every cell's
    seeds in order), and each member's learning rate and c where they are not all equal
    (None where they are). Raises ConfigError, naming the setting, where cells cannot
    pack or two would write the same seed's folder."""
    if not cells:
        raise ConfigError("--cell", "a pack needs at least one cell")
    first = cells[0].cfg
    shared = [f.name for f in fields(TrainConfig) if f.name not in PACKABLE]
    for index, cell in enumerate(cells[1:], start=2):
        for name in shared:
            mine, theirs = getattr(first, name), getattr(cell.cfg, name)
            if mine != theirs:
                raise ConfigError(_option(name), f"cells of one pack must share it (cell 1: "
                                  f"{mine!r}, cell {index}: {theirs!r}); only "
                                  f"{', '.join(PACKABLE)} may differ")
    folders: set[tuple[Path, int]] = set()
    for index, cell in enumerate(cells, start=1):
        for seed in cell.cfg.seeds:
            key = (cell.out.resolve(), seed)
            if key in folders:
                raise ConfigError("--out", f"cell {index} writes seed {seed} under "
                                  f"{cell.out}, as another cell of the pack does")
            folders.add(key)
    seeds = [seed for cell in cells for seed in cell.cfg.seeds]
    lrs = tuple(cell.cfg.lr for cell in cells for _ in cell.cfg.seeds)
    cs = tuple(float(cell.cfg.c or 0.0) for cell in cells for _ in cell.cfg.seeds)
    population = replace(first, seeds=seeds)
    return (population, lrs if len(set(lrs)) > 1 else None,
            cs if len(set(cs)) > 1 else None)
