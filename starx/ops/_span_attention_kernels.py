"""The Triton kernels of starx's span attention (starx.ops.span_attention launches them).

Flash attention (online softmax, nothing of size queries x keys stored) where query row i reads
the keys of one contiguous span [lo_i, hi_i), the spans' ends non-decreasing down the rows: the
decoder's block-causal mask. A tile of BM rows therefore reads the keys from its first row's lo
to its last row's hi and no others (about half of them at every STAR k), and masks element by
element only in the tiles that straddle an edge of a span.

Scores are kept in the base-2 domain (q k^T scale log2 e), so the softmax is exp2; the forward
saves each row's log-sum-exp in that domain for the backward, which recomputes the probabilities
a tile at a time (FlashAttention-2's split: one kernel for dq, which also computes each row's
delta = rowsum(o * do), then one for dk and dv).
"""

import triton
import triton.language as tl


@triton.jit
def _row_spans(span_ptr, rows, NQ):
    """(lo, hi) of each row; rows past the end get the empty span (0, 0)."""
    inside = rows < NQ
    lo = tl.load(span_ptr + rows * 2, mask=inside, other=0)
    hi = tl.load(span_ptr + rows * 2 + 1, mask=inside, other=0)
    return lo, hi


@triton.jit
def _load_rows(ptr, rows, n_rows, stride, d, D: tl.constexpr):
    """(len(rows), D) rows of a (rows, D) matrix with unit column stride; zeros past n_rows."""
    return tl.load(ptr + rows[:, None] * stride + d[None, :], mask=(rows < n_rows)[:, None] & (d < D)[None, :],
                   other=0.0)


@triton.jit
def _key_runs(lo, hi, rows, NQ, NK, BN: tl.constexpr):
    """The key blocks a tile of rows reads, as three runs [a, b) [b, c) [c, end) of block starts:
    the middle one inside every row's span (no masking), the outer ones straddling an edge."""
    valid = rows < NQ
    first = tl.min(tl.where(valid, lo, NK))  # the tile's keys: [first, end)
    end = tl.max(hi)
    a = (first // BN) * BN
    lo_max = tl.max(tl.where(valid, lo, 0))
    hi_min = tl.min(tl.where(valid, hi, NK))
    b = tl.minimum(tl.maximum(((lo_max + BN - 1) // BN) * BN, a), end)
    c = tl.minimum(tl.maximum((hi_min // BN) * BN, b), end)
    return a, b, c, end


@triton.jit
def _fwd_block(q, k_base, v_base, n0, sk_n, sv_n, NK, lo, hi, m_i, l_i, acc, scale_log2e, d,
               D: tl.constexpr, BN: tl.constexpr, MASKED: tl.constexpr):
    """One key block of the online softmax: (m_i, l_i, acc) updated."""
    cols = n0 + tl.arange(0, BN)
    k = _load_rows(k_base, cols, NK, sk_n, d, D)
    v = _load_rows(v_base, cols, NK, sv_n, d, D)
    s = tl.dot(q, tl.trans(k)) * scale_log2e
    if MASKED:
        inside = (cols[None, :] >= lo[:, None]) & (cols[None, :] < hi[:, None])
        s = tl.where(inside, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # (a row with no key yet: nothing to rescale)
    p = tl.exp2(s - m_ref[:, None])
    alpha = tl.exp2(m_i - m_ref)
    return m_new, l_i * alpha + tl.sum(p, 1), acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)


@triton.jit
def _dq_block(q, do, k_base, v_base, n0, sk_n, sv_n, NK, lo, hi, lse, delta, dq, scale_log2e, d,
              D: tl.constexpr, BN: tl.constexpr, MASKED: tl.constexpr):
    cols = n0 + tl.arange(0, BN)
    k = _load_rows(k_base, cols, NK, sk_n, d, D)
    v = _load_rows(v_base, cols, NK, sv_n, d, D)
    p = tl.exp2(tl.dot(q, tl.trans(k)) * scale_log2e - lse[:, None])
    if MASKED:
        p = tl.where((cols[None, :] >= lo[:, None]) & (cols[None, :] < hi[:, None]), p, 0.0)
    ds = p * (tl.dot(do, tl.trans(v)) - delta[:, None])
    return dq + tl.dot(ds.to(k.dtype), k)


@triton.jit
def _dkdv_block(k, v, cols, q_base, do_base, m0, sq_m, sdo_m, span_ptr, lse_ptr, delta_ptr, NQ, dk, dv,
                scale_log2e, d, D: tl.constexpr, BM: tl.constexpr, MASKED: tl.constexpr):
    rows = m0 + tl.arange(0, BM)
    q = _load_rows(q_base, rows, NQ, sq_m, d, D)
    do = _load_rows(do_base, rows, NQ, sdo_m, d, D)
    lse = tl.load(lse_ptr + rows, mask=rows < NQ, other=0.0)
    delta = tl.load(delta_ptr + rows, mask=rows < NQ, other=0.0)
    p_t = tl.exp2(tl.dot(k, tl.trans(q)) * scale_log2e - lse[None, :])  # (BN, BM): transposed
    if MASKED:
        lo, hi = _row_spans(span_ptr, rows, NQ)
        p_t = tl.where((cols[:, None] >= lo[None, :]) & (cols[:, None] < hi[None, :]), p_t, 0.0)
    dv += tl.dot(p_t.to(do.dtype), do)
    ds_t = p_t * (tl.dot(v, tl.trans(do)) - delta[None, :])
    return dk + tl.dot(ds_t.to(q.dtype), q), dv


@triton.jit
def _query_tile(span_ptr, q_ptr, sq_b, sq_h, sq_m, H, NQ, BM: tl.constexpr, D: tl.constexpr):
    """What a program of BM query rows of one (sequence, head) starts from: (bh, b, h, rows, d,
    lo, hi, q) for grid (query tiles, sequences x heads)."""
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    rows = pid_m * BM + tl.arange(0, BM)
    d = tl.arange(0, D)
    lo, hi = _row_spans(span_ptr, rows, NQ)
    return bh, b, h, rows, d, lo, hi, _load_rows(q_ptr + b * sq_b + h * sq_h, rows, NQ, sq_m, d, D)


@triton.jit
def span_attn_fwd(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, span_ptr,
                  sq_b, sq_h, sq_m, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, so_b, so_h, so_m,
                  H, NQ, NK, scale_log2e,
                  D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """One program: BM query rows of one (sequence, head). o in q's dtype; lse (b, h, NQ) fp32, base 2."""
    bh, b, h, rows, d, lo, hi, q = _query_tile(span_ptr, q_ptr, sq_b, sq_h, sq_m, H, NQ, BM, D)
    k_base, v_base = k_ptr + b * sk_b + h * sk_h, v_ptr + b * sv_b + h * sv_h

    m_i = tl.full((BM,), float("-inf"), tl.float32)
    l_i = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, D), tl.float32)
    a, b_, c, end = _key_runs(lo, hi, rows, NQ, NK, BN)
    for n0 in range(a, b_, BN):
        m_i, l_i, acc = _fwd_block(q, k_base, v_base, n0, sk_n, sv_n, NK, lo, hi, m_i, l_i, acc, scale_log2e, d, D, BN, True)
    for n0 in range(b_, c, BN):
        m_i, l_i, acc = _fwd_block(q, k_base, v_base, n0, sk_n, sv_n, NK, lo, hi, m_i, l_i, acc, scale_log2e, d, D, BN, False)
    for n0 in range(c, end, BN):
        m_i, l_i, acc = _fwd_block(q, k_base, v_base, n0, sk_n, sv_n, NK, lo, hi, m_i, l_i, acc, scale_log2e, d, D, BN, True)
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # (an empty span reads zeros)
    o = acc / l_safe[:, None]
    out = (rows < NQ)[:, None] & (d < D)[None, :]
    tl.store(o_ptr + b * so_b + h * so_h + rows[:, None] * so_m + d[None, :], o.to(o_ptr.dtype.element_ty), mask=out)
    tl.store(lse_ptr + bh * NQ + rows, m_i + tl.log2(l_safe), mask=rows < NQ)


@triton.jit
def span_attn_bwd_dq(q_ptr, k_ptr, v_ptr, o_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, span_ptr,
                     sq_b, sq_h, sq_m, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, so_b, so_h, so_m,
                     sdo_b, sdo_h, sdo_m, sdq_b, sdq_h, sdq_m,
                     H, NQ, NK, scale_log2e, scale,
                     D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """One program: dq of BM query rows of one (sequence, head); stores their delta for span_attn_bwd_dkdv."""
    bh, b, h, rows, d, lo, hi, q = _query_tile(span_ptr, q_ptr, sq_b, sq_h, sq_m, H, NQ, BM, D)
    do = _load_rows(do_ptr + b * sdo_b + h * sdo_h, rows, NQ, sdo_m, d, D)
    o = _load_rows(o_ptr + b * so_b + h * so_h, rows, NQ, so_m, d, D)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(delta_ptr + bh * NQ + rows, delta, mask=rows < NQ)
    lse = tl.load(lse_ptr + bh * NQ + rows, mask=rows < NQ, other=0.0)
    k_base, v_base = k_ptr + b * sk_b + h * sk_h, v_ptr + b * sv_b + h * sv_h

    dq = tl.zeros((BM, D), tl.float32)
    a, b_, c, end = _key_runs(lo, hi, rows, NQ, NK, BN)
    for n0 in range(a, b_, BN):
        dq = _dq_block(q, do, k_base, v_base, n0, sk_n, sv_n, NK, lo, hi, lse, delta, dq, scale_log2e, d, D, BN, True)
    for n0 in range(b_, c, BN):
        dq = _dq_block(q, do, k_base, v_base, n0, sk_n, sv_n, NK, lo, hi, lse, delta, dq, scale_log2e, d, D, BN, False)
    for n0 in range(c, end, BN):
        dq = _dq_block(q, do, k_base, v_base, n0, sk_n, sv_n, NK, lo, hi, lse, delta, dq, scale_log2e, d, D, BN, True)
    out = (rows < NQ)[:, None] & (d < D)[None, :]
    tl.store(dq_ptr + b * sdq_b + h * sdq_h + rows[:, None] * sdq_m + d[None, :],
             (dq * scale).to(dq_ptr.dtype.element_ty), mask=out)


@triton.jit
def span_attn_bwd_dkdv(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, span_ptr,
                       sq_b, sq_h, sq_m, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, sdo_b, sdo_h, sdo_m,
                       sdk_b, sdk_h, sdk_n, sdv_b, sdv_h, sdv_n,
                       H, NQ, NK, scale_log2e, scale,
                       D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, TILES_Q: tl.constexpr):
    """One program: dk and dv of BN keys of one (sequence, head), summed over the query tiles
    whose spans reach them (the others are skipped whole). TILES_Q: a power of two >= the query tiles."""
    pid_n, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    cols = pid_n * BN + tl.arange(0, BN)
    d = tl.arange(0, D)
    n0 = pid_n * BN
    k = _load_rows(k_ptr + b * sk_b + h * sk_h, cols, NK, sk_n, d, D)
    v = _load_rows(v_ptr + b * sv_b + h * sv_h, cols, NK, sv_n, d, D)
    q_base, do_base = q_ptr + b * sq_b + h * sq_h, do_ptr + b * sdo_b + h * sdo_h

    # the query tiles whose spans reach these keys, from each tile's first and last spans (the ends
    # are non-decreasing): a contiguous run of tiles, walked without a branch (which would stop
    # the loop's loads from being pipelined)
    tiles = tl.arange(0, TILES_Q)
    starts = tiles * BM
    first_lo = tl.load(span_ptr + starts * 2, mask=starts < NQ, other=NK)
    last_hi = tl.load(span_ptr + (tl.minimum(starts + BM, NQ) - 1) * 2 + 1, mask=starts < NQ, other=0)
    first_hi = tl.load(span_ptr + starts * 2 + 1, mask=starts < NQ, other=0)
    last_lo = tl.load(span_ptr + (tl.minimum(starts + BM, NQ) - 1) * 2, mask=starts < NQ, other=NK)
    reach = (last_hi > n0) & (first_lo < n0 + BN)
    m_first = tl.min(tl.where(reach, starts, NQ))
    end = tl.max(tl.where(reach, starts + BM, 0))
    # and among them those whose every row reads every one of these keys (no masking)
    full = reach & (first_hi >= n0 + BN) & (last_lo <= n0) & (starts + BM <= NQ)
    b_ = tl.minimum(tl.maximum(tl.min(tl.where(full, starts, NQ)), m_first), end)
    c = tl.minimum(tl.maximum(tl.max(tl.where(full, starts + BM, 0)), b_), end)

    dk = tl.zeros((BN, D), tl.float32)
    dv = tl.zeros((BN, D), tl.float32)
    lse_row, delta_row = lse_ptr + bh * NQ, delta_ptr + bh * NQ
    for m0 in range(m_first, b_, BM):
        dk, dv = _dkdv_block(k, v, cols, q_base, do_base, m0, sq_m, sdo_m, span_ptr, lse_row, delta_row, NQ, dk, dv,
                             scale_log2e, d, D, BM, True)
    for m0 in range(b_, c, BM):
        dk, dv = _dkdv_block(k, v, cols, q_base, do_base, m0, sq_m, sdo_m, span_ptr, lse_row, delta_row, NQ, dk, dv,
                             scale_log2e, d, D, BM, False)
    for m0 in range(c, end, BM):
        dk, dv = _dkdv_block(k, v, cols, q_base, do_base, m0, sq_m, sdo_m, span_ptr, lse_row, delta_row, NQ, dk, dv,
                             scale_log2e, d, D, BM, True)
    out = (cols < NK)[:, None] & (d < D)[None, :]
    tl.store(dk_ptr + b * sdk_b + h * sdk_h + cols[:, None] * sdk_n + d[None, :],
             (dk * scale).to(dk_ptr.dtype.element_ty), mask=out)
    tl.store(dv_ptr + b * sdv_b + h * sdv_h + cols[:, None] * sdv_n + d[None, :],
             dv.to(dv_ptr.dtype.element_ty), mask=out)
