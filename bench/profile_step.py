"""Where the GPU time of one STAR-B pretraining (or fine-tuning) step goes, kernel by kernel (torch.profiler).

Builds the model and optimiser exactly as bench/pretrain_step.py does (the engine's own
builders), runs a few warm steps, profiles three, and prints the CUDA time per step of the
top kernels and of kernel families (scan, conv, matmul, attention, norm, optimizer, other
elementwise). This is the split the throughput plan in bench/README.md rests on.

    python bench/profile_step.py --k 4 --batch 256 [--backend triton] [--compile | --compile-mode reduce-overhead]
                                 [--anchor] [--out profile.txt]

The header line also says how many kernels a step launches and how long a step takes by the clock
with steps queued back to back: the difference from the kernel time is the gaps between kernels
(with ``--compile-mode reduce-overhead``, between the nodes of the CUDA graphs).

``--anchor`` profiles the causal ViT-B of bench/anchors.py the same way, so the two splits can be
read side by side (matmuls of the same size should cost the same; the rest is the gap).
``--finetune`` profiles bench/finetune_step.py's step instead (the 4-direction STAR-B classifier
at 224 px, cross-entropy, fused AdamW, batch 128 unless --batch says otherwise); with
``--anchor``, timm's ViT-B/16 at 224 px.

``--attribute REGEX`` adds, for the kernels whose name matches REGEX, the CPU op that launched
each (aten op and input shapes, or the custom op): which eager op a kernel such as
``reduce_kernel`` comes from. Ops launched from a CUDA graph replay are not seen, so use it
with ``--compile`` in its default mode (no CUDA graphs) or eager.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anchors import causal_vit_b, classification_batch, classification_loss, timm_vit_b16  # noqa: E402
from finetune_step import star_classifier  # noqa: E402
from pretrain_step import build  # noqa: E402
from profile_block import kernels_of  # noqa: E402
from scan_configs import timed  # noqa: E402

from starx.ops import kernel_status  # noqa: E402

FAMILIES = [  # first match wins
    ("selective scan", r"selective_scan|scan_fwd|scan_bwd"),
    ("causal conv1d", r"causal_conv1d"),
    ("matmul (gemm)", r"gemm|cutlass|sm90_xmma|nvjet|cublas|wgmma"),
    ("attention", r"fmha|attention|flash|efficient_attention"),
    ("layer norm", r"layer_norm|LayerNorm"),
    ("optimizer + clip", r"fused_adam|FusedAdam|multi_tensor|foreach|norm_kernel"),
    ("copies / transposes", r"copy|Copy|transpose|cat|gather|index|scatter"),
]


def family(name: str) -> str:
    for fam, pattern in FAMILIES:
        if re.search(pattern, name):
            return fam
    return "other elementwise / reductions"


def launchers(step, pattern: str, steps: int) -> list[tuple[str, tuple[float, int]]]:
    """[(CPU op name and input shapes, (ms of matching kernels a step, launches a step))], largest
    first: every kernel whose name matches ``pattern``, charged to the innermost CPU op that
    launched it."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    found: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for evt in prof.events():
        for k in getattr(evt, "kernels", []):
            if re.search(pattern, k.name):
                slot = found[f"{evt.name} {evt.input_shapes}"]
                slot[0] += k.duration / 1e3 / steps
                slot[1] += 1
    return sorted(((op, (ms, n // steps)) for op, (ms, n) in found.items()), key=lambda x: -x[1][0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--batch", type=int, help="images a step (default 256; 128 with --finetune)")
    p.add_argument("--backend", default="auto", help="scan backend (starx.choices.Backend)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-mode", help="torch.compile mode (implies --compile), e.g. reduce-overhead: CUDA graphs, "
                                          "as bench/pretrain_step.py times the step")
    p.add_argument("--anchor", action="store_true", help="profile the causal ViT-B anchor instead")
    p.add_argument("--finetune", action="store_true",
                   help="the 4-direction classifier's fine-tuning step at 224 px (with --anchor: timm's ViT-B/16)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--attribute", metavar="REGEX",
                   help="also list the CPU ops (with input shapes) that launched the kernels matching REGEX")
    p.add_argument("--all", action="store_true", help="also list every kernel with its launches a step")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    torch.manual_seed(0)
    args.compile = args.compile or bool(args.compile_mode)
    compile_ = lambda m: torch.compile(m, mode=args.compile_mode)  # noqa: E731
    if args.finetune:  # as bench/finetune_step.py times it
        args.batch = args.batch or 128
        classification_step = classification_loss(*classification_batch(args.batch))
        if args.anchor:
            model = timm_vit_b16()
            what = "fine-tuning: timm vit_base_patch16_224, 224 px"
        else:
            model = star_classifier(args.backend)
            what = f"fine-tuning: STAR-B 4-direction classifier, 224 px ({args.backend} scan)"
        run_model = compile_(model) if args.compile else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

        def loss_of_step():
            return classification_step(run_model)
    else:
        args.batch = args.batch or 256
        cfg, model, run_model, opt = build(args.k, args.backend, args.compile, args.compile_mode)
        star = model
        images = torch.randn(args.batch, 3, cfg.model.img_size, cfg.model.img_size, device="cuda")
        what = f"STAR-B k={args.k} ({args.backend} scan)"
        if args.anchor:  # same images a step, the encoder's token count, same compile mode
            model = causal_vit_b().cuda()
            run_model = compile_(model) if args.compile else model
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
            x = torch.randn(args.batch // args.k, star.num_tokens, 768, device="cuda")
            what = f"causal ViT-B anchor, {x.shape[0]} x {x.shape[1]} tokens"

        def loss_of_step():
            return run_model(x).float().pow(2).mean() if args.anchor else run_model(images).loss

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_of_step()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()

    total, per_kernel, launches_of = kernels_of(step, steps=args.steps, warmup=5)  # ms per step
    launches = sum(launches_of.values())
    wall = timed(step, max(args.steps, 10))  # (steps back to back, one sync: the kernels and the gaps between them)
    families: dict[str, float] = defaultdict(float)
    for name, ms in per_kernel.items():
        families[family(name)] += ms
    status = kernel_status()
    lines = [f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  torch {torch.__version__}  "
             f"mamba-ssm {status['mamba_ssm']} (scan chunks: {status['scan_config']})  "
             f"command: python {' '.join(sys.argv)}",
             f"{what} batch {args.batch} images compile={args.compile} on {torch.cuda.get_device_name()}: "
             f"{total:.1f} ms of GPU kernels per step ({args.batch / total * 1e3:.0f} images/s if nothing else ran), "
             f"{launches:.0f} kernel launches; {wall:.1f} ms a step by the clock, steps back to back "
             f"({args.batch / wall * 1e3:.0f} images/s)",
             "", "by family (ms/step, share):"]
    lines += [f"  {fam:32s} {ms:7.2f}  {ms / total:6.1%}" for fam, ms in sorted(families.items(), key=lambda x: -x[1])]
    lines += ["", "top kernels (ms/step):"]
    lines += [f"  {ms:7.2f}  {name[:110]}" for name, ms in sorted(per_kernel.items(), key=lambda x: -x[1])[:30]]
    if args.all:  # every kernel: the launches are what the gaps between CUDA-graph nodes scale with
        lines += ["", "every kernel (ms/step, launches/step), most launched first:"]
        lines += [f"  {per_kernel[name]:7.3f}  {n:5.0f}x  {name[:150]}"
                  for name, n in sorted(launches_of.items(), key=lambda x: (-x[1], -per_kernel[x[0]]))]
    if args.attribute:
        lines += ["", f"kernels matching {args.attribute!r}, by the CPU op that launched them (ms/step):"]
        lines += [f"  {ms:7.3f}  {n:5d}x  {op[:150]}" for op, (ms, n) in launchers(step, args.attribute, args.steps)]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
