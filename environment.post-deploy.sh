#!/usr/bin/env bash
# Run by `snakemake --use-conda` once, inside the environment it has just built from
# environment.yaml, from the directory Snakemake was started in: installs this checkout
# (editable, so the rules run the code you see) without touching the pinned dependencies.
set -euo pipefail
if ! grep -qs '^name = "reengage"' pyproject.toml; then
  echo "environment.post-deploy.sh: run snakemake from the reengage checkout" \
       "(no reengage pyproject.toml in $PWD)" >&2
  exit 1
fi
python -m pip install --quiet --no-deps -e .
