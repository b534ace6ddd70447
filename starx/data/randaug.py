"""timm's RandAugment ('rand-m9-mstd0.5' etc.) applied to a whole batch of tensors.

Same op list, magnitudes, per-op probability and magnitude noise as
timm.data.auto_augment.rand_augment_transform, but every image draws its own ops
and magnitudes from a seeded torch.Generator and the work runs batched (on GPU
when the batch is there) instead of one PIL image at a time. Differences from
timm: bilinear resampling only (timm picks bilinear or bicubic at random), and
the geometric ops fill with the dataset mean like timm but blend at the border.
Images are float tensors (N,3,H,W) holding values in [0, 255]; each op rounds
and clamps as PIL's uint8 arithmetic would.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_LEVEL_DENOM = 10.0
OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
    "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
    "TranslateYRel",
)
_GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
_SIGNED = _GEOMETRIC  # timm negates these levels with probability 1/2


@dataclass(frozen=True)
class RandAugmentConfig:
    magnitude: float = 10.0
    num_layers: int = 2
    prob: float = 0.5
    magnitude_std: float = 0.0
    magnitude_max: float = _LEVEL_DENOM

    @classmethod
    def parse(cls, spec: str) -> "RandAugmentConfig":
        """Parse timm's config string: 'rand' then '-m9', '-n2', '-mstd0.5', '-mmax10', '-p0.5'."""
        parts = spec.split("-")
        if parts[0] != "rand":
            raise ValueError(f"RandAugment spec must start with 'rand', got {spec!r}")
        values = {}
        for part in parts[1:]:
            m = re.fullmatch(r"(mstd|mmax|m|n|p|inc)([0-9.]+)", part)
            if m is None:
                raise ValueError(f"unknown RandAugment section {part!r} in {spec!r}")
            values[m.group(1)] = float(m.group(2))
        if values.get("inc", 0):
            raise ValueError(f"{spec!r}: the 'inc1' op set is not implemented")
        mstd = values.get("mstd", 0.0)
        return cls(
            magnitude=values.get("m", _LEVEL_DENOM),
            num_layers=int(values.get("n", 2)),
            prob=values.get("p", 0.5),
            magnitude_std=math.inf if mstd > 100 else mstd,
            magnitude_max=values.get("mmax", _LEVEL_DENOM),
        )


class BatchRandAugment:
    """Callable: `(images, generator) -> images`, images (N,3,H,W) float in [0, 255]."""

    def __init__(self, config: RandAugmentConfig | str, fill: tuple[float, float, float]):
        self.config = RandAugmentConfig.parse(config) if isinstance(config, str) else config
        self.fill = torch.tensor(fill, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cfg, n = self.config, x.shape[0]
        for _ in range(cfg.num_layers):
            # All draws happen on the CPU generator, in a fixed order, whatever the device.
            op = torch.randint(len(OPS), (n,), generator=gen)
            apply = torch.rand(n, generator=gen) < cfg.prob
            if math.isinf(cfg.magnitude_std):
                mag = torch.rand(n, generator=gen, dtype=torch.float64) * cfg.magnitude
            else:
                mag = cfg.magnitude + cfg.magnitude_std * torch.randn(n, generator=gen, dtype=torch.float64)
            mag = mag.clamp(0.0, cfg.magnitude_max)
            sign = torch.where(torch.rand(n, generator=gen) < 0.5, 1.0, -1.0).double()
            for k, name in enumerate(OPS):
                rows = torch.nonzero((op == k) & apply).flatten()
                if len(rows) == 0:
                    continue
                level = _level(name, mag[rows], sign[rows])
                idx = rows.to(x.device)
                x[idx] = self._apply(name, x[idx], level.to(x.device, torch.float32))
        return x

    def _apply(self, name: str, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        if name in _GEOMETRIC:
            out = _affine(x, name, level, self.fill.to(x.device))
        else:
            out = _COLOR_OPS[name](x, level.view(-1, 1, 1, 1))
        return out.clamp_(0, 255).round_()


def _level(name: str, mag: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """timm's level_to_arg for each op, from magnitudes in [0, magnitude_max]."""
    frac = mag / _LEVEL_DENOM
    if name == "Rotate":
        return frac * 30.0 * sign  # degrees
    if name in ("ShearX", "ShearY"):
        return frac * 0.3 * sign
    if name in ("TranslateXRel", "TranslateYRel"):
        return frac * 0.45 * sign  # fraction of the side
    if name == "Posterize":
        return (frac * 4).floor()  # bits kept
    if name == "Solarize":
        return (frac * 256).floor().clamp(max=256)  # threshold
    if name == "SolarizeAdd":
        return (frac * 110).floor().clamp(max=128)  # added below 128
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return frac * 1.8 + 0.1  # enhance factor
    return torch.zeros_like(mag)  # AutoContrast, Equalize, Invert take no level


def _grey(x: torch.Tensor) -> torch.Tensor:
    """PIL's 'L' conversion (ITU-R 601-2 luma), rounded, shape (N,1,H,W)."""
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).round()


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return degenerate + factor * (x - degenerate)


def _autocontrast(x, _):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(hi > lo, 255.0 / (hi - lo).clamp(min=1), torch.ones_like(hi))
    return torch.where(hi > lo, (x - lo) * scale, x)


def _equalize(x, _):
    from torchvision.transforms.v2.functional import equalize

    return equalize(x.round().clamp(0, 255).to(torch.uint8)).float()


def _posterize(x, bits):
    mask = (255 - (2 ** (8 - bits) - 1)).to(torch.int32)  # keep the top `bits` bits
    return (x.to(torch.int32) & mask).float()


def _solarize(x, threshold):
    return torch.where(x >= threshold, 255 - x, x)


def _solarize_add(x, add):
    return torch.where(x < 128, (x + add).clamp(max=255), x)


def _sharpness(x, factor):
    kernel = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
    smooth = F.conv2d(x, kernel.expand(3, 1, 3, 3).contiguous(), padding=1, groups=3).round()
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth[..., 1:-1, 1:-1]  # PIL keeps the border pixels
    return _blend(degenerate, x, factor)


_COLOR_OPS = {
    "AutoContrast": _autocontrast,
    "Equalize": _equalize,
    "Invert": lambda x, _: 255 - x,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "SolarizeAdd": _solarize_add,
    "Color": lambda x, f: _blend(_grey(x).expand_as(x), x, f),
    "Contrast": lambda x, f: _blend(_grey(x).mean(dim=(1, 2, 3), keepdim=True).round(), x, f),
    "Brightness": lambda x, f: _blend(torch.zeros_like(x), x, f),
    "Sharpness": _sharpness,
}


def _affine(x: torch.Tensor, name: str, level: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Rotate / shear / translate each image by its own level, as PIL's transform would."""
    n, _, h, w = x.shape
    a = torch.zeros(n, 3, 3, device=x.device)
    a[:, 0, 0] = a[:, 1, 1] = a[:, 2, 2] = 1.0
    # Output-to-input maps in pixel coordinates (origin top-left, like PIL).
    if name == "Rotate":
        t = torch.deg2rad(level)
        cos, sin = torch.cos(t), torch.sin(t)
        cx, cy = w / 2, h / 2
        a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1] = cos, sin, -sin, cos
        a[:, 0, 2] = cx - cos * cx - sin * cy
        a[:, 1, 2] = cy + sin * cx - cos * cy
    elif name == "ShearX":
        a[:, 0, 1] = level
    elif name == "ShearY":
        a[:, 1, 0] = level
    elif name == "TranslateXRel":
        a[:, 0, 2] = level * w
    else:  # TranslateYRel
        a[:, 1, 2] = level * h
    # Pixel coordinates -> grid_sample's [-1, 1] (align_corners=False).
    to_norm = torch.tensor([[2 / w, 0, -1], [0, 2 / h, -1], [0, 0, 1]], device=x.device)
    theta = (to_norm @ a @ torch.linalg.inv(to_norm))[:, :2]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Sampling (x - fill) with zero padding fills the uncovered area with `fill`.
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
