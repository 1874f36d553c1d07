"""Each seed's final policy, small and safe to load: `OUT/seed<k>/policy.pt`.

Written when a seed finishes, and when it diverges (marked so), before its run.json says so;
never for an interrupted seed, whose state is in the population's checkpoint. The file is a
`torch.save` archive of tensors, numbers, strings and containers only, so
`torch.load(weights_only=True)` reads it without running code. Its keys:

* `format` (1); `kind`: `population` (a learner of the population loop) or `sb3` (the
  Stable-Baselines3 control's policy, reengage/sb3_control.py);
* `seed`, `status` (`finished` or `diverged`), `step` (the env step the weights are from),
  `diverged_at_step` (None unless diverged);
* `config`: the run's configuration, as run.json's `config`;
* `learner`: what rebuilds the learner besides its member count and random streams: the
  LearnerSpec fields `obs_dim`, `goal_dim`, `action_dim`, `lr`, `gamma`, `tau`, `c`,
  `extra`, `achieved_dim`, `goal_at` (for `sb3`: the policy's `hidden` widths);
* `weights`: this seed's online networks alone, actor and critic (names as in the learner's
  state_dict, e.g. `actor.net.layers.0.weight`), each with a member axis of length 1, so they
  load into the same learner built for one member. Target networks and optimiser states are
  left out: this is the policy, not a training state (checkpoints are that, and they stay
  temporary).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .progress import atomic_write_bytes
from .registry import METHODS, Learner, LearnerSpec

POLICY_FORMAT = 1
KINDS = ("population", "sb3")


class PolicyError(ValueError):
    """A policy file that cannot be used; the message is one line saying why."""


def member_weights(learner: Any, member: int, members: int) -> dict[str, torch.Tensor]:
    """Member `member`'s online parameters and buffers, copied to the CPU with a member axis
    of length 1. Frozen parameters (the target networks) are left out. A learner that is no
    torch module (the greedy agent) has none."""
    if not isinstance(learner, nn.Module):
        return {}
    tensors = [(name, p) for name, p in learner.named_parameters() if p.requires_grad]
    tensors += list(learner.named_buffers())
    weights = {}
    for name, tensor in tensors:
        if tensor.dim() == 0 or tensor.shape[0] != members:
            raise PolicyError(f"{name} has no member axis of length {members}; its seeds "
                              "cannot be told apart")
        # A copy, not a view: torch.save would otherwise store the whole population's tensor.
        weights[name] = tensor.detach()[member:member + 1].to("cpu", copy=True)
    return weights


def learner_fields(spec: LearnerSpec) -> dict[str, Any]:
    """The LearnerSpec fields a policy file keeps (all but the member count and streams)."""
    return {f.name: getattr(spec, f.name) for f in fields(spec)
            if f.name not in ("members", "generators")}


def policy_document(kind: str, record: dict[str, Any], learner: dict[str, Any],
                    weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The contents of policy.pt for the seed whose run.json is `record`."""
    return {
        "format": POLICY_FORMAT, "kind": kind, "seed": record["seed"],
        "status": record["status"], "step": record["step"],
        "diverged_at_step": record.get("diverged_at_step"),
        # As run.json holds it: plain lists, which any reader (and json) takes.
        "config": json.loads(json.dumps(record["config"])), "learner": learner,
        "weights": weights,
    }


def save_policy(path: Path, document: dict[str, Any]) -> None:
    """Atomically (temporary file, fsync, rename), as every output of a run."""
    atomic_write_bytes(path, lambda f: torch.save(document, f))


def load_policy(path: Path) -> dict[str, Any]:
    """Read a policy.pt with the safe loader; PolicyError when it is not one."""
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, random bytes, or objects the safe loader refuses
        raise PolicyError(f"{path}: not a readable policy file ({type(error).__name__})"
                          ) from None
    if (not isinstance(document, dict) or document.get("format") != POLICY_FORMAT
            or document.get("kind") not in KINDS):
        raise PolicyError(f"{path}: unknown policy format (expected format {POLICY_FORMAT})")
    return document


def build_learner(document: dict[str, Any], device: torch.device) -> Learner:
    """The learner of a `population` policy file, built for one member, with its weights."""
    method_name = document["config"]["method"]
    if method_name not in METHODS:
        raise PolicyError(f"unknown method {method_name!r}; name the module that registers "
                          "it with --plugin")
    spec = LearnerSpec(members=1, generators=[torch.Generator()], **document["learner"])
    learner = METHODS[method_name].build(spec)
    weights = document["weights"]
    if isinstance(learner, nn.Module):
        missing, unexpected = learner.load_state_dict(weights, strict=False)
        frozen = {name for name, p in learner.named_parameters() if not p.requires_grad}
        if unexpected or set(missing) - frozen:
            raise PolicyError(f"the weights do not fit {method_name}'s networks (missing "
                              f"{sorted(set(missing) - frozen)[:3]}, unexpected "
                              f"{sorted(unexpected)[:3]})")
        learner.to(device)
    elif weights:
        raise PolicyError(f"{method_name}'s learner holds no weights, but the file has some")
    return learner
