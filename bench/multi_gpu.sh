#!/usr/bin/env bash
# Issue 16's GPU part in one command, from the repository root of a 2-GPU machine (about 8 minutes):
# one trial per GPU in a real `starx sweep`, STAR-B k=4 from FFCV/JPEG on 1 and 2 GPUs through
# `starx run`, compile_mode default vs reduce-overhead under 2-GPU DDP, and a 2 -> 1 GPU resume.
# bench/multi_gpu.py says what each part does and records; results go to $OUT (summary.md,
# summary.json, log.txt, env.txt, runs.tar.gz).
#
#   bash bench/multi_gpu.sh              # on the lent machine: carry .gpu-wheels .whl .gpu-ffcv
#   bash bench/multi_gpu.sh --cpu        # here, on CPU at toy sizes (gloo), with the venv's python:
#                                        # checks the script; no wheels installed, no NCCL
#
# The wheels: .gpu-wheels (mamba-ssm, causal-conv1d for cp312), .whl (optuna, submitit, omegaconf,
# antlr4, typer and pydantic, rich, colorlog, cloudpickle, ...: what the machine lacks; no SQLAlchemy,
# the journal storage does not import it), .gpu-ffcv (FFCV built for it, scripts/gpu_ffcv/build.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--cpu" ]]; then
    shift
    PY=${PY:-.venv/bin/python}
    OUT=${OUT:-/tmp/starx-mg-cpu-out}
    exec "$PY" bench/multi_gpu.py --cpu --out "$OUT" --work "${WORK:-/tmp/starx-mg-cpu}" "$@"
fi
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .gpu-wheels/*.whl .whl/*.whl \
    || { echo "[multi_gpu] installing the carried wheels failed" >&2; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
source .gpu-ffcv/env.sh
# NVLink multicast stays off in every process (the submitit jobs inherit this environment)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/starx-mg-out}
mkdir -p "$OUT"
python3 bench/multi_gpu.py --out "$OUT" --work "${WORK:-/tmp/starx-mg}" "$@"
rc=$?
ls -la "$OUT"
exit $rc
