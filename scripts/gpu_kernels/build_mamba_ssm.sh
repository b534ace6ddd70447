#!/usr/bin/env bash
# Build mamba-ssm 2.3.2.post1 with starx's scan-chunking patch (patch_mamba_ssm.py) as a wheel.
#
# Run it on a CUDA machine with nvcc, torch and Python matching the target (the lent GPU
# machine: CUDA 13, torch 2.11, Python 3.12, sm_90). ~3-5 min with 16 cores.
#   bash scripts/gpu_kernels/build_mamba_ssm.sh <mamba_ssm-2.3.2.post1.tar.gz> <out dir>
# Get the source tarball anywhere PyPI is reachable (torch must be importable there):
#   MAMBA_SKIP_CUDA_BUILD=TRUE pip download --no-deps --no-binary :all: --no-build-isolation \
#       -d .gpu-src mamba-ssm==2.3.2.post1
# The wheel is versioned 2.3.2.post1+starx.scan; without MAMBA_SCAN_CONFIG it behaves
# exactly like the stock release. starx sets MAMBA_SCAN_CONFIG=auto (starx/ops/_kernels.py):
# stock mamba-ssm ignores it.
set -euo pipefail
PYTHON=${PYTHON:-python3}   # the Python with torch that the wheel is for (e.g. PYTHON=.venv/bin/python)
case "$PYTHON" in */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")";; esac  # absolute, venv kept
SDIST=$(realpath "$1")
OUT=$(realpath -m "$2")
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

tar xzf "$SDIST" -C "$WORK"
SRC=$(echo "$WORK"/mamba_ssm-*)
"$PYTHON" "$HERE/patch_mamba_ssm.py" "$SRC"
(cd "$SRC" && MAMBA_FORCE_BUILD=TRUE MAMBA_LOCAL_VERSION=starx.scan MAX_JOBS=${MAX_JOBS:-16} \
    TORCH_CUDA_ARCH_LIST=9.0 "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/wheel" .)
# Strip debug symbols from the extensions and repack (RECORD is regenerated), where strip and
# the wheel tool are there; otherwise keep the wheel as built.
mkdir -p "$OUT"
if command -v strip >/dev/null && "$PYTHON" -c "import wheel.cli" 2>/dev/null; then
    "$PYTHON" -m wheel unpack "$WORK"/wheel/*.whl -d "$WORK/unpacked"
    find "$WORK/unpacked" -name '*.so' -exec strip --strip-debug {} +
    "$PYTHON" -m wheel pack "$WORK"/unpacked/* -d "$OUT"
else
    cp "$WORK"/wheel/*.whl "$OUT"/
fi
ls -la "$OUT"
