"""The Gluon kernel of starx's scan backward on Hopper GPUs (starx.ops.triton_scan launches it).

The same computation, arguments, buffers and outputs as ``scan_bwd`` in
starx.ops._triton_scan_kernels (which stays the backward where Gluon is missing, and in Triton's
CPU interpreter, which does not run Gluon), with another decomposition, written in Gluon
(Triton's explicit-layout dialect, ``triton.experimental.gluon``, Triton >= 3.5):

* One channel a lane, its N states in that lane's registers (``[1, N] x [32, 1]``): the sums over
  states and the per-channel math (softplus, sigmoid) stay inside a thread, once a channel; only
  the sums over channels for dB and dC cross lanes (shared memory into a column layout, one
  shuffle), then go to the group's sums by relaxed atomics (or per-block partials: ATOMIC_SUMS,
  which also decides how dA, dD and dbias are summed over sequences).
* The tile's ``a_t h_{t-1}`` (T x 32 x N fp32, 16 KB) lives in shared memory, written by the
  recompute sweep and read back by the adjoint sweep, each lane only its own channel's: in scan_bwd
  that buffer goes through L1/L2 (about 4 GB a layer at k=4). dy stays in the global work buffer:
  with it in shared memory too a program needs 20 KB and 12 do not fit an SM's 228 KB, so k=4's
  1536 programs would need a second wave (SMEM_DY, measured slower at k=4, faster elsewhere).
* Each step's inputs are loaded one step ahead (STAGES >= 2), as in scan_bwd; starx clamps those
  loads into the tile rather than masking them (CLAMP), and the recompute sweep keeps dt_t and
  softplus' slope for the adjoint sweep (KEEP_DT), which then runs no softplus or sigmoid: ncu
  found the kernel near its issue limit (bench/README.md, session 14), and the two cut the scan's
  forward + backward 3-4% at every STAR shape (bench/results/scan_bwd_candidates_h200.txt).

On the H200 (2026-12-01, ``bench/results/triton_scan_smem_bwd_h200.jsonl``): scan forward +
backward 1.791 -> 1.508 ms at k=4, 1.43 -> 1.19 at k=1, 2.84 -> 2.45 at k=8, 4.17 -> 3.44 at the
four-direction fine-tune shape, against scan_bwd. bench/scan_bwd_rows.py times the variants the
constexprs select (KEEP_A, SMEM_WORK, SMEM_DY, STAGES), which lost.

Gluon is experimental: a Triton without it (or without this API) falls back to scan_bwd.
Triton's CPU interpreter does not run Gluon; CI runs this kernel's arithmetic on CPU through
tests/gluon_interpreted.py (layouts dropped), the GPU tests run it as compiled.
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

# the per-channel and per-state step arithmetic is layout-free: the Triton kernels' own helpers
# (a Gluon kernel may call @triton.jit functions of elementwise ops; bench/sass_fingerprint.py
# shows the instructions are the same as with Gluon copies of them)
from starx.ops._triton_scan_kernels import LN2, LOG2E, _decay, _put_sum, _sigmoid, _step_dt, _step_dt_slope


@gluon.jit
def _sum_channels(x, COL: gl.constexpr):
    """(BD, N) in one channel a lane -> (N,) summed over channels: through shared memory into
    COL (BD / 2 channels of one state a thread), adds in the thread, one shuffle."""
    return gl.sum(gl.convert_layout(x, COL), axis=0)


@gluon.jit
def _get(p, ok, CLAMP: gl.constexpr, other: gl.constexpr = 0.0):
    """A load of a step's value: unmasked where the caller clamped the step into the tile, else
    masked off outside it (the value is never used there)."""
    if CLAMP:
        return gl.load(p)
    return gl.load(p, mask=ok, other=other)


@gluon.jit
def _load_step(u_0, dt_0, B_0, C_0, z_0, r_0, t, cd, cn, su_l, su_d, sdt_l, sdt_d, sB_l, sB_n, sC_l, sC_n,
               sz_l, sz_d, ok, HAS_Z: gl.constexpr, HAS_RESET: gl.constexpr, CLAMP: gl.constexpr = False,
               HAS_DT: gl.constexpr = True, PACKED_BC: gl.constexpr = False, HAS_BC: gl.constexpr = True):  # fmt: skip
    """Step t's inputs as stored (see _get); without HAS_DT, u stands in for dt (not loaded), and
    without HAS_BC for B_t and C_t (loaded in their step instead: _load_bc)."""
    u = _get(u_0 + t * su_l + cd * su_d, ok, CLAMP)
    dt = _get(dt_0 + t * sdt_l + cd * sdt_d, ok, CLAMP) if HAS_DT else u
    if HAS_BC:
        Bt = _get(B_0 + t * sB_l + cn * sB_n, ok, CLAMP, 0 if PACKED_BC else 0.0)
        Ct = _get(C_0 + t * sC_l + cn * sC_n, ok, CLAMP, 0 if PACKED_BC else 0.0)
    else:
        Bt = u
        Ct = u
    z = _get(z_0 + t * sz_l + cd * sz_d, ok, CLAMP) if HAS_Z else u
    r = _get(r_0 + t, ok, CLAMP, 0) if HAS_RESET else 0
    return u, dt, Bt, Ct, z, r


@gluon.jit
def _load_bc(B_0, C_0, t, cn, sB_l, sB_n, sC_l, sC_n):
    """B_t and C_t as stored (every lane reads the same words: from L1 once a warp of the SM has)."""
    return gl.load(B_0 + t * sB_l + cn * sB_n), gl.load(C_0 + t * sC_l + cn * sC_n)


@gluon.jit
def _bc_f32(x, PACKED_BC: gl.constexpr, N: gl.constexpr, ST: gl.constexpr):
    """B_t or C_t as loaded -> (N,) fp32 in ST: from N / 2 words of two bf16 (state 2k in the low
    half of word k), one shift or mask a value, or converted as stored."""
    if PACKED_BC:
        lo = (x << 16).to(gl.float32, bitcast=True)
        hi = (x & -65536).to(gl.float32, bitcast=True)
        x = gl.convert_layout(gl.reshape(gl.join(lo, hi), [N]), ST)
    else:
        x = x.to(gl.float32)
    return x


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
    ATOMIC_SUMS: gl.constexpr = False, SMEM_WORK: gl.constexpr = True, SMEM_DY: gl.constexpr = False,
    KEEP_DT: gl.constexpr = False, CLAMP: gl.constexpr = False, PACKED_BC: gl.constexpr = False,
    CARRY_LAST: gl.constexpr = False, BC_IN_STEP: gl.constexpr = False, FAST_MATH: gl.constexpr = 0,
):  # fmt: skip
    """scan_bwd's two sweeps a tile, one channel a lane: BD = 32 x the warps of the launch (more
    warps a program: fewer per-block dB / dC partials for torch to sum). STAGES >= 2 loads
    each step's inputs one step ahead (more registers and instructions, the loads' latency off the
    step's path); UNROLL is accepted for the launcher and unused. ATOMIC_SUMS: dB / dC added into the
    group's sums, dA / dD / dbias into the totals over sequences (scan_bwd's).
    SMEM_WORK: the tile's a_t h_{t-1} kept in shared memory (16 KB a
    program, channel-fastest so a warp's accesses hit 32 banks) instead of the global work buffer;
    each lane reads back only what it wrote. SMEM_DY: dy there too (module docstring). KEEP_A: a_t
    kept in the work buffer too, not recomputed (slower: bench/scan_bwd_rows.py). KEEP_DT: the
    recompute sweep keeps dt_t and softplus' slope in the work buffer beside dy, so the adjoint
    sweep reads them (a step ahead) instead of reloading dt and running softplus and a sigmoid.
    CLAMP: the loads a step ahead read the tile's own last (first) step again past its end
    (start) instead of being masked off: no predicates, no zeroed registers. PACKED_BC: bf16 B and
    C read as words of two states (the launcher checks their alignment), carried packed and
    converted where used: a shift or a mask a value, not a byte move and a shift. CARRY_LAST (with
    CLAMP and the prefetch): the adjoint sweep starts from the recompute sweep's last loads a step
    ahead, which the clamp made the tile's last step, instead of loading that step again (dt's
    kept values and dy still come from the work buffer). BC_IN_STEP (with the prefetch): B_t and C_t
    loaded in their own step, not a step ahead: the same words for every lane, so after the SM's
    first warp an L1 hit, and no loop-carried copies of them (16 moves a recompute step). FAST_MATH:
    softplus and the gate's sigmoid as starx.ops._triton_scan_kernels._softplus_slope says."""
    PREFETCH: gl.constexpr = STAGES >= 2
    REUSE: gl.constexpr = CARRY_LAST and CLAMP and PREFETCH
    BC_AHEAD: gl.constexpr = not (BC_IN_STEP and PREFETCH)  # B_t, C_t among the loads a step ahead
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
    bias = gl.load(bias_ptr + cd).to(gl.float32) if HAS_BIAS else 0.0
    u_0 = u_ptr + b * su_b
    dt_0 = dt_ptr + b * sdt_b
    z_0 = z_ptr + b * sz_b
    g_0 = dout_ptr + b * sg_b
    B_0 = B_ptr + b * sB_b + grp * sB_g
    C_0 = C_ptr + b * sC_b + grp * sC_g
    cbc = cn  # B_t's and C_t's offsets a step
    if PACKED_BC:  # (sB_n = sC_n = 1 and every other stride and offset even: in words, halved)
        B_0 = B_ptr.to(gl.pointer_type(gl.int32), bitcast=True) + (b * sB_b + grp * sB_g) // 2
        C_0 = C_ptr.to(gl.pointer_type(gl.int32), bitcast=True) + (b * sC_b + grp * sC_g) // 2
        sB_l = sB_l // 2
        sC_l = sC_l // 2
        cbc = gl.arange(0, N // 2, layout=gl.SliceLayout(0, gl.BlockedLayout([1, N // 2], [32, 1], [W, 1], [1, 0])))
    du_0 = du_ptr + b * sdu_b
    ddt_0 = ddt_ptr + b * sdu_b
    dz_0 = dz_ptr + b * sdu_b
    bc_slice = grp if ATOMIC_SUMS else pid_d
    dB_0 = dB_ptr + b * sdB_b + bc_slice * N * L
    dC_0 = dC_ptr + b * sdB_b + bc_slice * N * L
    r_0 = reset_ptr + b * sr_b
    n_tiles = gl.cdiv(L, T)
    s_0 = state_ptr + b * n_tiles * DIM * N + d0 * N
    w_h = work_ptr + (b * gl.num_programs(0) + pid_d) * sw_p  # T x (BD, N): a_t h_{t-1}
    if SMEM_WORK:  # (a_t h_{t-1} in shared memory: the program's slice of work_ptr holds dy alone)
        w_dy = w_h
    else:
        w_dy = w_h + T * BD * N  # T x (BD,): dy_t
    w_dt = w_dy + T * BD  # with KEEP_DT, T x (BD,) each: dt_t and softplus' slope
    w_sl = w_dt + T * BD
    w_a = w_dy + T * BD * (3 if KEEP_DT else 1)  # with KEEP_A, T x (BD, N): a_t, read, not recomputed
    if SMEM_WORK:
        wh_s = gl.allocate_shared_memory(gl.float32, [T, BD, N], gl.SwizzledSharedLayout(1, 1, 1, [0, 1]))
        if SMEM_DY:
            wdy_s = gl.allocate_shared_memory(gl.float32, [T, BD], gl.SwizzledSharedLayout(1, 1, 1, [0]))
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
            nu, ndt, nB, nC, nz, nr = _load_step(u_0, dt_0, B_0, C_0, z_0, r_0, t0, cd, cbc, su_l, su_d, sdt_l,
                                                 sdt_d, sB_l, sB_n, sC_l, sC_n, sz_l, sz_d, ok, HAS_Z, HAS_RESET,
                                                 CLAMP, PACKED_BC=PACKED_BC, HAS_BC=BC_AHEAD)
            ng = _get(g_0 + t0 * sg_l + cd * sg_d, ok, CLAMP)
        for i in range(0, steps):  # forward through the tile: dz, dy, dC; keeps a_t h_{t-1} and dy
            t = t0 + i
            if PREFETCH:
                u, dt, Bt, Ct, z, r, dout = nu, ndt, nB, nC, nz, nr, ng
                ok = i + 1 < steps
                tn = t0 + gl.minimum(i + 1, steps - 1) if CLAMP else t + 1
                nu, ndt, nB, nC, nz, nr = _load_step(u_0, dt_0, B_0, C_0, z_0, r_0, tn, cd, cbc, su_l, su_d,
                                                     sdt_l, sdt_d, sB_l, sB_n, sC_l, sC_n, sz_l, sz_d, ok, HAS_Z,
                                                     HAS_RESET, CLAMP, PACKED_BC=PACKED_BC, HAS_BC=BC_AHEAD)
                ng = _get(g_0 + tn * sg_l + cd * sg_d, ok, CLAMP)
            else:
                u, dt, Bt, Ct, z, r = _load_step(u_0, dt_0, B_0, C_0, z_0, r_0, t, cd, cbc, su_l, su_d, sdt_l, sdt_d,
                                                 sB_l, sB_n, sC_l, sC_n, sz_l, sz_d, True, HAS_Z, HAS_RESET, PACKED_BC=PACKED_BC)
                dout = gl.load(g_0 + t * sg_l + cd * sg_d)
            if not BC_AHEAD:
                Bt, Ct = _load_bc(B_0, C_0, t, cbc, sB_l, sB_n, sC_l, sC_n)
            u = u.to(gl.float32)
            Bt = _bc_f32(Bt, PACKED_BC, N, ST)
            Ct = _bc_f32(Ct, PACKED_BC, N, ST)
            dout = dout.to(gl.float32)
            if KEEP_DT:
                dt, slope = _step_dt_slope(dt, bias, HAS_BIAS, SOFTPLUS, FAST_MATH)
                gl.store(w_dt + i * BD + lane, dt)
                if SOFTPLUS:
                    gl.store(w_sl + i * BD + lane, slope)
            else:
                _, dt = _step_dt(dt, bias, HAS_BIAS, SOFTPLUS, FAST_MATH)
            a = _decay(dt, A2, r, HAS_RESET)
            ah = a * h
            h = ah + gl.expand_dims(dt * u, 1) * gl.expand_dims(Bt, 0)
            if HAS_Z:
                z = z.to(gl.float32)
                y = gl.sum(h * gl.expand_dims(Ct, 0), axis=1)
                if HAS_D:
                    y += Dv * u
                sz = _sigmoid(z, FAST_MATH)
                gl.store(dz_0 + t * sdu_l + cd * sdu_d,
                         (dout * y * sz * (1.0 + z * (1.0 - sz))).to(dz_ptr.dtype.element_ty))
                dy = dout * z * sz
            else:
                dy = dout
            _put_sum(dC_0 + t * sdB_l + cn_col, _sum_channels(h * gl.expand_dims(dy, 1), COL), ATOMIC_SUMS)
            if SMEM_WORK:
                wh_s.index(i).store(ah)
            else:
                gl.store(w_h + i * BD * N + tile, ah)
            if SMEM_WORK and SMEM_DY:
                wdy_s.index(i).store(dy)
            else:
                gl.store(w_dy + i * BD + lane, dy)
            if KEEP_A:
                gl.store(w_a + i * BD * N + tile, a)
        last = t0 + steps - 1
        if PREFETCH:
            ok = steps > 0
            if not REUSE:  # (else nu, nB, nC, nr and ndt already hold step `last`: the clamped loads ahead)
                nu, ndt, nB, nC, _, nr = _load_step(u_0, dt_0, B_0, C_0, u_0, r_0, last, cd, cbc, su_l, su_d, sdt_l,
                                                    sdt_d, sB_l, sB_n, sC_l, sC_n, su_l, su_d, ok, False, HAS_RESET,
                                                    CLAMP, not KEEP_DT, PACKED_BC=PACKED_BC, HAS_BC=BC_AHEAD)
            if KEEP_DT:
                ndt = _get(w_dt + (steps - 1) * BD + lane, ok, CLAMP)
                nsl = _get(w_sl + (steps - 1) * BD + lane, ok, CLAMP) if SOFTPLUS else 1.0
            if not (SMEM_WORK and SMEM_DY):
                ndy = _get(w_dy + (steps - 1) * BD + lane, ok, CLAMP)
            if not SMEM_WORK:
                nah = _get(w_h + (steps - 1) * BD * N + tile, ok, CLAMP)
        for j in range(0, steps):  # backwards through it: the adjoint and the other gradients
            t = last - j
            if PREFETCH:
                u, raw, Bt, Ct, r = nu, ndt, nB, nC, nr
                if KEEP_DT:
                    slope = nsl
                # (shared memory is near: read in the step, not a step ahead)
                if SMEM_WORK and SMEM_DY:
                    dy = wdy_s.index(steps - 1 - j).load(CH)
                else:
                    dy = ndy
                if SMEM_WORK:
                    ah = wh_s.index(steps - 1 - j).load(ROW)
                else:
                    ah = nah
                i = steps - 2 - j  # the step loaded ahead
                ok = i >= 0
                if CLAMP:
                    i = gl.maximum(i, 0)
                tp = t0 + i if CLAMP else t - 1
                nu, ndt, nB, nC, _, nr = _load_step(u_0, dt_0, B_0, C_0, u_0, r_0, tp, cd, cbc, su_l, su_d,
                                                    sdt_l, sdt_d, sB_l, sB_n, sC_l, sC_n, su_l, su_d, ok, False,
                                                    HAS_RESET, CLAMP, not KEEP_DT, PACKED_BC=PACKED_BC, HAS_BC=BC_AHEAD)
                if KEEP_DT:
                    ndt = _get(w_dt + i * BD + lane, ok, CLAMP)
                    nsl = _get(w_sl + i * BD + lane, ok, CLAMP) if SOFTPLUS else 1.0
                if not (SMEM_WORK and SMEM_DY):
                    ndy = _get(w_dy + i * BD + lane, ok, CLAMP)
                if not SMEM_WORK:
                    nah = _get(w_h + i * BD * N + tile, ok, CLAMP)
            elif SMEM_WORK:
                u, raw, Bt, Ct, _, r = _load_step(u_0, dt_0, B_0, C_0, u_0, r_0, t, cd, cbc, su_l, su_d, sdt_l, sdt_d,
                                                  sB_l, sB_n, sC_l, sC_n, su_l, su_d, True, False, HAS_RESET, PACKED_BC=PACKED_BC)
                if SMEM_DY:
                    dy = wdy_s.index(steps - 1 - j).load(CH)
                else:
                    dy = gl.load(w_dy + (steps - 1 - j) * BD + lane)
                ah = wh_s.index(steps - 1 - j).load(ROW)
            else:
                u, raw, Bt, Ct, _, r = _load_step(u_0, dt_0, B_0, C_0, u_0, r_0, t, cd, cbc, su_l, su_d, sdt_l, sdt_d,
                                                  sB_l, sB_n, sC_l, sC_n, su_l, su_d, True, False, HAS_RESET, PACKED_BC=PACKED_BC)
                dy = gl.load(w_dy + (steps - 1 - j) * BD + lane)
                ah = gl.load(w_h + (steps - 1 - j) * BD * N + tile)
            if KEEP_DT and not PREFETCH:
                raw = gl.load(w_dt + (steps - 1 - j) * BD + lane)
                slope = gl.load(w_sl + (steps - 1 - j) * BD + lane) if SOFTPLUS else 1.0
            if not BC_AHEAD:
                Bt, Ct = _load_bc(B_0, C_0, t, cbc, sB_l, sB_n, sC_l, sC_n)
            u = u.to(gl.float32)
            Bt = _bc_f32(Bt, PACKED_BC, N, ST)
            Ct = _bc_f32(Ct, PACKED_BC, N, ST)
            if KEEP_DT:  # (kept by the recompute sweep: raw is dt_t itself)
                dt = raw
            else:
                raw, dt = _step_dt(raw, bias, HAS_BIAS, SOFTPLUS, FAST_MATH)
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
                ddt = ddt * (slope if KEEP_DT else _sigmoid(raw, FAST_MATH))
            if HAS_BIAS:
                dbias_acc += ddt
            gl.store(du_0 + t * sdu_l + cd * sdu_d, du.to(du_ptr.dtype.element_ty))
            gl.store(ddt_0 + t * sdu_l + cd * sdu_d, ddt.to(ddt_ptr.dtype.element_ty))
            _put_sum(dB_0 + t * sdB_l + cn_col, _sum_channels(g * gl.expand_dims(dt * u, 1), COL), ATOMIC_SUMS)
            if KEEP_A:
                a = gl.load(w_a + (steps - 1 - j) * BD * N + tile)
            else:
                a = _decay(dt, A2, r, HAS_RESET)
            carry = a * g
    row = 0 if ATOMIC_SUMS else b  # this sequence's partial, or the one total (as scan_bwd)
    _put_sum(dA_ptr + (row * DIM + d0) * N + tile, dA_acc, ATOMIC_SUMS)
    if HAS_D:
        _put_sum(dD_ptr + row * DIM + cd, dD_acc, ATOMIC_SUMS)
    if HAS_BIAS:
        _put_sum(dbias_ptr + row * DIM + cd, dbias_acc, ATOMIC_SUMS)

