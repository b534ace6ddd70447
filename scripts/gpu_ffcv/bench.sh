#!/usr/bin/env bash
# On the GPU machine, from the repo root, with .gpu-ffcv carried (see build.sh):
#   bash scripts/gpu_ffcv/bench.sh OUTDIR
# Checks FFCV there (versions, the data tests), then runs bench/loader_bench.py on a
# synthetic ImageNet-like JPEG set. Results: OUTDIR/loader_gpu.jsonl, OUTDIR/log.txt.
set -uo pipefail
OUTDIR=${1:?usage: bench.sh OUTDIR}
source .gpu-ffcv/env.sh
export PYTHONUNBUFFERED=1
LOG=$OUTDIR/log.txt
N=${N:-10000}
{
    lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core)'
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    python3 -c "import sys, numba, numpy, torch, cv2; from ffcv.loader import Loader
print('python', sys.version.split()[0], 'numba', numba.__version__, 'numpy', numpy.__version__,
      'torch', torch.__version__, 'cv2', cv2.__version__)"
    timeout 150 python3 -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests/test_data.py 2>&1 | tail -4
} 2>&1 | tee "$LOG"
B="python3 bench/loader_bench.py --out $OUTDIR/loader_gpu.jsonl --epochs 3"
run() { echo "+ $*" | tee -a "$LOG"; "$@" 2>&1 | tail -3 | tee -a "$LOG"; }
run $B --synthetic "$N" --workdir /tmp/lb --workers 16 --device cuda
run $B --beton /tmp/lb/bench.beton --workers 12 --device cuda
run $B --beton /tmp/lb/bench.beton --workers 16 --device cuda --batch-size 512
run $B --beton /tmp/lb/bench.beton --workers 16 --device cpu
run $B --beton /tmp/lb/bench.beton --workers 16 --device cuda --stage finetune --img-size 224
