"""Alternated A/B: DDPG+HER population update (ContinuousSeek d = 20 shapes, batch 256,
2x256 networks) with eager networks against `torch.compile`d ones (inductor, CPU).

Only plain DDPG is compared: ReenGAGE's loss needs a double backward, which compiled
graphs do not support. The compiled side freezes the critic's parameters during the actor
step, because a compiled backward would otherwise also compute the critic's weight
gradients; the eager side does the same, so both run the same update. Run from the
repository root (the first compiled call takes a few seconds):

    python results/reference/throughput/compile_ab/ab.py > \
        results/reference/throughput/compile_ab/ab.txt
"""

import statistics
import time

import torch

from reengage.agents.ddpg import DDPG, DDPGConfig
from reengage.agents.losses import td_loss
from reengage.allocator import retain_freed_memory

POPULATION, DIM, BATCH, ROUNDS, CALLS = 10, 20, 256, 5, 50
torch.set_num_threads(2)
retain_freed_memory()
data = torch.Generator().manual_seed(0)


def batch():
    def x():
        return torch.rand(POPULATION, BATCH, DIM, generator=data) * 2 - 1
    return x(), x(), x(), x(), -(torch.rand(POPULATION, BATCH, generator=data) < 0.9).float()


def learner(compiled: bool) -> DDPG:
    agent = DDPG(POPULATION, DIM, DIM, DIM, DDPGConfig(),
                 [torch.Generator().manual_seed(m) for m in range(POPULATION)])
    if compiled:
        for name in ("actor", "critic", "actor_target", "critic_target"):
            net = getattr(agent, name).net
            net.forward = torch.compile(net.forward, dynamic=False)
    return agent


def update(agent: DDPG, obs, action, next_obs, goal, reward) -> None:
    with torch.no_grad():
        q_next = agent.critic_target(next_obs, goal, agent.actor_target(next_obs, goal))
        target = reward.unsqueeze(-1) + 0.95 * q_next
    loss = td_loss(agent.critic(obs, goal, action), target)
    agent.critic_optimizer.zero_grad(set_to_none=True)
    loss.sum().backward()
    agent.critic_optimizer.step()
    agent.critic.requires_grad_(False)
    actor_loss = -agent.critic(obs, goal, agent.actor(obs, goal)).mean(dim=(1, 2))
    params = list(agent.actor.parameters())
    for p, g in zip(params, torch.autograd.grad(actor_loss.sum(), params), strict=True):
        p.grad = g
    agent.critic.requires_grad_(True)
    agent.actor_optimizer.step()
    with torch.no_grad():
        torch._foreach_lerp_(agent._target, agent._online, agent.config.tau)


batches = [batch() for _ in range(8)]
sides = {"eager": learner(False), "torch.compile": learner(True)}
for name, agent in sides.items():
    start = time.perf_counter()
    for i in range(10):
        update(agent, *batches[i % 8])
    print(f"{name}: first 10 updates (with compilation) {time.perf_counter() - start:.1f} s")
times = {name: [] for name in sides}
for _ in range(ROUNDS):
    for name, agent in sides.items():
        start = time.perf_counter()
        for i in range(CALLS):
            update(agent, *batches[i % 8])
        times[name].append((time.perf_counter() - start) / CALLS * 1e3)
for name, t in times.items():
    print(f"{name:14s} median {statistics.median(t):6.2f} ms per update "
          f"({POPULATION / statistics.median(t) * 1e3:.0f} seed-updates/s), "
          f"rounds {[round(x, 2) for x in t]}")
