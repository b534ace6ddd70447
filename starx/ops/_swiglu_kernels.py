"""Triton kernels of the SwiGLU gate, h = silu(a + bias_a) * (b + bias_b) (starx/ops/swiglu.py).

M tokens, N hidden channels. a and b are the two halves of one GEMM's output rows, [a | b] of
(M, 2N) (row stride S = 2N), and so are da and db of its gradient; h and g (the gradient of h) are
(M, N) row-major. Each program owns BN channels and walks its own band of rows BM at a time, so
every load is BN contiguous elements of a row (16-byte vectors) and the arithmetic is in fp32.

The backward also sums da and db over rows (the bias gradients): each program adds its steps'
tiles up elementwise in registers, reduces the rows once at the end (a reduction across warps at
every step cost shuffles, shared-memory traffic and barriers: 664 instructions a step against
510 without, for 8 x 256 over 4 warps; bench/results/swiglu_sass_session18.txt), and stores the sums as one row of an fp32 partials
tensor (one row per band, [sums of da | sums of db] like the rows of [a | b]), which torch adds up:
deterministic, and no second pass over da / db.
The biases are loaded once a program, as (1, BN) rows in the tiles' own layout.
"""

import triton
import triton.language as tl


@triton.jit
def _biases(ba_ptr, bb_ptr, cols, cmask, HAS_BIAS: tl.constexpr):
    """(bias_a, bias_b) of the program's channels as (1, BN) fp32 rows (zeros without biases)."""
    if HAS_BIAS:
        ba = tl.load(ba_ptr + cols[None, :], mask=cmask[None, :], other=0.0).to(tl.float32)
        bb = tl.load(bb_ptr + cols[None, :], mask=cmask[None, :], other=0.0).to(tl.float32)
    else:
        ba = tl.zeros_like(cols[None, :]).to(tl.float32)
        bb = ba
    return ba, bb


@triton.jit
def _tile(a_ptr, b_ptr, ba, bb, row0, cols, cmask, M, N, S, BM: tl.constexpr):
    """(offsets in h / g, offsets in a / b, mask, a + bias_a, b + bias_b) of the BM rows from row0,
    the program's channels, fp32."""
    rows = row0 + tl.arange(0, BM)
    mask = (rows < M)[:, None] & cmask[None, :]
    rows64 = rows.to(tl.int64)[:, None]
    offs_ab = rows64 * S + cols[None, :]
    a = tl.load(a_ptr + offs_ab, mask=mask, other=0.0).to(tl.float32) + ba
    b = tl.load(b_ptr + offs_ab, mask=mask, other=0.0).to(tl.float32) + bb
    return rows64 * N + cols[None, :], offs_ab, mask, a, b


@triton.jit
def swiglu_fwd(a_ptr, b_ptr, ba_ptr, bb_ptr, h_ptr, M, N, S,
               HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, ROWS: tl.constexpr):
    """h = silu(a) * b over rows [program_id(0) * ROWS, + ROWS), channels [program_id(1) * BN, + BN)."""
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    cmask = cols < N
    ba, bb = _biases(ba_ptr, bb_ptr, cols, cmask, HAS_BIAS)
    for r in tl.range(0, ROWS, BM):
        offs, _, mask, a, b = _tile(a_ptr, b_ptr, ba, bb, tl.program_id(0) * ROWS + r, cols, cmask, M, N, S, BM)
        h = a * tl.sigmoid(a) * b
        tl.store(h_ptr + offs, h.to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def swiglu_bwd(g_ptr, a_ptr, b_ptr, ba_ptr, bb_ptr, da_ptr, db_ptr, sa_ptr, sb_ptr, M, N, S,
               HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, ROWS: tl.constexpr):
    """da = g * b * silu'(a), db = g * silu(a) over the forward's tile; with HAS_BIAS their column
    sums over the band's rows into row program_id(0) of the partials sa / sb (fp32, rows S apart)."""
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    cmask = cols < N
    ba, bb = _biases(ba_ptr, bb_ptr, cols, cmask, HAS_BIAS)
    acc_a = tl.zeros([BM, BN], dtype=tl.float32)
    acc_b = tl.zeros([BM, BN], dtype=tl.float32)
    for r in tl.range(0, ROWS, BM):
        offs, offs_ab, mask, a, b = _tile(a_ptr, b_ptr, ba, bb, tl.program_id(0) * ROWS + r, cols, cmask, M, N, S,
                                          BM)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # 0 off the tensor: da = db = 0 there
        s = tl.sigmoid(a)
        db = g * a * s
        da = g * b * s * (1.0 + a * (1.0 - s))  # d silu(a) / da = s (1 + a (1 - s))
        tl.store(da_ptr + offs_ab, da.to(da_ptr.dtype.element_ty), mask=mask)
        tl.store(db_ptr + offs_ab, db.to(db_ptr.dtype.element_ty), mask=mask)
        if HAS_BIAS:
            acc_a += da
            acc_b += db
    if HAS_BIAS:
        band = tl.program_id(0).to(tl.int64) * S
        tl.store(sa_ptr + band + cols, tl.sum(acc_a, axis=0), mask=cmask)
        tl.store(sb_ptr + band + cols, tl.sum(acc_b, axis=0), mask=cmask)
