"""Timing one compiled piece of a model (a block's attention, an MLP) forward + backward on the GPU,
shared by bench/decoder_attention.py and bench/swiglu.py.

With ``torch.compile(mode="reduce-overhead")`` the forward and backward replay as CUDA graphs, as in
the training step; every step then drops the leaves' gradients first, since they are outputs of
the last replay, which the next one overwrites (autograd would accumulate into them).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def step(fn, inputs: tuple, dout, leaves: tuple) -> None:
    """One forward + backward of ``fn(*inputs)``, the gradients of ``leaves`` dropped first; ``dout``
    the output's gradient, or a tuple of gradients where fn returns a tuple of outputs."""
    for t in leaves:
        t.grad = None
    torch.compiler.cudagraph_mark_step_begin()
    torch.autograd.backward(fn(*inputs), dout)


def timed(fn, inputs: tuple, dout, leaves: tuple, reps: int = 20) -> float:
    """ms of one forward + backward, CUDA events, after warm-up (compiles)."""
    for _ in range(3):
        step(fn, inputs, dout, leaves)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        step(fn, inputs, dout, leaves)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def kernel_times(fn, inputs: tuple, dout, leaves: tuple, reps: int = 5, top: int = 8
                 ) -> dict[str, float]:
    """ms per forward + backward of each GPU kernel fn launches (torch.profiler), the ``top`` largest."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            step(fn, inputs, dout, leaves)
        torch.cuda.synchronize()
    times = {e.key[:60]: round(e.device_time_total / 1000 / reps, 4) for e in prof.key_averages()
             if e.device_type == torch.autograd.DeviceType.CUDA and e.device_time_total > 0}
    return dict(sorted(times.items(), key=lambda kv: -kv[1])[:top])


def parse_tiles(config: str, kernels: tuple[str, ...]) -> dict:
    """A kernel module's TILES from "A/B/...", one tile per kernel, each its numbers joined by "x"."""
    return dict(zip(kernels, (tuple(map(int, c.split("x"))) for c in config.split("/"))))


def write_jsonl(path: Path, info: dict, rows: list[dict]) -> None:
    """The run's info line, then one line a row."""
    path.write_text("\n".join(json.dumps(r) for r in [info] + rows) + "\n")
