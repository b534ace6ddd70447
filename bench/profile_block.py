"""Where one encoder block's GPU time goes, part by part, beside the causal ViT-B block it is
compared with (torch.profiler, each part compiled alone, bf16 autocast, forward + backward).

Parts of a STAR-B block at the encoder's shape (b sequences x L tokens x 768):
  mixer       starx's Mamba (in_proj, causal conv, x_proj, dt_proj, scan, out_proj)
  mlp         SwiGLU 768 -> 2 x hidden -> 768
  norm        the fused add + LayerNorm the block runs twice
and of the anchor's block: attention (LN, qkv, SDPA causal, proj) and its GELU MLP.
For each part: CUDA time per call and every kernel above 1% of it, so a fusion's worth can be
read before it is written.

    python bench/profile_block.py --k 4 [--backend triton] [--out block.txt]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.anchors import CausalBlock  # noqa: E402
from starx.models.blocks import SwiGLU, add_norm  # noqa: E402
from starx.models.mamba import Mamba  # noqa: E402


def kernels_of(fn, steps: int = 5, warmup: int = 3) -> tuple[float, dict[str, float], dict[str, float]]:
    """(ms of CUDA time per call, {kernel: ms per call}, {kernel: launches per call}) of ``steps``
    calls of fn() after ``warmup``. (Under CUDA graphs each launch still leaves a gap of its own
    between kernels, which the kernel time does not show.)"""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    per: dict[str, float] = defaultdict(float)
    launches: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        if evt.device_type == torch.autograd.DeviceType.CUDA and evt.device_time_total > 0:
            per[evt.key] += evt.device_time_total / 1e3 / steps
            launches[evt.key] += evt.count / steps
    return sum(per.values()), per, launches


def fwd_bwd(module: nn.Module, make_inputs):
    run = torch.compile(module)
    inputs = make_inputs()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = run(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        out.float().sum().backward()

    return step


class NormPart(nn.Module):
    def __init__(self, dim: int, backend: str):
        super().__init__()
        self.norm, self.backend = nn.LayerNorm(dim), backend

    def forward(self, x, residual):
        return add_norm(self.norm, x, residual, self.backend)


class AnchorAttention(nn.Module):
    def __init__(self, block: CausalBlock):
        super().__init__()
        self.b = block

    def forward(self, x):
        b, L, d = x.shape
        q, k, v = self.b.qkv(self.b.norm1(x)).view(b, L, 3, self.b.heads, d // self.b.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.b.proj(a.transpose(1, 2).reshape(b, L, d))


class AnchorMLP(nn.Module):
    def __init__(self, block: CausalBlock):
        super().__init__()
        self.b = block

    def forward(self, x):
        return self.b.fc2(F.gelu(self.b.fc1(self.b.norm2(x))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--backend", default="triton")
    p.add_argument("--hidden", type=int, default=2048, help="SwiGLU hidden width (STAR-B: 2048)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    tokens = {1: 128, 2: 304, 4: 624, 8: 1264}[args.k]
    b, d = args.images // args.k, 768
    dev = "cuda"

    def x_in(grad=True):
        return torch.randn(b, tokens, d, device=dev, requires_grad=grad)

    block = CausalBlock(d).to(dev)
    parts = {
        "mixer (Mamba)": fwd_bwd(Mamba(d, backend=args.backend).to(dev), lambda: (x_in(),)),
        "mlp (SwiGLU)": fwd_bwd(SwiGLU(d, args.hidden).to(dev), lambda: (x_in(),)),
        "add + norm (x2 a block)": fwd_bwd(NormPart(d, args.backend).to(dev), lambda: (x_in(), x_in())),
        "anchor attention": fwd_bwd(AnchorAttention(block), lambda: (x_in(),)),
        "anchor mlp (GELU 3072)": fwd_bwd(AnchorMLP(block), lambda: (x_in(),)),
    }
    lines = [f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  torch {torch.__version__}  "
             f"{torch.cuda.get_device_name()}  command: python {' '.join(sys.argv)}",
             f"one block at k={args.k}: {b} sequences x {tokens} tokens x {d}, bf16 autocast, compiled, fwd + bwd"]
    totals = {}
    for name, step in parts.items():
        total, per, _ = kernels_of(step)
        totals[name] = total
        lines += ["", f"{name}: {total:.3f} ms"]
        lines += [f"  {ms:7.3f}  {k[:110]}" for k, ms in sorted(per.items(), key=lambda x: -x[1]) if ms > 0.01 * total]
    star = totals["mixer (Mamba)"] + totals["mlp (SwiGLU)"] + 2 * totals["add + norm (x2 a block)"]
    anchor = totals["anchor attention"] + totals["anchor mlp (GELU 3072)"]
    lines += ["", f"STAR-B block (mixer + mlp + 2 norms): {star:.3f} ms; anchor block: {anchor:.3f} ms; "
                  f"ratio {anchor / star:.3f}  (input-grad sums included in both)"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
