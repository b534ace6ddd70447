"""STAR-B's SwiGLU MLP alone (starx.models.blocks.SwiGLU: w3(silu(w1 x) * w2 x)), compiled forward +
backward under bf16 autocast, as written (w1 and w2: two matmuls) against w1 and w2 as one matmul
over their concatenated weights (one GEMM of twice the width forward, one of twice the depth for
the input's gradient). Same parameters, same function: the largest difference is reported.

    python bench/swiglu.py [--rows 39936] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from starx.models.blocks import SwiGLU  # noqa: E402


def fused(mlp: SwiGLU, x: torch.Tensor) -> torch.Tensor:
    w = torch.cat([mlp.w1.weight, mlp.w2.weight])
    b = torch.cat([mlp.w1.bias, mlp.w2.bias])
    h1, h2 = F.linear(x, w, b).chunk(2, dim=-1)
    return mlp.w3(F.silu(h1) * h2)


def timed(fn, x, dout, reps: int = 20) -> float:
    for _ in range(3):
        fn(x).backward(dout)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        fn(x).backward(dout)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=64 * 624, help="tokens a step (STAR-B k=4: 64 x 624)")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.manual_seed(0)
    mlp = SwiGLU(args.dim, args.hidden).cuda()
    x = torch.randn(args.rows, args.dim, device="cuda", requires_grad=True)
    dout = torch.randn(args.rows, args.dim, device="cuda", dtype=torch.bfloat16)
    row = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(),
           "torch": torch.__version__, "command": " ".join(["python"] + sys.argv), "rows": args.rows}
    outs = {}
    for name, f in (("two_matmuls", mlp), ("one_matmul", lambda t: fused(mlp, t))):
        torch._dynamo.reset()
        compiled = torch.compile(f)

        def step(t, c=compiled):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return c(t)

        row[f"{name}_ms"] = round(timed(step, x, dout), 4)
        mlp.zero_grad()
        x.grad = None
        out = step(x)
        out.backward(dout)
        outs[name] = [out.float(), x.grad.float()] + [p.grad.float() for p in mlp.parameters()]
    row["max_rel_diff"] = max(((a - b).norm() / b.norm()).item() for a, b in zip(outs["one_matmul"],
                                                                                 outs["two_matmuls"]))
    row["one_over_two"] = round(row["one_matmul_ms"] / row["two_matmuls_ms"], 3)
    print(json.dumps(row))
    if args.out:
        args.out.write_text(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
