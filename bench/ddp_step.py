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
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from starx.models import create_model  # noqa: E402
from starx.spec import load_spec  # noqa: E402
from starx.train import dist  # noqa: E402
from starx.train.loop import StageLoop, StageSpec  # noqa: E402
from starx.train.metrics import MetricsLog  # noqa: E402
from starx.train.optim import adamw_pretrain  # noqa: E402
from starx.train.stages import _maybe_ddp, model_kwargs  # noqa: E402


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
    ddp = _maybe_ddp(model, info)
    images = torch.randn(args.batch, 3, 192, 192, device=info.device)
    spec = StageSpec(name="ddp", total_steps=args.steps, steps_per_epoch=args.steps, warmup_steps=1, peak_lr=1e-4,
                     min_lr=0.0, clip_grad=3.0, accum_steps=1, images_per_step=args.batch * info.world_size,
                     tokens_per_image=model.num_tokens // 4, log_every=args.steps // 2, checkpoint_every_steps=0,
                     checkpoint_every_minutes=0)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = MetricsLog(Path(tmp) / "m.jsonl", enabled=info.is_main)
        loop = StageLoop(spec, model=ddp, optimizer=opt,
                         loader_fn=lambda e, f: ((images, None) for _ in range(args.steps - f)),
                         step_fn=lambda b: (ddp(b[0]).loss, b[0].shape[0]), dist=info, ckpt_dir=Path(tmp),
                         metrics=metrics, autocast_dtype=torch.bfloat16)
        loop._run_steps(None)
        if info.is_main:
            last = metrics.read()[-1]
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
