#!/usr/bin/env bash
# Install starx and everything it needs into a virtual environment (default: .venv). No root needed.
#   bash scripts/install.sh                 # CPU or GPU machine: torch, FFCV, the torch twin ops
#   STARX_VENV=/path bash scripts/install.sh   # another venv, or an existing environment: its torch is kept
#   STARX_TORCH=cpu|pypi bash scripts/install.sh   # where torch comes from when the environment has none;
#        default auto: the CPU-only wheels (download.pytorch.org/whl/cpu) on a machine without an NVIDIA
#        GPU when that index answers, else PyPI's (CUDA) build
#   STARX_SLURM=1 bash scripts/install.sh   # as root, also Debian's SLURM packages (for the slurm tests)
# FFCV builds from source against libturbojpeg, OpenCV and pkg-config: scripts/syslibs.sh finds them
# (system, modules, conda), installs them as root, or without root fetches the Debian/Ubuntu packages
# into .syslibs/ (or says what is missing and how to get it).
# GPU clusters: see README "GPU clusters" for the mamba-ssm / causal-conv1d kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${STARX_VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SOURCE=${STARX_TORCH:-auto}
CPU_INDEX=https://download.pytorch.org/whl/cpu
case $TORCH_SOURCE in auto|cpu|pypi) ;; *) echo "[install] error: STARX_TORCH=$TORCH_SOURCE: expected auto, cpu or pypi" >&2; exit 2 ;; esac

if [ "${STARX_SLURM:-0}" = 1 ] && ! command -v slurmctld >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[install] apt-get install munge slurmctld slurmd slurm-client"
    . scripts/apt.sh
    apt_install munge slurmctld slurmd slurm-client
  else
    echo "[install] warning: STARX_SLURM=1 needs root (apt-get install munge slurmctld slurmd slurm-client); skipped" >&2
  fi
fi

# FFCV's C libraries (exports PKG_CONFIG_PATH / LDFLAGS / PATH when they come from a prefix or conda)
syslibs_env=$(bash scripts/syslibs.sh)
eval "$syslibs_env"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

# An environment that already has torch keeps it: pip may only pick what fits that torch.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
version_of() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null; }
torch_version() { version_of torch; }
answers() {  # does this package index answer (in 30 s)?
  local reach=("$VENV/bin/python" -c "import urllib.request as u; u.urlopen('$1', timeout=10)")
  command -v timeout >/dev/null && reach=(timeout 30 "${reach[@]}")
  "${reach[@]}" >/dev/null 2>&1
}
if have=$(torch_version); then
  echo "[install] keeping the environment's torch $have"
  label=${have#*+}
  if [ "$label" != "$have" ] && ! version_of torchvision >/dev/null; then
    # a +cpu / +cuXYZ build: PyPI's torchvision is built for PyPI's torch; take the one built for this torch
    index=https://download.pytorch.org/whl/$label
    echo "torch==$have" > "$constraints"
    if answers "$index/torchvision/" && "${pip[@]}" -c "$constraints" --index-url "$index" torchvision; then
      echo "[install] torchvision $(version_of torchvision) from $index, built for torch $have"
    else
      echo "[install] warning: torch $have is a '$label' build and $index does not answer: PyPI's torchvision" \
           "(built for PyPI's torch) may fail to load with it; install torchvision from the index this torch came from" >&2
    fi
  fi
else
  if [ "$TORCH_SOURCE" = auto ]; then
    TORCH_SOURCE=pypi
    if ! command -v nvidia-smi >/dev/null && [ ! -e /proc/driver/nvidia/version ]; then
      if answers "$CPU_INDEX/torch/"; then
        TORCH_SOURCE=cpu
      else
        echo "[install] no NVIDIA GPU, but $CPU_INDEX does not answer: torch from PyPI (its CUDA build)"
      fi
    fi
  fi
  if [ "$TORCH_SOURCE" = cpu ]; then
    echo "[install] no NVIDIA GPU: CPU-only torch and torchvision from $CPU_INDEX (STARX_TORCH=pypi for PyPI's build)"
    if ! "${pip[@]}" --index-url "$CPU_INDEX" torch torchvision; then
      echo "[install] the CPU-only index failed: torch from PyPI instead"
    fi
  fi
  have=$(torch_version) || have=""
fi
[ -n "$have" ] && echo "torch==$have" > "$constraints"

echo "[install] pip install -e .[all,test] (torch, ffcv, timm, optuna, submitit, ...)"
"${pip[@]}" -c "$constraints" -e ".[all,test]"
"$VENV/bin/python" -c "import starx, torch, torchvision, ffcv, importlib.metadata as md; print(f'[install] starx {starx.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, ffcv {md.version(\"ffcv\")}')"
if [ -n "$syslibs_env" ] && [ -f .syslibs/env.sh ]; then
  echo "[install] FFCV links the libraries in .syslibs/ (keep that folder; rebuild: . .syslibs/env.sh first)"
fi
