"""The causal depthwise conv + SiLU at STAR shapes: starx's Triton conv against the twin compiled
by torch.compile and causal-conv1d's kernel, with the bytes-moved floor.

For each shape (the Mamba mixer's conv: width 4, fp32 weight and bias, bf16 activations; x a
channel-last (b, l, d) strided chunk of the in_proj output (b, l, 2d) as in the mixer, or
contiguous for the 4-direction fine-tuning mixer, whose x is a copy) it prints

* the floor: bytes the op must move (forward: x in, out; backward: x and dout in, dx out) over
  the copy bandwidth measured here;
* median times of the forward alone and of forward + backward (the backward alone is their
  difference), each replayed from a CUDA graph (the GPU's time, not Python's: an eager custom op
  costs tens of microseconds to dispatch, more than the kernel at these sizes), for
  - ``triton``: starx.ops.triton_conv, for each TILES config asked for;
  - ``compiled_twin``: starx.ops.conv's twin under torch.compile (what the triton backend ran
    before, ~0.6 ms fwd + bwd a layer at k=4 in the compiled mixer's profile);
  - ``causal_conv1d``: causal-conv1d's kernel as the cuda backend calls it eagerly (its
    channel-last input made contiguous first), where it is installed;
* the relative errors of the Triton conv's output and gradients against the fp32 twin.

    python bench/triton_conv.py [--shapes k4 ft4dir] [--configs 64x128x4x1/64x128x4x1 ...] [--seq] [--out f.jsonl]

A config is FWD/BWD, each STEPSxCHANNELSxAHEADxWARPS (starx.ops.triton_conv.TILES).

``--sass`` needs no GPU: it compiles each config for sm_90 (Triton's own ptxas and cuobjdump)
and prints a static cost model for bf16: registers, spills, resident warps per multiprocessor,
the loop's SASS instructions, and the time to issue all of them (4 warp instructions a clock a
multiprocessor, H200: 132 SMs at 1.98 GHz) beside the time the bytes take (4.3 TB/s).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import torch
import triton
import triton.testing

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.triton_scan import copy_bandwidth  # noqa: E402
from starx.ops import triton_conv as tc  # noqa: E402
from starx.ops.conv import causal_conv1d_channel_last  # noqa: E402

SHAPES = {  # name: (sequences, tokens, channels, x a chunk of (b, l, 2d))
    "k1": (256, 128, 768, True),
    "k4": (64, 624, 768, True),
    "k8": (32, 1264, 768, True),
    "ft4dir": (128, 197, 4 * 768, False),
}


def inputs(b: int, L: int, d: int, chunk: bool, seq: bool, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    xz = torch.randn(b, L, 2 * d if chunk else d, device="cuda", generator=gen).to(torch.bfloat16)
    x = xz[..., :d].detach().requires_grad_()  # a leaf with the chunk's strides (row stride 2d)
    weight = (torch.randn(d, 4, device="cuda", generator=gen) * 0.5).requires_grad_()
    bias = (torch.randn(d, device="cuda", generator=gen) * 0.1).requires_grad_()
    seq_idx = None
    if seq:  # k images of a packed sequence restart the conv at each separator
        seq_idx = (torch.arange(L, device="cuda") // max(L // 4, 1)).to(torch.int32)
    dout = torch.randn(b, L, d, device="cuda", generator=gen).to(torch.bfloat16)
    return x, weight, bias, seq_idx, dout


def bench_graph(fn) -> float:
    """Median ms of fn replayed from a CUDA graph (eager do_bench where capture fails)."""
    for _ in range(3):
        fn()  # compile / autotune / allocate before capture
    torch.cuda.synchronize()
    try:
        return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")
    except Exception as e:  # noqa: BLE001
        print(f"# CUDA graph capture failed ({type(e).__name__}: {e}); eager timing", flush=True)
        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def time_pair(conv, x, weight, bias, seq_idx, dout) -> tuple[float, float]:
    def fwd():
        with torch.no_grad():
            conv(x, weight, bias, seq_idx)

    def fwd_bwd():
        torch.autograd.backward(conv(x, weight, bias, seq_idx), dout)

    f = bench_graph(fwd)
    fb = bench_graph(fwd_bwd)
    for t in (x, weight, bias):
        t.grad = None
    return f, fb


def rel_errors(x, weight, bias, seq_idx, dout) -> dict:
    res = []
    for conv, dtype in ((triton_conv, x.dtype), (twin, torch.float32)):
        leaves = [t.detach().to(dtype if t is x else t.dtype).requires_grad_() for t in (x, weight, bias)]
        out = conv(*leaves, seq_idx)
        out.backward(dout.to(out.dtype))
        res.append([out] + [t.grad for t in leaves])
    rel = lambda a, r: ((a.double() - r.double()).norm() / r.double().norm()).item()  # noqa: E731
    return {name: rel(a, r) for name, a, r in zip(("out", "dx", "dweight", "dbias"), *res)}


def triton_conv(x, weight, bias, seq_idx):
    return tc.causal_conv1d_triton(x, weight, bias, "silu", seq_idx)


def twin(x, weight, bias, seq_idx):
    return causal_conv1d_channel_last(x, weight, bias, "silu", backend="torch", seq_idx=seq_idx)


def cuda_conv(x, weight, bias, seq_idx):
    return causal_conv1d_channel_last(x, weight, bias, "silu", backend="cuda", seq_idx=seq_idx)


def has_causal_conv1d() -> bool:
    try:
        from starx.ops._kernels import kernels_or_raise

        kernels_or_raise()
        return True
    except Exception as e:  # noqa: BLE001
        print(f"# causal-conv1d not available: {e}")
        return False


def sass_model(shapes: list[str], configs: list[str], seq: bool) -> None:
    """The static cost model of ``--sass`` (no GPU needed): bench/sass.py."""
    from bench import sass as S
    from starx.ops import _triton_conv_kernels as K

    for name in shapes:
        b, L, d, _ = SHAPES[name]
        act = b * L * d * 2
        types = {n: "*bf16" for n in ("x_ptr", "out_ptr", "dout_ptr", "dx_ptr")} | {"seq_ptr": "*i32"}
        values = {"L": L, "DIM": d, "sx_b": L * 2 * d, "sx_l": 2 * d, "sx_d": 1, "ss_b": L, "sdo_b": L * d,
                  "sdo_l": d, "sdo_d": 1}
        for config in configs:
            for kind, fn, (steps, bd, ahead, warps) in zip(
                    ("fwd", "bwd"), (K.conv_fwd, K.conv_bwd), (tuple(map(int, p.split("x"))) for p in config.split("/"))):
                consts = {"TC": steps, "BD": bd, "U": ahead, "HAS_BIAS": True, "HAS_SEQ": seq, "SILU": True}
                fn_types = {n: types.get(n, "*fp32") for n in fn.arg_names if n.endswith("_ptr")}
                fn_values = {n: values.get(n, 97) for n in fn.arg_names if n not in fn_types and n not in consts}
                sass, regs, spills = S.compile_sass(fn, fn_types, fn_values, consts, warps)
                (loop,) = S.inner_loops(sass)[:1] or [collections.Counter()]
                body = sum(loop.values())
                walked = steps + (3 if kind == "bwd" else 0)  # the backward recomputes 3 steps past its chunk
                issued = len(S.instructions(sass)) + body * (-(-walked // ahead) - 1)
                warps_run = -(-L // steps) * -(-d // bd) * b * warps
                mem_ms = (2 if kind == "fwd" else 3) * act / 4.3e12 * 1e3
                print(f"{name:>7} {kind} {steps}x{bd}x{ahead}x{warps}: {regs} registers, {spills} B spilled, "
                      f"<= {S.resident_warps(regs, warps)} warps/SM, loop {body} instructions "
                      f"(FFMA {loop['FFMA']} MUFU {loop['MUFU']} LDG {loop['LDG']}); "
                      f"issue {S.issue_ms(issued, warps_run):.3f} ms, bytes {mem_ms:.3f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["k4", "ft4dir"], choices=list(SHAPES))
    p.add_argument("--configs", nargs="+", default=["64x128x4x1/64x128x4x1", "64x64x8x1/64x64x8x1",
                                                    "32x128x4x1/32x128x3x1", "128x256x4x2/64x128x4x2"])
    p.add_argument("--seq", action="store_true", help="with seq_idx (4 segments a sequence)")
    p.add_argument("--sums", nargs="+", default=["atomic"], choices=["atomic", "blocks"],
                   help="how the backward sums dweight / dbias over programs (TILES['sums']), each timed")
    p.add_argument("--out", type=Path)
    p.add_argument("--sass", action="store_true", help="print the static sm_90 cost model (no GPU needed) and exit")
    args = p.parse_args()
    if args.sass:
        return sass_model(args.shapes, args.configs, args.seq)

    bw = copy_bandwidth()
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "triton": triton.__version__, "copy_gb_s": round(bw / 1e9),
            "command": " ".join(["python"] + sys.argv)}
    print(json.dumps(info))
    cuda_ok = has_causal_conv1d()
    compiled_twin = torch.compile(twin)
    rows = []
    for name in args.shapes:
        b, L, d, chunk = SHAPES[name]
        x, weight, bias, seq_idx, dout = inputs(b, L, d, chunk, args.seq)
        act = b * L * d * x.element_size()
        row = {"shape": name, "b": b, "L": L, "d": d, "x_chunk": chunk, "seq_idx": args.seq,
               "floor_fwd_ms": 2 * act / bw * 1e3, "floor_bwd_ms": 3 * act / bw * 1e3}
        row["twin_compiled_fwd_ms"], row["twin_compiled_fwdbwd_ms"] = time_pair(compiled_twin, x, weight, bias, seq_idx,
                                                                                 dout)
        if cuda_ok:
            row["causal_conv1d_fwd_ms"], row["causal_conv1d_fwdbwd_ms"] = time_pair(cuda_conv, x, weight, bias, seq_idx,
                                                                                   dout)
        for config, sums in ((c, s) for c in args.configs for s in args.sums):
            fwd, bwd = (tuple(map(int, part.split("x"))) for part in config.split("/"))
            tc.TILES.update(fwd=fwd, bwd=bwd, sums=sums)
            f, fb = time_pair(triton_conv, x, weight, bias, seq_idx, dout)
            r = dict(row, config=config, sums=sums, triton_fwd_ms=f, triton_fwdbwd_ms=fb, registers=dict(tc.REGISTERS),
                     rel_err_vs_twin=rel_errors(x, weight, bias, seq_idx, dout))
            rows.append(r)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
        del x, dout
        torch.cuda.empty_cache()
    nan = float("nan")
    print(f"{'shape':>7} {'config':>24} {'sums':>6} {'floor f':>7} {'floor b':>7} {'triton f':>8} {'triton b':>8} "
          f"{'twin-c f':>8} {'twin-c b':>8} {'cc1d f':>7} {'cc1d b':>7} {'max err':>8} {'regs f/b':>8}")
    for r in rows:
        bwd = lambda k, r=r: r.get(f"{k}_fwdbwd_ms", nan) - r.get(f"{k}_fwd_ms", nan)  # noqa: E731
        print(f"{r['shape']:>7} {r['config']:>24} {r['sums']:>6} {r['floor_fwd_ms']:>7.3f} {r['floor_bwd_ms']:>7.3f} "
              f"{r['triton_fwd_ms']:>8.3f} {bwd('triton'):>8.3f} {r['twin_compiled_fwd_ms']:>8.3f} "
              f"{bwd('twin_compiled'):>8.3f} {r.get('causal_conv1d_fwd_ms', nan):>7.3f} {bwd('causal_conv1d'):>7.3f} "
              f"{max(r['rel_err_vs_twin'].values()):>8.1e} {r['registers'].get('fwd')}/{r['registers'].get('bwd')}")
    if args.out:
        with args.out.open("w") as f:
            f.write(json.dumps(info) + "\n")
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
