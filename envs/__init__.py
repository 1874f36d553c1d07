"""Goal-conditioned gymnasium environments of the paper, registered under `reengage/`.

Importing this package registers every id; the learners never import it (docs/design.md).
"""

from gymnasium.envs.registration import register, registry

from .bitflip import BitFlipEnv, BitFlipVectorEnv, bitflip_reward
from .continuous_seek import (
    ContinuousSeekEnv,
    ContinuousSeekVectorEnv,
    continuous_seek_reward,
)

__all__ = ["BitFlipEnv", "BitFlipVectorEnv", "ContinuousSeekEnv", "ContinuousSeekVectorEnv",
           "bitflip_reward", "continuous_seek_reward"]


def _register(env_id: str, entry_point: str, vector_entry_point: str | None,
              steps: int | None) -> None:
    if env_id in registry:
        return
    register(
        id=env_id,
        entry_point=entry_point,
        vector_entry_point=vector_entry_point,
        max_episode_steps=steps,
    )


_register(
    "reengage/ContinuousSeek-v0",
    "reengage.envs.continuous_seek:ContinuousSeekEnv",
    "reengage.envs.continuous_seek:ContinuousSeekVectorEnv",
    10,
)

# Theory environments of Propositions 1 and 2 (docs/paper.md §3).
_register("reengage/RotationReach-v0", "reengage.envs.rotation:RotationReachEnv", None, 20)
_register("reengage/TwoPhaseRotation-v0", "reengage.envs.rotation:TwoPhaseRotationEnv", None, 20)

# Many simultaneous sparse goals (docs/paper.md §2): goal sets of n_max rows (b, x, y).
_register(
    "reengage/DriveSeek-v0",
    "reengage.envs.multi_goal:DriveSeekEnv",
    "reengage.envs.multi_goal:DriveSeekVectorEnv",
    40,
)
_register(
    "reengage/NoisySeek-v0",
    "reengage.envs.multi_goal:NoisySeekEnv",
    "reengage.envs.multi_goal:NoisySeekVectorEnv",
    40,
)

# BitFlip(d) lasts d steps, so its envs end episodes themselves (no fixed TimeLimit).
_register(
    "reengage/BitFlip-v0",
    "reengage.envs.bitflip:BitFlipEnv",
    "reengage.envs.bitflip:BitFlipVectorEnv",
    None,
)
