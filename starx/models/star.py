"""STAR pretraining model: next-cluster prediction over sequences of k images with separators.

``model(images)``: images (N, C, H, W) with N = sequences x k; consecutive groups of k images
form one sequence. Returns ``PretrainOutput(loss, pred, target)``; pred and target are
(sequences, T, patch_pixels) with the T target patches in sequence order: image by image,
clusters in raster order, patches in raster order inside a cluster (see layout.py for which
clusters are targets). Patch pixels are ordered (row, column, channel) within the patch, and the
target is normalised per patch (mean / variance over its pixels, eps 1e-6) unless
``norm_pix_loss`` is off. The loss is the mean squared error over all target pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
from torch import Tensor

from starx.models.blocks import (
    DecoderBlock,
    MambaMLPBlock,
    PatchEmbed,
    add_norm,
    drop_path_rates,
    init_decoder_weights,
    init_mamba_weights,
    init_token,
    patchify,
)
from starx.models.config import STARConfig
from starx.models.layout import build_layout
from starx.models.mamba import Mamba, ssm_no_weight_decay
from starx.models.pos_embed import sincos_2d
from starx.models.separators import Separator


@dataclass
class PretrainOutput:
    loss: Tensor  # scalar
    pred: Tensor  # (sequences, T, patch_pixels)
    target: Tensor  # (sequences, T, patch_pixels), normalised per patch when norm_pix_loss


def decoder_taps(depth: int, n: int) -> list[int]:
    """Encoder depths (1-based block counts) feeding the n decoder blocks: evenly spaced over the
    second half, ending at the last block (ARM: depth 12 -> 6, 8, 10, 12; 24 -> 12, 16, 20, 24)."""
    if n == 1:
        return [depth]
    return [max(1, math.floor(depth / 2 + depth / 2 * i / (n - 1) + 0.5)) for i in range(n)]


def build_encoder_layers(cfg: STARConfig, mixer_cls: type[Mamba], drop_path: float) -> nn.ModuleList:
    rates = drop_path_rates(drop_path, cfg.depth)
    return nn.ModuleList(
        MambaMLPBlock(
            cfg.embed_dim,
            mixer_cls(cfg.embed_dim, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=1, backend=cfg.backend),
            cfg.mlp_hidden,
            rates[i],
            backend=cfg.backend,
        )
        for i in range(cfg.depth)
    )


class STARPretrain(nn.Module):
    """Patch embed + 2-D sin-cos positions -> cluster order -> separators, k images a sequence
    -> unidirectional MambaMLP encoder -> cross-attention decoder reading ``decoder_depth``
    encoder depths through the block-causal mask -> per-patch pixels."""

    def __init__(self, cfg: STARConfig):
        super().__init__()
        cfg.check_pretrain()
        self.cfg = cfg
        self.layout = layout = build_layout(cfg)
        D, Dd, m = cfg.embed_dim, cfg.decoder_dim, cfg.decoder_depth
        gh, gw = cfg.grid

        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, D)
        # the token order as a buffer, on the model's device: indexing with a CPU index would copy it
        # to the GPU every step, which CUDA graphs (torch.compile mode="reduce-overhead") cannot capture
        self.register_buffer("order", layout.order, persistent=False)
        self.register_buffer("pos_embed", sincos_2d(D, gh, gw)[layout.order], persistent=False)
        # state_reset: the scan restarts at each image's first token (its separator), as int8 (l,)
        starts = [p for p in cfg.geometry.image_starts[1:] if p < layout.num_tokens]
        reset = torch.zeros(layout.num_tokens, dtype=torch.int8)
        reset[starts] = 1
        self.register_buffer("reset", reset if cfg.state_reset else None, persistent=False)
        self.separator = Separator(cfg.separator, cfg.sep_len, cfg.seq_multiplier, D)
        self.layers = build_encoder_layers(cfg, Mamba, cfg.drop_path)

        self.taps = decoder_taps(cfg.depth, m)
        self.enc_norms = nn.ModuleList(nn.LayerNorm(D) for _ in range(m))
        self.enc2dec = nn.Linear(m * D, m * Dd)
        self.ar_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.register_buffer("dec_pos", sincos_2d(Dd, gh, gw)[layout.target_raster], persistent=False)
        self.register_buffer("mask", layout.mask, persistent=False)
        self.register_buffer("spans", layout.spans, persistent=False)
        self.register_buffer("target_index", layout.target_index, persistent=False)
        self.dec_blocks = nn.ModuleList(DecoderBlock(Dd, cfg.decoder_heads, backend=cfg.backend) for _ in range(m))
        self.ar_norm = nn.LayerNorm(Dd)
        self.ar_pred = nn.Linear(Dd, cfg.patch_pixels)

        self.apply(partial(init_mamba_weights, depth=cfg.depth))
        self.dec_blocks.apply(init_decoder_weights)
        init_token(self.ar_token)

    # ----- sizes -----
    @property
    def num_tokens(self) -> int:
        """Tokens the encoder reads per sequence (k separators + k images, minus the last cluster)."""
        return self.layout.num_tokens

    @property
    def seq_len(self) -> int:
        """Tokens of the full sequence, last cluster included (k * (S + N))."""
        return self.layout.seq_len

    @property
    def num_targets(self) -> int:
        """Target patches per sequence (T)."""
        return self.layout.num_targets

    def encoder_param_count(self) -> int:
        """Parameters that transfer to the classifier (patch embedding and encoder blocks)."""
        return sum(p.numel() for n, p in self.named_parameters() if n.startswith(("patch_embed.", "layers.")))

    def decoder_param_count(self) -> int:
        return sum(p.numel() for p in self.parameters()) - self.encoder_param_count() - self.separator_param_count()

    def separator_param_count(self) -> int:
        return sum(p.numel() for p in self.separator.parameters())

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names without weight decay: the separator tokens (learned markers, not weights to shrink)
        and every SSM A_log / D."""
        return {f"separator.{n}" for n, _ in self.separator.named_parameters()} | ssm_no_weight_decay(self)

    # ----- forward -----
    def _check_input(self, images: Tensor) -> int:
        cfg = self.cfg
        if images.dim() != 4:
            raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
        n, c, h, w = images.shape
        if c != cfg.in_chans or (h, w) != cfg.img_hw:
            raise ValueError(
                f"expected images with {cfg.in_chans} channels of {cfg.img_hw[0]}x{cfg.img_hw[1]} px, "
                f"got {c} channels of {h}x{w}"
            )
        if n == 0 or n % cfg.seq_multiplier:
            raise ValueError(
                f"the batch has {n} images, not a positive multiple of seq_multiplier k={cfg.seq_multiplier} "
                "(consecutive groups of k images form one sequence)"
            )
        return n // cfg.seq_multiplier

    def encode(self, images: Tensor) -> list[Tensor]:
        """The encoder's stream (sequences, num_tokens, D) after each block in ``self.taps``,
        normalised by its decoder LayerNorm (``enc_norms``).

        A tap at depth d < depth is normalised by block d + 1 together with its own norm1, from the
        stream it computes anyway (``MambaMLPBlock.forward_tapped``): the stream is then added and
        read once, and its gradient from the decoder enters that LayerNorm's backward instead of
        being added to the encoder's in kernels of its own. A second tap of the same depth and a
        tap of the last block are normalised on their own (starx.ops.add_layer_norm)."""
        n_seq = self._check_input(images)
        lay, D, backend = self.layout, self.cfg.embed_dim, self.cfg.backend
        x = self.patch_embed(images)[:, self.order] + self.pos_embed  # (N, image tokens, D), cluster order
        x = x.view(n_seq, lay.k, lay.image_tokens, D)
        sep = self.separator()
        if sep is not None:
            x = torch.cat([sep.to(x.dtype).expand(n_seq, -1, -1, -1), x], dim=2)
        x = x.reshape(n_seq, lay.seq_len, D)[:, : lay.num_tokens]
        taps_at: dict[int, list[int]] = {}
        for i, depth in enumerate(self.taps):
            taps_at.setdefault(depth, []).append(i)
        feats: list[Tensor | None] = [None] * len(self.taps)
        residual, carried = None, []  # carried: the taps of the last block run, for the next one's norm1
        mixer_kwargs = {} if self.reset is None else {"reset": self.reset}
        for depth, block in enumerate(self.layers, start=1):
            for i in carried[1:]:
                feats[i] = add_norm(self.enc_norms[i], x, residual, backend, prenorm=False)
            tap = self.enc_norms[carried[0]] if carried else None
            x, residual, tapped = block.forward_tapped(x, residual, tap, **mixer_kwargs)
            if carried:
                feats[carried[0]] = tapped
            carried = taps_at.get(depth, [])
        for i in carried:  # taps of the last block
            feats[i] = add_norm(self.enc_norms[i], x, residual, backend, prenorm=False)
        return feats

    def decode(self, feats: list[Tensor]) -> Tensor:
        """Predicted pixels (sequences, T, patch_pixels) of every target patch from ``encode``'s features."""
        kvs = self.enc2dec(torch.cat(feats, dim=-1)).chunk(len(self.dec_blocks), dim=-1)
        q = (self.ar_token + self.dec_pos).expand(feats[0].shape[0], -1, -1)
        for block, kv in zip(self.dec_blocks, kvs):
            q = block(q, kv, self.mask, self.spans)
        return self.ar_pred(self.ar_norm(q))

    def targets(self, images: Tensor) -> Tensor:
        """Target pixels (sequences, T, patch_pixels) in the order of ``decode``'s output."""
        lay = self.layout
        patches = patchify(images, self.cfg.patch_size)[:, self.order]  # cluster order
        patches = patches.reshape(-1, lay.k * lay.image_tokens, patches.shape[-1])[:, self.target_index]
        if self.cfg.norm_pix_loss:
            patches = patches.to(torch.promote_types(patches.dtype, torch.float32))  # stats in >= fp32
            mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
            patches = (patches - mean) / (var + 1e-6) ** 0.5
        return patches

    def forward(self, images: Tensor) -> PretrainOutput:
        pred = self.decode(self.encode(images))
        target = self.targets(images)
        dtype = torch.promote_types(pred.dtype, torch.float32)
        loss = (pred.to(dtype) - target.to(dtype)).pow(2).mean()
        return PretrainOutput(loss=loss, pred=pred, target=target)
