#!/usr/bin/env bash
# Alternated A/B: the update's hand-written gradients (agents/hand_gradients.py: critic and
# actor steps of DDPG and ReenGAGE) against autograd, three rounds, each side once per round.
set -euo pipefail
here=$(dirname "$0")
for r in 1 2 3; do for mode in true false; do
  python benchmarks/throughput.py --contenders ddpg_her,reengage_her --populations 1,10 \
    --repeats 1 --replay-steps 0 --set hand_gradients=$mode \
    --json "$here/hand_${mode}_$r.json"
done; done
