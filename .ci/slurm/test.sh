#!/usr/bin/env bash
# `make test-slurm`: start a single-node SLURM on localhost (.ci/slurm/up.sh), run tests/test_slurm.py against it,
# and stop every daemon by its PID (.ci/slurm/down.sh) on the way out, whatever happened.
#   PALMARES_SLURM_DBD=1 (default) with accounting, `sacct` status; 0: without, `squeue` status.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PALMARES_SLURM_DIR=${PALMARES_SLURM_DIR:-/tmp/palmares-slurm}
export PALMARES_SLURM_DBD=${PALMARES_SLURM_DBD:-1}
status=sacct
[ "$PALMARES_SLURM_DBD" = 1 ] || status=squeue
start=$SECONDS
trap 'bash .ci/slurm/down.sh; echo "make test-slurm: $((SECONDS - start)) s"' EXIT
bash .ci/slurm/up.sh
# The test wraps snakemake in `timeout -s INT`; this outer limit only guards against a hang anywhere else.
PALMARES_SLURM=1 PALMARES_SLURM_STATUS=$status timeout -s INT -k 60 2400 \
  .venv/bin/python -m pytest -p no:cacheprovider -v tests/test_slurm.py
