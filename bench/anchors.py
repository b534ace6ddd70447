"""The transformers every starx speed claim is a ratio to, timed in the same process the same way.

* pretraining: a causal ViT-B encoder of STAR-B's width, depth and token count (12 x [LN, qkv,
  SDPA ``is_causal=True``, 12 heads, LN, GELU MLP 3072], d 768), on sequences of the encoder's
  length, batch of the same number of images;
* fine-tuning: timm's ``vit_base_patch16_224`` (bidirectional, 197 tokens), the standard.

A step is bf16 autocast forward, an MSE / cross-entropy loss, backward and fused AdamW, as in
starx's engine; ``time_steps`` returns the median images/s over the timed steps.
"""

from __future__ import annotations

import statistics

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalBlock(nn.Module):
    def __init__(self, dim: int = 768, heads: int = 12, mlp: int = 3072):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, L, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, L, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def causal_vit_b(depth: int = 12, dim: int = 768) -> nn.Module:
    return nn.Sequential(*(CausalBlock(dim) for _ in range(depth)))


def time_steps(model: nn.Module, step_loss, images_per_step: int, steps: int = 30, warmup: int = 10) -> float:
    """Median images/s of ``steps`` training steps (after ``warmup``), each timed with CUDA events:
    bf16 autocast forward through ``step_loss(model)``, backward, fused AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    times = []
    for i in range(warmup + steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_loss(model)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        end.record()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(start.elapsed_time(end) / 1e3)
    return images_per_step / statistics.median(times)


def causal_vit_images_per_s(images: int, k: int, tokens: int, compile_mode: str | None, steps: int = 30) -> float:
    """The pretraining anchor: images/s of a causal ViT-B on images/k sequences of ``tokens``."""
    model = causal_vit_b().cuda()
    run = torch.compile(model, mode=compile_mode) if compile_mode else model
    x = torch.randn(images // k, tokens, 768, device="cuda")
    return time_steps(run, lambda m: m(x).float().pow(2).mean(), images, steps)


def timm_vit_b16() -> nn.Module:
    """The fine-tuning anchor: timm's vit_base_patch16_224 (1000 classes), on the GPU."""
    import timm

    return timm.create_model("vit_base_patch16_224", num_classes=1000).cuda()


def classification_batch(images: int, img_size: int = 224, classes: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and labels of one fine-tuning step (both models of the comparison get the same)."""
    return (torch.randn(images, 3, img_size, img_size, device="cuda"),
            torch.randint(0, classes, (images,), device="cuda"))


def classification_loss(x: torch.Tensor, y: torch.Tensor):
    """The fine-tuning step's loss of a model on (x, y): cross-entropy in fp32."""
    return lambda m: F.cross_entropy(m(x).float(), y)


def timm_vit_images_per_s(images: int, compile_mode: str | None, steps: int = 30) -> float:
    """The fine-tuning anchor's images/s."""
    model = timm_vit_b16()
    run = torch.compile(model, mode=compile_mode) if compile_mode else model
    return time_steps(run, classification_loss(*classification_batch(images)), images, steps)
