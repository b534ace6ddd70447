"""Triton kernels of the residual add + LayerNorm (starx/ops/layer_norm.py).

Rows are tokens, N channels (768 in STAR-B, so a row fits in one program's registers as a
BLOCK_N >= N wide vector). x (the branch output) and y (the normalised stream) are in the
activations' dtype; the stream s = x + residual and its gradients are fp32.

Forward, BM rows a program: s = x + r, stored; mean and rstd of s; y = (s - mean) rstd w + b.
Backward, a band of rows a program, BM at a time: mean and rstd recomputed from s (nothing else
is saved), then the LayerNorm's input gradient plus the stream's own incoming gradient:
    ds = rstd (g - xhat mean(xhat g) - mean(g)) + ds_in,   g = dy w,   xhat = (s - mean) rstd,
stored twice, in fp32 for the residual (the previous layer's stream) and in x's dtype for the
branch (the GEMM that produced x reads it). The weight and bias gradients (column sums of dy xhat
and dy) are added up elementwise in registers over the band and stored once as the program's row
of an fp32 partials tensor (torch adds the rows up: deterministic).

With HAS_Y2 a second LayerNorm of the same stream, y2 = xhat w2 + b2 (STAR's decoder taps, read
from the stream the next block normalises anyway): the statistics are shared, and since the
LayerNorm backward is linear in g, its gradient enters as g = dy w + dy2 w2, with its own weight
and bias sums beside the first's.
"""

import triton
import triton.language as tl


@triton.jit
def _rows(row0, M, N, BM: tl.constexpr, BLOCK_N: tl.constexpr):
    """(offsets, mask, column mask) of BM rows from row0 by BLOCK_N columns."""
    rows = row0 + tl.arange(0, BM)
    cols = tl.arange(0, BLOCK_N)
    cm = cols < N
    mask = (rows < M)[:, None] & cm[None, :]
    return rows.to(tl.int64)[:, None] * N + cols[None, :], mask, cm


@triton.jit
def _normalised(s, mask, N, eps):
    """((s - mean) rstd with zeros outside the mask, rstd (BM, 1)) of fp32 rows s (zeros outside the mask)."""
    mean = tl.sum(s, axis=1)[:, None] / N
    d = tl.where(mask, s - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1)[:, None] / N + eps)
    return d * rstd, rstd


@triton.jit
def _affine(xhat, w_ptr, b_ptr, cm, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr):
    """xhat w + b (fp32) for the BLOCK_N columns (cm: those inside N)."""
    cols = tl.arange(0, BLOCK_N)
    y = xhat * tl.load(w_ptr + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        y += tl.load(b_ptr + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    return y


@triton.jit
def add_ln_fwd(x_ptr, r_ptr, w_ptr, b_ptr, w2_ptr, b2_ptr, s_ptr, y_ptr, y2_ptr, M, N, eps,
               HAS_RES: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Y2: tl.constexpr, BM: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """s = x + r (fp32), y = LN(s) w + b in y's dtype (and with HAS_Y2 y2 = LN(s) w2 + b2), rows
    [program_id(0) * BM, + BM)."""
    offs, mask, cm = _rows(tl.program_id(0) * BM, M, N, BM, BLOCK_N)
    s = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        s += tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(s_ptr + offs, s, mask=mask)
    xhat, _ = _normalised(s, mask, N, eps)
    y = _affine(xhat, w_ptr, b_ptr, cm, HAS_BIAS, BLOCK_N)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
    if HAS_Y2:
        y2 = _affine(xhat, w2_ptr, b2_ptr, cm, HAS_BIAS, BLOCK_N)
        tl.store(y2_ptr + offs, y2.to(y2_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_loads(s_ptr, dy_ptr, dy2_ptr, dsin_ptr, row0, limit, N, HAS_DS_IN: tl.constexpr, HAS_Y2: tl.constexpr,
               BM: tl.constexpr, BLOCK_N: tl.constexpr):
    """(offsets, mask, s, dy, dy2, incoming stream gradient) of the BM rows from row0 (fp32; rows
    from ``limit`` on masked off: no memory traffic). Without HAS_Y2 / HAS_DS_IN those are dy / s
    again, unused."""
    offs, mask, _ = _rows(row0, limit, N, BM, BLOCK_N)
    s = tl.load(s_ptr + offs, mask=mask, other=0.0)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy2 = tl.load(dy2_ptr + offs, mask=mask, other=0.0).to(tl.float32) if HAS_Y2 else dy
    ds_in = tl.load(dsin_ptr + offs, mask=mask, other=0.0) if HAS_DS_IN else s
    return offs, mask, s, dy, dy2, ds_in


@triton.jit
def add_ln_bwd(dy_ptr, dy2_ptr, dsin_ptr, s_ptr, w_ptr, w2_ptr, dx_ptr, dr_ptr, part_ptr, M, N, eps,
               HAS_DS_IN: tl.constexpr, HAS_RES: tl.constexpr, HAS_Y2: tl.constexpr, BM: tl.constexpr,
               BLOCK_N: tl.constexpr, ROWS: tl.constexpr, PREFETCH: tl.constexpr):
    """Over rows [program_id(0) * ROWS, + ROWS): dx (dx's dtype) and, with HAS_RES, dr (fp32) = ds;
    the band's sums of dy xhat and dy (then, with HAS_Y2, of dy2 xhat and dy2) into row
    program_id(0) of part (fp32, (programs, 2 or 4, N)).

    Every load of a step is issued before its reductions wait, so their latencies overlap; with
    PREFETCH, the next step's loads are issued before this step's arithmetic too (two steps of
    rows in flight a program, for the registers of one more)."""
    cols = tl.arange(0, BLOCK_N)
    w = tl.load(w_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    w2 = tl.load(w2_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :] if HAS_Y2 else w
    dw = tl.zeros((BM, BLOCK_N), tl.float32)
    db = tl.zeros((BM, BLOCK_N), tl.float32)
    dw2 = tl.zeros((BM, BLOCK_N), tl.float32)
    db2 = tl.zeros((BM, BLOCK_N), tl.float32)
    row0 = tl.program_id(0) * ROWS
    if PREFETCH:
        band_end = tl.minimum(M, row0 + ROWS)
        offs_n, mask_n, s_n, dy_n, dy2_n, dsin_n = _bwd_loads(s_ptr, dy_ptr, dy2_ptr, dsin_ptr, row0, band_end, N,
                                                              HAS_DS_IN, HAS_Y2, BM, BLOCK_N)
    for r in tl.range(0, ROWS, BM):
        if PREFETCH:
            offs, mask, s, dy, dy2, ds_in = offs_n, mask_n, s_n, dy_n, dy2_n, dsin_n
            offs_n, mask_n, s_n, dy_n, dy2_n, dsin_n = _bwd_loads(s_ptr, dy_ptr, dy2_ptr, dsin_ptr, row0 + r + BM,
                                                                  band_end, N, HAS_DS_IN, HAS_Y2, BM, BLOCK_N)
        else:
            offs, mask, s, dy, dy2, ds_in = _bwd_loads(s_ptr, dy_ptr, dy2_ptr, dsin_ptr, row0 + r, M, N, HAS_DS_IN,
                                                       HAS_Y2, BM, BLOCK_N)
        xhat, rstd = _normalised(s, mask, N, eps)
        g = dy * w
        if HAS_Y2:
            g += dy2 * w2
        ds = rstd * (g - xhat * (tl.sum(xhat * g, axis=1)[:, None] / N) - tl.sum(g, axis=1)[:, None] / N)
        if HAS_DS_IN:
            ds += ds_in
        tl.store(dx_ptr + offs, ds.to(dx_ptr.dtype.element_ty), mask=mask)
        if HAS_RES:
            tl.store(dr_ptr + offs, ds, mask=mask)
        dw += dy * xhat
        db += dy
        if HAS_Y2:
            dw2 += dy2 * xhat
            db2 += dy2
    p = part_ptr + tl.program_id(0).to(tl.int64) * (4 if HAS_Y2 else 2) * N + cols
    tl.store(p, tl.sum(dw, axis=0), mask=cols < N)
    tl.store(p + N, tl.sum(db, axis=0), mask=cols < N)
    if HAS_Y2:
        tl.store(p + 2 * N, tl.sum(dw2, axis=0), mask=cols < N)
        tl.store(p + 3 * N, tl.sum(db2, axis=0), mask=cols < N)
