"""Triton kernels of the SwiGLU gate, h = silu(a + bias_a) * (b + bias_b) (starx/ops/swiglu.py).

a, b, h, g (the gradient of h), da, db are (M, N) row-major: M tokens, N hidden channels. Each
program owns BN channels and walks its own band of rows BM at a time, so every load is BN
contiguous elements of a row (16-byte vectors) and the arithmetic is in fp32.

The backward also sums da and db over rows (the bias gradients): each program keeps its band's
column sums in registers and stores them as one row of an fp32 partials tensor (one row per band),
which torch adds up: deterministic, and no second pass over da / db.
"""

import triton
import triton.language as tl


@triton.jit
def _gate(a_ptr, b_ptr, ba_ptr, bb_ptr, offs, mask, cols, cmask, HAS_BIAS: tl.constexpr):
    """(a + bias_a, b + bias_b) of one tile in fp32."""
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        a += tl.load(ba_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        b += tl.load(bb_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    return a, b


@triton.jit
def swiglu_fwd(a_ptr, b_ptr, ba_ptr, bb_ptr, h_ptr, M, N,
               HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, ROWS: tl.constexpr):
    """h = silu(a) * b over rows [program_id(0) * ROWS, + ROWS), channels [program_id(1) * BN, + BN)."""
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    cmask = cols < N
    for r in tl.range(0, ROWS, BM):
        rows = tl.program_id(0) * ROWS + r + tl.arange(0, BM)
        mask = (rows < M)[:, None] & cmask[None, :]
        offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
        a, b = _gate(a_ptr, b_ptr, ba_ptr, bb_ptr, offs, mask, cols, cmask, HAS_BIAS)
        h = a * tl.sigmoid(a) * b
        tl.store(h_ptr + offs, h.to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def swiglu_bwd(g_ptr, a_ptr, b_ptr, ba_ptr, bb_ptr, da_ptr, db_ptr, sa_ptr, sb_ptr, M, N,
               HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, ROWS: tl.constexpr):
    """da = g * b * silu'(a), db = g * silu(a) over the forward's tile; with HAS_BIAS their column
    sums over the band's rows into row program_id(0) of the partials sa / sb (fp32, (bands, N))."""
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    cmask = cols < N
    sum_a = tl.zeros([BN], dtype=tl.float32)
    sum_b = tl.zeros([BN], dtype=tl.float32)
    for r in tl.range(0, ROWS, BM):
        rows = tl.program_id(0) * ROWS + r + tl.arange(0, BM)
        mask = (rows < M)[:, None] & cmask[None, :]
        offs = rows.to(tl.int64)[:, None] * N + cols[None, :]
        a, b = _gate(a_ptr, b_ptr, ba_ptr, bb_ptr, offs, mask, cols, cmask, HAS_BIAS)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # 0 off the tensor: da = db = 0 there
        s = tl.sigmoid(a)
        db = g * a * s
        da = g * b * s * (1.0 + a * (1.0 - s))  # d silu(a) / da = s (1 + a (1 - s))
        tl.store(da_ptr + offs, da.to(da_ptr.dtype.element_ty), mask=mask)
        tl.store(db_ptr + offs, db.to(db_ptr.dtype.element_ty), mask=mask)
        if HAS_BIAS:
            sum_a += tl.sum(da, axis=0)
            sum_b += tl.sum(db, axis=0)
    if HAS_BIAS:
        band = tl.program_id(0).to(tl.int64) * N
        tl.store(sa_ptr + band + cols, sum_a, mask=cmask)
        tl.store(sb_ptr + band + cols, sum_b, mask=cmask)
