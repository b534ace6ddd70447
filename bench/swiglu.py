"""STAR-B's SwiGLU MLP alone (w3(silu(w1 x) * w2 x), starx.models.blocks.SwiGLU), forward +
backward, compiled, with the gate on starx's kernels (starx.ops.swiglu, the triton backend) and
as Inductor writes it (the torch backend), at the tokens of a 256-image step for each k.

Replayed as CUDA graphs (``--compile-mode reduce-overhead``, as the training step runs) unless told
otherwise; reports ms per forward + backward (CUDA events), the GPU time of each kernel
(torch.profiler) and the largest difference of the output and gradients between the two.

    python bench/swiglu.py --k 4 1 [--tiles 8x256x64x4/8x256x128x4 ...] [--out results.jsonl]

``--sass`` (no GPU): each kernel compiled for sm_90 as a bf16 launch at STAR-B's k=4 shape
specialises it, for each tile set: registers, spilled bytes, and the loop's instruction mix, with
the width of its global loads and stores (LDG.E.128: 16-byte vectors; bench/sass.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.block_timing import kernel_times, parse_tiles, step, timed, write_jsonl  # noqa: E402
from starx.models.blocks import SwiGLU  # noqa: E402
from starx.ops import swiglu as sw  # noqa: E402

DIM, HIDDEN = 768, 2048  # STAR-B: d 768, SwiGLU hidden int(768 * 8 / 3)
TOKENS = {1: 256 * 128, 2: 128 * 304, 4: 64 * 624, 8: 32 * 1264}  # a step's encoder tokens (sequences x tokens)


def tiles(config: str) -> dict:
    """TILES of starx.ops.swiglu from FWD/BWD, each BMxBNxROWSxWARPS."""
    return parse_tiles(config, ("fwd", "bwd"))


def kernel_sass(configs: list[str]) -> None:
    """Registers, spills and the per-step loop of the two kernels, for each tile set, at k=4."""
    import collections
    import re

    from bench import sass as S
    from starx.ops import _swiglu_kernels as K

    M, N = TOKENS[4], HIDDEN
    for config in configs:
        t = dict(sw.TILES) if config == "default" else tiles(config)
        for kind, fn in (("fwd", K.swiglu_fwd), ("bwd", K.swiglu_bwd)):
            bm, bn, rows, warps = t[kind]
            types = {n: "*fp32" if n in ("ba_ptr", "bb_ptr", "sa_ptr", "sb_ptr") else "*bf16"
                     for n in fn.arg_names if n.endswith("_ptr")}
            sass, regs, spills = S.compile_sass(fn, types, {"M": M, "N": N, "S": 2 * N},
                                                {"HAS_BIAS": True, "BM": bm, "BN": bn, "ROWS": rows}, warps)
            loops = S.inner_loops(sass)
            widths = collections.Counter(m[1] for m in re.finditer(r"\b((?:LDG|STG)\.E[.A-Z0-9]*)", sass))
            print(f"{kind} {bm}x{bn}x{rows}x{warps}: {regs} registers, {spills} bytes spilled; "
                  f"loop {sum(loops[-1].values()) if loops else 0} instructions ({S.mix(loops[-1]) if loops else '-'}); "
                  f"global {dict(widths)}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, nargs="+", default=[4], choices=sorted(TOKENS))
    p.add_argument("--tiles", nargs="+", default=["default"], help="kernel tile sets to time (FWD/BWD)")
    p.add_argument("--compile-mode", default="reduce-overhead")
    p.add_argument("--out", type=Path)
    p.add_argument("--sass", action="store_true", help="the static model of each kernel instead (no GPU)")
    args = p.parse_args()
    if args.sass:
        return kernel_sass(args.tiles)
    default_tiles = dict(sw.TILES)
    sw.USE_KERNELS = True  # (the triton backend's runs time the kernels, whatever starx's default)
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "compile_mode": args.compile_mode,
            "command": "python bench/swiglu.py " + " ".join(sys.argv[1:])}
    print(json.dumps(info))
    rows = []
    for k in args.k:
        torch.manual_seed(0)
        # (bf16 as the block's LayerNorm hands it over)
        x = torch.randn(TOKENS[k], DIM, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        dout = torch.randn(TOKENS[k], DIM, device="cuda", dtype=torch.bfloat16)
        row, outs = {"k": k, "tokens": TOKENS[k]}, {}
        runs = [("torch", None)] + [("triton", t) for t in args.tiles]
        for backend, t in runs:
            torch._dynamo.reset()
            sw.TILES.update(default_tiles if t in (None, "default") else tiles(t))
            torch.manual_seed(1)
            mlp = SwiGLU(DIM, HIDDEN, backend=backend).cuda()
            with torch.no_grad():
                for lin in (mlp.w1, mlp.w2):
                    lin.bias.normal_(0, 0.1)
            compiled = torch.compile(mlp, mode=args.compile_mode)

            def fn(inp, compiled=compiled):
                with torch.autocast("cuda", torch.bfloat16):
                    return compiled(inp)

            name = backend if t is None else f"triton[{t}]"
            leaves = (x, *mlp.parameters())  # (the parameters' gradients too: replay outputs as well)
            row[f"{name}_ms"] = round(timed(fn, (x,), dout, leaves, reps=50), 4)
            row[f"{name}_kernels"] = kernel_times(fn, (x,), dout, leaves, reps=10, top=10)
            step(fn, (x,), dout, leaves)
            outs[name] = [q.grad.float().clone() for q in leaves]
        ref = outs["torch"]
        for name, got in outs.items():
            if name != "torch":
                row[f"{name}_over_torch"] = round(row[f"{name}_ms"] / row["torch_ms"], 3)
                row[f"{name}_max_rel_diff"] = round(max(((g - r).abs().max() / r.abs().max()).item()
                                                        for g, r in zip(got, ref)), 5)
        rows.append(row)
        print(json.dumps(row))
    if args.out:
        write_jsonl(args.out, info, rows)


if __name__ == "__main__":
    main()
