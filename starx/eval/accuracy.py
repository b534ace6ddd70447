"""Top-1 / top-5 counts of a classifier over a data-parallel evaluation.

Each rank scores the share of the held-out split its loader deals it (``StarLoader`` with
``rank``/``world_size``: disjoint, round-robin, no padding) and the integer counts are summed over
ranks, so the accuracy is over every held-out image exactly once, whatever the number of ranks.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch
import torch.distributed as torch_dist

TOPK = (1, 5)


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = TOPK) -> torch.Tensor:
    """(len(ks),) int64: how many rows of ``scores`` (N, C) have their label among the k highest.
    With fewer than k classes, top-k counts every row."""
    kmax = min(max(ks), scores.shape[-1])
    top = scores.topk(kmax, dim=-1).indices
    hit = top == labels.view(-1, 1)
    return torch.stack([hit[:, : min(k, kmax)].any(dim=-1).sum() for k in ks]).to(torch.int64)


def all_reduce_sum(counts: torch.Tensor) -> torch.Tensor:
    """The sum over ranks (the tensor itself with one process)."""
    if torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
        counts = counts.clone()
        torch_dist.all_reduce(counts)
    return counts


def percentages(counts: torch.Tensor, total: int, prefix: str = "", suffix: str = "",
                ks: tuple[int, ...] = TOPK) -> dict[str, float]:
    """{'<prefix>top1<suffix>': ..., '<prefix>top5<suffix>': ...} in percent."""
    values = counts.tolist()
    return {f"{prefix}top{k}{suffix}": 100.0 * v / max(1, total) for k, v in zip(ks, values)}


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, loader, device: torch.device,
                        autocast_dtype: Optional[torch.dtype] = None, cpu_threads: int = 0,
                        suffix: str = "") -> dict[str, float]:
    """Top-1 and top-5 (percent) of ``model`` over the loader's shard, summed over ranks."""
    from starx.train.loop import ensure_cpu_threads

    was_training = model.training
    model.eval()
    counts = torch.zeros(len(TOPK) + 1, dtype=torch.int64, device=device)  # correct@k..., total
    for images, labels in loader:
        ensure_cpu_threads(cpu_threads, device)
        with torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext():
            logits = model(images)
        counts[:-1] += topk_correct(logits.float(), labels).to(device)
        counts[-1] += labels.numel()
    counts = all_reduce_sum(counts).cpu()
    model.train(was_training)
    return percentages(counts[:-1], int(counts[-1]), suffix=suffix)
