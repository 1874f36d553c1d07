"""DDPG and Multi-ReenGAGE both learn DriveSeek: a reduced problem (n_max = 50 goal slots,
64-wide DeepSets networks, batch 128, learning rate 3e-3, one seed) trained for 30k env
steps, the two methods in parallel processes (about three minutes on two cores). The check
is against a uniformly random policy's mean return on the same task, over 1000 episodes.

How the settings were chosen (results/reference/drive_seek_learning/README.md): at the
paper's learning rate 1e-3, seed 0 of DDPG stayed near the random policy's 2.2 goal-steps
for 40k steps and Multi-ReenGAGE (c = 10) for 15k; at 3e-3 they pass 7 by 25k and 15k."""

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd

import reengage.envs  # noqa: F401
from reengage.config import TrainConfig
from reengage.run import train

N_MAX = 50
STEPS = 30_000
LR = 3e-3
NETWORKS = {"networks": {"encoder_hidden": 64, "head_hidden": 64, "embedding": 16}}


def _config(method: str, c: float | None) -> TrainConfig:
    return TrainConfig(
        env="DriveSeek", dim=N_MAX, method=method, c=c, seeds=[0], steps=STEPS,
        batch_size=128, lr=LR, eval_every=STEPS // 3, eval_episodes=100, action_noise=0.05,
        threads=1, checkpoint_every=0, extra=NETWORKS, device="cpu",
    )


def _train(cfg: TrainConfig, out: Path) -> pd.DataFrame:
    train(cfg, out, progress=False)
    return pd.read_csv(out / "seed0" / "progress.csv")


def random_policy_return(episodes: int = 1000) -> float:
    env = gym.make_vec("reengage/DriveSeek-v0", num_envs=episodes,
                       vectorization_mode="vector_entry_point", n_max=N_MAX)
    env.reset(seed=12345)
    rng, total = np.random.default_rng(0), np.zeros(episodes)
    for _ in range(40):
        total += env.step(rng.uniform(-1, 1, (episodes, 1)).astype(np.float32))[1]
    return float(total.mean())


def test_ddpg_and_multi_reengage_beat_a_random_policy_on_drive_seek(tmp_path):
    random_return = random_policy_return()
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        runs = {
            method: pool.submit(_train, _config(method, c), tmp_path / method)
            for method, c in (("ddpg", None), ("multi_reengage", 10.0))
        }
        progress = {method: future.result() for method, future in runs.items()}
    for method, rows in progress.items():
        final = rows["mean_return"].iloc[-1]
        assert rows["step"].iloc[-1] == STEPS
        # A policy that has learned to steer onto goal cells more than doubles the random
        # return; an untrained or collapsed policy stays near it (or below: driving straight).
        assert final > 2 * random_return, (method, final, random_return, rows["mean_return"])
