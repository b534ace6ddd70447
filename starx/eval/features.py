"""Features of the pretrained causal encoder, for the read-outs of frozen features.

The encoder reads **one image at a time in its pretraining layout**: the image's patches in
cluster order with their fixed 2-D sin-cos positions, preceded by the separator of the first
image slot when the model has one (``[sep, image]``, as every image of a STAR sequence is read;
with ``none`` the image alone, as in ARM). The feature of an image is, for each chosen block,
the mean over the image's N tokens (not the separator's) of that block's output stream, normed;
the chosen blocks' features are concatenated.

The norm: the decoder of the pretraining model reads the streams of its tap depths through its
own LayerNorm (``enc_norms``); a block the decoder reads is normed with that trained LayerNorm,
any other block with a parameter-free LayerNorm. The default block is the last one, which the
decoder always reads, so the default feature is exactly what pretraining trained the decoder to
read, averaged over the image.

Why the mean, and why this encoder: the encoder is causal, so the stream at an early token has
seen only the separator and the clusters before it; the last token alone would summarise the
image but weighs its last cluster most. The mean over all tokens is what the fine-tuning
classifier pools (ARM's global pool), and needs no parameter the read-out would have to learn.
Reading each image alone keeps its feature independent of which images happened to precede it
in a batch. The fine-tuning classifier's 4-direction model (rows and columns, forward and
backward) would let every token see the whole image, but its three extra directions are copies
of the forward weights that pretraining never trained on those orders and its token order and
cls token differ from pretraining: a read-out through it would measure that untrained transfer,
not what pretraining learned. It is the right model for fine-tuned features, not for frozen ones.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def resolve_blocks(blocks: Sequence[int], depth: int) -> list[int]:
    """Block numbers (1-based; negative counts from the last: -1 = the last block) -> sorted,
    distinct 1-based numbers. Raises ValueError naming the field for one outside the encoder."""
    out = []
    for b in blocks:
        n = depth + 1 + b if b < 0 else b
        if not 1 <= n <= depth:
            raise ValueError(f"field 'eval.feature_blocks': block {b} is outside the encoder's "
                             f"{depth} blocks (1..{depth}, or -1..-{depth} from the last)")
        out.append(n)
    if not out:
        raise ValueError("field 'eval.feature_blocks': name at least one block (-1 = the last)")
    return sorted(set(out))


def _norms(model, blocks: list[int]) -> dict[int, Optional[torch.nn.Module]]:
    taps = list(getattr(model, "taps", []))
    return {b: (model.enc_norms[taps.index(b)] if b in taps else None) for b in blocks}


def feature_dim(model, blocks: Sequence[int]) -> int:
    return model.cfg.embed_dim * len(resolve_blocks(blocks, model.cfg.depth))


@torch.no_grad()
def encoder_features(model, images: Tensor, blocks: Sequence[int] = (-1,)) -> Tensor:
    """(B, C, H, W) -> (B, len(blocks) * D) float32 features of a ``STARPretrain`` model."""
    cfg = model.cfg
    chosen = resolve_blocks(blocks, cfg.depth)
    norms = _norms(model, chosen)
    x = model.patch_embed(images)[:, model.order] + model.pos_embed  # (B, N, D), cluster order
    n_image = x.shape[1]
    sep = model.separator()
    if sep is not None:  # the first slot's separator: (S, D)
        x = torch.cat([sep[0].to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
    feats = []
    residual = None
    for depth, block in enumerate(model.layers, start=1):
        x, residual = block(x, residual)
        if depth in norms:
            stream = (residual + x)[:, -n_image:].float()
            norm = norms[depth]
            normed = norm(stream) if norm is not None else F.layer_norm(stream, stream.shape[-1:])
            feats.append(normed.mean(dim=1))
        if depth == chosen[-1]:
            break
    return torch.cat(feats, dim=-1)


@torch.no_grad()
def extract(model, loader, blocks: Sequence[int], device: torch.device,
            autocast_dtype: Optional[torch.dtype] = None, cpu_threads: int = 0) -> tuple[Tensor, Tensor]:
    """Features (n, F) float32 and labels (n,) int64 of every image the loader yields, on ``device``."""
    from starx.train.loop import ensure_cpu_threads

    was_training = model.training
    model.eval()
    xs, ys = [], []
    for images, labels in loader:
        ensure_cpu_threads(cpu_threads, device)
        with torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext():
            xs.append(encoder_features(model, images, blocks).float())
        ys.append(labels.to(torch.int64))
    model.train(was_training)
    return torch.cat(xs).to(device), torch.cat(ys).to(device)
