"""Same fixed-seed pretraining run on both backends: the fused CUDA kernels and the torch twin.

STAR-B at k=4 (640 tokens), the engine's step loop (starx.train.loop.StageLoop) with bf16
autocast and AdamW, on fixed random batches on the GPU. Both runs start from the same
weights and see the same batches; the loss curves must agree within the stated tolerance.

    python bench/backend_parity.py --steps 20 --batch 64 [--out parity.json]
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
from starx.train.dist import DistInfo  # noqa: E402
from starx.train.loop import run_fixed_steps  # noqa: E402
from starx.train.optim import adamw_pretrain  # noqa: E402
from starx.train.stages import model_kwargs  # noqa: E402

TOLERANCE = 2e-2  # relative, per step, bf16 autocast: the two scans round differently


def loss_curve(backend: str, state: dict, batches: list[torch.Tensor], steps: int) -> list[float]:
    cfg = load_spec(ROOT / "specs/star_base_in1k.yaml", [f"model.backend={backend}"])
    model = create_model(cfg.model.name, **model_kwargs(cfg)).cuda()
    model.load_state_dict(state)
    opt = adamw_pretrain(model, weight_decay=0.05, betas=(0.9, 0.95), fused=True)
    records = run_fixed_steps(model, opt, lambda first: ((b, None) for b in batches[first:]), steps=steps,
                              images_per_step=batches[0].shape[0], tokens_per_image=160,
                              dist=DistInfo(0, 1, 0, torch.device("cuda")), log_every=1, peak_lr=1.5e-4 * 8,
                              warmup_steps=2)
    return [r["loss"] for r in records]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=64, help="images per step (16 sequences of k=4)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = load_spec(ROOT / "specs/star_base_in1k.yaml")
    state = create_model(cfg.model.name, **model_kwargs(cfg)).state_dict()
    g = torch.Generator(device="cuda").manual_seed(0)
    batches = [torch.randn(args.batch, 3, 192, 192, device="cuda", generator=g) for _ in range(args.steps)]
    curves = {b: loss_curve(b, state, batches, args.steps) for b in ("cuda", "torch")}
    rel = [abs(a - b) / abs(b) for a, b in zip(curves["cuda"], curves["torch"])]
    ok = max(rel) <= TOLERANCE
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(),
           "torch": torch.__version__, "command": " ".join(["python"] + sys.argv), "steps": args.steps,
           "batch_images": args.batch, "tolerance_rel": TOLERANCE, "max_rel_diff": max(rel), "ok": ok, **curves}
    print(f"{'step':>4} {'cuda':>9} {'torch':>9} {'rel diff':>9}")
    for i, (a, b, r) in enumerate(zip(curves["cuda"], curves["torch"], rel), start=1):
        print(f"{i:>4} {a:>9.5f} {b:>9.5f} {r:>9.2e}")
    print(f"max rel diff {max(rel):.2e} (tolerance {TOLERANCE:.0e}): {'OK' if ok else 'FAIL'}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
