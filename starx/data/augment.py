"""What happens to a decoded uint8 batch in torch: channels, RandAugment, normalise, erase.

Runs wherever the batch is (CPU or GPU). Randomness comes only from the generators
passed in, which the loader seeds from (seed, epoch, rank, batch index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .randaug import BatchRandAugment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LUMA = (0.299, 0.587, 0.114)


def default_norm(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet mean/std; for one channel, the average of the three."""
    if in_chans == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)


@dataclass
class BatchTransform:
    """uint8 (N,H,W,3) -> float32 (N,C,H,W): [RandAugment], /255, [grey], normalise, [erase]."""

    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    randaug: BatchRandAugment | None = None
    reprob: float = 0.0

    def __post_init__(self):
        if self.in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {self.in_chans}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"mean/std need {self.in_chans} values, got {self.mean}, {self.std}")

    def __call__(self, images: torch.Tensor, cpu_gen: torch.Generator | None,
                 device_gen: torch.Generator | None) -> torch.Tensor:
        n, h, w, _ = images.shape
        dev = images.device
        # Normalising folded into one scale and shift per channel: x * scale + shift.
        scale = 1.0 / (255.0 * torch.tensor(self.std, device=dev))
        shift = -torch.tensor(self.mean, device=dev) / torch.tensor(self.std, device=dev)
        if self.randaug is not None:
            nchw = self.randaug(images.permute(0, 3, 1, 2).float(), cpu_gen)
        if self.in_chans == 1:
            # Luma weights sum to 1, so grey sources stored as R=G=B come back unchanged.
            weights = torch.tensor(_LUMA, device=dev) * scale
            if self.randaug is not None:
                x = (nchw * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)
            else:
                x = (images.float() @ weights).unsqueeze(1)
            x = x.add_(shift.view(1, 1, 1, 1))
        else:
            x = torch.empty((n, 3, h, w), device=dev)
            x.copy_(nchw if self.randaug is not None else images.permute(0, 3, 1, 2))
            x.mul_(scale.view(1, 3, 1, 1)).add_(shift.view(1, 3, 1, 1))
        if self.reprob > 0:
            x = random_erase(x, self.reprob, cpu_gen, device_gen)
        return x


def random_erase(x: torch.Tensor, prob: float, cpu_gen: torch.Generator,
                 device_gen: torch.Generator, min_area: float = 0.02, max_area: float = 1 / 3,
                 min_aspect: float = 0.3, attempts: int = 10) -> torch.Tensor:
    """timm's RandomErasing(mode='pixel', max_count=1) for a batch: with probability `prob`
    one rectangle per image (area 2%-33%, aspect 0.3-3.3) is replaced by N(0,1) noise."""
    n, c, h, w = x.shape
    area = torch.empty(n, attempts, dtype=torch.float64).uniform_(min_area, max_area, generator=cpu_gen) * h * w
    log_aspect = torch.empty(n, attempts, dtype=torch.float64).uniform_(
        math.log(min_aspect), -math.log(min_aspect), generator=cpu_gen)
    aspect = log_aspect.exp()
    eh = (area * aspect).sqrt().round().long()
    ew = (area / aspect).sqrt().round().long()
    fits = (eh < h) & (ew < w)
    first = fits.long().argmax(1, keepdim=True)  # timm keeps the first rectangle that fits
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
    top = (torch.rand(n, generator=cpu_gen, dtype=torch.float64) * (h - eh + 1)).long()
    left = (torch.rand(n, generator=cpu_gen, dtype=torch.float64) * (w - ew + 1)).long()
    chosen = (torch.rand(n, generator=cpu_gen) < prob) & fits.any(1)
    rows = torch.nonzero(chosen).flatten()
    if len(rows) == 0:
        return x
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    t, l_, eh_, ew_ = (v[rows].view(-1, 1, 1) for v in (top, left, eh, ew))
    mask = ((ys >= t) & (ys < t + eh_) & (xs >= l_) & (xs < l_ + ew_)).unsqueeze(1).to(x.device)
    noise = torch.randn((len(rows), c, h, w), generator=device_gen, device=x.device, dtype=x.dtype)
    idx = rows.to(x.device)
    x[idx] = torch.where(mask, noise, x[idx])
    return x
