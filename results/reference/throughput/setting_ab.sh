#!/usr/bin/env bash
# Alternated A/B of one boolean learner setting: three rounds, each side once per round.
#   bash results/reference/throughput/setting_ab.sh KEY PREFIX DIR
# writes DIR/PREFIX_{true,false}_{1,2,3}.json, e.g. KEY=compile PREFIX=compile
# DIR=results/reference/throughput/compile_hand_ab.
set -euo pipefail
key=$1 prefix=$2 dir=$3
mkdir -p "$dir"
for r in 1 2 3; do for mode in true false; do
  python benchmarks/throughput.py --contenders ddpg_her,reengage_her --populations 1,10 \
    --repeats 1 --replay-steps 0 --set "$key=$mode" \
    --json "$dir/${prefix}_${mode}_$r.json"
done; done
