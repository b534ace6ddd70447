#!/usr/bin/env bash
# Install everything (scripts/install.sh), start a one-node SLURM cluster on localhost and a
# two-node one on this same machine when running as root (for the slurm-marked tests), then run
# the test suite.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${STARX_VENV:-.venv}
if [ "$(id -u)" = 0 ]; then export STARX_SLURM=1; fi
[ "${STARX_SKIP_INSTALL:-0}" = 1 ] || bash scripts/install.sh  # .ci/run installs first
if [ "${STARX_SLURM:-0}" = 1 ] && [ -x scripts/slurm/start_local_cluster.sh ]; then
  bash scripts/slurm/start_local_cluster.sh || echo "[test] local SLURM cluster did not start: slurm tests will be skipped"
  # two nodes on this machine (own controller and ports) for tests/test_multinode.py
  STARX_SLURM_NODES=2 STARX_SLURM_DIR=/tmp/starx-slurm-2n STARX_SLURM_PORT=6827 \
    bash scripts/slurm/start_local_cluster.sh >/dev/null \
    || echo "[test] two-node SLURM cluster did not start: the multi-node test will be skipped"
fi
exec "$VENV/bin/python" -m pytest -q "$@"
