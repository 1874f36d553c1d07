#!/usr/bin/env bash
# Fetch, here (where the package index is reachable), the wheels that a bare GPU machine lacks
# for benchmarks/gpu_check.sh: its image has torch with CUDA, numpy, pandas, matplotlib,
# pyyaml, tqdm and pytest, but not gymnasium, jsonschema or Stable-Baselines3. The versions
# are this environment's (so the GPU runs the code the CPU tests ran); the wheels are for
# CPython 3.12 on x86-64 Linux, the image's python.
#
#   benchmarks/gpu_wheels.sh [DIR]     (default .whl, which .git/info/exclude should ignore)
set -euo pipefail
dir=${1:-.whl}
python=${PYTHON:-.venv/bin/python}
names=(gymnasium farama-notifications cloudpickle typing_extensions jsonschema
       jsonschema-specifications referencing rpds-py attrs stable_baselines3)
mkdir -p "$dir"
for name in "${names[@]}"; do
  version=$("$python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  if [ -z "$version" ]; then
    echo "gpu_wheels: $name is not installed in $python's environment (make setup first)" >&2
    exit 1
  fi
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d "$dir" "$name==$version"
done
du -sh "$dir"
