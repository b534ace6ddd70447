#!/usr/bin/env bash
# Install starx and everything it needs into a virtual environment (default: .venv).
#   bash scripts/install.sh            # CPU install: torch, FFCV, the torch twin ops
#   STARX_VENV=/path bash scripts/install.sh
#   STARX_SLURM=1 bash scripts/install.sh   # also Debian's SLURM packages (for the slurm tests)
# FFCV builds from source and needs libturbojpeg, OpenCV and pkg-config from the system.
# GPU clusters: see README "GPU clusters" for the mamba-ssm / causal-conv1d kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${STARX_VENV:-.venv}
PYTHON=${PYTHON:-python3}

apt_packages=()
pkg-config --exists libturbojpeg opencv4 2>/dev/null || apt_packages+=(libturbojpeg0-dev libopencv-dev pkg-config)
if [ "${STARX_SLURM:-0}" = 1 ] && ! command -v slurmctld >/dev/null; then
  apt_packages+=(munge slurmctld slurmd slurm-client)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[install] apt-get install ${apt_packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
  else
    echo "[install] error: missing system packages: ${apt_packages[*]} (as root: apt-get install ${apt_packages[*]})" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "[install] pip install -e .[all,test] (torch, ffcv, timm, optuna, submitit, ...)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[all,test]"
"$VENV/bin/python" -c "import starx, torch, ffcv, importlib.metadata as md; print(f'[install] starx {starx.__version__}, torch {torch.__version__}, ffcv {md.version(\"ffcv\")}')"
