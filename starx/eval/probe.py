"""Linear probe on cached frozen features (MAE's head: BatchNorm1d without affine, then a linear
layer; He et al. 2022).

The features are extracted once, so an epoch of the probe is a pass over an (n, F) tensor: the
probe trains in seconds. SGD with momentum 0.9 and no weight decay by default, lr = base_lr x
batch / 256 (MAE: 0.1), a cosine schedule after a linear warm-up of one tenth of the epochs; the
linear layer starts from trunc_normal(std 0.01) and a zero bias, as MAE's. MAE uses LARS because
its batch is 16,384; at a batch of about a thousand plain SGD is the usual choice (MoCo v3, DINO).
Training is seeded and, on CPU, deterministic, so every rank of a data-parallel run fits the
same probe on the same (gathered) features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ProbeSettings:
    epochs: int = 100
    batch_size: int = 1024
    base_lr: float = 0.1
    weight_decay: float = 0.0
    seed: int = 0


def make_probe(dim: int, num_classes: int) -> torch.nn.Sequential:
    from timm.layers import trunc_normal_

    head = torch.nn.Linear(dim, num_classes)
    trunc_normal_(head.weight, std=0.01)
    torch.nn.init.zeros_(head.bias)
    return torch.nn.Sequential(torch.nn.BatchNorm1d(dim, affine=False, eps=1e-6), head)


def fit_probe(x: Tensor, y: Tensor, num_classes: int, settings: ProbeSettings = ProbeSettings()) -> torch.nn.Module:
    """A BatchNorm + linear probe fitted on features ``x`` (n, F) and labels ``y`` (n,), in eval mode."""
    s = settings
    gen = torch.Generator().manual_seed(s.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        probe = make_probe(x.shape[1], num_classes).to(x.device)
    batch = min(s.batch_size, x.shape[0])
    steps_per_epoch = max(1, x.shape[0] // batch)  # drop_last: BatchNorm sees full batches
    total = s.epochs * steps_per_epoch
    warmup = max(1, total // 10)
    peak = s.base_lr * batch / 256
    opt = torch.optim.SGD(probe.parameters(), lr=peak, momentum=0.9, weight_decay=s.weight_decay)
    probe.train()
    step = 0
    for _ in range(s.epochs):
        order = torch.randperm(x.shape[0], generator=gen).to(x.device)
        for i in range(steps_per_epoch):
            lr = peak * (step + 1) / warmup if step < warmup else \
                peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[i * batch:(i + 1) * batch]
            loss = torch.nn.functional.cross_entropy(probe(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return probe.eval()
