"""Two kernel choices in whole pretraining steps, interleaved in one process: an A / B whose
difference is not buried in the drift between runs.

Separate runs of bench/pretrain_step.py (one process each) read the same code within about
+-0.4% of each other, and the anchor moved by 3% between device calls of one session
(bench/README.md, sessions 19 and 20): a change worth 0.5% cannot be told from that. Here both
variants are built and compiled in one process (bench/pretrain_step.py's build: the model and
optimiser of specs/star_base_in1k.yaml), then timed in alternating rounds of the engine's own step
loop (A B, B A, A B, ...), each round's images/s read as pretrain_step.py reads them. The report:
each variant's median images/s, and B / A per round pair with its median and range.

The switch is one of bench/kernel_choices.py's flags; the modules' flags are set for each variant
before its compiled model runs (the compiled code guards on them, so each model keeps its own).

    python bench/ab_step.py --k 4 --flag add-norm --variants inductor kernel [--rounds 6] [--steps 10] [--out ab.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.kernel_choices import add_kernel_choices, apply_kernel_choices  # noqa: E402
from bench.pretrain_step import build, engine_throughput  # noqa: E402

FLAGS = ("mlp-gate", "add-norm", "mixer-inner")


def choice_args(flag: str, value: str) -> argparse.Namespace:
    """The kernel-choice namespace of one variant: ``flag`` set to ``value``, the rest starx's."""
    p = argparse.ArgumentParser()
    add_kernel_choices(p)
    return p.parse_args([f"--{flag}", value])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--batch", type=int, default=256, help="images per step")
    p.add_argument("--flag", required=True, choices=FLAGS, help="the kernel choice to switch (bench/kernel_choices.py)")
    p.add_argument("--variants", nargs=2, required=True, metavar=("A", "B"), help="its two values")
    p.add_argument("--rounds", type=int, default=6, help="rounds; each times both variants, alternating which first")
    p.add_argument("--steps", type=int, default=10, help="engine steps a variant a round (the second half is timed)")
    p.add_argument("--backend", default="triton")
    p.add_argument("--compile-mode", default="reduce-overhead")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    names = list(args.variants)
    runs = {}
    for name in names:  # build and compile (and warm up) each variant under its own flags
        choices = apply_kernel_choices(choice_args(args.flag, name))
        torch.manual_seed(0)
        cfg, model, run_model, opt = build(args.k, args.backend, True, args.compile_mode)
        images = torch.randn(args.batch, 3, cfg.model.img_size, cfg.model.img_size, device="cuda")
        engine_throughput(model, run_model, opt, images, 2 * args.steps)
        runs[name] = (choices, model, run_model, opt, images)
        print(f"built {args.flag}={name}: {choices}", flush=True)
    speeds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            choices, model, run_model, opt, images = runs[name]
            apply_kernel_choices(choice_args(args.flag, name))
            speeds[name].append(engine_throughput(model, run_model, opt, images, args.steps)["images_per_s"])
        print(f"round {r + 1}: " + "  ".join(f"{n} {speeds[n][-1]:.0f}" for n in names), flush=True)
    ratios = [b / a for a, b in zip(speeds[names[0]], speeds[names[1]])]
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "k": args.k, "batch_images": args.batch, "flag": args.flag,
            "compile_mode": args.compile_mode, "command": " ".join(["python"] + sys.argv)}
    result = {"info": info, "images_per_s": speeds,
              "median_images_per_s": {n: round(statistics.median(v), 1) for n, v in speeds.items()},
              "b_over_a": [round(x, 4) for x in ratios], "median_b_over_a": round(statistics.median(ratios), 4)}
    print(json.dumps(info))
    print(f"{args.flag}: {names[0]} {result['median_images_per_s'][names[0]]:.0f} img/s, "
          f"{names[1]} {result['median_images_per_s'][names[1]]:.0f} img/s; {names[1]} / {names[0]} "
          f"median {result['median_b_over_a']:.4f} (rounds {min(ratios):.4f} to {max(ratios):.4f})")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
