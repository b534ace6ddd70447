"""Fine-tuning step benchmark: the 4-direction STAR-B classifier at 224 px against timm's ViT-B/16.

Both in the same process, the same way (bench/anchors.py: bf16 autocast, cross-entropy,
backward, fused AdamW, median of CUDA-event-timed steps), for each backend asked for, eager
and compiled:

    python bench/finetune_step.py --backends cuda triton --batch 128 [--compile-mode default] [--out ft.json]
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

from bench.anchors import classification_batch, classification_loss, time_steps, timm_vit_images_per_s  # noqa: E402
from bench.kernel_choices import add_kernel_choices, apply_kernel_choices  # noqa: E402
from bench.triton_scan import add_bwd_kernel_option, backward_label, use_bwd_kernel  # noqa: E402
from starx.models import create_classifier  # noqa: E402
from starx.ops import kernel_status  # noqa: E402


def star_classifier(backend: str) -> torch.nn.Module:
    """The 4-direction STAR-B classifier at 224 px (1000 classes), on the GPU."""
    return create_classifier("star_base", num_classes=1000, img_size=224, backend=backend).cuda()


def star_images_per_s(backend: str, batch: int, compile_mode: str | None, steps: int) -> float:
    model = star_classifier(backend)
    run = torch.compile(model, mode=compile_mode) if compile_mode else model
    return time_steps(run, classification_loss(*classification_batch(batch)), batch, steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", default=["cuda", "triton"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--compile-mode", nargs="*", default=[None], help="torch.compile modes to time (none = eager)")
    add_bwd_kernel_option(p)
    add_kernel_choices(p)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    use_bwd_kernel(args.bwd_kernel, args.fast_math)
    choices = apply_kernel_choices(args)
    modes = [None if m in (None, "none", "eager") else m for m in args.compile_mode]
    rows = []
    for mode in modes:
        anchor = timm_vit_images_per_s(args.batch, mode, args.steps)
        rows.append({"model": "timm vit_base_patch16_224", "compile": mode, "images_per_s": round(anchor, 1), "ratio": 1.0})
        for backend in args.backends:
            ips = star_images_per_s(backend, args.batch, mode, args.steps)
            rows.append({"model": f"star_base 4-dir ({backend})", "compile": mode, "images_per_s": round(ips, 1),
                         "ratio": round(ips / anchor, 3)})
            torch.cuda.empty_cache()
    status = kernel_status()
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "triton": status["triton"], "mamba_ssm": status["mamba_ssm"],
            "causal_conv1d": status["causal_conv1d"], "batch": args.batch, "bwd_kernel": args.bwd_kernel,
            "scan_backward": backward_label(args.bwd_kernel), **choices,
            "command": " ".join(["python"] + sys.argv)}
    print(json.dumps(info))
    print(f"{'model':<32} {'compile':>16} {'img/s':>8} {'x timm ViT-B':>12}")
    for r in rows:
        print(f"{r['model']:<32} {str(r['compile']):>16} {r['images_per_s']:>8.0f} {r['ratio']:>12.3f}")
    if args.out:
        args.out.write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
