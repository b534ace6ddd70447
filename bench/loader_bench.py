"""Loader throughput: images/s of a starx loader stage over an FFCV file.

    python bench/loader_bench.py --synthetic 5000 --workdir /tmp/lb --stage pretrain \
        --img-size 192 --batch-size 256 --workers 16 --device cuda

--synthetic N first writes an ImageNet-like ImageFolder of N JPEGs (about 400x350,
smooth multi-scale noise so JPEG sizes are realistic) and builds it as a JPEG .beton;
--beton PATH benchmarks an existing file instead. The first --warmup-batches batches
(numba compiles) are not timed; the rest of --epochs epochs is, consuming every batch
on --device.
Prints one JSON line (and appends it to --out if given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def _synthetic_image(args: tuple[int, Path]) -> int:
    """One 'natural-ish' JPEG: octaves of upsampled colour noise plus fine grain."""
    from PIL import Image

    i, path = args
    rng = np.random.default_rng(i)
    w, h = int(rng.integers(300, 501)), int(rng.integers(250, 451))
    img = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((3, 60), (12, 35), (48, 25), (160, 15)):
        small = rng.normal(0, amp, (cells, cells, 3)).astype(np.float32)
        layer = np.stack([np.asarray(Image.fromarray(small[..., c], mode="F").resize((w, h), Image.BICUBIC))
                          for c in range(3)], -1)
        img += layer
    img += rng.normal(0, 10, img.shape) + rng.uniform(60, 190, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return path.stat().st_size


def make_imagefolder(root: Path, n: int, classes: int, workers: int) -> float:
    jobs = [(i, root / f"class_{i % classes:03d}" / f"img_{i:06d}.jpg") for i in range(n)]
    with ProcessPoolExecutor(workers) as pool:
        sizes = list(pool.map(_synthetic_image, jobs, chunksize=32))
    return float(np.mean(sizes))


def bench(path: Path, args) -> dict:
    import torch

    from starx.data import make_loader

    loader = make_loader(path, stage=args.stage, batch_size=args.batch_size, img_size=args.img_size,
                         in_chans=3, seq_multiplier=args.seq_multiplier, num_workers=args.workers,
                         seed=0, device=args.device)
    sync = torch.cuda.synchronize if loader.device.type == "cuda" else (lambda: None)
    images, seen, start, t0 = 0, 0, time.perf_counter(), None
    for _ in range(args.epochs):
        for x, _y in loader:
            seen += 1
            if t0 is not None:
                images += x.shape[0]
            elif seen == args.warmup_batches:  # numba has compiled, queues are primed
                sync()
                t0 = time.perf_counter()
                warmup = t0 - start
    if t0 is None:
        raise SystemExit(f"only {seen} batches: fewer than --warmup-batches {args.warmup_batches}")
    sync()
    elapsed = time.perf_counter() - t0
    return {"images_per_s": round(images / elapsed, 1), "timed_images": images, "timed_s": round(elapsed, 2),
            "warmup_s": round(warmup, 2), "batch_shape": list(x.shape), "device": str(loader.device)}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import numba
    import torch

    try:
        ffcv = version("ffcv")
    except PackageNotFoundError:  # the carried build on the GPU machine has no metadata
        ffcv = "1.0.2 (.gpu-ffcv build)"
    return {"python": platform.python_version(), "torch": torch.__version__, "ffcv": ffcv,
            "numba": numba.__version__, "numba_threading": numba.threading_layer(), "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic", type=int, default=0, help="generate N JPEGs and build them first")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/starx-loader-bench"))
    p.add_argument("--beton", type=Path, help="benchmark this file instead")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--stage", default="pretrain", choices=["pretrain", "finetune", "eval"])
    p.add_argument("--img-size", type=int, default=192)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seq-multiplier", type=int, default=4)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--warmup-batches", type=int, default=5, help="untimed batches at the start")
    p.add_argument("--out", type=Path, help="append the JSON line here")
    args = p.parse_args()

    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": " ".join(sys.argv[1:])}
    path = args.beton
    if args.synthetic:
        from starx.data import build_dataset

        t0 = time.perf_counter()
        mean_jpeg = make_imagefolder(args.workdir / "images", args.synthetic, args.classes, args.workers)
        record["generate_s"] = round(time.perf_counter() - t0, 1)
        record["mean_source_jpeg_kb"] = round(mean_jpeg / 1024, 1)
        t0 = time.perf_counter()
        summary = build_dataset(f"imagefolder:{args.workdir / 'images'}", args.workdir / "bench.beton",
                                write_mode="jpg", jpeg_quality=90, num_workers=args.workers, progress=False)
        record["build_s"] = round(time.perf_counter() - t0, 1)
        record["beton_mb"] = round(summary.bytes / 1e6, 1)
        path = summary.path
    if path is None:
        p.error("give --synthetic N or --beton PATH")
    record.update(bench(path, args))
    record["versions"] = versions()
    line = json.dumps(record)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
