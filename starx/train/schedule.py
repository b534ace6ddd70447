"""Per-iteration learning-rate schedule: linear warm-up, then half-cosine to ``min_lr``."""

from __future__ import annotations

import math


def lr_at(step: int, *, total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float = 0.0) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
