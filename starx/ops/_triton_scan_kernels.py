"""The Triton kernels of starx's selective scan (starx.ops.triton_scan launches them).

Imported lazily: importing Triton costs about a second, which the CLI never pays.

Every tensor is addressed through its strides, so the kernels read the channel-first (b, d, l)
layout of mamba-ssm and the channel-last (b, l, d) layout of the projections alike; in the
channel-last one each time step's channels are one coalesced load.
"""

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _log1p(y):
    # log(1 + y), accurate for small y (Goldberg); libdevice's log1p is not in the interpreter
    w = 1.0 + y
    return tl.where(w == 1.0, y, tl.log(w) * y / (w - 1.0))


@triton.jit
def _softplus(v):
    return tl.where(v <= 20.0, _log1p(tl.exp(v)), v)


@triton.jit
def scan_fwd(
    u_ptr, dt_ptr, z_ptr, out_ptr, A_ptr, D_ptr, bias_ptr, B_ptr, C_ptr, reset_ptr, state_ptr,
    L, DPG, DIM,
    su_b, su_l, su_d, sdt_b, sdt_l, sdt_d, sz_b, sz_l, sz_d, so_b, so_l, so_d,
    sB_b, sB_g, sB_l, sB_n, sC_b, sC_g, sC_l, sC_n, sr_b,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_RESET: tl.constexpr, SAVE_STATES: tl.constexpr, UNROLL: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    """One program: BD channels of sequence b, all L steps, the (BD, N) state in registers.
    With SAVE_STATES, the state after every T-th step goes to state_ptr (b, tiles, d, n), fp32."""
    b = tl.program_id(1).to(tl.int64)
    d0 = tl.program_id(0) * BD
    offs_d = d0 + tl.arange(0, BD)
    offs_n = tl.arange(0, N)
    grp = d0 // DPG
    A2 = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :]).to(tl.float32) * LOG2E
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d).to(tl.float32)
    u_p = u_ptr + b * su_b + offs_d * su_d
    dt_p = dt_ptr + b * sdt_b + offs_d * sdt_d
    z_p = z_ptr + b * sz_b + offs_d * sz_d
    o_p = out_ptr + b * so_b + offs_d * so_d
    B_p = B_ptr + b * sB_b + grp * sB_g + offs_n * sB_n
    C_p = C_ptr + b * sC_b + grp * sC_g + offs_n * sC_n
    s_p = state_ptr + (b * tl.cdiv(L, T) * DIM + offs_d[:, None]) * N + offs_n[None, :]
    h = tl.zeros((BD, N), tl.float32)
    for t in tl.range(0, L, loop_unroll_factor=UNROLL, num_stages=STAGES):
        u = tl.load(u_p + t * su_l).to(tl.float32)
        dt = tl.load(dt_p + t * sdt_l).to(tl.float32)
        if HAS_BIAS:
            dt += bias
        if SOFTPLUS:
            dt = _softplus(dt)
        Bt = tl.load(B_p + t * sB_l).to(tl.float32)
        Ct = tl.load(C_p + t * sC_l).to(tl.float32)
        a = tl.exp2(dt[:, None] * A2)
        if HAS_RESET:
            a = tl.where(tl.load(reset_ptr + b * sr_b + t) != 0, 0.0, a)
        h = a * h + (dt * u)[:, None] * Bt[None, :]
        y = tl.sum(h * Ct[None, :], axis=1)
        if HAS_D:
            y += Dv * u
        if HAS_Z:
            z = tl.load(z_p + t * sz_l).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(o_p + t * so_l, y.to(out_ptr.dtype.element_ty))
        if SAVE_STATES:
            if t % T == T - 1:
                tl.store(s_p + (t // T) * DIM * N, h)


@triton.jit
def scan_bwd(
    u_ptr, dt_ptr, z_ptr, dout_ptr, A_ptr, D_ptr, bias_ptr, B_ptr, C_ptr, reset_ptr, state_ptr, work_ptr,
    du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
    L, DPG, DIM,
    su_b, su_l, su_d, sdt_b, sdt_l, sdt_d, sz_b, sz_l, sz_d, sg_b, sg_l, sg_d,
    sB_b, sB_g, sB_l, sB_n, sC_b, sC_g, sC_l, sC_n, sr_b,
    sdu_b, sdu_l, sdu_d, sdB_b, sdB_l,
    N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_RESET: tl.constexpr, UNROLL: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    """Walks the tiles of T steps from the last: recomputes the tile's states from the state the
    forward saved before it (into this program's slice of work_ptr, which stays in cache), then
    runs the adjoint g_t = C_t dy_t + a_{t+1} g_{t+1} backwards through the tile.

    du, ddt, dz share one layout (strides sdu_*); dB, dC: fp32 (b, d/BD, l, n) per-block partial
    sums (strides sdB_b, sdB_l; summed over blocks by torch); dA (b, d, n), dD and dbias (b, d):
    fp32 partial sums over this sequence."""
    b = tl.program_id(1).to(tl.int64)
    pid_d = tl.program_id(0)
    d0 = pid_d * BD
    offs_d = d0 + tl.arange(0, BD)
    offs_n = tl.arange(0, N)
    grp = d0 // DPG
    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :]).to(tl.float32)
    A2 = A * LOG2E
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d).to(tl.float32)
    u_p = u_ptr + b * su_b + offs_d * su_d
    dt_p = dt_ptr + b * sdt_b + offs_d * sdt_d
    z_p = z_ptr + b * sz_b + offs_d * sz_d
    g_p = dout_ptr + b * sg_b + offs_d * sg_d
    B_p = B_ptr + b * sB_b + grp * sB_g + offs_n * sB_n
    C_p = C_ptr + b * sC_b + grp * sC_g + offs_n * sC_n
    du_p = du_ptr + b * sdu_b + offs_d * sdu_d
    ddt_p = ddt_ptr + b * sdu_b + offs_d * sdu_d
    dz_p = dz_ptr + b * sdu_b + offs_d * sdu_d
    dB_p = dB_ptr + b * sdB_b + pid_d * N * L + offs_n
    dC_p = dC_ptr + b * sdB_b + pid_d * N * L + offs_n
    n_tiles = tl.cdiv(L, T)
    s_p = state_ptr + (b * n_tiles * DIM + offs_d[:, None]) * N + offs_n[None, :]
    w_p = work_ptr + ((b * tl.num_programs(0) + pid_d) * T * BD + offs_d[:, None] - d0) * N + offs_n[None, :]
    carry = tl.zeros((BD, N), tl.float32)  # a_{t+1} g_{t+1}
    dA_acc = tl.zeros((BD, N), tl.float32)
    dD_acc = tl.zeros((BD,), tl.float32)
    dbias_acc = tl.zeros((BD,), tl.float32)
    for cc in range(0, n_tiles):
        c = n_tiles - 1 - cc
        t0 = c * T
        if c > 0:
            h = tl.load(s_p + (c - 1) * DIM * N)
        else:
            h = tl.zeros((BD, N), tl.float32)
        steps = tl.minimum(T, L - t0)
        for i in tl.range(0, steps, loop_unroll_factor=UNROLL, num_stages=STAGES):  # the tile's states h_t, into the work buffer
            t = t0 + i
            u = tl.load(u_p + t * su_l).to(tl.float32)
            dt = tl.load(dt_p + t * sdt_l).to(tl.float32)
            if HAS_BIAS:
                dt += bias
            if SOFTPLUS:
                dt = _softplus(dt)
            Bt = tl.load(B_p + t * sB_l).to(tl.float32)
            a = tl.exp2(dt[:, None] * A2)
            if HAS_RESET:
                a = tl.where(tl.load(reset_ptr + b * sr_b + t) != 0, 0.0, a)
            h = a * h + (dt * u)[:, None] * Bt[None, :]
            tl.store(w_p + i * BD * N, h)
        for j in tl.range(0, steps, loop_unroll_factor=UNROLL, num_stages=STAGES):  # the adjoint, backwards through the tile
            i = steps - 1 - j
            t = t0 + i
            u = tl.load(u_p + t * su_l).to(tl.float32)
            raw = tl.load(dt_p + t * sdt_l).to(tl.float32)
            if HAS_BIAS:
                raw += bias
            if SOFTPLUS:
                dt = _softplus(raw)
            else:
                dt = raw
            Bt = tl.load(B_p + t * sB_l).to(tl.float32)
            Ct = tl.load(C_p + t * sC_l).to(tl.float32)
            dout = tl.load(g_p + t * sg_l).to(tl.float32)
            ht = tl.load(w_p + i * BD * N)
            if HAS_Z:
                z = tl.load(z_p + t * sz_l).to(tl.float32)
                y = tl.sum(ht * Ct[None, :], axis=1)
                if HAS_D:
                    y += Dv * u
                sz = tl.sigmoid(z)
                tl.store(dz_p + t * sdu_l, (dout * y * sz * (1.0 + z * (1.0 - sz))).to(dz_ptr.dtype.element_ty))
                dy = dout * z * sz
            else:
                dy = dout
            g = carry + dy[:, None] * Ct[None, :]  # dL/dh_t
            x = (dt * u)[:, None] * Bt[None, :]
            q = g * (ht - x)  # g_t a_t h_{t-1}
            gB = tl.sum(g * Bt[None, :], axis=1)
            ddt = gB * u + tl.sum(q * A, axis=1)
            du = gB * dt
            if HAS_D:
                du += Dv * dy
                dD_acc += dy * u
            dA_acc += q * dt[:, None]
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(raw)
            if HAS_BIAS:
                dbias_acc += ddt
            tl.store(du_p + t * sdu_l, du.to(du_ptr.dtype.element_ty))
            tl.store(ddt_p + t * sdu_l, ddt.to(ddt_ptr.dtype.element_ty))
            tl.store(dB_p + t * sdB_l, tl.sum(g * (dt * u)[:, None], axis=0))
            tl.store(dC_p + t * sdB_l, tl.sum(ht * dy[:, None], axis=0))
            a = tl.exp2(dt[:, None] * A2)
            if HAS_RESET:
                a = tl.where(tl.load(reset_ptr + b * sr_b + t) != 0, 0.0, a)
            carry = a * g
    tl.store(dA_ptr + (b * DIM + offs_d[:, None]) * N + offs_n[None, :], dA_acc)
    if HAS_D:
        tl.store(dD_ptr + b * DIM + offs_d, dD_acc)
    if HAS_BIAS:
        tl.store(dbias_ptr + b * DIM + offs_d, dbias_acc)
