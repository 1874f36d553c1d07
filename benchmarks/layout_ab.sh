#!/usr/bin/env bash
# The input-layout and HER A/B on ContinuousSeek (issue: our DDPG+HER against the paper's
# SB3 baseline). d = 5 and d = 10 at the paper's best cells (docs/paper.md §4), 10 seeds each,
# 50 evaluation episodes every 2000 steps; every seed population in one process, 1 thread.
#
#   variant      what differs from `reengage train`'s defaults
#   sb3          nothing: networks see (achieved goal, desired goal, observation); also
#                Stable-Baselines3's own DDPG+HER (method sb3_ddpg_her) on the same cells
#   obs_goal     --inputs obs_goal: the inputs this harness used before (observation, goal)
#   her_exact    --her-relabel exact: int(0.8·B) relabelled per batch, as SB3 (d = 5 only)
#   her_release  --her-relabel exact --her-future next_to_penultimate: SB3 1.3's HER, which
#                the paper's release ran (d = 5 only)
#
#   bash benchmarks/layout_ab.sh RUNS_DIR        # hours: 14 populations of 10 seeds
#   python benchmarks/layout_ab_summary.py RUNS_DIR --out results/reference/layout_ab
#
# Re-running resumes: finished populations are kept, interrupted ones resume from their
# checkpoint (every 2000 steps).
set -euo pipefail
OUT=${1:?usage: layout_ab.sh RUNS_DIR}
common=(--env ContinuousSeek --seeds 0-9 --eval-every 2000 --eval-episodes 50 --threads 1
        --checkpoint-every 2000 --quiet)
cell() {  # variant dim method c batch lr steps [extra options...]
  local variant=$1 dim=$2 method=$3 c=$4 batch=$5 lr=$6 steps=$7
  shift 7
  local name=$method c_option=()
  if [ "$c" != "-" ]; then name=${method}_c$c; c_option=(--c "$c"); fi
  local dir=$OUT/$variant/ContinuousSeek-d$dim/$name/b${batch}_lr$lr
  if [ -f "$dir/seed9/progress.csv" ]; then echo "done: $dir"; return; fi
  echo "$(date +%T) $dir"
  reengage train "${common[@]}" --dim "$dim" --method "$method" "${c_option[@]}" \
    --batch-size "$batch" --lr "$lr" --steps "$steps" --out "$dir" --force "$@"
}
for variant in sb3 obs_goal; do
  inputs=(--inputs "$variant")
  [ "$variant" = sb3 ] && inputs=()
  cell "$variant" 5 ddpg_her - 512 0.001 8000 "${inputs[@]}"
  cell "$variant" 5 reengage_her 0.2 512 0.0015 8000 "${inputs[@]}"
  cell "$variant" 10 ddpg_her - 256 0.0005 16000 "${inputs[@]}"
  cell "$variant" 10 reengage_her 0.2 512 0.001 16000 "${inputs[@]}"
done
cell sb3 5 sb3_ddpg_her - 512 0.001 8000
cell sb3 10 sb3_ddpg_her - 256 0.0005 16000
cell her_exact 5 ddpg_her - 512 0.001 8000 --her-relabel exact
cell her_release 5 ddpg_her - 512 0.001 8000 --her-relabel exact --her-future next_to_penultimate
