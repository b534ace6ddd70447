"""The selective scan at STAR shapes: roofline, mamba-ssm's kernel vs starx's Triton scan.

For each shape (one Mamba layer of STAR-B: d_inner 768, d_state 16, bf16 activations, fp32 A / D /
dt bias, softplus, gate z) it prints

* the floor: bytes the op must move (each input read once, each output written once) over the
  copy bandwidth measured here, and exp2 evaluations over the multiprocessors' special-function
  rate (16 per clock per SM on Hopper), forward and backward;
* median times (triton.testing.do_bench) of mamba-ssm's ``selective_scan_fn`` (through starx's
  custom op) and of the Triton scan for each tile shape asked for, forward and forward + backward;
* the largest relative error of the Triton scan's output and gradients against mamba-ssm's.

    python bench/triton_scan.py [--configs 32x1/32x1/16 ...] [--layouts first last] [--out scan.jsonl]
    python bench/triton_scan.py --sass [--shapes k4] [--configs ...]     # no GPU needed

``--sass`` compiles each config for sm_90 as a launch at that shape (channel-last) specialises
it and prints the static cost model of bench/sass.py: registers, spills, each loop's SASS
instructions a step and their mix, and the time to issue them for every program of the shape.

A config is FWD_CHANNELSxWARPS/BWD_CHANNELSxWARPS/STEPS[/UNROLLxSTAGES[/BWD_MAXNREG]]
(starx.ops.triton_scan.TILES); layout
"first" is mamba-ssm's (b, d, l), "last" the channel-last (b, l, d) of the projections.

Shapes: k=1 (256 x 128 tokens), k=4 (64 x 624), k=8 (32 x 1264): 256 images a step; the
fine-tuning mixer at 224 px (128 x 197 tokens, 4 directions as 4 groups of 768 channels).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import triton.testing

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from starx.ops import triton_scan as ts  # noqa: E402

SHAPES = {  # name: (sequences, channels, tokens, groups)
    "k1": (256, 768, 128, 1),
    "k4": (64, 768, 624, 1),
    "k8": (32, 768, 1264, 1),
    "ft4dir": (128, 4 * 768, 197, 4),
}
N = 16


def copy_bandwidth() -> float:
    x = torch.empty(2**29, dtype=torch.float32, device="cuda")  # 2 GiB
    y = torch.empty_like(x)
    ms = triton.testing.do_bench(lambda: y.copy_(x), warmup=50, rep=300, return_mode="median")
    return 2 * x.numel() * 4 / (ms / 1e3)


def sm_exp_rate() -> float:
    p = torch.cuda.get_device_properties(0)
    clock = getattr(p, "clock_rate", None) or 1_755_000  # kHz
    return p.multi_processor_count * 16 * clock * 1e3


def inputs(b: int, d: int, L: int, g: int, layout: str = "first", seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    bf = torch.bfloat16
    r = lambda *s, dtype=bf: torch.randn(*s, device="cuda", generator=gen).to(dtype)  # noqa: E731
    u, delta, z = r(b, d, L), (r(b, d, L, dtype=torch.float32) * 0.5 - 1).to(bf), r(b, d, L)
    A = -torch.rand(d, N, device="cuda", generator=gen) * 4 - 0.5
    B, C = r(b, g, N, L), r(b, g, N, L)
    D, bias = r(d, dtype=torch.float32), r(d, dtype=torch.float32) * 0.1
    if layout == "last":  # same values, channel-last memory
        u, delta, z = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (u, delta, z))
        B, C = (t.transpose(2, 3).contiguous().transpose(2, 3) for t in (B, C))
    return u, delta, A, B, C, D, z, bias


def floor(b: int, d: int, L: int, g: int, bw: float, exp_rate: float, bt: int) -> dict:
    """Bytes each pass must move and exps it must evaluate, and the times they take at the
    measured copy bandwidth and the special-function rate."""
    act = b * d * L * 2  # one bf16 (b, d, l) tensor
    bc = b * g * N * L * 2
    states = b * d * -(-L // bt) * N * 4
    fwd_bytes = 3 * act + 2 * bc + act + states  # u, delta, z, B, C in; out, tile states out
    bwd_bytes = 4 * act + 2 * bc + states + 3 * act + 2 * b * g * N * L * 4  # + dout; du, ddelta, dz, dB, dC out
    exps = b * d * N * L
    return {"fwd_bytes_mb": fwd_bytes / 1e6, "bwd_bytes_mb": bwd_bytes / 1e6, "exps_m": exps / 1e6,
            "fwd_floor_ms": max(fwd_bytes / bw, exps / exp_rate) * 1e3,
            "bwd_floor_ms": max(bwd_bytes / bw, 2 * exps / exp_rate) * 1e3,
            "fwd_mem_ms": fwd_bytes / bw * 1e3, "fwd_exp_ms": exps / exp_rate * 1e3,
            "bwd_mem_ms": bwd_bytes / bw * 1e3, "bwd_exp_ms": 2 * exps / exp_rate * 1e3}


def mamba_ops():
    try:
        from starx.ops._kernels import kernels_or_raise
        from starx.ops._scan_op import selective_scan_kernel

        kernels_or_raise()
        return selective_scan_kernel
    except Exception as e:  # noqa: BLE001  (report and time the Triton scan alone)
        print(f"# mamba-ssm not available: {e}")
        return None


def time_pair(fwd, args, dout) -> tuple[float, float]:
    """Median ms of the forward alone (no grad) and of forward + backward."""
    with torch.no_grad():
        f = triton.testing.do_bench(lambda: fwd(*args), warmup=25, rep=100, return_mode="median")
    leaves = [a.detach().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
              for a in args]

    def fb():
        out = fwd(*leaves)
        torch.autograd.backward(out, dout)

    fbm = triton.testing.do_bench(fb, warmup=25, rep=100, return_mode="median", grad_to_none=[
        a for a in leaves if isinstance(a, torch.Tensor)])
    return f, fbm


def rel_errors(fwd_a, fwd_b, args_a, dout, args_b) -> dict:
    """Relative errors of fwd_a on args_a against fwd_b on args_b (same values, maybe another layout)."""
    res = {}
    outs = []
    for fwd, args in ((fwd_a, args_a), (fwd_b, args_b)):
        leaves = [a.detach().clone().requires_grad_() for a in args]
        out = fwd(*leaves)
        out.backward(dout)
        outs.append([out] + [a.grad for a in leaves])
    names = ["out", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "dbias"]
    for name, x, y in zip(names, *outs):
        res[name] = ((x.float() - y.float()).norm() / y.float().norm()).item()
    return res


BF16_ARGS = ("u_ptr", "dt_ptr", "z_ptr", "out_ptr", "dout_ptr", "du_ptr", "ddt_ptr", "dz_ptr", "B_ptr", "C_ptr")


def launch_spec(fn, shape: str, bd: int, T: int, unroll: int = 1, stages: int = 1,
                gate: bool = True) -> tuple[dict, dict, dict]:
    """(pointer types, integer values, constexprs) of a launch of scan kernel ``fn`` (or a study of
    it with the same argument names) at ``shape``, channel-last as the mixer calls it, for
    bench/sass.py: gate (unless ``gate`` is False: the fine-tuning mixer's scan), D, dt bias and
    softplus present, no reset."""
    b, d, L, g = SHAPES[shape]
    xdbl = 48 + 2 * N  # x_proj's output row (dt_rank 48 + B + C), which B and C are views of
    values = dict(L=L, DPG=d // g, DIM=d, su_b=L * d, su_l=d, su_d=1, sdt_b=L * d, sdt_l=d, sdt_d=1,
                  sz_b=L * 2 * d, sz_l=2 * d, sz_d=1, so_b=L * d, so_l=d, so_d=1, sg_b=L * d, sg_l=d, sg_d=1,
                  sB_b=L * xdbl, sB_g=N, sB_l=xdbl, sB_n=1, sC_b=L * xdbl, sC_g=N, sC_l=xdbl, sC_n=1, sr_b=L,
                  sdu_b=L * d, sdu_l=d, sdu_d=1, sdB_b=d // bd * L * N, sdB_l=N, sw_p=T * bd * (N + 1))
    consts = dict(N=N, BD=bd, T=T, HAS_D=True, HAS_Z=gate, HAS_BIAS=True, SOFTPLUS=True, HAS_RESET=False,
                  UNROLL=unroll, STAGES=stages, SAVE_STATES=True, ATOMIC_SUMS=True, SMEM_WORK=False, SMEM_DY=True,
                  KEEP_A=False, KEEP_DT=False, CLAMP=False, L2_AHEAD=0, PACKED_BC=False, CARRY_LAST=False,
                  BC_IN_STEP=False, FAST_MATH=0)
    types = {n: "*bf16" if n in BF16_ARGS else "*i8" if n == "reset_ptr" else "*fp32"
             for n in fn.arg_names if n.endswith("_ptr")}
    return (types, {n: v for n, v in values.items() if n in fn.arg_names},
            {n: v for n, v in consts.items() if n in fn.arg_names})


def _rows_kernel(variant: str):
    from bench.scan_bwd_rows import VARIANTS

    return VARIANTS[variant]


# name -> what TILES["bwd_kernel"] gets: default (None) is what starx launches (on an NVIDIA GPU with
# Gluon: the one-channel-a-lane kernel, rows_keep_dt_clamp reading B and C packed, the adjoint sweep
# starting from the recompute sweep's last loads); triton is the
# plain Triton scan_bwd; *_blocks the same summing dB / dC, dA / dD / dbias from per-program
# partials (the deterministic path), not atomics
ROWS_VARIANTS = ("rows", "rows_prefetch", "rows_keep_a", "rows_f32bc", "rows_keep_a_f32bc", "rows_smem",
                 "rows_smem_noprefetch", "rows_smem_h",
                 "rows_keep_dt_clamp", "rows_bc_in_step")  # scan_bwd_rows.VARIANTS
def _scan_bwd():
    from starx.ops._triton_scan_kernels import scan_bwd

    return scan_bwd


BWD_KERNELS = ({"default": lambda: None, "default_blocks": lambda: None, "triton": _scan_bwd, "triton_blocks": _scan_bwd}
               | {v: (lambda v=v: _rows_kernel(v)) for v in ROWS_VARIANTS})


def bwd_tiles(name: str) -> dict:
    """The TILES entries that select backward ``name`` (BWD_KERNELS)."""
    return {"bwd_kernel": BWD_KERNELS[name](), "sums": "blocks" if name.endswith("_blocks") else "atomic"}


def add_bwd_kernel_option(p: argparse.ArgumentParser) -> None:
    """--bwd-kernel for the step benchmarks (pretrain_step.py, finetune_step.py)."""
    p.add_argument("--bwd-kernel", default="default", choices=list(BWD_KERNELS),
                   help="the Triton scan's backward: default (what starx launches), triton (the plain Triton "
                        "scan_bwd), triton_blocks (the same, dB / dC "
                        "summed from per-block partials, as under deterministic algorithms) or a candidate of "
                        "bench/scan_bwd_rows.py")
    p.add_argument("--fast-math", default=None, choices=list(FAST_MATH_SETTINGS),
                   help="the scan kernels that compute softplus and the gate's sigmoid with the GPU's approximate "
                        "log2 and divides (TILES['fast_math']; default starx's, fwd+bwd; none: the precise ones)")


# --fast-math's settings: TILES["fast_math"] of each
FAST_MATH_SETTINGS = {"none": "", "bwd": "bwd", "fwd": "fwd", "fwd+bwd": "fwd+bwd"}


def backward_label(name: str) -> str:
    """What --bwd-kernel ``name`` launches, with the fast math now set, in words (for the benchmarks' records)."""
    return (ts.backward_name() if name == "default" else name) + f", fast_math {ts.TILES['fast_math'] or 'none'}"


def use_bwd_kernel(name: str, fast_math: str | None = None) -> None:
    """Launch the backward kernel ``name`` from now on in this process (BWD_KERNELS), with fast
    math in the kernels --fast-math ``fast_math`` names (FAST_MATH_SETTINGS; None: as set)."""
    ts.TILES.update(bwd_tiles(name))
    if fast_math is not None:
        ts.TILES["fast_math"] = FAST_MATH_SETTINGS[fast_math]


DEFAULT_TILES = dict(ts.TILES)


def parse_config(config: str) -> dict:
    """The TILES entries of a --configs string, FBDxFW/BBDxBW/STEPS[/UNROLLxSTAGES[/MAXNREG[/L2[/FAST_MATH]]]]:
    forward and backward channels x warps a program, steps a tile, scan_fwd's unroll and stages,
    the backward's register cap ('-': none), scan_fwd's L2 prefetch distance at every length (0:
    off; '-': starx's, by length), fast math (TILES["fast_math"]) in the backward (b), both (fb) or
    neither (0). An absent field keeps starx's default (DEFAULT_TILES; the L2 prefetch's is by
    length)."""
    fwd, bwd, steps, *rest = config.split("/")
    d = DEFAULT_TILES
    unroll, stages = map(int, rest[0].split("x")) if rest else (d["unroll"], d["stages"])
    maxnreg = (None if rest[1] == "-" else int(rest[1])) if len(rest) > 1 else d["bwd_maxnreg"]
    return dict(fwd=tuple(map(int, fwd.split("x"))), bwd=tuple(map(int, bwd.split("x"))), steps=int(steps),
                unroll=unroll, stages=stages, bwd_maxnreg=maxnreg,
                fwd_l2_ahead=(int(rest[2]), 0) if len(rest) > 2 and rest[2] != "-" else d["fwd_l2_ahead"],
                fast_math={"0": "", "b": "bwd", "fb": "fwd+bwd"}[rest[3]] if len(rest) > 3 else d["fast_math"])


def sass_model(shapes: list[str], configs: list[str], bwd_kernels: list[str] = ("triton",), gate: bool = True) -> None:
    """The static cost model of ``--sass`` (no GPU needed): bench/sass.py."""
    from bench import sass as S
    from starx.ops import _triton_scan_kernels as K

    for name in shapes:
        b, d, L, g = SHAPES[name]
        for config in configs:
            tiles = parse_config(config)
            steps, unroll, stages, maxnreg = tiles["steps"], tiles["unroll"], tiles["stages"], tiles["bwd_maxnreg"]
            ahead, min_len = tiles["fwd_l2_ahead"]
            kernels = [("fwd", K.scan_fwd, tiles["fwd"])] + [
                (f"bwd {k}", BWD_KERNELS[k]() or ts.default_backward("cuda", False), tiles["bwd"]) for k in bwd_kernels]
            for kind, launched, (bd, warps) in kernels:
                gluon = isinstance(launched, ts.WithConstants)  # the Gluon backwards
                fn = launched.kernel if gluon else launched
                bd = ts._block_channels(d // g, bd)
                types, values, consts = launch_spec(fn, name, bd, steps, unroll, stages, gate)
                consts |= getattr(launched, "constants", {})
                if kind == "fwd":
                    consts["L2_AHEAD"] = ahead if L >= min_len else 0
                consts["FAST_MATH"] = int(ts.fast_math_in(kind.split()[0], tiles["fast_math"]))  # (as on an NVIDIA GPU)
                if getattr(launched, "fp32_bc", False):
                    types |= {"B_ptr": "*fp32", "C_ptr": "*fp32"}
                if getattr(launched, "pack_bc", False):  # (x_proj's bf16 output at STAR shapes packs)
                    consts["PACKED_BC"] = True
                sass, regs, spills = S.compile_sass(fn, types, values, consts, warps,
                                                    maxnreg if not kind.startswith("fwd") else None,
                                                    gluon=gluon)
                loops = S.inner_loops(sass)
                per_step = sum(sum(c.values()) for c in loops)
                programs = b * (d // bd)
                print(f"{name:>7} {kind} {config}: {regs} registers, {spills} B spilled, "
                      f"<= {S.resident_warps(regs, warps)} warps/SM, {programs} programs; "
                      f"{per_step} instructions a step ({' + '.join(str(sum(c.values())) for c in loops)}), "
                      f"issue {S.issue_ms(per_step * L, programs * warps):.3f} ms")
                for c in loops:
                    print(f"{'':>12}loop: {S.mix(c)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES))
    p.add_argument("--configs", nargs="+", default=["32x1/32x1/16/1x1"],
                   help="FBDxFW/BBDxBW/STEPS[/UNROLLxSTAGES[/BWD_MAXNREG[/FWD_L2_AHEAD[/FAST_MATH]]]] (parse_config)")
    p.add_argument("--layouts", nargs="+", default=["first", "last"], choices=["first", "last"])
    p.add_argument("--out", type=Path)
    p.add_argument("--bwd-kernels", nargs="+", default=["default"], choices=list(BWD_KERNELS),
                   help="backward kernels to time with each config: default (what starx launches), triton "
                        "(the plain Triton scan_bwd), rows (bench/scan_bwd_rows.py, one channel a lane, in "
                        "Gluon) and its variants")
    p.add_argument("--sass", action="store_true", help="print the static sm_90 cost model (no GPU needed) and exit")
    p.add_argument("--no-gate", action="store_true",
                   help="with --sass: the kernels without the gate z (as the fine-tuning mixer launches them)")
    args = p.parse_args()
    if args.sass:
        return sass_model(args.shapes, args.configs, args.bwd_kernels, gate=not args.no_gate)

    bw, exp_rate = copy_bandwidth(), sm_exp_rate()
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "triton": triton.__version__, "copy_gb_s": round(bw / 1e9),
            "exp_rate_t_s": round(exp_rate / 1e12, 2), "command": " ".join(["python"] + sys.argv)}
    print(json.dumps(info))
    mamba = mamba_ops()
    rows = []
    for name in args.shapes:
        b, d, L, g = SHAPES[name]
        for layout in args.layouts:
            x = inputs(b, d, L, g, layout)
            dout = torch.randn_like(x[0])
            row = {"shape": name, "layout": layout, "b": b, "d": d, "L": L, "groups": g}
            mfwd = lambda u, de, A, B, C, D, z, bi: mamba(u, de, A, B, C, D, z, bi, True)  # noqa: E731
            if mamba is not None and layout == "first":
                row["mamba_fwd_ms"], row["mamba_fwdbwd_ms"] = time_pair(mfwd, x, dout)
            for config, bwd_kernel in ((c, k) for c in args.configs for k in args.bwd_kernels):
                tiles = parse_config(config)
                steps = tiles["steps"]
                ts.TILES.update(**tiles, **bwd_tiles(bwd_kernel))
                tfwd = lambda u, de, A, B, C, D, z, bi: ts.selective_scan_triton(u, de, A, B, C, D, z, bi, True)  # noqa: E731
                f, fb = time_pair(tfwd, x, dout)
                r = dict(row, config=config, bwd_kernel=bwd_kernel, triton_fwd_ms=f, triton_fwdbwd_ms=fb,
                         registers=dict(ts.REGISTERS), **floor(b, d, L, g, bw, exp_rate, steps))
                if mamba is not None:
                    ref = inputs(b, d, L, g, "first")
                    r["rel_err_vs_mamba"] = rel_errors(tfwd, mfwd, x, dout, ref)
                rows.append(r)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
            del x, dout
            torch.cuda.empty_cache()
    print(f"{'shape':>7} {'layout':>6} {'config':>24} {'mamba f':>8} {'mamba f+b':>9} {'triton f':>8} {'triton f+b':>10}"
          f" {'floor f':>7} {'floor f+b':>9} {'max err':>8} {'regs f/b':>9}")
    for r in rows:
        err = max(r.get("rel_err_vs_mamba", {"-": float("nan")}).values())
        label = f"{r['config']} {r['bwd_kernel']}"
        print(f"{r['shape']:>7} {r['layout']:>6} {label:>30} {r.get('mamba_fwd_ms', float('nan')):>8.3f} "
              f"{r.get('mamba_fwdbwd_ms', float('nan')):>9.3f} {r['triton_fwd_ms']:>8.3f} {r['triton_fwdbwd_ms']:>10.3f} "
              f"{r['fwd_floor_ms']:>7.3f} {r['fwd_floor_ms'] + r['bwd_floor_ms']:>9.3f} {err:>8.1e} "
              f"{r['registers'].get('fwd')}/{r['registers'].get('bwd')}")
    if args.out:
        with args.out.open("w") as f:
            f.write(json.dumps(info) + "\n")
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
