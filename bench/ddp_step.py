"""Data-parallel STAR-B pretraining throughput: the engine's step loop under DDP, one process per GPU.

    torchrun --standalone --nproc_per_node=N bench/ddp_step.py --batch 256 --steps 30

Each rank runs `--batch` images a step (global batch = N x batch) on a batch already on its GPU;
rank 0 prints global images/s from the loop's own metrics. Scaling efficiency = images/s on N
GPUs / (N x images/s on 1). Keep NVLink multicast off (NCCL_NVLS_ENABLE=0).
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

from starx.models import create_model  # noqa: E402
from starx.spec import load_spec  # noqa: E402
from starx.train import dist  # noqa: E402
from starx.train.loop import run_fixed_steps  # noqa: E402
from starx.train.optim import adamw_pretrain  # noqa: E402
from starx.train.stages import model_kwargs, wrap_ddp  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    info = dist.init("cuda")
    cfg = load_spec(ROOT / "specs/star_base_in1k.yaml", ["model.backend=cuda"])
    torch.manual_seed(0)
    model = create_model(cfg.model.name, **model_kwargs(cfg)).to(info.device)
    opt = adamw_pretrain(model, weight_decay=0.05, betas=(0.9, 0.95), fused=True)
    ddp = wrap_ddp(model, info)
    images = torch.randn(args.batch, 3, 192, 192, device=info.device)
    records = run_fixed_steps(ddp, opt, lambda first: ((images, None) for _ in range(args.steps - first)),
                              steps=args.steps, images_per_step=args.batch * info.world_size,
                              tokens_per_image=model.num_tokens // 4, dist=info, log_every=args.steps // 2)
    if info.is_main:
        last = records[-1]
        row = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(),
               "gpus": info.world_size, "batch_per_gpu": args.batch, "images_per_s": round(last["images_per_s"], 1),
               "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2), "torch": torch.__version__}
        print(json.dumps(row))
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    dist.shutdown()


if __name__ == "__main__":
    main()
