"""Building blocks: patch embedding, SwiGLU, the MambaMLP encoder block, the cross-attention
decoder block, and ARM's weight initialisation."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, lecun_normal_, trunc_normal_
from torch import Tensor

from starx.ops import add_layer_norm, add_layer_norm_twice
from starx.ops.span_attention import span_attention
from starx.ops.swiglu import swiglu_mlp_gate


def patchify(images: Tensor, p: int) -> Tensor:
    """(N, C, H, W) -> (N, patches in raster order, p*p*C), pixels ordered (row, col, channel)."""
    N, C, H, W = images.shape
    x = images.reshape(N, C, H // p, p, W // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(N, (H // p) * (W // p), p * p * C)


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, gh*gw, D), patches in raster order.

    The weight is a Conv2d's (ViT's and ARM's checkpoint layout), but a conv whose stride is its
    kernel is one matmul over the patchified pixels, and is computed as that: cuDNN's conv first
    converts the images to channels-last (on the H200, fprop + that conversion were 2.0 ms of a
    compiled STAR-B k=4 step, bench/results/profile_step_h200_k4_scan_T8_compile.txt)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        lecun_normal_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.proj.weight.permute(0, 2, 3, 1).flatten(1)  # (D, p*p*C) in patchify's pixel order
        return F.linear(patchify(x, self.patch_size), weight, self.proj.bias)


class SwiGLU(nn.Module):
    """w3(silu(w1 x) * w2 x), ARM's MLP (names w1, w2, w3). ``backend`` picks the gate's path
    (starx.ops.swiglu: a kernel of its own for the backward where it resolves to triton)."""

    def __init__(self, dim: int, hidden: int, backend: str = "auto"):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(dim, hidden)
        self.w3 = nn.Linear(hidden, dim)
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(swiglu_mlp_gate(x, self.w1, self.w2, self.backend))


def add_norm(norm: nn.LayerNorm, x: Tensor, residual: Tensor | None, backend: str, prenorm: bool = True):
    """``norm`` applied to the stream x + residual (see starx.ops.add_layer_norm): with ``prenorm``,
    (normalised, x + residual in fp32); else the normalised stream only."""
    return add_layer_norm(x, residual, norm.weight, norm.bias, norm.eps, prenorm=prenorm, backend=backend)


class MambaMLPBlock(nn.Module):
    """x + Mamba(LN(x)), then x + SwiGLU(LN(x)); drop path on both branches.

    The stream travels as (last branch output, residual), summing to x (residual None: x alone),
    so that each LayerNorm adds the branch in as it normalises (fused on CUDA):
    ``forward(out, residual) -> (out', residual')``. ``mixer_kwargs`` go to the mixer (the
    4-direction one needs the column order). ``backend`` picks the add + LayerNorm op's path.
    """

    def __init__(self, dim: int, mixer: nn.Module, mlp_hidden: int, drop_path: float = 0.0, backend: str = "auto"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwiGLU(dim, mlp_hidden, backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.backend = backend

    def forward(self, out: Tensor, residual: Tensor | None = None, **mixer_kwargs) -> tuple[Tensor, Tensor]:
        out, residual, _ = self.forward_tapped(out, residual, None, **mixer_kwargs)
        return out, residual

    def forward_tapped(self, out: Tensor, residual: Tensor | None, tap: nn.LayerNorm | None, **mixer_kwargs
                       ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``forward``, also returning ``tap`` applied to the incoming stream (None without a tap),
        normalised in the same pass as norm1 (starx.ops.add_layer_norm_twice): STAR's decoder
        reads the stream that this block normalises first."""
        if tap is None:
            (h, residual), tapped = add_norm(self.norm1, out, residual, self.backend), None
        elif tap.eps == self.norm1.eps:
            n1 = self.norm1
            h, tapped, residual = add_layer_norm_twice(out, residual, n1.weight, n1.bias, tap.weight, tap.bias,
                                                       n1.eps, self.backend)
        else:
            tapped = add_norm(tap, out, residual, self.backend, prenorm=False)
            h, residual = add_norm(self.norm1, out, residual, self.backend)
        out = self.drop_path(self.mixer(h, **mixer_kwargs))
        h, residual = add_norm(self.norm2, out, residual, self.backend)
        return self.drop_path(self.mlp(h)), residual, tapped


class CrossAttention(nn.Module):
    """Multi-head attention of queries over encoder features, query i reading the keys
    [spans[i, 0], spans[i, 1]) (``mask``: the same as a dense boolean mask, True = may attend).
    ``backend`` picks the attention's path (starx.ops.span_attention)."""

    def __init__(self, dim: int, num_heads: int, backend: str = "auto"):
        super().__init__()
        self.num_heads, self.backend = num_heads, backend
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: Tensor, kv: Tensor, mask: Tensor, spans: Tensor) -> Tensor:
        B, Nq, C = q.shape
        h = self.num_heads
        q = self.q(q).view(B, Nq, h, C // h).transpose(1, 2)
        k, v = self.kv(kv).view(B, kv.shape[1], 2, h, C // h).permute(2, 0, 3, 1, 4)
        out = span_attention(q, k, v, spans, mask, self.backend)
        return self.proj(out.transpose(1, 2).reshape(B, Nq, C))


class DecoderBlock(nn.Module):
    """ARM's decoder block: q + attn(LN(q), LN(kv)), then q + MLP(LN(q)) (GELU, ratio 4)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, backend: str = "auto"):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, num_heads, backend)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, q: Tensor, kv: Tensor, mask: Tensor, spans: Tensor) -> Tensor:
        q = q + self.attn(self.norm_q(q), self.norm_kv(kv), mask, spans)
        return q + self.mlp(self.norm2(q))


def init_mamba_weights(module: nn.Module, depth: int) -> None:
    """ARM / mamba-ssm model init, applied with ``model.apply``: zero Linear biases (except
    dt_proj's, marked _no_reinit) and rescale each mixer's out_proj by 1/sqrt(depth)."""
    if isinstance(module, nn.Linear) and module.bias is not None and not getattr(module.bias, "_no_reinit", False):
        nn.init.zeros_(module.bias)
    out_proj = getattr(module, "out_proj", None)
    if isinstance(out_proj, nn.Linear) and hasattr(module, "A_log"):
        nn.init.kaiming_uniform_(out_proj.weight, a=math.sqrt(5))
        with torch.no_grad():
            out_proj.weight /= math.sqrt(depth)


def init_decoder_weights(module: nn.Module) -> None:
    """Xavier-uniform Linear weights with zero bias; LayerNorm to identity (MAE / ARM decoder)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_token(p: nn.Parameter) -> None:
    trunc_normal_(p, std=0.02)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly from 0 (first block) to ``rate`` (last block)."""
    return [rate * i / max(1, depth - 1) for i in range(depth)]
