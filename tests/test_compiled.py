"""The compiled update (agents/compiled.py): what it computes, that `prepare` leaves the
learner as it was, and the fall-back to eager when compiling fails."""

import copy
import warnings

import pytest
import torch

from reengage.agents import compiled
from reengage.agents.ddpg import DDPG, DDPGConfig

MEMBERS, BATCH, OBS, GOAL, ACTION = 3, 32, 6, 4, 2


def _learner(c, compile_):
    generators = [torch.Generator().manual_seed(m) for m in range(MEMBERS)]
    return DDPG(MEMBERS, OBS, GOAL, ACTION,
                DDPGConfig(goal_gradient_coef=c, hidden=(16, 16), compile=compile_,
                           action_l2=0.1, target_clip=(-10.0, 0.0)), generators)


def _batch(seed):
    g = torch.Generator().manual_seed(seed)

    def x(k):
        return torch.randn(MEMBERS, BATCH, k, generator=g)

    return dict(obs=x(OBS), action=x(ACTION).clamp(-1, 1), next_obs=x(OBS), goal=x(GOAL),
                reward=-(torch.rand(MEMBERS, BATCH, generator=g) < 0.7).float())


@pytest.mark.parametrize("c", [0.0, 0.5])
def test_compiled_update_computes_what_the_eager_one_does(c):
    eager = _learner(c, False)
    fast = _learner(c, True)
    initial = copy.deepcopy(eager.state_dict())
    fast.load_state_dict(initial)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fall-back to eager would warn
        fast.prepare(BATCH)
        for step in range(3):
            b = _batch(step)
            out_fast, out_eager = fast.update(**b), eager.update(**b)
            for key in out_eager:
                torch.testing.assert_close(out_fast[key], out_eager[key], rtol=1e-5, atol=1e-6)
    eager_state = eager.state_dict()
    for name, value in fast.state_dict().items():
        torch.testing.assert_close(value, eager_state[name], rtol=1e-5, atol=1e-6)
        assert not torch.equal(value, initial[name]), name  # it trained


@pytest.mark.parametrize("c", [0.0, 0.5])
def test_prepare_compiles_without_touching_weights_or_optimiser(c):
    learner = _learner(c, True)
    before = copy.deepcopy(learner.state_dict())
    learner.prepare(BATCH)
    for name, value in learner.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in learner.parameters())
    assert not learner.critic_optimizer.state and not learner.actor_optimizer.state


def test_a_failed_compilation_warns_once_and_runs_eagerly(monkeypatch):
    def broken_compile(function, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler\nsecond line")
        return run

    monkeypatch.setattr(compiled.torch, "compile", broken_compile)
    calls = []

    @torch.no_grad()
    def double(x):
        calls.append(torch.is_grad_enabled())
        return 2 * x

    step = compiled.compile_or_eager(double)
    with pytest.warns(RuntimeWarning, match="compile of double failed.*no C\\+\\+ compiler"):
        assert step(torch.ones(2)).tolist() == [2.0, 2.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert step(torch.ones(1)).tolist() == [2.0]
    assert calls == [False, False]  # the eager function, still without gradients


def test_the_training_loop_prepares_the_learner_before_its_first_update(tmp_path, monkeypatch):
    from reengage.cli import main

    events = []
    prepare, update = DDPG.prepare, DDPG.update

    def recording_prepare(self, batch_size):
        events.append(("prepare", batch_size))
        return prepare(self, batch_size)

    def recording_update(self, **batch):
        events.append(("update", None))
        return update(self, **batch)

    monkeypatch.setattr(DDPG, "prepare", recording_prepare)
    monkeypatch.setattr(DDPG, "update", recording_update)
    assert main(["train", "--env", "ContinuousSeek", "--dim", "2", "--method", "ddpg_her",
                 "--seeds", "0,1", "--steps", "60", "--learning-starts", "40",
                 "--eval-every", "30", "--eval-episodes", "1", "--batch-size", "16",
                 "--threads", "1", "--out", str(tmp_path), "--quiet"]) == 0
    assert events[0] == ("prepare", 16)
    assert events.count(("prepare", 16)) == 1 and len(events) == 1 + 20
