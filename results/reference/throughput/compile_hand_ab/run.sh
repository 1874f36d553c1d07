#!/usr/bin/env bash
# Alternated A/B: the hand-written update compiled with torch.compile (the default) against
# the same functions run eagerly, three rounds, each side once per round. Compilation
# happens in DDPG.prepare, before the benchmark's timed window.
set -euo pipefail
here=$(dirname "$0")
for r in 1 2 3; do for mode in true false; do
  python benchmarks/throughput.py --contenders ddpg_her,reengage_her --populations 1,10 \
    --repeats 1 --replay-steps 0 --set compile=$mode \
    --json "$here/compile_${mode}_$r.json"
done; done
