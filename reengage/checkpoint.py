"""Checkpoints of a whole population: written atomically, read without unpickling code.

The file is a `torch.save` archive of tensors, numbers, strings and containers only, loaded
with `weights_only=True`, so a hostile file cannot run code. A checkpoint names the
configuration it belongs to (a fingerprint), so a checkpoint of another run is refused
instead of silently continuing the wrong experiment.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used; the message says why and what to do."""


def fingerprint(config: dict[str, Any]) -> str:
    """Hash of the settings that determine results (threads, device and the checkpoint
    interval change only speed). A setting added after checkpoints were first written stays
    out of the hash while it holds the value that trains as the code did before it, so a
    run checkpointed before an upgrade still resumes after it."""
    ignored = {"threads", "device", "checkpoint_every"}
    if not config.get("cycle_episodes"):
        # No cycles: one update per env step, as before the cycle settings existed;
        # cycle_updates then has no effect either.
        ignored |= {"cycle_episodes", "cycle_updates"}
    if config.get("loop", "numpy") == "numpy":  # the only loop before `loop` existed
        ignored.add("loop")
    if config.get("matmul_precision", "float32") == "float32":  # likewise
        ignored.add("matmul_precision")
    relevant = {k: v for k, v in config.items() if k not in ignored}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def _to_storable(value: Any) -> Any:
    # numpy arrays become tensors: the safe loader accepts tensors, not numpy objects.
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _to_storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_storable(v) for v in value]
    return value


def save_checkpoint(path: Path, payload: dict[str, Any], config: dict[str, Any]) -> int:
    """Write `payload` to `path` atomically (temporary file, fsync, rename); returns bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    document = {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint(config),
                "payload": _to_storable(payload)}
    with open(tmp, "wb") as f:
        torch.save(document, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)
    return path.stat().st_size


def load_checkpoint(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` for this same configuration."""
    hint = "pass --restart to discard it and start from step 0"
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, random bytes, or objects the safe loader refuses
        raise CheckpointError(
            f"checkpoint {path} is unreadable or corrupted ({type(error).__name__}); {hint}"
        ) from error
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has an unknown format; {hint}")
    if document.get("fingerprint") != fingerprint(config):
        raise CheckpointError(
            f"checkpoint {path} was written by a different configuration; {hint}"
        )
    return document["payload"]


def as_numpy(value: Any) -> Any:
    """Tensors back to numpy arrays, recursively (the inverse of what saving did)."""
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {k: as_numpy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_numpy(v) for v in value]
    return value


def remove_checkpoint(path: Path) -> None:
    """Delete a finished run's checkpoint, and its `.checkpoints` folder once that is empty
    (other populations of the same cell may still keep theirs there). Call it only once
    every seed's files say finished."""
    path.unlink(missing_ok=True)
    if path.parent.is_dir() and not any(path.parent.iterdir()):
        path.parent.rmdir()
