#!/usr/bin/env bash
# Every GPU check of the project in one run, for a bare GPU machine that has python3 with a
# CUDA torch but no internet (issue: the GPU path). It lays the package out under a scratch
# site folder, installs the pure-Python wheels that benchmarks/gpu_wheels.sh fetched into
# .whl/, runs the GPU-only tests (pytest -m gpu), the device-loop benchmark (both methods on
# ContinuousSeek d = 20, Multi-ReenGAGE on DriveSeek at the paper's n_max 200 and widths),
# the throughput benchmark with Stable-Baselines3 on the same GPU and the TF32 measurement
# (benchmarks/tf32.py), and writes everything under
# $OUT:
#   steps.tsv (each step's exit status and seconds), env.txt, nvidia-smi.txt, and per step
#   its log and JSON. A failed step is recorded and the next one still runs.
#
#   OUT=gpu_out benchmarks/gpu_check.sh            (under 10 minutes on an H200)
#   GPU_CHECK_QUICK=1 ...                          (a minute: the smallest of every step)
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 ...     (the script's own logic, on a CPU)
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${OUT:-gpu_check_out}" && cd "${OUT:-gpu_check_out}" && pwd)
site=${GPU_CHECK_SITE:-/tmp/reengage_site}
quick=${GPU_CHECK_QUICK:-0}
device=${GPU_CHECK_DEVICE:-cuda}
printf 'step\texit\tseconds\n' > "$out/steps.tsv"

step() {  # step NAME TIMEOUT_S COMMAND...: run it from $out/.., log it, record exit and time
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "== $name ($(date -u +%T), limit ${limit}s)"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" >> "$out/steps.tsv"
  tail -n 3 "$out/$name.log"
}

# The package as an install would lay it out (agents/, envs/, analysis/ inside reengage/):
# a copy, because the machine may lack the build backend and has no index to fetch one.
rm -rf "$site" && mkdir -p "$site/reengage"
cp -r "$repo/reengage/." "$site/reengage/"
for part in agents envs analysis; do cp -r "$repo/$part" "$site/reengage/$part"; done
if compgen -G "$repo/.whl/*.whl" > /dev/null; then
  step wheels 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" "$repo"/.whl/*.whl
else
  echo "gpu_check: no wheels in $repo/.whl (benchmarks/gpu_wheels.sh fetches them)" >&2
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
# Run from outside the checkout: its reengage/ folder alone is not the package.
cd "$out" || exit 1

nvidia-smi > nvidia-smi.txt 2>&1
python3 - > env.txt 2>&1 <<'PY'
import platform, torch, reengage
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
print("reengage", reengage.__version__, "from", reengage.__file__)
print("tf32 matmul", torch.backends.cuda.matmul.allow_tf32)
PY
cat env.txt

# Limits sum to 9 minutes, so the whole script fits one 10-minute command.
# Only the files that hold GPU tests: collecting the others would import what the machine
# lacks (snakemake, rliable, MuJoCo) and stop pytest before it ran anything.
mapfile -t gpu_tests < <(grep -l "pytest.mark.gpu" "$repo"/tests/test_*.py)
if [ "${#gpu_tests[@]}" -gt 0 ]; then
  step tests_gpu 80 python3 -m pytest -q -m gpu -p no:cacheprovider --rootdir "$repo" \
    -c "$repo/pyproject.toml" "${gpu_tests[@]}"
fi

if [ "$quick" = 1 ]; then
  populations=1,10; reengage=10; large=20; drive=(--dim 50 --populations 1,2 --window 80)
else
  populations=1,10,100; reengage=10,100; large=1000; drive=(--dim 200 --populations 1,10)
fi
step device_loop_ddpg 115 python3 "$repo/benchmarks/device_loop.py" --device "$device" \
  --method ddpg_her --populations "$populations" --repeats 2 --window 200 \
  --json device_loop_ddpg.json
step device_loop_large 55 python3 "$repo/benchmarks/device_loop.py" --device "$device" \
  --method ddpg_her --loops device --populations "$large" --repeats 1 --window 200 \
  --json device_loop_large.json
step device_loop_reengage 80 python3 "$repo/benchmarks/device_loop.py" --device "$device" \
  --method reengage_her --populations "$reengage" --repeats 2 --window 200 \
  --json device_loop_reengage.json
# The issue's goal-set target: Multi-ReenGAGE population 10 at the paper's DriveSeek scale.
step device_loop_drive_seek 70 python3 "$repo/benchmarks/device_loop.py" --device "$device" \
  --env DriveSeek --method multi_reengage "${drive[@]}" --loops device,numpy --repeats 1 \
  --eval-episodes 10 \
  --json device_loop_drive_seek.json

if [ "$quick" = 1 ]; then
  args=(--populations 1,10 --steps 300 --repeats 1)
else
  args=(--populations 1,10,100 --steps 1000 --repeats 2)
fi
step "throughput_$device" 100 python3 "$repo/benchmarks/throughput.py" --device "$device" \
  --threads 4 --replay-steps 0 "${args[@]}" --json "throughput_$device.json"

# TF32 against float32: the error in ∇_g Q and the update's speed (issue item: numerics).
if [ "$quick" = 1 ]; then tf32=(--population 2 --updates 5 --repeats 2); else tf32=(); fi
step tf32 40 python3 "$repo/benchmarks/tf32.py" --device "$device" "${tf32[@]}" \
  --json tf32.json

echo "== done; $out/steps.tsv:"
cat steps.tsv
