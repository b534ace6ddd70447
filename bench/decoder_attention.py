"""ARM's decoder attention alone: SDPA with the dense block-causal mask, FlexAttention with it
as a BlockMask, and starx's span attention kernels (starx.ops.span_attention, what the decoder
runs on the triton backend), each compiled, forward + backward, at STAR-B's shapes.

For each k it takes the mask of the model specs/star_base_in1k.yaml builds (k=1 without
separator: ARM), queries / keys / values of one decoder block (256 images a step: 256 / k
sequences, decoder_heads heads of decoder_dim / heads), times the compiled forward + backward of
each implementation with CUDA events, and reports the largest error of each against SDPA in fp32.
On the H200 (2026-12-01, bench/results/decoder_attention_h200.jsonl) Flex lost at k = 4 and 1 and
won at k = 8 only; the span kernels' rows are in bench/results/span_attention_*.jsonl.

``--compile-mode reduce-overhead`` replays each forward and backward as CUDA graphs, as the
training step does. Without it (torch.compile's default mode, every result before 2026-12-02)
the CPU's launch cost may be timed rather than the GPU's work where that work is small. At k=1 a
block's attention has about a fifth of k=4's (query, key) pairs, yet SDPA read 0.79 ms against
0.99 at k=4, and the span kernels (three Triton launches through a custom op) 1.24 against 1.10
(bench/results/span_attention_tiles_h200.jsonl). With graphs (2026-12-02) the span kernels' GPU time
was below SDPA's at every k (k=1 0.24 ms against 0.28; bench/results/span_attention_graphs_h200.jsonl).

    python bench/decoder_attention.py --k 4 1 8 [--impls sdpa span] [--compile-mode reduce-overhead] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.block_timing import kernel_times, parse_tiles, timed, write_jsonl  # noqa: E402
from starx.models import create_model  # noqa: E402
from starx.ops import span_attention as span_ops  # noqa: E402
from starx.ops.span_attention import span_attention  # noqa: E402
from starx.spec import load_spec  # noqa: E402
from starx.train.stages import model_kwargs  # noqa: E402


def star_b_mask(k: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(mask (T, encoder tokens), its spans (T, 2), decoder heads, head dim) of STAR-B at k images a sequence."""
    overrides = [f"model.seq_multiplier={k}", "model.backend=torch"] + (["model.separator=none"] if k == 1 else [])
    cfg = load_spec(ROOT / "specs/star_base_in1k.yaml", overrides)
    model = create_model(cfg.model.name, **model_kwargs(cfg))
    return model.mask, model.spans, model.cfg.decoder_heads, model.cfg.decoder_dim // model.cfg.decoder_heads


def masked_attention(q, k, v, mask, impl: str, spans=None):
    if impl == "span":
        return span_attention(q, k, v, spans, mask, "triton")
    if impl.startswith("sdpa"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    block = 64 if impl == "flex_64" else 128  # the BlockMask's tile: 64 skips more of the masked pairs
    block_mask = create_block_mask(lambda b, h, i, j: mask[i, j], None, None, *mask.shape, device=q.device,
                                   BLOCK_SIZE=block)
    options = {"BLOCK_M": 64, "BLOCK_N": 64} if impl == "flex_64" else None
    return flex_attention(q, k, v, block_mask=block_mask, kernel_options=options)


# sdpa: the backend torch picks (what the decoder runs); sdpa_cudnn / sdpa_efficient: that backend forced;
# flex: FlexAttention, 128 x 128 tiles; flex_64: 64 x 64 tiles; span: starx's span attention kernels
# (starx.ops.span_attention, what the decoder runs on the triton backend), once for each --span-tiles
IMPLS = {"sdpa": None, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION, "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION,
         "flex": None, "flex_64": None, "span": None}


def span_tiles(config: str) -> dict:
    """TILES of starx.ops.span_attention from FWD/DQ/DKDV, each BMxBNxWARPSxSTAGES."""
    return parse_tiles(config, ("fwd", "dq", "dkdv"))


def span_sass(k: int, configs: list[str]) -> None:
    """Registers, spilled bytes and SASS instructions of each span kernel compiled for sm_90 at STAR-B's
    k (bench/sass.py; no GPU needed: use the device's Triton, as bench/sass_fingerprint.py says)."""
    import triton

    from bench import sass as S
    from starx.ops import _span_attention_kernels as K

    mask, _, heads, dh = star_b_mask(k)
    nq, nk = mask.shape
    for config in configs:
        tiles = dict(span_ops.TILES) if config == "default" else span_tiles(config)
        for kind, fn in (("fwd", K.span_attn_fwd), ("dq", K.span_attn_bwd_dq), ("dkdv", K.span_attn_bwd_dkdv)):
            bm, bn, warps, stages = tiles[kind]
            types = {n: "*i32" if n == "span_ptr" else "*fp32" if n in ("lse_ptr", "delta_ptr") else "*bf16"
                     for n in fn.arg_names if n.endswith("_ptr")} | {"scale_log2e": "fp32", "scale": "fp32"}
            # strides as the decoder's Linear outputs lay the heads out: (sequence, token, head, d)
            values = {n: {"b": nk * heads * dh, "h": dh}.get(n.rsplit("_", 1)[-1], heads * dh)
                      for n in fn.arg_names if n.startswith("s") and n[1:2] in "qkvod" and "_" in n}
            values |= {"H": heads, "NQ": nq, "NK": nk}
            consts = {"D": dh, "BM": bm, "BN": bn} | ({"TILES_Q": triton.next_power_of_2(triton.cdiv(nq, bm))} if kind == "dkdv" else {})
            sass, regs, spills = S.compile_sass(fn, types, values, consts, warps, num_stages=stages)
            count = sum(1 for line in sass.splitlines() if "/*" in line and "*/" in line)
            print(f"k={k} {config:>40} {kind:>5} {bm}x{bn}x{warps}x{stages}: {regs} registers, {spills} bytes spilled, "
                  f"{count} instructions", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, nargs="+", default=[4, 1, 8])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--impls", nargs="+", default=["sdpa", "flex"], choices=list(IMPLS))
    p.add_argument("--span-tiles", nargs="+", default=["default"],
                   help="tiles of the span kernels to time, FWD/DQ/DKDV each BMxBNxWARPSxSTAGES ('default': starx's)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    p.add_argument("--profile", action="store_true",
                   help="also print each implementation's kernels with their GPU time per forward + backward")
    p.add_argument("--sass", action="store_true",
                   help="no timing: each --span-tiles' kernels compiled for sm_90, their registers and spills (no GPU)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.sass:
        for k in args.k:
            span_sass(k, args.span_tiles)
        return
    default_tiles = dict(span_ops.TILES)
    span_ops.MIN_KEYS = 0  # (the kernels at every k: this times them, not starx's choice between them and SDPA)
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "compile_mode": args.compile_mode, "command": " ".join(["python"] + sys.argv)}
    print(json.dumps(info))
    rows = []
    for k in args.k:
        mask, spans, heads, dh = star_b_mask(k)
        mask, spans = mask.cuda(), spans.cuda()
        b, (nq, nk) = args.images // k, mask.shape
        torch.manual_seed(0)
        # the leaves laid out (sequence, token, head, d) as the heads of the decoder's Linear outputs, each
        # implementation reading them as (sequence, head, token, d) views: gradients in another layout than
        # that one cost a copy, as in the model (earlier runs, with contiguous (b, h, n, d) leaves, charged
        # the span kernels a 0.23 ms copy into that layout that the decoder does not run)
        q, kk, v = (torch.randn(b, n, heads, dh, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                    for n in (nq, nk, nk))
        dout = torch.randn(b, heads, nq, dh, device="cuda", dtype=torch.bfloat16)
        ref = [t.detach().float().requires_grad_() for t in (q, kk, v)]
        out_ref = masked_attention(*(t.transpose(1, 2) for t in ref), mask, "sdpa")
        out_ref.backward(dout.float())
        row = {"k": k, "sequences": b, "heads": heads, "head_dim": dh, "queries": nq, "keys": nk,
               "mask_density": round(mask.float().mean().item(), 3)}
        runs = [(impl, None) for impl in args.impls if impl != "span"]
        runs += [("span", t) for t in args.span_tiles] if "span" in args.impls else []
        for impl, tiles in runs:
            torch._dynamo.reset()
            if tiles is not None:
                span_ops.TILES.update(default_tiles if tiles == "default" else span_tiles(tiles))
            name = impl if tiles is None else f"span[{tiles}]"
            compiled = torch.compile(lambda a, b_, c, m=mask, i=impl, s=spans: masked_attention(
                a.transpose(1, 2), b_.transpose(1, 2), c.transpose(1, 2), m, i, s), mode=args.compile_mode)

            def fn(a, b_, c, compiled=compiled, backend=IMPLS[impl]):
                # (active while it compiles too: the backend is chosen when the graph is traced)
                with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
                    return compiled(a, b_, c)

            try:
                row[f"{name}_ms"] = round(timed(fn, (q, kk, v), dout, (q, kk, v)), 4)
            except Exception as e:  # noqa: BLE001 (a backend that refuses these shapes: say so, go on)
                row[f"{name}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                continue
            if args.profile:
                row[f"{name}_kernels"] = kernel_times(fn, (q, kk, v), dout, (q, kk, v))
            for t in (q, kk, v):
                t.grad = None
            torch.compiler.cudagraph_mark_step_begin()
            out = fn(q, kk, v)
            out.backward(dout)
            errs = [(out.float() - out_ref).abs().max()] + [(t.grad.float() - r.grad).abs().max() for t, r in
                                                            zip((q, kk, v), ref)]
            row[f"{name}_max_err"] = round(max(e.item() for e in errs), 5)
            if impl != "sdpa" and "sdpa_ms" in row:
                row[f"{name}_over_sdpa"] = round(row[f"{name}_ms"] / row["sdpa_ms"], 3)
        rows.append(row)
        print(json.dumps(row))
    if args.out:
        write_jsonl(args.out, info, rows)


if __name__ == "__main__":
    main()
