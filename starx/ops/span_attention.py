"""Attention where each query reads one contiguous span of keys: the STAR decoder's block-causal mask.

Query row i of the decoder (a target patch) may read the encoder tokens [lo_i, hi_i): those
strictly before its cluster (from its own image's separator, or from the sequence's start with
``decoder_cross_image``). Both ends are non-decreasing down the rows (the targets come in
sequence order), so the mask is a staircase that allows about half of the (query, key) pairs.

SDPA takes it as a dense boolean mask and computes every pair (cuDNN's masked flash kernel on
Hopper: 0.97 ms forward + backward for one STAR-B k=4 decoder block on the H200, about 170
TFLOP/s of the full product; bench/decoder_attention.py). The Triton kernels here
(starx/ops/_span_attention_kernels.py) read, per tile of query rows, only the keys its spans
cover. FlexAttention with the same mask as a BlockMask was slower than SDPA at k=4 and 1
(bench/README.md), hence a kernel of our own. On the H200 they take less GPU time than SDPA at
every k of STAR (1 to 8), and whole steps are faster with them from k=2 on (MIN_KEYS).

``span_attention`` is the entry point: the kernels for bf16 / fp16 CUDA tensors under the
``triton`` / ``auto`` backends, SDPA with the dense mask (the twin) otherwise. The ops are torch
custom ops (``torch.ops.starx.span_attn_fwd/bwd``) with fake shapes, so torch.compile traces
around them and CUDA graphs capture them.
"""

# (no ``from __future__ import annotations``: custom_op infers the op schema from real annotations)
import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Per program: (query rows BM, keys BN, warps, pipeline stages) of the forward, of the backward's
# dq kernel and of its dk / dv kernel. 64 x 64 x 4 warps everywhere timed fastest of five tile sets at
# k = 4 and 8 on the H200 (2026-12-01: one decoder block's attention forward + backward, k=4 1.10 ms
# against 1.20 for session 16's 64x128 / 64x128 / 128x128x8, whose dk / dv tile spilled 488 bytes;
# k=8 0.98 against 1.14; bench/results/span_attention_tiles_h200.jsonl).
TILES = {"fwd": (64, 64, 4, 2), "dq": (64, 64, 4, 2), "dkdv": (64, 64, 4, 2)}
HEAD_DIMS = (16, 32, 64, 128)  # the head sizes the kernels take (tl.dot's tiles: powers of two)
USE_KERNELS = True  # False: SDPA with the mask everywhere (bench/ compares the two in one process)
# The kernels run for at least this many keys (SDPA below; 0: always). On the H200, whole steps against
# SDPA in the same call: k=4 (624 keys) 0.724 -> 0.737x of the anchor and 0.726 -> 0.743 (2026-12-01,
# bench/results/pretrain_step_h200_k4_span_tiles64.json, pretrain_step_h200_session18.jsonl), k=2 (304)
# 0.702 -> 0.710x (pretrain_step_h200_k2_span.json), k=1 (128) 0.695 both. One block's attention replayed
# as CUDA graphs, as the compiled step runs it, GPU time of its kernels at k=1: 0.24 ms against SDPA's
# 0.28 (span_attention_graphs_h200.jsonl; session 17's 1.24 against 0.79 was timed without graphs and
# was launch-bound). Hence from 0 keys: one path on the GPU.
MIN_KEYS = 0


def spans_to_mask(spans: Tensor, keys: int) -> Tensor:
    """(queries, keys) bool mask, True where a query may read a key, of (queries, 2) spans [lo, hi)."""
    pos = torch.arange(keys, device=spans.device)
    return (pos >= spans[:, :1]) & (pos < spans[:, 1:])


def check_spans(spans: Tensor, keys: int) -> None:
    """Raise ValueError unless ``spans`` is (queries, 2) int32 of [lo, hi) within [0, keys], both
    ends non-decreasing down the rows (what lets a tile of rows read one range of keys)."""
    if spans.dim() != 2 or spans.shape[1] != 2 or spans.dtype != torch.int32:
        raise ValueError(f"spans must be (queries, 2) int32; got {tuple(spans.shape)} {spans.dtype}")
    lo, hi = spans[:, 0], spans[:, 1]
    if bool((lo < 0).any() or (hi > keys).any() or (lo > hi).any()):
        raise ValueError(f"spans must satisfy 0 <= lo <= hi <= {keys}")
    if bool((lo[1:] < lo[:-1]).any() or (hi[1:] < hi[:-1]).any()):
        raise ValueError("spans' ends must be non-decreasing down the rows")


def _dims(q: Tensor, k: Tensor) -> tuple[int, int, int, int, int]:
    B, H, NQ, D = q.shape
    return B, H, NQ, k.shape[2], D


def _bhmd(t: Tensor) -> tuple[int, int, int]:
    """Strides (sequence, head, row) of a (b, h, rows, d) tensor with unit stride along d."""
    return t.stride(0), t.stride(1), t.stride(2)


def _like_rows(t: Tensor) -> Tensor:
    """An empty (b, h, rows, d) tensor laid out (b, rows, h, d), as the heads of one Linear's output."""
    B, H, N, D = t.shape
    return t.new_empty(B, N, H, D).transpose(1, 2)


def _unit_d(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def attention_forward(q: Tensor, k: Tensor, v: Tensor, spans: Tensor) -> tuple[Tensor, Tensor]:
    """Launch the forward kernel: (o (b, h, NQ, d) in q's dtype, lse (b, h, NQ) fp32 in base 2)."""
    import triton

    from starx.ops._span_attention_kernels import span_attn_fwd

    B, H, NQ, NK, D = _dims(q, k)
    o = _like_rows(q)
    lse = q.new_empty(B, H, NQ, dtype=torch.float32)
    bm, bn, warps, stages = TILES["fwd"]
    scale = 1.0 / math.sqrt(D)
    span_attn_fwd[(triton.cdiv(NQ, bm), B * H)](
        q, k, v, o, lse, spans, *_bhmd(q), *_bhmd(k), *_bhmd(v), *_bhmd(o), H, NQ, NK, scale * math.log2(math.e),
        D=D, BM=bm, BN=bn, num_warps=warps, num_stages=stages)
    return o, lse


def attention_backward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, do: Tensor,
                       spans: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the backward kernels: (dq, dk, dv) in q's dtype."""
    import triton

    from starx.ops._span_attention_kernels import span_attn_bwd_dkdv, span_attn_bwd_dq

    B, H, NQ, NK, D = _dims(q, k)
    do = _unit_d(do)
    dq, dk, dv = _like_rows(q), _like_rows(k), _like_rows(v)
    delta = torch.empty_like(lse)
    scale = 1.0 / math.sqrt(D)
    consts = (H, NQ, NK, scale * math.log2(math.e), scale)
    bm, bn, warps, stages = TILES["dq"]
    span_attn_bwd_dq[(triton.cdiv(NQ, bm), B * H)](
        q, k, v, o, do, lse, delta, dq, spans, *_bhmd(q), *_bhmd(k), *_bhmd(v), *_bhmd(o), *_bhmd(do), *_bhmd(dq),
        *consts, D=D, BM=bm, BN=bn, num_warps=warps, num_stages=stages)
    bm, bn, warps, stages = TILES["dkdv"]
    span_attn_bwd_dkdv[(triton.cdiv(NK, bn), B * H)](
        q, k, v, do, lse, delta, dk, dv, spans, *_bhmd(q), *_bhmd(k), *_bhmd(v), *_bhmd(do), *_bhmd(dk), *_bhmd(dv),
        *consts, D=D, BM=bm, BN=bn, TILES_Q=triton.next_power_of_2(triton.cdiv(NQ, bm)), num_warps=warps,
        num_stages=stages)
    return dq, dk, dv


@torch.library.custom_op("starx::span_attn_fwd", mutates_args=())
def span_attn_fwd(q: Tensor, k: Tensor, v: Tensor, spans: Tensor) -> tuple[Tensor, Tensor]:
    """(o, lse): q (b, h, NQ, d), k / v (b, h, NK, d), each with unit stride along d; spans (NQ, 2) int32."""
    return attention_forward(q, k, v, spans)


@span_attn_fwd.register_fake
def _(q, k, v, spans):
    return _like_rows(q), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("starx::span_attn_bwd", mutates_args=())
def span_attn_bwd(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, do: Tensor,
                  spans: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv)."""
    return attention_backward(q, k, v, o, lse, do, spans)


@span_attn_bwd.register_fake
def _(q, k, v, o, lse, do, spans):
    return _like_rows(q), _like_rows(k), _like_rows(v)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, spans = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, spans)
    ctx.mark_non_differentiable(lse)


def _backward(ctx, do, _dlse):
    q, k, v, o, lse, spans = ctx.saved_tensors
    dq, dk, dv = span_attn_bwd(q, k, v, o, lse, do, spans)
    return dq, dk, dv, None


span_attn_fwd.register_autograd(_backward, setup_context=_setup_context)


def kernels_take(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether the kernels run these tensors: CUDA, bf16 / fp16 alike, a head size they take."""
    return (q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and k.dtype == v.dtype == q.dtype
            and q.shape[-1] in HEAD_DIMS and k.shape[:2] == q.shape[:2] == v.shape[:2])


def span_attention(q: Tensor, k: Tensor, v: Tensor, spans: Tensor, mask: Tensor, backend: str = "auto") -> Tensor:
    """softmax(q k^T / sqrt(d)) v with query i reading keys [spans[i, 0], spans[i, 1]): (b, h, NQ, d).

    q (b, h, NQ, d), k / v (b, h, NK, d); spans (NQ, 2) int32 as check_spans wants (checked once,
    where they are built); mask = spans_to_mask(spans, NK), which the twin (SDPA) reads. The
    kernels run where ``backend`` resolves to triton (starx.ops.scan_backend), kernels_take the
    tensors (fp32 keeps SDPA: tl.dot would round its inputs to tf32) and there are MIN_KEYS keys
    or more (below, SDPA is faster)."""
    from starx.ops._kernels import scan_backend

    if USE_KERNELS and k.shape[2] >= MIN_KEYS and kernels_take(q, k, v) and scan_backend(backend, q) == "triton":
        return span_attn_fwd(_unit_d(q), _unit_d(k), _unit_d(v), spans)[0]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


__all__ = ["HEAD_DIMS", "MIN_KEYS", "TILES", "check_spans", "kernels_take", "span_attention", "spans_to_mask"]
