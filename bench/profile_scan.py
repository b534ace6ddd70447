"""One forward + backward of the Triton scan at a STAR shape, for a kernel profiler:

    ncu --clock-control none --kernel-name regex:scan_ --section SpeedOfLight --section WarpStateStats \
        --section Occupancy --section SchedulerStats python bench/profile_scan.py --shape k4

``--bwd-kernel rows_prefetch`` launches a candidate backward of bench/scan_bwd_rows.py instead of scan_bwd.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.triton_scan import SHAPES, add_bwd_kernel_option, inputs, parse_config, use_bwd_kernel  # noqa: E402
from starx.ops import triton_scan as ts  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--shape", default="k4", choices=list(SHAPES))
p.add_argument("--layout", default="last")
p.add_argument("--config", default=None, help="as bench/triton_scan.py's --configs (parse_config)")
add_bwd_kernel_option(p)
args = p.parse_args()
if args.config:
    ts.TILES.update(parse_config(args.config))
use_bwd_kernel(args.bwd_kernel, args.fast_math)  # (--fast-math, else the config's)
b, d, L, g = SHAPES[args.shape]
x = [t.requires_grad_() if t.is_floating_point() else t for t in inputs(b, d, L, g, args.layout)]
for _ in range(2):
    out = ts.selective_scan_triton(*x, True)
    out.backward(torch.randn_like(out))
torch.cuda.synchronize()
