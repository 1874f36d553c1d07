"""One line per full benchmark run: the figures the throughput targets are judged on.

    python results/reference/throughput/repeat_runs/summarise.py FILE.json [FILE.json ...]
"""

import json
import statistics
import sys

print("| run | SB3 seed-steps/s | DDPG pop 1 (x SB3) | DDPG pop 10 (x SB3, paired range) "
      "| pop 10 of ceiling | ReenGAGE / DDPG at pop 10 | load avg |")
print("|---|---|---|---|---|---|---|")
for path in sys.argv[1:]:
    records = json.load(open(path))
    by = {(r["contender"], r.get("population")): r for r in records}
    sb3, one, ten = by["sb3_ddpg_her", 1], by["ddpg_her", 1], by["ddpg_her", 10]
    reengage = by["reengage_her", 10]
    ratio = ten["seed_steps_per_s_median"] / reengage["seed_steps_per_s_median"]
    print(f"| {path} | {sb3['seed_steps_per_s_median']:.0f} "
          f"| {one['seed_steps_per_s_median']:.0f} ({one['ratio_to_sb3_median']:.2f}) "
          f"| {ten['seed_steps_per_s_median']:.0f} ({ten['ratio_to_sb3_median']:.2f}, "
          f"{ten['ratio_to_sb3_min']:.2f}–{ten['ratio_to_sb3_max']:.2f}) "
          f"| {100 * ten['ceiling_fraction_median']:.1f} % | {ratio:.2f} "
          f"| {ten['load_avg_1m_median']:.2f} |")

# Pooled over every repeat of every run given: each repeat pairs the contenders it ran.
pooled = {"DDPG pop 10 x SB3": [], "DDPG pop 1 x SB3": [], "ReenGAGE / DDPG at pop 10": []}
for path in sys.argv[1:]:
    by = {(r["contender"], r.get("population")): r for r in json.load(open(path))}
    pooled["DDPG pop 10 x SB3"] += by["ddpg_her", 10]["ratio_to_sb3_runs"]
    pooled["DDPG pop 1 x SB3"] += by["ddpg_her", 1]["ratio_to_sb3_runs"]
    pooled["ReenGAGE / DDPG at pop 10"] += [
        d / g for d, g in zip(by["ddpg_her", 10]["seed_steps_per_s_runs"],
                              by["reengage_her", 10]["seed_steps_per_s_runs"], strict=True)]
print()
for name, values in pooled.items():
    q1, median, q3 = statistics.quantiles(values, n=4)
    print(f"{name}: median {median:.2f}, quartiles {q1:.2f} and {q3:.2f}, "
          f"range {min(values):.2f}–{max(values):.2f} over {len(values)} paired repeats")
