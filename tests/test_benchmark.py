"""The throughput benchmark: its FLOP count, its JSON records and its figure (no timing
assertions: the machine is shared)."""

import json
import runpy
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from reengage.agents.ddpg import DDPG, DDPGConfig
from reengage.analysis.throughput_figure import plot_throughput

BENCH = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "throughput.py"))
update_flops = BENCH["update_flops"]
REQUIRED = {"contender", "population", "seed_steps_per_s_median", "seed_steps_per_s_min",
            "seed_steps_per_s_max", "gflops_median", "peak_rss_mb", "repeats"}


def test_flop_count_equals_a_hand_count():
    # obs = goal = action = 1, one hidden layer of 2, batch 1. Ours: actor 2->2->1,
    # critic 3->2->1; one pass through a layer costs 2*in*out.
    actor = {"l1": 2 * 2 * 2, "l2": 2 * 2 * 1}  # 8, 4
    critic = {"l1": 2 * 3 * 2, "l2": 2 * 2 * 1}  # 12, 4
    A, C = sum(actor.values()), sum(critic.values())  # 12, 16
    ddpg = (
        A + C                                      # target actor and critic forwards
        + C + C + critic["l2"]                     # critic forward, weight grads, input grad l2
        + A + C + C                                # actor forward, critic on pi, grads to pi
        + A + actor["l2"]                          # actor weight grads, input grad l2
    )
    reengage = (
        A + C + C + A                              # target forwards and grad to the goal
        + C + C                                    # critic forward, grad_g Q with a graph
        + C + C                                    # value term: weight and input grads
        + 2 * critic["l1"] + 2 * critic["l2"] - critic["l2"]  # double backward
        + A + C + C + A + actor["l2"]              # actor step, as in DDPG
    )
    # By hand (agents/hand_gradients.py) a first-layer input gradient costs 2*2 per input
    # column asked for (batch 1, hidden 2), for actor and critic alike.
    column = 2 * 1 * 2
    ddpg_by_hand = ddpg - critic["l1"] + column    # grads to pi: the action's column only
    by_hand = (
        A + C                                      # target forwards
        + critic["l2"] + 2 * column                # its grad to the goal and action columns
        + actor["l2"] + column                     # through the actor, goal column only
        + C + critic["l2"] + column                # critic forward, grad_g Q (goal column)
        + column                                   # the goal-gradient term's backward
        + C                                        # one weight-gradient pass for both terms
        + A + C + critic["l2"] + column + A + actor["l2"]  # actor step, as in DDPG
    )
    assert (ddpg, ddpg_by_hand, reengage, by_hand) == (124, 116, 208, 144)
    assert update_flops("ddpg_her", 1, 1, 1, (2,), 1, hand_gradients=False) == ddpg
    assert update_flops("ddpg_her", 1, 1, 1, (2,), 1) == ddpg_by_hand
    assert update_flops("reengage_her", 1, 1, 1, (2,), 1, hand_gradients=False) == reengage
    assert update_flops("reengage_her", 1, 1, 1, (2,), 1) == by_hand
    assert update_flops("reengage_her", 1, 1, 1, (2,), 1, population=3) == 3 * by_hand
    # SB3 feeds obs + achieved + desired goal (actor 3->2->1, critic 4->2->1) and its
    # actor backward also computes the critic's weight gradients.
    a, c = 2 * 3 * 2 + 2 * 2 * 1, 2 * 4 * 2 + 2 * 2 * 1
    sb3 = a + c + (c + c + 4) + (a + c + c + a + 4) + c
    assert update_flops("sb3_ddpg_her", 1, 1, 1, (2,), 1) == sb3 == 176
    assert update_flops("gemm_ceiling", 1, 1, 1, (2,), 1) == 0


class MatmulFlops(TorchDispatchMode):
    """FLOPs of the matrix products torch actually dispatches."""

    def __init__(self):
        super().__init__()
        self.flops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        aten = torch.ops.aten
        packet = func.overloadpacket
        if packet in (aten.bmm, aten.mm):
            self.flops[packet] += 2 * args[0].numel() * args[1].shape[-1]
        elif packet in (aten.baddbmm, aten.addmm):
            self.flops[packet] += 2 * args[1].numel() * args[2].shape[-1]
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("inputs", ["sb3", "obs_goal"])
@pytest.mark.parametrize("c,hand_gradients,last_layer_passes",
                         [(0.0, True, 6), (0.0, False, 6), (0.3, False, 9), (0.3, True, 7)])
def test_flop_count_matches_dispatched_products(c, hand_gradients, last_layer_passes, inputs):
    members, batch, obs, goal, action, hidden = 2, 16, 3, 4, 2, (8, 8)
    gens = [torch.Generator().manual_seed(m) for m in range(members)]
    # Eager (compile=False): a compiled update calls its products from generated code.
    config = DDPGConfig(goal_gradient_coef=c, hidden=hidden, hand_gradients=hand_gradients,
                        compile=False)
    # Under sb3 the state is (achieved goal, observation) and the goal follows the achieved.
    state = obs + goal if inputs == "sb3" else obs
    learner = DDPG(members, state, goal, action, config, gens,
                   goal_at=goal if inputs == "sb3" else None)
    rng = torch.Generator().manual_seed(0)

    def x(k):
        return torch.randn(members, batch, k, generator=rng)

    with MatmulFlops() as counter:
        learner.update(obs=x(state), action=x(action).clamp(-1, 1), next_obs=x(state),
                       goal=x(goal), reward=-torch.ones(members, batch))
    method = "reengage_her" if c else "ddpg_her"
    analytic = update_flops(method, obs, goal, action, hidden, batch, population=members,
                            hand_gradients=hand_gradients, inputs=inputs)
    # The critic's one-column output layer is a product-and-sum, not a dispatched matmul.
    one_column = 2 * batch * hidden[-1] * members * last_layer_passes
    assert sum(counter.flops.values()) == analytic - one_column


def test_json_records_have_the_required_keys(tmp_path, capsys):
    out = tmp_path / "throughput.json"
    status = BENCH["main"]([
        "--dim", "2", "--hidden", "8,8", "--batch-size", "16", "--steps", "20",
        "--warmup", "30", "--populations", "2", "--repeats", "1", "--threads", "1",
        "--gemm-size", "64", "--replay-steps", "1000", "--json", str(out),
        "--set", "fused_adam=false",
    ])
    assert status == 0
    records = json.loads(out.read_text())
    assert records[-1]["learner_settings"] == {"fused_adam": False}
    assert records[-1]["device"] == "cpu"
    for record in records:
        assert REQUIRED <= record.keys()
    by_name = {(r["contender"], r["population"]): r for r in records}
    assert {("gemm_ceiling", None), ("sb3_ddpg_her", 1), ("ddpg_her", 2),
            ("reengage_her", 2), ("replay_memory", None)} <= by_name.keys()
    sb3, ours = by_name[("sb3_ddpg_her", 1)], by_name[("reengage_her", 2)]
    assert sb3["seed_steps_per_s_median"] > 0 and sb3["peak_rss_mb"] > 0
    assert ours["seed_steps_per_s_median"] == pytest.approx(
        2 * ours["steps_per_s_per_seed_median"])
    assert ours["ratio_to_sb3_median"] > 0 and ours["repeats"] == 1
    memory = by_name[("replay_memory", None)]
    # 100 episodes: 11 observations and achieved goals, 10 actions, 1 desired goal each.
    # float32: 11 observations (the achieved goal is a view of them), 10 actions and one
    # desired goal per episode
    assert memory["replay_bytes"] == 4 * 100 * (11 * 2 + 10 * 2 + 2)
    assert memory["replay_target_bytes"] == 4 * (1000 * 6 + 100 * 2)
    assert "seed-steps/s" in capsys.readouterr().out


def test_concurrent_processes_add_up():
    merge = BENCH["merge_processes"]
    gemm = merge([{"gflops": 100.0, "seconds": 1.0, "peak_rss_mb": 5, "load_avg_1m": 1.0},
                  {"gflops": 80.0, "seconds": 1.2, "peak_rss_mb": 7, "load_avg_1m": 2.0}])
    assert gemm["gflops"] == 180.0 and gemm["processes"] == 2 and gemm["peak_rss_mb"] == 7
    # 100 steps in 1 s and in 0.5 s: mean rate 150 steps/s per process
    run = merge([{"seconds": 1.0, "peak_rss_mb": 1, "load_avg_1m": 0.0},
                 {"seconds": 0.5, "peak_rss_mb": 1, "load_avg_1m": 0.0}])
    assert 100 / run["seconds"] == pytest.approx(150.0)
    task = {"contender": "ddpg_her", "population": 3, "steps": 100, "repeat": 0}
    setting = BENCH["Setting"](dim=2, hidden=(8, 8), batch_size=16)
    (record,) = BENCH["aggregate"]([(task, {**run, "processes": 2})], setting)
    assert record["seed_steps_per_s_median"] == pytest.approx(2 * 3 * 150.0)
    assert record["processes"] == 2
    assert "2x3" in BENCH["format_table"]([record])


def test_bad_learner_setting_is_refused(capsys):
    assert BENCH["main"](["--set", "fused_adam"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda0"])
def test_a_malformed_device_is_refused(capsys, device):
    assert BENCH["main"](["--device", device, "--quick"]) == 2
    assert "--device" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_is_refused_where_there_is_none(capsys):
    assert BENCH["main"](["--device", "cuda", "--quick"]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_ratios_to_sb3_are_taken_repeat_by_repeat():
    setting = BENCH["Setting"](dim=2, hidden=(8,))

    def run(contender, population, repeat, seconds):
        task = {"contender": contender, "population": population, "repeat": repeat,
                "steps": 100}
        return task, {"seconds": seconds, "peak_rss_mb": 1.0, "load_avg_1m": 0.0}

    results = [run("sb3_ddpg_her", 1, 0, 1.0), run("sb3_ddpg_her", 1, 1, 4.0),
               run("ddpg_her", 4, 0, 2.0), run("ddpg_her", 4, 1, 2.0)]
    (sb3, ours) = BENCH["aggregate"](results, setting)
    assert sb3["contender"] == "sb3_ddpg_her" and sb3["seed_steps_per_s_median"] == 62.5
    # Repeat 0: 200 / 100 = 2; repeat 1: 200 / 25 = 8 (not 200 / median(SB3) = 3.2).
    assert ours["ratio_to_sb3_runs"] == [2.0, 8.0] and ours["ratio_to_sb3_median"] == 5.0


def test_figure_is_a_png(tmp_path):
    records = [
        {"contender": "gemm_ceiling", "population": None, "gflops_median": 150.0,
         "seed_steps_per_s_median": None},
        {"contender": "sb3_ddpg_her", "population": 1, "seed_steps_per_s_median": 100.0,
         "seed_steps_per_s_min": 90.0, "seed_steps_per_s_max": 110.0},
        {"contender": "run_info", "population": None, "load_avg_before": [1.0, 1, 1],
         "load_avg_after": [1.5, 1, 1], "cpu_count": 2},
    ]
    for contender, scale in (("ddpg_her", 1.0), ("reengage_her", 0.6)):
        for p in (1, 4, 10, 20):
            median = scale * 100 * p**0.3
            records.append({
                "contender": contender, "population": p, "seed_steps_per_s_median": median,
                "seed_steps_per_s_min": 0.9 * median, "seed_steps_per_s_max": 1.1 * median,
                "ceiling_seed_steps_per_s": 400 * scale, "dim": 20, "batch_size": 256,
                "hidden": [256, 256], "threads": 2,
            })
    src = tmp_path / "throughput.json"
    src.write_text(json.dumps(records))
    out = plot_throughput(src, tmp_path / "figures" / "throughput.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 300 and np.ptp(image) > 0


def test_update_bound_records_every_product_of_an_update(tmp_path):
    bound = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "update_bound.py"))
    out = tmp_path / "bound.json"
    assert bound["main"](["--population", "2", "--dim", "3", "--hidden", "8,8",
                          "--batch-size", "16", "--threads", "1", "--rounds", "1",
                          "--calls", "2", "--json", str(out)]) == 0
    records = {r["contender"]: r for r in json.loads(out.read_text())}
    for method, last_layer_passes in (("ddpg_her", 6), ("reengage_her", 7)):
        r = records[method]
        analytic = update_flops(method, 3, 3, 3, (8, 8), 16, population=2, inputs="sb3")
        one_column = 2 * 16 * 8 * 2 * last_layer_passes  # product-and-sum, not a matmul
        assert round(r["product_gflop"] * 1e9) == analytic - one_column
        assert r["update_ms_median"] > 0 and r["products_ms_median"] > 0
        assert r["seed_updates_per_s_bound"] == pytest.approx(2e3 / r["products_ms_median"])


def test_update_bound_rejects_an_unknown_contender():
    bound = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "update_bound.py"))
    with pytest.raises(SystemExit):
        bound["main"](["--contenders", "ddpg_her,td3"])


def test_reengage_costs_are_taken_against_their_own_baseline_repeat_by_repeat():
    setting = BENCH["Setting"](dim=2, hidden=(8,))

    def run(contender, repeat, seconds, population=2):
        task = {"contender": contender, "population": population, "repeat": repeat,
                "steps": 100}
        return task, {"seconds": seconds, "peak_rss_mb": 1.0, "load_avg_1m": 0.0}

    results = [run("sac_her", 0, 1.0), run("sac_her", 1, 2.0),
               run("reengage_sac_her", 0, 1.5), run("reengage_sac_her", 1, 2.2),
               run("reengage_her", 0, 3.0)]  # no DDPG+HER beside it: no cost
    records = {r["contender"]: r for r in BENCH["aggregate"](results, setting)}
    sac = records["reengage_sac_her"]
    assert sac["baseline_contender"] == "sac_her"
    assert sac["cost_ratio_runs"] == pytest.approx([1.5, 1.1])
    assert "cost_ratio_median" not in records["reengage_her"]
    assert "cost_ratio_median" not in records["sac_her"]
    assert sac["gflops_median"] is None  # SAC's update is not FLOP-counted
    text = BENCH["format_costs"](list(records.values()))
    assert "ReenGAGE+SAC+HER / SAC+HER at population 2: 1.30 [1.10, 1.50]" in text
    assert "1.34-1.60" in text
    with pytest.raises(ValueError, match="no FLOP count"):
        update_flops("sac_her", 2, 2, 2, (8,), 16)


def test_sac_pair_runs_and_reports_its_cost(tmp_path, capsys):
    out = tmp_path / "sac.json"
    assert BENCH["main"]([
        "--contenders", "sac_her,reengage_sac_her", "--dim", "2", "--hidden", "8,8",
        "--batch-size", "16", "--steps", "20", "--warmup", "30", "--populations", "2",
        "--repeats", "1", "--threads", "1", "--replay-steps", "0", "--json", str(out),
    ]) == 0
    records = {r["contender"]: r for r in json.loads(out.read_text())}
    assert {"sac_her", "reengage_sac_her"} <= records.keys()
    assert "gemm_ceiling" not in records and "sb3_ddpg_her" not in records
    cost = records["reengage_sac_her"]["cost_ratio_median"]
    assert cost > 0 and records["reengage_sac_her"]["seed_steps_per_s_median"] > 0
    assert "ReenGAGE+SAC+HER / SAC+HER at population 2" in capsys.readouterr().out
