"""Selective-scan chunk configurations at STAR lengths (needs the patched mamba-ssm build).

Stock mamba-ssm sizes the scan's chunk to the next power of two at or above the sequence, so
STAR's k=2 / 4 / 8 sequences (304 / 624 / 1264 tokens) pay for 512 / 1024 / 2048. The build of
scripts/gpu_kernels/build_mamba_ssm.sh lets MAMBA_SCAN_CONFIG pick another threads x items
chunk for L > 256 (the scan state is carried from chunk to chunk). For each configuration, in
its own process (the kernel reads the variable once), this times the scan forward and
forward+backward at STAR-B shapes (bf16 u / delta / B / C / z, fp32 A, delta softplus, as
inside mamba_inner_fn; batch = 256 images / k sequences) and compares outputs and gradients
with the stock choice.

    python bench/scan_configs.py --k 2 4 8 --images 256 --dim 768 [--out scan.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CONFIGS = ("stock", "32x24", "32x16", "32x8", "32x4")  # stock first: the reference


def inputs(batch: int, dim: int, seqlen: int, dstate: int = 16):
    g = torch.Generator(device="cuda").manual_seed(0)
    bf = dict(device="cuda", dtype=torch.bfloat16)

    def randn(*shape, **kw):
        return torch.randn(*shape, generator=g, **kw)

    u = randn(batch, dim, seqlen, **bf)
    delta = (0.5 * randn(batch, dim, seqlen, **bf))
    A = -torch.arange(1, dstate + 1, device="cuda", dtype=torch.float32).repeat(dim, 1)
    B = randn(batch, dstate, seqlen, **bf)
    C = randn(batch, dstate, seqlen, **bf)
    D = torch.ones(dim, device="cuda")
    z = randn(batch, dim, seqlen, **bf)
    delta_bias = torch.full((dim,), -2.0, device="cuda")
    tensors = [u, delta, A, B, C, D, z, delta_bias]
    for t in tensors:
        t.requires_grad_(True)
    return tensors


def timed(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def measure_one(args) -> None:
    """Child process: time this process's configuration, save outputs for the comparison."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    u, delta, A, B, C, D, z, delta_bias = ts = inputs(args.batch, args.dim, args.seqlen)

    def fwd():
        return selective_scan_fn(u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=True)

    dout = torch.randn(args.batch, args.dim, args.seqlen, device="cuda", dtype=torch.bfloat16,
                       generator=torch.Generator(device="cuda").manual_seed(1))

    def fwd_bwd():
        fwd().backward(dout)

    with torch.no_grad():
        fwd_ms = timed(fwd, args.reps)
    fwd_bwd_ms = timed(fwd_bwd, args.reps)
    for t in ts:
        t.grad = None
    out = fwd()
    out.backward(dout)
    torch.save({"out": out.detach().float().cpu(), **{f"d{i}": t.grad.float().cpu() for i, t in enumerate(ts)}},
               args.save)
    print(json.dumps({"fwd_ms": fwd_ms, "fwd_bwd_ms": fwd_bwd_ms}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, nargs="+", default=[2, 4, 8], help="images per sequence")
    p.add_argument("--images", type=int, default=256, help="images per step: batch = images / k sequences")
    p.add_argument("--seqlen", type=int, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS))
    p.add_argument("--out", type=Path)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return measure_one(args)

    import importlib.metadata

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {torch.cuda.get_device_name(0)}  torch {torch.__version__}  "
          f"mamba-ssm {importlib.metadata.version('mamba_ssm')}  command: {' '.join(sys.argv)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.k:
            ref = None
            # STAR-B at 192 px: k x (16 separator + 144 patch tokens), less the last 16-token cluster
            L, batch = 160 * k - 16, args.images // k
            for cfg in args.configs:
                save = Path(tmp) / f"{L}_{cfg}.pt"
                cmd = [sys.executable, __file__, "--child", "--seqlen", str(L), "--batch", str(batch),
                       "--dim", str(args.dim), "--reps", str(args.reps), "--save", str(save)]
                proc = subprocess.run(cmd, env={**os.environ, "MAMBA_SCAN_CONFIG": cfg},
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    row = {"k": k, "seqlen": L, "batch": batch, "config": cfg, "error": proc.stderr.strip().splitlines()[-1]}
                else:
                    row = {"k": k, "seqlen": L, "batch": batch, "config": cfg, **json.loads(proc.stdout.strip().splitlines()[-1])}
                    got = torch.load(save)
                    ref = ref or got
                    # largest difference to the stock configuration, relative to the tensor's scale
                    row["max_rel_diff_vs_stock"] = max(
                        ((got[k] - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-12)).item() for k in ref
                    )
                rows.append(row)
                print(json.dumps(row))
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
