"""A candidate backward for starx's Triton scan: one channel a lane (issue 12). Measured: bench/results/scan_bwd_rows_h200.md.

starx.ops._triton_scan_kernels.scan_bwd holds its (channels, states) tile as Triton lays it out,
``[1, 4] x [8, 4]``: 4 channels x 4 states a thread, each channel's 16 states spread over 4 lanes.
Every step then sums over states with shuffles (gB, q A, y), replicates the per-channel math on
the 4 lanes or converts it through shared memory, and its ncu profile stalls on those shuffles
(bench/README.md). This kernel is the same computation (the same arguments, buffers and outputs:
scan_backward launches either) written in Gluon, Triton's explicit-layout dialect, with another
decomposition: each lane owns one channel and keeps its N states in registers (``[1, N] x [32,
1]``). The sums over states and the per-channel math (softplus, sigmoid) stay inside a thread,
once a channel; only the sums over channels for dB and dC cross lanes, through shared memory into
a column layout (BD / 2 channels of one state a thread) and one shuffle.

Static model (``python bench/triton_scan.py --sass --shapes k4 --configs 32x1/32x1/8/1x1/168
--bwd-kernels triton rows``, Triton 3.6 for sm_90 on the CPU machine, 2026-11-30): 309 + 348
instructions a step in its two sweeps, 2 shuffles and 2 barriers, 152 registers and no spill (13
warps an SM), against scan_bwd's 306 + 427 with 48 shuffles, 13 barriers, 168 registers and 32
bytes spilled: 0.60 against 0.67 ms to issue at k=4. The instructions fall by a tenth; what may
fall more is the waiting, since scan_bwd's ncu profile stalls on the shuffles' dependants and
this kernel's per-step chain is a multiply-add and a multiply per state, with 16 states of
independent work in each thread. On the H200 (2026-11-30) the GPU said otherwise: every variant
passes the tests against the twin, but only rows_prefetch beats scan_bwd (backward 0.96x at k=4,
0.82x at k=8), and the instruction counts did not predict the order (bench/results/scan_bwd_rows_h200.md):

    python bench/triton_scan.py --shapes k4 k1 k8 ft4dir --layouts last --bwd-kernels triton rows rows_keep_a_f32bc ...
    python -m pytest -q -m gpu tests/test_triton_scan.py -k rows     # against the torch twin

VARIANTS (at the end): rows; rows_prefetch (each step's inputs loaded a step ahead, as scan_bwd
does: 334 + 391 instructions a step); rows_keep_a (a_t kept in the work buffer by the first sweep
and read by the second instead of 16 exps a step: 313 + 320, 24 special-function instructions a
step instead of 40); rows_f32bc and rows_keep_a_f32bc (B and C handed over in fp32, so that the
lanes do not each convert all 32 bf16 values of a step: 265 + 304 and 269 + 276).

Gluon is experimental (``triton.experimental.gluon``): this file may need changes on another Triton.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

LOG2E = gl.constexpr(1.4426950408889634)
LN2 = gl.constexpr(0.6931471805599453)


@gluon.jit
def _softplus(v):  # starx.ops._triton_scan_kernels._softplus, in Gluon (also bench/scan_gluon_study.py's)
    e = gl.exp2(v * LOG2E)
    w = 1.0 + e
    lp = gl.where(w == 1.0, e, gl.log2(w) * LN2 * gl.fdiv(e, w - 1.0))
    return gl.where(v <= 20.0, lp, v)


@gluon.jit
def _sigmoid(v):
    return gl.fdiv(1.0, 1.0 + gl.exp2(-v * LOG2E))


@gluon.jit
def _decay(dt, A2, r, HAS_RESET: gl.constexpr):
    """a_t = exp(dt_t A) for the lane's states, zero where the state resets at t."""
    a = gl.exp2(gl.expand_dims(dt, 1) * A2)
    if HAS_RESET:
        a = gl.where(r != 0, 0.0, a)
    return a


@gluon.jit
def _sum_channels(x, COL: gl.constexpr):
    """(BD, N) in one channel a lane -> (N,) summed over channels: through shared memory into
    COL (BD / 2 channels of one state a thread), adds in the thread, one shuffle."""
    return gl.sum(gl.convert_layout(x, COL), axis=0)



@gluon.jit
def _load_step(u_0, dt_0, B_0, C_0, z_0, r_0, t, cd, cn, su_l, su_d, sdt_l, sdt_d, sB_l, sB_n, sC_l, sC_n,
               sz_l, sz_d, ok, HAS_Z: gl.constexpr, HAS_RESET: gl.constexpr):  # fmt: skip
    """Step t's inputs as stored (masked off outside the tile: they are never used there)."""
    u = gl.load(u_0 + t * su_l + cd * su_d, mask=ok, other=0.0)
    dt = gl.load(dt_0 + t * sdt_l + cd * sdt_d, mask=ok, other=0.0)
    Bt = gl.load(B_0 + t * sB_l + cn * sB_n, mask=ok, other=0.0)
    Ct = gl.load(C_0 + t * sC_l + cn * sC_n, mask=ok, other=0.0)
    z = gl.load(z_0 + t * sz_l + cd * sz_d, mask=ok, other=0.0) if HAS_Z else u
    r = gl.load(r_0 + t, mask=ok, other=0) if HAS_RESET else 0
    return u, dt, Bt, Ct, z, r


@gluon.jit
def scan_bwd_rows(
    u_ptr, dt_ptr, z_ptr, dout_ptr, A_ptr, D_ptr, bias_ptr, B_ptr, C_ptr, reset_ptr, state_ptr, work_ptr,
    du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
    L, DPG, DIM,
    su_b, su_l, su_d, sdt_b, sdt_l, sdt_d, sz_b, sz_l, sz_d, sg_b, sg_l, sg_d,
    sB_b, sB_g, sB_l, sB_n, sC_b, sC_g, sC_l, sC_n, sr_b,
    sdu_b, sdu_l, sdu_d, sdB_b, sdB_l, sw_p,
    N: gl.constexpr, BD: gl.constexpr, T: gl.constexpr,
    HAS_D: gl.constexpr, HAS_Z: gl.constexpr, HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr,
    HAS_RESET: gl.constexpr, UNROLL: gl.constexpr, STAGES: gl.constexpr, KEEP_A: gl.constexpr = False,
):  # fmt: skip
    """scan_bwd's two sweeps a tile, one channel a lane: BD = 32 x the warps of the launch (more
    warps a program: fewer per-block dB / dC partials for torch to sum). STAGES >= 2 loads
    each step's inputs one step ahead (more registers and instructions, the loads' latency off the
    step's path); UNROLL is accepted for the launcher and unused."""
    PREFETCH: gl.constexpr = STAGES >= 2
    W: gl.constexpr = BD // 32  # warps
    ROW: gl.constexpr = gl.BlockedLayout([1, N], [32, 1], [W, 1], [1, 0])  # a channel's states in its lane
    CH: gl.constexpr = gl.SliceLayout(1, ROW)  # one channel a lane
    ST: gl.constexpr = gl.SliceLayout(0, ROW)  # every state in every lane (B_t, C_t)
    COL: gl.constexpr = gl.BlockedLayout([16, 1], [2, N], [W, 1], [0, 1])  # for sums over channels
    b = gl.program_id(1).to(gl.int64)
    pid_d = gl.program_id(0)
    d0 = pid_d * BD
    lane = gl.arange(0, BD, layout=CH)
    cd = d0 + lane
    cn = gl.arange(0, N, layout=ST)
    cn_col = gl.arange(0, N, layout=gl.SliceLayout(0, COL))
    grp = d0 // DPG
    tile = gl.expand_dims(lane, 1) * N + gl.expand_dims(cn, 0)
    A2 = gl.load(A_ptr + d0 * N + tile).to(gl.float32) * LOG2E
    if HAS_D:
        Dv = gl.load(D_ptr + cd).to(gl.float32)
    if HAS_BIAS:
        bias = gl.load(bias_ptr + cd).to(gl.float32)
    u_0 = u_ptr + b * su_b
    dt_0 = dt_ptr + b * sdt_b
    z_0 = z_ptr + b * sz_b
    g_0 = dout_ptr + b * sg_b
    B_0 = B_ptr + b * sB_b + grp * sB_g
    C_0 = C_ptr + b * sC_b + grp * sC_g
    du_0 = du_ptr + b * sdu_b
    ddt_0 = ddt_ptr + b * sdu_b
    dz_0 = dz_ptr + b * sdu_b
    dB_0 = dB_ptr + b * sdB_b + pid_d * N * L
    dC_0 = dC_ptr + b * sdB_b + pid_d * N * L
    r_0 = reset_ptr + b * sr_b
    n_tiles = gl.cdiv(L, T)
    s_0 = state_ptr + b * n_tiles * DIM * N + d0 * N
    w_h = work_ptr + (b * gl.num_programs(0) + pid_d) * sw_p  # T x (BD, N): a_t h_{t-1}
    w_dy = w_h + T * BD * N  # T x (BD,): dy_t
    w_a = w_dy + T * BD  # with KEEP_A, T x (BD, N): a_t, which the adjoint sweep then reads, not recomputes
    carry = gl.zeros((BD, N), gl.float32, ROW)  # a_{t+1} g_{t+1}
    dA_acc = gl.zeros((BD, N), gl.float32, ROW)
    dD_acc = gl.zeros((BD,), gl.float32, CH)
    dbias_acc = gl.zeros((BD,), gl.float32, CH)
    for cc in range(0, n_tiles):
        c = n_tiles - 1 - cc
        t0 = c * T
        if c > 0:
            h = gl.load(s_0 + (c - 1) * DIM * N + tile)
        else:
            h = gl.zeros((BD, N), gl.float32, ROW)
        steps = gl.minimum(T, L - t0)
        if PREFETCH:  # each step's inputs loaded one step ahead (loop-carried), as in scan_bwd
            ok = steps > 0
            nu, ndt, nB, nC, nz, nr = _load_step(u_0, dt_0, B_0, C_0, z_0, r_0, t0, cd, cn, su_l, su_d, sdt_l,
                                                 sdt_d, sB_l, sB_n, sC_l, sC_n, sz_l, sz_d, ok, HAS_Z, HAS_RESET)
            ng = gl.load(g_0 + t0 * sg_l + cd * sg_d, mask=ok, other=0.0)
        for i in range(0, steps):  # forward through the tile: dz, dy, dC; keeps a_t h_{t-1} and dy
            t = t0 + i
            if PREFETCH:
                u, dt, Bt, Ct, z, r, dout = nu, ndt, nB, nC, nz, nr, ng
                ok = i + 1 < steps
                nu, ndt, nB, nC, nz, nr = _load_step(u_0, dt_0, B_0, C_0, z_0, r_0, t + 1, cd, cn, su_l, su_d,
                                                     sdt_l, sdt_d, sB_l, sB_n, sC_l, sC_n, sz_l, sz_d, ok, HAS_Z,
                                                     HAS_RESET)
                ng = gl.load(g_0 + (t + 1) * sg_l + cd * sg_d, mask=ok, other=0.0)
            else:
                u, dt, Bt, Ct, z, r = _load_step(u_0, dt_0, B_0, C_0, z_0, r_0, t, cd, cn, su_l, su_d, sdt_l, sdt_d,
                                                 sB_l, sB_n, sC_l, sC_n, sz_l, sz_d, True, HAS_Z, HAS_RESET)
                dout = gl.load(g_0 + t * sg_l + cd * sg_d)
            u = u.to(gl.float32)
            dt = dt.to(gl.float32)
            Bt = Bt.to(gl.float32)
            Ct = Ct.to(gl.float32)
            dout = dout.to(gl.float32)
            if HAS_BIAS:
                dt += bias
            if SOFTPLUS:
                dt = _softplus(dt)
            a = _decay(dt, A2, r, HAS_RESET)
            ah = a * h
            h = ah + gl.expand_dims(dt * u, 1) * gl.expand_dims(Bt, 0)
            if HAS_Z:
                z = z.to(gl.float32)
                y = gl.sum(h * gl.expand_dims(Ct, 0), axis=1)
                if HAS_D:
                    y += Dv * u
                sz = _sigmoid(z)
                gl.store(dz_0 + t * sdu_l + cd * sdu_d,
                         (dout * y * sz * (1.0 + z * (1.0 - sz))).to(dz_ptr.dtype.element_ty))
                dy = dout * z * sz
            else:
                dy = dout
            gl.store(dC_0 + t * sdB_l + cn_col, _sum_channels(h * gl.expand_dims(dy, 1), COL))
            gl.store(w_h + i * BD * N + tile, ah)
            if KEEP_A:
                gl.store(w_a + i * BD * N + tile, a)
            gl.store(w_dy + i * BD + lane, dy)
        last = t0 + steps - 1
        if PREFETCH:
            ok = steps > 0
            nu, ndt, nB, nC, _, nr = _load_step(u_0, dt_0, B_0, C_0, u_0, r_0, last, cd, cn, su_l, su_d, sdt_l,
                                                sdt_d, sB_l, sB_n, sC_l, sC_n, su_l, su_d, ok, False, HAS_RESET)
            ndy = gl.load(w_dy + (steps - 1) * BD + lane, mask=ok, other=0.0)
            nah = gl.load(w_h + (steps - 1) * BD * N + tile, mask=ok, other=0.0)
        for j in range(0, steps):  # backwards through it: the adjoint and the other gradients
            t = last - j
            if PREFETCH:
                u, raw, Bt, Ct, r, dy, ah = nu, ndt, nB, nC, nr, ndy, nah
                i = steps - 2 - j  # the step loaded ahead
                ok = i >= 0
                nu, ndt, nB, nC, _, nr = _load_step(u_0, dt_0, B_0, C_0, u_0, r_0, t - 1, cd, cn, su_l, su_d, sdt_l,
                                                    sdt_d, sB_l, sB_n, sC_l, sC_n, su_l, su_d, ok, False, HAS_RESET)
                ndy = gl.load(w_dy + i * BD + lane, mask=ok, other=0.0)
                nah = gl.load(w_h + i * BD * N + tile, mask=ok, other=0.0)
            else:
                u, raw, Bt, Ct, _, r = _load_step(u_0, dt_0, B_0, C_0, u_0, r_0, t, cd, cn, su_l, su_d, sdt_l, sdt_d,
                                                  sB_l, sB_n, sC_l, sC_n, su_l, su_d, True, False, HAS_RESET)
                dy = gl.load(w_dy + (steps - 1 - j) * BD + lane)
                ah = gl.load(w_h + (steps - 1 - j) * BD * N + tile)
            u = u.to(gl.float32)
            raw = raw.to(gl.float32)
            Bt = Bt.to(gl.float32)
            Ct = Ct.to(gl.float32)
            if HAS_BIAS:
                raw += bias
            if SOFTPLUS:
                dt = _softplus(raw)
            else:
                dt = raw
            g = carry + gl.expand_dims(dy, 1) * gl.expand_dims(Ct, 0)  # dL/dh_t
            q = g * ah  # g_t a_t h_{t-1}: dL/d(dt_t A) per state
            gB = gl.sum(g * gl.expand_dims(Bt, 0), axis=1)
            ddt = gB * u + gl.sum(q * A2, axis=1) * LN2  # (A2 = A log2 e)
            du = gB * dt
            if HAS_D:
                du += Dv * dy
                dD_acc += dy * u
            dA_acc += q * gl.expand_dims(dt, 1)
            if SOFTPLUS:
                ddt = ddt * _sigmoid(raw)
            if HAS_BIAS:
                dbias_acc += ddt
            gl.store(du_0 + t * sdu_l + cd * sdu_d, du.to(du_ptr.dtype.element_ty))
            gl.store(ddt_0 + t * sdu_l + cd * sdu_d, ddt.to(ddt_ptr.dtype.element_ty))
            gl.store(dB_0 + t * sdB_l + cn_col, _sum_channels(g * gl.expand_dims(dt * u, 1), COL))
            if KEEP_A:
                a = gl.load(w_a + (steps - 1 - j) * BD * N + tile)
            else:
                a = _decay(dt, A2, r, HAS_RESET)
            carry = a * g
    gl.store(dA_ptr + (b * DIM + d0) * N + tile, dA_acc)
    if HAS_D:
        gl.store(dD_ptr + b * DIM + cd, dD_acc)
    if HAS_BIAS:
        gl.store(dbias_ptr + b * DIM + cd, dbias_acc)



class WithConstants:
    """A kernel launched with some constexprs fixed (what the launcher passes is overridden):
    ``WithConstants(k, STAGES=2)[grid](...)``. What starx.ops.triton_scan.scan_backward reads of
    it: work_states, the (BD, N) tiles a step of the work buffer it allocates (a_t h_{t-1}, and
    a_t with KEEP_A); fp32_bc, whether it passes B and C converted to fp32 (each lane reads every
    state of B_t and C_t, so in bf16 every lane would convert all 32 of them each step)."""

    def __init__(self, kernel, fp32_bc: bool = False, **constants):
        self.kernel, self.constants, self.fp32_bc = kernel, constants, fp32_bc
        self.work_states = 2 if constants.get("KEEP_A") else 1

    def __getitem__(self, grid):
        launch = self.kernel[grid]
        return lambda *args, **kwargs: launch(*args, **(kwargs | self.constants))


# the variants bench/triton_scan.py times (--bwd-kernels) and the GPU test checks
VARIANTS = {
    "rows": WithConstants(scan_bwd_rows, STAGES=1, KEEP_A=False),
    "rows_prefetch": WithConstants(scan_bwd_rows, STAGES=2, KEEP_A=False),  # inputs loaded a step ahead
    "rows_keep_a": WithConstants(scan_bwd_rows, STAGES=1, KEEP_A=True),  # a_t kept, not recomputed
    "rows_f32bc": WithConstants(scan_bwd_rows, fp32_bc=True, STAGES=1, KEEP_A=False),  # B, C read in fp32
    "rows_keep_a_f32bc": WithConstants(scan_bwd_rows, fp32_bc=True, STAGES=1, KEEP_A=True),
}

