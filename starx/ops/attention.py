"""Masked attention for ARM's decoder: softmax(q k^T / sqrt(d)) v over the keys a boolean mask allows.

The decoder's mask is block-causal (a target's query reads the encoder tokens of the clusters before
it), so about half of the (query, key) pairs are masked out. SDPA with a dense mask computes them
all and reads the mask besides; FlexAttention, given the mask as a BlockMask, skips every
128 x 128 tile that is fully masked and runs as one Triton kernel of torch.compile's. It is used
where it pays: under torch.compile on CUDA (eagerly FlexAttention falls back to a dense reference
implementation). Elsewhere: SDPA. Both compute the same function (tests/test_attention.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# "auto": flex under torch.compile on CUDA, SDPA otherwise; "sdpa" / "flex": always that one
# (bench/decoder_attention.py times them against each other)
ATTENTION = {"impl": "auto"}


def uses_flex(q: Tensor) -> bool:
    """Whether ``masked_attention`` takes the FlexAttention path for these queries, now."""
    impl = ATTENTION["impl"]
    if impl not in ("auto", "sdpa", "flex"):
        raise ValueError(f"ATTENTION['impl'] must be auto, sdpa or flex; got {impl!r}")
    return impl == "flex" or (impl == "auto" and q.is_cuda and torch.compiler.is_compiling())


def masked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """q (b, h, nq, d), k and v (b, h, nk, d), mask (nq, nk) bool, True where a query may read a
    key (every query must be allowed at least one key) -> (b, h, nq, d)."""
    if not uses_flex(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def allowed(b, h, i, j):
        return mask[i, j]

    block_mask = create_block_mask(allowed, None, None, mask.shape[0], mask.shape[1], device=q.device)
    return flex_attention(q, k, v, block_mask=block_mask)
