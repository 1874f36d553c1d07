"""What the device loop records, kept on the device between log points and read back once
at each: loss sums per member, each member's first non-finite diagnostic (divergence), and
the evaluation's results. `log` makes the one host copy (a single `.cpu()`), appends a row
per member and hands the step to `on_evaluated`, which writes the rows through
reengage/progress.py (the driver maps members to their cells' folders), so progress.csv,
progress.partial.csv and run.json have the shape every other loop writes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

LOSS_COLUMNS = ("critic_loss", "goal_grad_loss", "actor_loss", "q_mean")
"""The update diagnostics, in progress.csv's order (reengage/run.py has the same tuple)."""


class DeviceLogger:
    """Per-member diagnostics `[members]` accumulated in place, rows per member on the
    host; `on_evaluated(step)` is called once the rows of a log point are in."""

    def __init__(self, members: int, device: torch.device,
                 on_evaluated: Callable[[int], None]):
        self.members, self.on_evaluated = members, on_evaluated
        self.sums = torch.zeros(len(LOSS_COLUMNS), members, device=device)
        self.diverged_at = torch.full((members,), -1, dtype=torch.int64, device=device)
        self.diverged_quantity = torch.zeros(members, dtype=torch.int64, device=device)
        self.diverged_value = torch.zeros(members, device=device)
        self.rows: list[list[dict[str, float]]] = [[] for _ in range(members)]
        self.diverged: dict[int, dict[str, Any]] = {}
        self.started = self.last_log_time = time.time()

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.sums, self.diverged_at, self.diverged_quantity, self.diverged_value]

    def add(self, values: dict[str, torch.Tensor], step: torch.Tensor) -> None:
        """In-step (no host copy): add an update's diagnostics; mark members whose
        diagnostics stopped being finite at `step` (a device scalar), first time only."""
        stacked = torch.stack([values[k] for k in LOSS_COLUMNS]).to(self.sums.dtype)
        self.sums.add_(stacked)
        bad = ~torch.isfinite(stacked)
        new = bad.any(dim=0) & (self.diverged_at < 0)
        first = bad.to(torch.int8).argmax(dim=0)
        self.diverged_at.copy_(torch.where(new, step, self.diverged_at))
        self.diverged_quantity.copy_(torch.where(new, first, self.diverged_quantity))
        value = stacked.gather(0, first.unsqueeze(0)).squeeze(0)
        self.diverged_value.copy_(torch.where(new, value, self.diverged_value))

    def log(self, step: int, successes: torch.Tensor, return_sums: torch.Tensor,
            episodes: int, updates: int) -> None:
        """A progress row per seed at `step`, from one host copy of everything on the
        device: the evaluation's sums over `episodes` episodes per member, and the
        diagnostics of the `updates` updates since the last log point."""
        members, columns = self.members, len(LOSS_COLUMNS)
        # Step numbers travel as float32 (exact below 2^24 steps, the divergence step).
        packed = torch.cat([successes, return_sums, self.sums.flatten(),
                            self.diverged_at.float(), self.diverged_quantity.float(),
                            self.diverged_value]).cpu().numpy()
        success_h = packed[:members].astype(np.float64) / episodes
        return_h = packed[members:2 * members].astype(np.float64) / episodes
        sums = packed[2 * members:(2 + columns) * members].reshape(columns, members)
        at, quantity, value = packed[(2 + columns) * members:].reshape(3, members)
        # float32 means, as the numpy loop's LossMeter takes them.
        losses = sums / np.float32(updates) if updates else np.full_like(sums, math.nan)
        for m in range(members):
            if at[m] >= 0 and m not in self.diverged:
                self.diverged[m] = {"step": int(at[m]),
                                    "quantity": LOSS_COLUMNS[int(quantity[m])],
                                    "value": str(float(value[m]))}
        now = time.time()
        rate = updates / (now - self.last_log_time) if updates else 0.0
        for m in range(members):
            dead = m in self.diverged
            row = {"step": step,
                   "success_rate": math.nan if dead else float(success_h[m]),
                   "mean_return": math.nan if dead else float(return_h[m])}
            row.update({k: math.nan if dead else float(losses[i, m])
                        for i, k in enumerate(LOSS_COLUMNS)})
            row.update({"wall_time_s": now - self.started, "updates_per_s": rate})
            self.rows[m].append(row)
        self.sums.zero_()
        self.last_log_time = now
        self.on_evaluated(step)
