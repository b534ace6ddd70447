"""A candidate forward for starx's Triton scan, one channel a lane, in Gluon (issue 12): lost.

scan_fwd (starx.ops._triton_scan_kernels) holds its (channels, states) tile as Triton lays it out
(4 channels x 4 states a thread): y's sum over states takes shuffles and the per-channel math
(softplus, gate) goes through 3 shared-memory layout conversions a step. This kernel gives each
lane one channel's 16 states, as the backward starx launches does (starx/ops/_gluon_scan_kernels.py),
so none of that remains; every lane then reads and converts all of B_t and C_t.

On the H200 (2026-12-01 03:31 UTC, `bash bench/speed_session.sh fwd_rows`,
bench/results/triton_scan_fwd_rows_h200.jsonl; its GPU tests against the twin passed,
bench/results/gpu_tests_fwd_rows_h200.txt) it is slower at every shape: forward 0.391 -> 0.469 ms
at k=4, 0.262 -> 0.309 at k=1, 0.710 -> 0.844 at k=8, 0.751 -> 0.872 at the fine-tune shape. The
static model had it at 292 instructions a step against scan_fwd's 274 (no shuffles or barriers,
but 32 bf16 conversions a lane). Kept to be timed again (``--fwd-kernels rows``), not launched.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from starx.ops._gluon_scan_kernels import LOG2E, _decay, _load_step, _sigmoid, _softplus


@gluon.jit
def scan_fwd_rows(
    u_ptr, dt_ptr, z_ptr, out_ptr, A_ptr, D_ptr, bias_ptr, B_ptr, C_ptr, reset_ptr, state_ptr,
    L, DPG, DIM,
    su_b, su_l, su_d, sdt_b, sdt_l, sdt_d, sz_b, sz_l, sz_d, so_b, so_l, so_d,
    sB_b, sB_g, sB_l, sB_n, sC_b, sC_g, sC_l, sC_n, sr_b,
    N: gl.constexpr, BD: gl.constexpr, T: gl.constexpr,
    HAS_D: gl.constexpr, HAS_Z: gl.constexpr, HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr,
    HAS_RESET: gl.constexpr, SAVE_STATES: gl.constexpr, UNROLL: gl.constexpr, STAGES: gl.constexpr,
):  # fmt: skip
    """scan_fwd (starx.ops._triton_scan_kernels) one channel a lane: the channel's N states in
    its lane's registers, so y's sum over states and the per-channel math (softplus, gate) run
    inside the thread, once a channel, with no shuffle or layout conversion; every lane reads the
    step's B_t and C_t. BD = 32 x the warps of the launch; UNROLL and STAGES are accepted for the
    launcher and unused (each step's inputs are loaded one step ahead)."""
    W: gl.constexpr = BD // 32
    ROW: gl.constexpr = gl.BlockedLayout([1, N], [32, 1], [W, 1], [1, 0])
    CH: gl.constexpr = gl.SliceLayout(1, ROW)
    ST: gl.constexpr = gl.SliceLayout(0, ROW)
    b = gl.program_id(1).to(gl.int64)
    d0 = gl.program_id(0) * BD
    lane = gl.arange(0, BD, layout=CH)
    cd = d0 + lane
    cn = gl.arange(0, N, layout=ST)
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
    o_0 = out_ptr + b * so_b
    B_0 = B_ptr + b * sB_b + grp * sB_g
    C_0 = C_ptr + b * sC_b + grp * sC_g
    r_0 = reset_ptr + b * sr_b
    s_p = state_ptr + b * gl.cdiv(L, T) * DIM * N + d0 * N
    h = gl.zeros((BD, N), gl.float32, ROW)
    nu, ndt, nB, nC, nz, nr = _load_step(u_0, dt_0, B_0, C_0, z_0, r_0, 0, cd, cn, su_l, su_d, sdt_l, sdt_d,
                                         sB_l, sB_n, sC_l, sC_n, sz_l, sz_d, L > 0, HAS_Z, HAS_RESET)
    for t in range(0, L):
        u, dt, Bt, Ct, z, r = nu, ndt, nB, nC, nz, nr
        nu, ndt, nB, nC, nz, nr = _load_step(u_0, dt_0, B_0, C_0, z_0, r_0, t + 1, cd, cn, su_l, su_d, sdt_l,
                                             sdt_d, sB_l, sB_n, sC_l, sC_n, sz_l, sz_d, t + 1 < L, HAS_Z, HAS_RESET)
        u = u.to(gl.float32)
        dt = dt.to(gl.float32)
        if HAS_BIAS:
            dt += bias
        if SOFTPLUS:
            dt = _softplus(dt)
        a = _decay(dt, A2, r, HAS_RESET)
        h = a * h + gl.expand_dims(dt * u, 1) * gl.expand_dims(Bt.to(gl.float32), 0)
        y = gl.sum(h * gl.expand_dims(Ct.to(gl.float32), 0), axis=1)
        if HAS_D:
            y += Dv * u
        if HAS_Z:
            z = z.to(gl.float32)
            y = y * z * _sigmoid(z)
        gl.store(o_0 + t * so_l + cd * so_d, y.to(out_ptr.dtype.element_ty))
        if SAVE_STATES:
            if t % T == T - 1:
                gl.store(s_p + tile, h)
                s_p += DIM * N
