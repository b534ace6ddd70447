"""Pretraining step benchmark for STAR-B / ARM-B on one GPU, through the real engine.

For each k (images per sequence) it builds the model and optimiser exactly as a run of
specs/star_base_in1k.yaml does (starx.train.stages.model_kwargs, starx.train.optim), then:

1. runs the engine's own step loop (starx.train.loop.StageLoop) on a batch already on the GPU
   and reads its images/s and memory from the metrics it writes;
2. splits one step with CUDA events: encoder forward, decoder forward, loss, backward,
   optimizer step;
3. reports MFU = 6 x params x tokens/s over the bf16 matmul rate measured on the same device;
4. times the anchor in the same process the same way (bench/anchors.py: a causal ViT-B of the
   encoder's width, depth and token count, same images a step, same compile mode) and reports
   starx's images/s as a ratio to it: the number every starx speed claim is stated in;
5. with ``--encoder``, also times STAR-B's encoder blocks alone exactly as the anchor is timed
   (random tokens in, the anchor's loss on the encoder's output, no patch embedding, decoder or
   targets): the like-for-like ratio of the two encoders, beside the whole step's, which also
   pays for ARM's decoder;
6. with ``--anchor-loop``, also times the whole STAR-B step in the anchor's own loop
   (bench/anchors.py time_steps: no gradient clipping, learning-rate schedule or metrics, the
   median of per-step CUDA-event times), so that the two steps are timed by the same code: 1. is
   what a run gets, this is the like-for-like ratio of the whole steps.

Data wait is measured by bench/loader_bench.py (FFCV); a loader that delivers more images/s
than the step consumes hides it completely (FFCV prefetches on its own threads).

    python bench/pretrain_step.py --k 1 2 4 8 --batch 256 --steps 30 [--compile] [--out results.json]
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.anchors import causal_vit_images_per_s, time_steps  # noqa: E402
from bench.decoder_attention import span_tiles  # noqa: E402
from bench.kernel_choices import add_kernel_choices, apply_kernel_choices  # noqa: E402
from bench.triton_scan import add_bwd_kernel_option, backward_label, use_bwd_kernel  # noqa: E402
from starx.models import create_model  # noqa: E402
from starx.ops import kernel_status  # noqa: E402
from starx.ops import span_attention as span_ops  # noqa: E402
from starx.spec import load_spec  # noqa: E402
from starx.train.dist import DistInfo  # noqa: E402
from starx.train.loop import run_fixed_steps  # noqa: E402
from starx.train.optim import adamw_pretrain  # noqa: E402
from starx.train.stages import model_kwargs  # noqa: E402


def matmul_tflops(n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12


def build(k: int, backend: str, compile_: bool, compile_mode: str | None = None):
    overrides = [f"model.seq_multiplier={k}", f"model.backend={backend}", "data.batch_size=2048"]
    if k == 1:
        overrides.append("model.separator=none")  # k=1 without separator is ARM
    cfg = load_spec(ROOT / "specs/star_base_in1k.yaml", overrides)
    model = create_model(cfg.model.name, **model_kwargs(cfg)).cuda()
    opt = adamw_pretrain(model, weight_decay=cfg.optim.weight_decay, betas=cfg.optim.betas, fused=True)
    run_model = torch.compile(model, mode=compile_mode) if compile_ else model
    return cfg, model, run_model, opt


def engine_throughput(model, run_model, opt, images, steps: int) -> dict:
    """images/s and memory as the engine's own loop measures them (data already on the GPU)."""
    torch.cuda.reset_peak_memory_stats()
    records = run_fixed_steps(run_model, opt, lambda first: ((images, None) for _ in range(steps - first)),
                              steps=steps, images_per_step=images.shape[0],
                              tokens_per_image=model.num_tokens // model.cfg.seq_multiplier,
                              dist=DistInfo(0, 1, 0, torch.device("cuda")), log_every=steps // 2)
    last = records[-1]  # second half of the steps: warm (compilation, allocator) excluded
    return {"images_per_s": last["images_per_s"], "tokens_per_s": last["tokens_per_s"],
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30}


def split_step(model, opt, images, reps: int) -> dict:
    """Median ms of each part of one step, timed with CUDA events."""
    names = ("encoder_fwd", "decoder_fwd", "loss", "backward", "optimizer")
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(reps + 3):
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(len(names) + 1)]
        opt.zero_grad(set_to_none=True)
        ev[0].record()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            feats = model.encode(images)
            ev[1].record()
            pred = model.decode(feats)
            ev[2].record()
            target = model.targets(images)
            loss = (pred.float() - target.float()).pow(2).mean()
            ev[3].record()
        loss.backward()
        ev[4].record()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        ev[5].record()
        torch.cuda.synchronize()
        for i, n in enumerate(names):
            times[n].append(ev[i].elapsed_time(ev[i + 1]))
    return {n: statistics.median(t[3:]) for n, t in times.items()}


class EncoderBlocks(torch.nn.Module):
    """STAR-B's encoder blocks on given tokens (n_seq, tokens, D): what the anchor's blocks do."""

    def __init__(self, model):
        super().__init__()
        self.layers, self.reset = model.layers, model.reset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual, kwargs = None, ({} if self.reset is None else {"reset": self.reset})
        for block in self.layers:
            x, residual = block(x, residual, **kwargs)
        return residual + x


def encoder_images_per_s(model, images: int, k: int, compile_mode: str | None, steps: int = 30) -> float:
    """images/s of STAR-B's encoder blocks alone, timed as bench/anchors.py times the causal ViT-B."""
    blocks = EncoderBlocks(model)
    run = torch.compile(blocks, mode=compile_mode) if compile_mode else blocks
    x = torch.randn(images // k, model.num_tokens, model.cfg.embed_dim, device="cuda")
    return time_steps(run, lambda m: m(x).float().pow(2).mean(), images, steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--batch", type=int, default=256, help="images per step on this GPU")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--backend", default="cuda")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-mode", help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    p.add_argument("--no-anchor", action="store_true", help="skip the causal ViT-B anchor")
    p.add_argument("--encoder", action="store_true",
                   help="also time STAR-B's encoder blocks alone, as the anchor is timed (like-for-like ratio)")
    p.add_argument("--anchor-loop", action="store_true",
                   help="also time the whole STAR-B step in the anchor's loop (same timing code as the anchor)")
    add_bwd_kernel_option(p)
    p.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                   help="set torch._inductor.config KEY (Python literal VALUE) for every model this run compiles, "
                        "the anchor's too, e.g. combo_kernels=True (repeatable)")
    p.add_argument("--decoder-attention", default="span", choices=["span", "sdpa"],
                   help="the decoder's attention on the triton backend: starx's span kernels (starx.ops.span_attention, "
                        "the default) or SDPA with the dense mask (as before 2026-12-01)")
    add_kernel_choices(p)
    p.add_argument("--span-min-keys", type=int, default=None,
                   help="run the span kernels from this many encoder tokens on (starx.ops.span_attention.MIN_KEYS; "
                        "default starx's)")
    p.add_argument("--span-tiles", default=None,
                   help="the span kernels' tiles, FWD/DQ/DKDV each BMxBNxWARPSxSTAGES (default starx's)")
    p.add_argument("--blas", choices=["cublas", "cublaslt"],
                   help="torch.backends.cuda.preferred_blas_library for both models (default: torch's, which is cuBLAS "
                        "with cuBLASLt for some ops, e.g. addmm's bias epilogue); STAR-B's k=4 step launched 279 "
                        "cuBLAS memsets a step in session 15's profile")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.blas:
        torch.backends.cuda.preferred_blas_library(args.blas)
    use_bwd_kernel(args.bwd_kernel, args.fast_math)
    span_ops.USE_KERNELS = args.decoder_attention == "span"
    choices = apply_kernel_choices(args)
    if args.span_min_keys is not None:
        span_ops.MIN_KEYS = args.span_min_keys
    if args.span_tiles:
        span_ops.TILES.update(span_tiles(args.span_tiles))
    import torch._inductor.config as inductor_config

    for item in args.inductor:
        key, _, value = item.partition("=")
        setattr(inductor_config, key, ast.literal_eval(value))

    peak = matmul_tflops()
    rows = []
    for k in args.k:
        torch.manual_seed(0)
        cfg, model, run_model, opt = build(k, args.backend, args.compile or bool(args.compile_mode), args.compile_mode)
        images = torch.randn(args.batch, 3, cfg.model.img_size, cfg.model.img_size, device="cuda")
        params = sum(p.numel() for p in model.parameters())
        eng = engine_throughput(model, run_model, opt, images, args.steps)
        like = (time_steps(run_model, lambda m, x=images: m(x).loss, args.batch, args.steps)
                if args.anchor_loop else None)
        parts = split_step(model, opt, images, reps=10)
        step_ms = sum(parts.values())
        tokens_per_s = eng["images_per_s"] / k * model.num_tokens
        rows.append({"k": k, "separator": cfg.model.separator, "tokens_per_seq": model.num_tokens,
                     "images_per_s": round(eng["images_per_s"], 1), "tokens_per_s": round(tokens_per_s),
                     "mfu": round(6 * params * tokens_per_s / (peak * 1e12), 4),
                     "params_m": round(params / 1e6, 2), "peak_mem_gb": round(eng["peak_mem_gb"], 2),
                     "us_per_image": round(1e6 / eng["images_per_s"], 1),
                     "split_ms": {n: round(v, 2) for n, v in parts.items()}, "split_total_ms": round(step_ms, 2)})
        if like is not None:
            rows[-1]["anchor_loop_images_per_s"] = round(like, 1)
        tokens = model.num_tokens
        mode = args.compile_mode if args.compile_mode else (None if not args.compile else "default")
        del run_model, opt
        torch.cuda.empty_cache()
        if args.encoder:
            rows[-1]["encoder_images_per_s"] = round(encoder_images_per_s(model, args.batch, k, mode), 1)
        del model
        torch.cuda.empty_cache()
        if not args.no_anchor:
            anchor = causal_vit_images_per_s(args.batch, k, tokens, mode)
            rows[-1].update(anchor_images_per_s=round(anchor, 1), ratio=round(rows[-1]["images_per_s"] / anchor, 3))
            if args.encoder:
                rows[-1]["encoder_ratio"] = round(rows[-1]["encoder_images_per_s"] / anchor, 3)
            if like is not None:
                rows[-1]["anchor_loop_ratio"] = round(like / anchor, 3)
            torch.cuda.empty_cache()
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "python": platform.python_version(), "bf16_matmul_tflops": round(peak, 1),
            "batch_images": args.batch, "compile": args.compile or bool(args.compile_mode),
            "compile_mode": args.compile_mode, "inductor": args.inductor, "backend": args.backend, "bwd_kernel": args.bwd_kernel,
            "decoder_attention": args.decoder_attention, "span_min_keys": span_ops.MIN_KEYS,
            **choices, "span_tiles": span_ops.TILES, "blas": args.blas,
            "scan_backward": backward_label(args.bwd_kernel),
            "command": " ".join(["python"] + sys.argv)}
    status = kernel_status()  # versions as installed (+starx.scan: the patched build) and its scan chunking
    info.update(mamba_ssm=status["mamba_ssm"], causal_conv1d=status["causal_conv1d"], scan_config=status["scan_config"],
                triton=status["triton"])
    print(json.dumps(info))
    print(f"{'k':>2} {'tokens':>6} {'img/s':>8} {'ViT-B':>8} {'ratio':>6} {'us/img':>7} {'MFU':>6} {'mem GB':>7}"
          "  split ms (enc/dec/loss/bwd/opt)")
    for r in rows:
        s = r["split_ms"]
        print(f"{r['k']:>2} {r['tokens_per_seq']:>6} {r['images_per_s']:>8.0f} {r.get('anchor_images_per_s', 0):>8.0f} "
              f"{r.get('ratio', 0):>6.3f} {r['us_per_image']:>7.1f} "
              f"{r['mfu']:>6.1%} {r['peak_mem_gb']:>7.1f}  {s['encoder_fwd']:.1f}/{s['decoder_fwd']:.1f}/"
              f"{s['loss']:.1f}/{s['backward']:.1f}/{s['optimizer']:.1f}")
        if "encoder_images_per_s" in r:
            print(f"   encoder blocks alone: {r['encoder_images_per_s']:.0f} img/s, "
                  f"{r.get('encoder_ratio', 0):.3f} of the causal ViT-B")
        if "anchor_loop_images_per_s" in r:
            print(f"   whole step in the anchor's loop: {r['anchor_loop_images_per_s']:.0f} img/s, "
                  f"{r.get('anchor_loop_ratio', 0):.3f} of the causal ViT-B")
    if args.out:
        args.out.write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
