#!/usr/bin/env bash
# Runs inside the new conda env (Snakemake --sdm conda). paddleseg and paddleslim declare contradictory opencv
# pins, so they go in without dependencies (their real ones are pinned in segdistill.yaml); then the engine from
# the workflow's own source, wherever the workflow lives: the workflow sets SEGDISTILL_SOURCE while it parses
# (rules/common.smk) to its checkout's folder, or to git+<repository>@<ref> when Snakemake fetched it from git.
set -euo pipefail
pip install --no-deps paddleseg==2.8.0 paddleslim==2.6.0
source="${SEGDISTILL_SOURCE:?not set: create this env through the workflow (snakemake --sdm conda)}"
if [ -d "$source" ]; then
    pip install --no-deps -e "$source"
else
    pip install --no-deps "segdistill @ $source"
fi
