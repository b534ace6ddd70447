"""starx's add + LayerNorm kernels (starx/ops/_layer_norm_kernels.py) at STAR-B's shape (768
channels, a bf16 branch onto the fp32 stream, a k=4 step's 39936 encoder tokens), tile set by tile set.

``--time`` (GPU): one add + LayerNorm forward + backward, compiled and replayed as CUDA graphs as
the step runs it, on Inductor's LayerNorm (the twin) and on the kernels with each tile set:
ms per forward + backward (CUDA events), each kernel's GPU time (torch.profiler), and the largest
difference of the gradients from Inductor's. Whole steps: ``bash bench/speed_session.sh add_norm_k4``.

    python bench/layer_norm.py --time [--tiles 2x4/1x64x4x0 2x4/1x64x4x1 ...] [--out results.jsonl]

Without ``--time`` (no GPU), the static model for sm_90: registers, spills, instructions and global
load / store widths of each tile set:

    PYTHONPATH=/tmp/t36:$PWD python bench/layer_norm.py [--fwd 2x4 1x4 ...] [--bwd 1x64x4x0 1x64x4x1 ...]

(/tmp/t36: a Triton 3.6 install, the device's version, beside the local one.)
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import sass as S  # noqa: E402
from starx.ops import _layer_norm_kernels as K  # noqa: E402
from starx.ops import layer_norm as ln  # noqa: E402

N, BLOCK_N = 768, 1024
TOKENS = 64 * 624  # a k=4 step's encoder tokens
TYPES = {"x_ptr": "*bf16", "y_ptr": "*bf16", "y2_ptr": "*bf16", "dy_ptr": "*bf16", "dy2_ptr": "*bf16", "dx_ptr": "*bf16",
         "eps": "fp32"}  # the rest fp32


def report(kind: str, tiles: tuple[int, ...], twice: bool = False) -> str:
    fn = K.add_ln_fwd if kind == "fwd" else K.add_ln_bwd
    types = {n: TYPES.get(n, "*fp32") for n in fn.arg_names if n.endswith("_ptr") or n == "eps"}
    consts = {"HAS_RES": True, "HAS_BIAS": True, "HAS_Y2": twice, "BM": tiles[0], "BLOCK_N": BLOCK_N} \
        if kind == "fwd" else {"HAS_DS_IN": True, "HAS_RES": True, "HAS_Y2": twice, "BM": tiles[0], "BLOCK_N": BLOCK_N,
                               "ROWS": tiles[1], "PREFETCH": bool(tiles[3])}
    sass, regs, spills = S.compile_sass(fn, types, {"M": TOKENS, "N": N}, consts, tiles[1 if kind == "fwd" else 2])
    loops = S.inner_loops(sass)
    count = sum(loops[-1].values()) if kind == "bwd" and loops else len(S.instructions(sass))
    widths = collections.Counter(m[1] for m in re.finditer(r"\b((?:LDG|STG)\.E[.A-Z0-9]*)", sass))
    where = "the row loop" if kind == "bwd" else "the kernel"
    name = f"{kind}{' twice' if twice else ''} {'x'.join(map(str, tiles))}"
    return f"{name}: {regs} registers, {spills} bytes spilled, {count} instructions in {where}, global {dict(widths)}"


def time_tiles(configs: list[str], out: Path | None) -> None:
    """Forward + backward of one add + LayerNorm, Inductor's then the kernels' with each tile set."""
    import torch

    from bench.block_timing import kernel_times, parse_tiles, timed, write_jsonl
    from starx.ops.norm import add_layer_norm

    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "tokens": TOKENS, "channels": N,
            "command": "python bench/layer_norm.py " + " ".join(sys.argv[1:])}
    print(json.dumps(info), flush=True)
    default_tiles = dict(ln.TILES)
    torch.manual_seed(0)
    x = torch.randn(TOKENS, N, device="cuda", dtype=torch.bfloat16, requires_grad=True)  # the branch's output
    r = torch.randn(TOKENS, N, device="cuda", requires_grad=True)  # the fp32 stream
    w = (1 + 0.1 * torch.randn(N, device="cuda")).requires_grad_()
    b = (0.1 * torch.randn(N, device="cuda")).requires_grad_()
    dout = (torch.randn(TOKENS, N, device="cuda", dtype=torch.bfloat16), torch.randn(TOKENS, N, device="cuda"))
    leaves = (x, r, w, b)
    rows, ref = [], None
    for config in ["inductor"] + configs:
        torch._dynamo.reset()
        ln.USE_KERNELS = config != "inductor"
        ln.TILES.update(default_tiles if config in ("inductor", "default") else parse_tiles(config, ("fwd", "bwd")))
        fn = torch.compile(lambda x, r: add_layer_norm(x, r, w, b, 1e-5, backend="triton"), mode="reduce-overhead")
        row = {"tiles": config if config != "default" else "/".join("x".join(map(str, t))
                                                                    for t in default_tiles.values())}
        row["ms"] = round(timed(fn, (x, r), dout, leaves, reps=50), 4)
        row["kernels"] = kernel_times(fn, (x, r), dout, leaves, reps=10, top=6)
        grads = [t.grad.float().clone() for t in leaves]
        if ref is None:
            ref = grads
        else:
            row["over_inductor"] = round(row["ms"] / rows[0]["ms"], 3)
            row["max_rel_diff"] = round(max(((g - q).abs().max() / q.abs().max()).item()
                                            for g, q in zip(grads, ref)), 5)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if out:
        write_jsonl(out, info, rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fwd", nargs="*", default=["x".join(map(str, ln.TILES["fwd"]))], help="BMxWARPS")
    p.add_argument("--bwd", nargs="*", default=["x".join(map(str, ln.TILES["bwd"]))], help="BMxROWSxWARPSxPREFETCH")
    p.add_argument("--twice", action="store_true", help="the static model with a second LayerNorm (a decoder tap)")
    p.add_argument("--time", action="store_true", help="time the kernels on the GPU against Inductor's LayerNorm")
    p.add_argument("--tiles", nargs="+", default=["default"], help="with --time: tile sets, FWD/BWD "
                   "(BMxWARPS/BMxROWSxWARPSxPREFETCH)")
    p.add_argument("--out", type=Path, help="with --time: the rows as JSON lines")
    args = p.parse_args()
    if args.time:
        return time_tiles(args.tiles, args.out)
    for kind in ("fwd", "bwd"):
        for t in getattr(args, kind):
            print(report(kind, tuple(int(v) for v in t.split("x")), args.twice), flush=True)


if __name__ == "__main__":
    main()
