"""How a goal-conditioned network's input is laid out.

The learners take a state and a desired goal as separate tensors, so the losses can
differentiate with respect to the goal alone, and join them into one input row here. The
goal goes before state column `goal_at`. The training loop hands the learners the state
`(achieved goal, observation)` under `inputs: sb3`, with `goal_at` = the achieved goal's
width, which gives Stable-Baselines3's `(achieved_goal, desired_goal, observation)`: the dict
keys in sorted order, as its MultiInputPolicy concatenates them and as the networks of the
paper's runs saw them. Under `inputs: obs_goal` the state is the observation alone and the
goal follows it.
"""

from __future__ import annotations

import torch


def network_input(state: torch.Tensor, goal: torch.Tensor, goal_at: int,
                  *rest: torch.Tensor) -> torch.Tensor:
    """`[state[..., :goal_at], goal, state[..., goal_at:], *rest]` joined on the last axis
    (an empty part left out)."""
    if goal_at >= state.shape[-1]:
        return torch.cat([state, goal, *rest], dim=-1)
    if goal_at == 0:
        return torch.cat([goal, state, *rest], dim=-1)
    return torch.cat([state[..., :goal_at], goal, state[..., goal_at:], *rest], dim=-1)


def goal_columns(goal_at: int, goal_dim: int) -> slice:
    """The input columns that hold the goal."""
    return slice(goal_at, goal_at + goal_dim)
