#!/usr/bin/env bash
# Runs inside the new conda env (Snakemake --sdm conda). paddleseg and paddleslim declare contradictory opencv
# pins, so they go in without dependencies (their real ones are pinned in segdistill.yaml); then the engine,
# from the workflow's working directory (the repository root).
set -euo pipefail
pip install --no-deps paddleseg==2.8.0 paddleslim==2.6.0
pip install --no-deps -e "${SEGDISTILL_SOURCE:-.}"
