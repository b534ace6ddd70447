"""The Triton kernels of starx's causal depthwise conv (starx.ops.triton_conv launches them).

Imported lazily, as the scan's kernels. Width 4 (narrower weights come zero-padded on the left).

One program: BD channels of one sequence over a chunk of TC time steps, walked one step at a
time with the last inputs (the forward's x window, the backward's x and dpre windows) in
registers: each step is a few multiply-adds a channel, and each x / dout row is loaded once
(channels contiguous: one coalesced load a row). A 2-D (time x channel) tile per program
needs the rows shifted in time instead, which Triton can only do through memory or shuffles
(tl.gather) or by recomputing dpre at each shift: 2-3x the instructions a byte, compiled for
sm_90, where this walk issues about as many as the bytes take (bench/README.md).

Each group of U steps has its inputs loaded while the group before it computes (a loop that
stores cannot have its loads hoisted by the compiler), so U rows a program are in flight.
The chunk's first rows need the three before it (the forward's window) and the backward's
last rows the dpre of the three after it: recomputed at each chunk's edge (3 of TC steps).
"""

import triton
import triton.language as tl

from starx.ops._triton_scan_kernels import _sigmoid


@triton.jit
def _x_row(x_p, seq_p, s, L, sx_l, cm, HAS_SEQ: tl.constexpr):
    """x[s] as stored and s's segment id (zero and -1 outside 0 <= s < L)."""
    inside = (s >= 0) & (s < L)
    xs = tl.load(x_p + s * sx_l, mask=cm & inside, other=0.0)
    return xs, (tl.load(seq_p + s, mask=inside, other=-1) if HAS_SEQ else s)


@triton.jit
def _weights(w_ptr, bias_ptr, c, cm, BD: tl.constexpr, HAS_BIAS: tl.constexpr):
    w0 = tl.load(w_ptr + c * 4, mask=cm, other=0.0).to(tl.float32)
    w1 = tl.load(w_ptr + c * 4 + 1, mask=cm, other=0.0).to(tl.float32)
    w2 = tl.load(w_ptr + c * 4 + 2, mask=cm, other=0.0).to(tl.float32)
    w3 = tl.load(w_ptr + c * 4 + 3, mask=cm, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + c, mask=cm, other=0.0).to(tl.float32) if HAS_BIAS else tl.zeros((BD,), tl.float32)
    return w0, w1, w2, w3, bias


@triton.jit
def conv_fwd(
    x_ptr, w_ptr, bias_ptr, seq_ptr, out_ptr, L, DIM, sx_b, sx_l, sx_d, ss_b,
    TC: tl.constexpr, BD: tl.constexpr, U: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, SILU: tl.constexpr,
):  # fmt: skip
    """out[t] = act(bias + w0 x[t-3] + w1 x[t-2] + w2 x[t-1] + w3 x[t]) over this program's
    steps [t0, t1), x from earlier segments than t zeroed. out (b, L, DIM) contiguous; weight
    (DIM, 4) contiguous; seq (b or 1, L) int32 segment ids, row stride ss_b."""
    b = tl.program_id(2).to(tl.int64)
    c = tl.program_id(1) * BD + tl.arange(0, BD)
    cm = c < DIM
    t0 = tl.program_id(0) * TC
    t1 = tl.minimum(t0 + TC, L)
    x_p = x_ptr + b * sx_b + c * sx_d
    seq_p = seq_ptr + b * ss_b
    o_p = out_ptr + b * L * DIM + c
    w0, w1, w2, w3, bias = _weights(w_ptr, bias_ptr, c, cm, BD, HAS_BIAS)
    xa, sa = _x_row(x_p, seq_p, t0 - 3, L, sx_l, cm, HAS_SEQ)  # the window x[t-3], x[t-2], x[t-1]
    xb, sb = _x_row(x_p, seq_p, t0 - 2, L, sx_l, cm, HAS_SEQ)
    xc, sc = _x_row(x_p, seq_p, t0 - 1, L, sx_l, cm, HAS_SEQ)
    xa, xb, xc = xa.to(tl.float32), xb.to(tl.float32), xc.to(tl.float32)
    q = ()
    for u in tl.static_range(U):
        q = q + (_x_row(x_p, seq_p, t0 + u, L, sx_l, cm, HAS_SEQ),)
    for i in range(0, tl.cdiv(t1 - t0, U)):
        tg = t0 + i * U
        nq = ()  # the next group's rows, loaded while this group computes
        for u in tl.static_range(U):
            nq = nq + (_x_row(x_p, seq_p, tg + U + u, L, sx_l, cm, HAS_SEQ),)
        for u in tl.static_range(U):
            xn, sn = q[u]
            xn = xn.to(tl.float32)
            xam, xbm, xcm = xa, xb, xc
            if HAS_SEQ:
                xam, xbm, xcm = tl.where(sa == sn, xa, 0.0), tl.where(sb == sn, xb, 0.0), tl.where(sc == sn, xc, 0.0)
            pre = bias + w0 * xam + w1 * xbm + w2 * xcm + w3 * xn
            if SILU:
                pre = pre * _sigmoid(pre)
            tl.store(o_p + (tg + u) * DIM, pre.to(out_ptr.dtype.element_ty), mask=cm & (tg + u < t1))
            xa, xb, xc = xb, xc, xn
            sa, sb, sc = sb, sc, sn
        q = nq


@triton.jit
def _bwd_rows(x_p, do_p, do2_p, dz_p, seq_p, t, L, sx_l, sdo_l, sdo2_l, sdz_l, cm, U: tl.constexpr,
              HAS_SEQ: tl.constexpr, HAS_DOUT2: tl.constexpr, HAS_GATE: tl.constexpr):
    """The inputs of the backward's steps s = t, t-1, ..., t-U+1: (x[s-3] as stored, segment of
    s-3, dout[s] (as stored, or plus dout2[s] in fp32 with HAS_DOUT2), and with HAS_GATE the
    gate's gradient dz[s]) each."""
    q = ()
    for u in tl.static_range(U):
        xn, sn = _x_row(x_p, seq_p, t - u - 3, L, sx_l, cm, HAS_SEQ)
        row = cm & (t - u >= 0)
        dout = tl.load(do_p + (t - u) * sdo_l, mask=row, other=0.0)
        if HAS_DOUT2:
            dout = dout.to(tl.float32) + tl.load(do2_p + (t - u) * sdo2_l, mask=row, other=0.0).to(tl.float32)
        if HAS_GATE:
            q = q + ((xn, sn, dout, tl.load(dz_p + (t - u) * sdz_l, mask=row, other=0.0)),)
        else:
            q = q + ((xn, sn, dout),)
    return q


@triton.jit
def _put_sum(p, v, m, ATOMIC: tl.constexpr):
    """This program's weight / bias gradient sums: added into the total (relaxed: read only after
    the kernel) or stored as its partial."""
    if ATOMIC:
        tl.atomic_add(p, v, mask=m, sem="relaxed")
    else:
        tl.store(p, v, mask=m)


@triton.jit
def conv_bwd(
    x_ptr, w_ptr, bias_ptr, seq_ptr, dout_ptr, dout2_ptr, dz_ptr, dx_ptr, dw_ptr, db_ptr, L, DIM, P,
    sx_b, sx_l, sx_d, ss_b, sdo_b, sdo_l, sdo_d, sdo2_b, sdo2_l, sdo2_d, sdz_b, sdz_l, sdz_d,
    TC: tl.constexpr, BD: tl.constexpr, U: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, SILU: tl.constexpr, ATOMIC_SUMS: tl.constexpr = False,
    HAS_DOUT2: tl.constexpr = False, HAS_GATE: tl.constexpr = False,
):  # fmt: skip
    """Walks this program's steps [t0, t1) backwards, from t1 + 2 (the steps after t1 only give
    the dpre that dx[t1-3 .. t1-1] reads). Each step:
    pre[t] recomputed as in the forward, dpre[t] = dout[t] act'(pre[t]),
    dx[t] = w3 dpre[t] + w2 dpre[t+1] + w1 dpre[t+2] + w0 dpre[t+3] (dpre of later segments
    zeroed), dw[k] += dpre[t] x[t-3+k] (as the forward read it), dbias += dpre[t].
    dx (b, L, DIM) contiguous; dw (4, P, DIM) and db (P, DIM): this program's fp32 partial sums,
    P = b * chunks, summed by torch; with ATOMIC_SUMS (4, 1, DIM) and (1, DIM) zero-filled totals
    every program adds into. With HAS_DOUT2 the output's gradient is dout + dout2 (an output read
    by two ops: the sum is taken here, not in a kernel of its own). With HAS_GATE, dx is (b, L, 2 DIM): the Mamba mixer's d(xz), dx in
    the first DIM channels and the gate's gradient dz copied into the last DIM (where torch would
    concatenate the two in a kernel of its own)."""
    pid_l = tl.program_id(0)
    b = tl.program_id(2).to(tl.int64)
    c = tl.program_id(1) * BD + tl.arange(0, BD)
    cm = c < DIM
    t0 = pid_l * TC
    t1 = tl.minimum(t0 + TC, L)
    start = tl.minimum(t1 + 2, L - 1)  # dpre is zero past the end
    x_p = x_ptr + b * sx_b + c * sx_d
    do_p = dout_ptr + b * sdo_b + c * sdo_d
    do2_p = dout2_ptr + b * sdo2_b + c * sdo2_d
    dz_p = dz_ptr + b * sdz_b + c * sdz_d
    seq_p = seq_ptr + b * ss_b
    SDX: tl.constexpr = 2 if HAS_GATE else 1  # dx's row: DIM channels, or 2 DIM with the gate's
    dx_p = dx_ptr + b * L * DIM * SDX + c
    w0, w1, w2, w3, bias = _weights(w_ptr, bias_ptr, c, cm, BD, HAS_BIAS)
    xa, sa = _x_row(x_p, seq_p, start - 2, L, sx_l, cm, HAS_SEQ)  # the window x[t-2], x[t-1], x[t]
    xb, sb = _x_row(x_p, seq_p, start - 1, L, sx_l, cm, HAS_SEQ)
    xc, sc = _x_row(x_p, seq_p, start, L, sx_l, cm, HAS_SEQ)
    xa, xb, xc = xa.to(tl.float32), xb.to(tl.float32), xc.to(tl.float32)
    s1, s2, s3 = sc, sc, sc  # and dpre[t+1], dpre[t+2], dpre[t+3] with their segments
    zero = tl.zeros((BD,), tl.float32)
    d1, d2, d3 = zero, zero, zero
    g0, g1, g2, g3, gb = zero, zero, zero, zero, zero
    q = _bwd_rows(x_p, do_p, do2_p, dz_p, seq_p, start, L, sx_l, sdo_l, sdo2_l, sdz_l, cm, U, HAS_SEQ, HAS_DOUT2,
                  HAS_GATE)
    for i in range(0, tl.cdiv(start - t0 + 1, U)):
        tg = start - i * U
        nq = _bwd_rows(x_p, do_p, do2_p, dz_p, seq_p, tg - U, L, sx_l, sdo_l, sdo2_l, sdz_l, cm, U, HAS_SEQ,
                       HAS_DOUT2, HAS_GATE)
        for u in tl.static_range(U):
            t = tg - u
            if HAS_GATE:
                xn, sn, dout, dz = q[u]
            else:
                xn, sn, dout = q[u]
            xn = xn.to(tl.float32)
            xm, xam, xbm = xn, xa, xb  # x[t-3], x[t-2], x[t-1] as step t's output read them
            if HAS_SEQ:
                xm, xam, xbm = tl.where(sn == sc, xn, 0.0), tl.where(sa == sc, xa, 0.0), tl.where(sb == sc, xb, 0.0)
            dp = dout.to(tl.float32)
            if SILU:
                pre = bias + w0 * xm + w1 * xam + w2 * xbm + w3 * xc
                sig = _sigmoid(pre)
                dp = dp * sig * (1.0 + pre * (1.0 - sig))
            e1, e2, e3 = d1, d2, d3
            if HAS_SEQ:
                e1, e2, e3 = tl.where(s1 == sc, d1, 0.0), tl.where(s2 == sc, d2, 0.0), tl.where(s3 == sc, d3, 0.0)
            own = (t >= t0) & (t < t1)
            tl.store(dx_p + t * (DIM * SDX), (w3 * dp + w2 * e1 + w1 * e2 + w0 * e3).to(dx_ptr.dtype.element_ty),
                     mask=cm & own)
            if HAS_GATE:
                tl.store(dx_p + t * (DIM * SDX) + DIM, dz.to(dx_ptr.dtype.element_ty), mask=cm & own)
            dpo = tl.where(own, dp, 0.0)  # each step's weight gradient counted by one program
            g0 += dpo * xm
            g1 += dpo * xam
            g2 += dpo * xbm
            g3 += dpo * xc
            gb += dpo
            d1, d2, d3 = dp, d1, d2
            s1, s2, s3 = sc, s1, s2
            xa, xb, xc = xn, xa, xb
            sa, sb, sc = sn, sa, sb
        q = nq
    prog = 0 if ATOMIC_SUMS else b * tl.num_programs(0) + pid_l
    _put_sum(dw_ptr + prog * DIM + c, g0, cm, ATOMIC_SUMS)
    _put_sum(dw_ptr + (P + prog) * DIM + c, g1, cm, ATOMIC_SUMS)
    _put_sum(dw_ptr + (2 * P + prog) * DIM + c, g2, cm, ATOMIC_SUMS)
    _put_sum(dw_ptr + (3 * P + prog) * DIM + c, g3, cm, ATOMIC_SUMS)
    if HAS_BIAS:
        _put_sum(db_ptr + prog * DIM + c, gb, cm, ATOMIC_SUMS)
