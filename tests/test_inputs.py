"""What the networks see (agents/inputs.py, `--inputs`): Stable-Baselines3's
`(achieved goal, desired goal, observation)` by default, `(observation, desired goal)` under
`obs_goal`, on every task the training loop runs."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from reengage.agents.inputs import goal_columns, network_input
from reengage.config import TrainConfig
from reengage.envs.continuous_seek import continuous_seek_reward
from reengage.registry import METHODS, build_ddpg, build_multi_goal
from reengage.run import train


def test_network_input_puts_the_goal_before_state_column_goal_at():
    state = torch.tensor([[1.0, 2.0, 3.0]])
    goal, action = torch.tensor([[7.0, 8.0]]), torch.tensor([[9.0]])
    assert network_input(state, goal, 3).tolist() == [[1, 2, 3, 7, 8]]
    assert network_input(state, goal, 1, action).tolist() == [[1, 7, 8, 2, 3, 9]]
    assert network_input(state, goal, 0).tolist() == [[7, 8, 1, 2, 3]]
    assert network_input(state, goal, 1)[:, goal_columns(1, 2)].tolist() == [[7, 8]]


class Recorder:
    """Wraps a learner and keeps what the training loop hands it."""

    def __init__(self, learner, spec):
        self.learner, self.spec = learner, spec
        self.acted: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.batches: list[dict[str, torch.Tensor]] = []

    def act(self, obs, goal):
        self.acted.append((obs.clone(), goal.clone()))
        return self.learner.act(obs, goal)

    def update(self, **batch):
        self.batches.append({k: v.clone() for k, v in batch.items()})
        return self.learner.update(**batch)


@pytest.fixture
def recording(monkeypatch):
    """Registers `recording_<base>` methods that build the base method's learner wrapped in a
    Recorder; yields the list of recorders built."""
    built: list[Recorder] = []

    def register(base: str, builder):
        def build(spec):
            extra = {"hidden": (16, 16), "compile": False} if builder is build_ddpg else {
                "networks": {"encoder_hidden": 16, "head_hidden": 16, "embedding": 4}}
            recorder = Recorder(builder(replace(spec, extra=extra)), spec)
            built.append(recorder)
            return recorder

        method = replace(METHODS[base], name=f"recording_{base}", build=build)
        monkeypatch.setitem(METHODS, method.name, method)

    register("ddpg_her", build_ddpg)
    register("ddpg", build_multi_goal)
    return built


def _cfg(env: str, method: str, inputs: str, dim: int) -> TrainConfig:
    steps = 40 if env == "ContinuousSeek" else 80
    return TrainConfig(env=env, dim=dim, method=method, seeds=[0, 1], steps=steps,
                       batch_size=8, eval_every=steps, eval_episodes=2, learning_starts=10,
                       threads=1, device="cpu", checkpoint_every=0, inputs=inputs)


def test_continuous_seek_networks_see_achieved_desired_observation(tmp_path, recording):
    train(_cfg("ContinuousSeek", "recording_ddpg_her", "sb3", 3), tmp_path, progress=False)
    recorder = recording[0]
    assert (recorder.spec.obs_dim, recorder.spec.achieved_dim, recorder.spec.goal_at) == (6, 3, 3)
    assert recorder.learner.goal_at == 3
    # The state is (achieved goal, observation): on ContinuousSeek both are the position.
    for state, _ in recorder.acted:
        assert state.shape[-1] == 6 and torch.equal(state[..., :3], state[..., 3:])
    assert recorder.batches
    for batch in recorder.batches:
        for key in ("obs", "next_obs"):
            assert torch.equal(batch[key][..., :3], batch[key][..., 3:])
        reward = continuous_seek_reward(batch["next_obs"][..., :3].numpy(),
                                        batch["goal"].numpy())
        np.testing.assert_array_equal(batch["reward"].numpy(), reward)
    # The actor's first layer reads achieved (3), desired (3) and observation (3) columns.
    assert recorder.learner.actor.net.layers[0].weight.shape[1] == 9


def test_obs_goal_inputs_are_the_observation_and_the_goal(tmp_path, recording):
    train(_cfg("ContinuousSeek", "recording_ddpg_her", "obs_goal", 3), tmp_path,
          progress=False)
    recorder = recording[0]
    assert (recorder.spec.obs_dim, recorder.spec.achieved_dim, recorder.spec.goal_at) == (
        3, 0, None)
    assert recorder.learner.goal_at == 3
    assert all(state.shape[-1] == 3 for state, _ in recorder.acted)
    assert recorder.learner.actor.net.layers[0].weight.shape[1] == 6


def test_goal_set_networks_see_the_achieved_cell_with_the_observation(tmp_path, recording):
    """DriveSeek, as the authors' networks: the state is (round(pos), pos, cos θ, sin θ), fed
    to the encoder and both heads."""
    train(_cfg("DriveSeek", "recording_ddpg", "sb3", 5), tmp_path, progress=False)
    recorder = recording[0]
    assert (recorder.spec.obs_dim, recorder.spec.achieved_dim) == (6, 2)
    for state, _ in recorder.acted:
        np.testing.assert_array_equal(state[..., :2].numpy(), np.rint(state[..., 2:4].numpy()))
    for batch in recorder.batches:
        for key in ("obs", "next_obs"):
            np.testing.assert_array_equal(batch[key][..., :2].numpy(),
                                          np.rint(batch[key][..., 2:4].numpy()))
    model = recorder.learner.model
    assert model.critic_encoder.net.layers[0].weight.shape[1] == 6 + 2  # state, item (x, y)
    assert model.critic_head.layers[0].weight.shape[1] == 4 + 6 + 1  # pooled, state, action
    assert model.actor_head.layers[0].weight.shape[1] == 4 + 6


@pytest.mark.parametrize("inputs", ["sb3", "obs_goal"])
def test_the_greedy_agent_reads_the_position_under_either_layout(tmp_path, inputs):
    """The greedy agent's score does not depend on the layout: it finds the position."""
    scores = {}
    for layout in ("obs_goal", inputs):
        cfg = replace(_cfg("NoisySeek", "greedy", layout, 20), eval_episodes=20,
                      seeds=[3])
        out = tmp_path / layout
        records = train(cfg, out, progress=False)
        assert records[0]["status"] == "finished"
        scores[layout] = (out / "seed3" / "progress.csv").read_text().splitlines()[1]
    assert scores[inputs].split(",")[:3] == scores["obs_goal"].split(",")[:3]
    assert float(scores[inputs].split(",")[2]) > 1.0  # it does collect goals


def test_layout_and_her_variant_are_recorded_in_run_json(tmp_path):
    import json

    cfg = TrainConfig(env="ContinuousSeek", dim=2, method="ddpg_her", seeds=[0], steps=20,
                      batch_size=4, eval_every=20, eval_episodes=1, learning_starts=10,
                      threads=1, device="cpu", checkpoint_every=0, inputs="obs_goal",
                      her_future="next_to_penultimate", her_relabel="exact",
                      extra={"hidden": (8, 8), "compile": False})
    train(cfg, tmp_path, progress=False)
    config = json.loads((tmp_path / "seed0" / "run.json").read_text())["config"]
    assert (config["inputs"], config["her_future"], config["her_relabel"]) == (
        "obs_goal", "next_to_penultimate", "exact")
