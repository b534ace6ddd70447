"""Would explicit layouts make the scan's backward cheaper? A static study (no GPU).

Triton lays the backward's (channel, state) tile out ``[1, 4] x [8, 4]`` (4 channels x 4 states a
thread) and does the per-channel math (softplus, sigmoid, the dt products) on vectors of one
channel per lane, converting between the two through shared memory 13 times a step. Gluon
(Triton's explicit-layout dialect, ``triton.experimental.gluon``) can keep every per-channel
value in the tile's slice layout instead, or convert only the softplus results. This file holds
the backward's adjoint sweep (scan_bwd's second loop) written both ways in Gluon, compiles them
for sm_90 as a k=4 launch specialises them, and prints each loop's instructions a step beside
Triton's own adjoint loop (bench/sass.py):

    python bench/scan_gluon_study.py

Result (2026-11-30, Triton 3.8 on the CPU machine; 3.6 gives 619 / 455 against 429): the slice-
layout-only loop is 622 instructions a step (the per-channel softplus and sigmoid run 4 times,
once for each lane sharing a channel), the loop with 2 conversions 469, Triton's 429. The
conversions are cheap next to the math they save, so explicit layouts on Triton's tile are not
where the backward's time goes. Another decomposition is: one channel a lane with its 16 states in
registers (bench/scan_bwd_rows.py, the whole backward): its adjoint loop is 348 instructions a
step with 1 shuffle and 1 barrier (Triton 3.6), against 427 with 28 and 8. Gluon is
experimental: this study may need changes on another Triton.
"""

from __future__ import annotations

import sys
from pathlib import Path

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import sass as S  # noqa: E402
from bench.scan_bwd_rows import LN2, LOG2E, VARIANTS, _sigmoid, _softplus  # noqa: E402 (Gluon's, shared)
from bench.triton_scan import launch_spec  # noqa: E402
from starx.ops import _triton_scan_kernels as K  # noqa: E402


@gluon.jit
def adjoint(u_ptr, dt_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, work_ptr, du_ptr, ddt_ptr, dB_ptr, dA_ptr,
            L, DIM, su_b, su_l, su_d, sB_b, sB_l, sB_n, sdu_b, sdu_l, sdu_d, sdB_l, sw_p,
            N: gl.constexpr, BD: gl.constexpr, T: gl.constexpr, PER_LANE: gl.constexpr):  # fmt: skip
    """scan_bwd's adjoint sweep (gate, D and bias present, softplus), tile layout as Triton's.
    PER_LANE: softplus and sigmoid on one channel a lane, then 2 conversions; else all in the
    tile's slice layout."""
    L2: gl.constexpr = gl.BlockedLayout([1, 4], [8, 4], [1, 1], [1, 0])
    S1: gl.constexpr = gl.SliceLayout(1, L2)  # a channel's value, on the 4 lanes holding its states
    S0: gl.constexpr = gl.SliceLayout(0, L2)
    B1: gl.constexpr = gl.BlockedLayout([1], [32], [1], [0])  # one channel a lane
    b = gl.program_id(1).to(gl.int64)
    d0 = gl.program_id(0) * BD
    cd = d0 + gl.arange(0, BD, layout=S1)
    cd1 = d0 + gl.arange(0, BD, layout=B1)
    cn = gl.arange(0, N, layout=S0)
    tile = gl.expand_dims(gl.arange(0, BD, layout=S1), 1) * N + gl.expand_dims(cn, 0)
    A2 = gl.load(A_ptr + d0 * N + tile) * LOG2E
    Dv = gl.load(D_ptr + cd)
    bias = gl.load(bias_ptr + cd1) if PER_LANE else gl.load(bias_ptr + cd)
    w_h = work_ptr + (b * gl.num_programs(0) + gl.program_id(0)) * sw_p
    w_dy = w_h + T * BD * N
    carry = gl.zeros((BD, N), gl.float32, L2)
    dA_acc = gl.zeros((BD, N), gl.float32, L2)
    n_tiles = gl.cdiv(L, T)
    for cc in range(0, n_tiles):
        t0 = (n_tiles - 1 - cc) * T
        steps = gl.minimum(T, L - t0)
        last = t0 + steps - 1
        u_p, dt_p = u_ptr + b * su_b + last * su_l, dt_ptr + b * su_b + last * su_l
        B_p, C_p = B_ptr + b * sB_b + last * sB_l, C_ptr + b * sB_b + last * sB_l
        du_p, ddt_p = du_ptr + b * sdu_b + last * sdu_l, ddt_ptr + b * sdu_b + last * sdu_l
        dB_p = dB_ptr + b * sdu_b + last * sdB_l
        nu = gl.load(u_p + cd * su_d)
        ndt = gl.load(dt_p + cd1 * su_d) if PER_LANE else gl.load(dt_p + cd * su_d)
        nB, nC = gl.load(B_p + cn * sB_n), gl.load(C_p + cn * sB_n)
        ndy = gl.load(w_dy + (steps - 1) * BD + gl.arange(0, BD, layout=S1))
        nah = gl.load(w_h + (steps - 1) * BD * N + tile)
        for j in range(0, steps):
            u, raw, Bt, Ct, dy, ah = nu, ndt, nB, nC, ndy, nah
            u_p -= su_l
            dt_p -= su_l
            B_p -= sB_l
            C_p -= sB_l
            i = steps - 2 - j  # the step loaded ahead
            ok = i >= 0
            nu = gl.load(u_p + cd * su_d, mask=ok, other=0.0)
            if PER_LANE:
                ndt = gl.load(dt_p + cd1 * su_d, mask=ok, other=0.0)
            else:
                ndt = gl.load(dt_p + cd * su_d, mask=ok, other=0.0)
            nB = gl.load(B_p + cn * sB_n, mask=ok, other=0.0)
            nC = gl.load(C_p + cn * sB_n, mask=ok, other=0.0)
            ndy = gl.load(w_dy + i * BD + gl.arange(0, BD, layout=S1), mask=ok, other=0.0)
            nah = gl.load(w_h + i * BD * N + tile, mask=ok, other=0.0)
            u = u.to(gl.float32)
            raw = raw.to(gl.float32) + bias
            dt = _softplus(raw)
            sg = _sigmoid(raw)
            if PER_LANE:
                dt = gl.convert_layout(dt, S1)
                sg = gl.convert_layout(sg, S1)
            g = carry + gl.expand_dims(dy, 1) * gl.expand_dims(Ct.to(gl.float32), 0)
            q = g * ah
            gB = gl.sum(g * gl.expand_dims(Bt.to(gl.float32), 0), axis=1)
            ddt = (gB * u + gl.sum(q * A2, axis=1) * LN2) * sg
            dA_acc += q * gl.expand_dims(dt, 1)
            gl.store(du_p + cd * sdu_d, (gB * dt + Dv * dy).to(gl.bfloat16))
            gl.store(ddt_p + cd * sdu_d, ddt.to(gl.bfloat16))
            gl.store(dB_p + cn, gl.sum(g * gl.expand_dims(dt * u, 1), axis=0))
            carry = gl.exp2(gl.expand_dims(dt, 1) * A2) * g
            du_p -= sdu_l
            ddt_p -= sdu_l
            dB_p -= sdB_l
    gl.store(dA_ptr + (b * DIM + d0) * N + tile, dA_acc)


def main() -> None:
    T, BD = 8, 32  # STAR-B k=4 (channel-last), tiles of 8 steps, as starx.ops.triton_scan.TILES
    for per_lane in (False, True):
        types, values, consts = launch_spec(adjoint, "k4", BD, T)
        sass, regs, spills = S.compile_sass(adjoint, types, values, consts | {"PER_LANE": per_lane}, 1,
                                            maxnreg=168, gluon=True)
        (loop,) = S.inner_loops(sass)
        what = "softplus on one channel a lane, 2 conversions" if per_lane else "all in the tile's slice layout"
        print(f"Gluon adjoint loop, {what}: {sum(loop.values())} instructions a step, {regs} registers "
              f"({S.mix(loop)})")
    rows = VARIANTS["rows"]  # the whole backward, one channel a lane
    types, values, consts = launch_spec(rows.kernel, "k4", BD, T)
    sass, regs, spills = S.compile_sass(rows.kernel, types, values, consts | rows.constants, 1, maxnreg=168, gluon=True)
    loop = S.inner_loops(sass)[1]
    print(f"bench/scan_bwd_rows.py's adjoint loop, one channel a lane ([1, N] x [32, 1]): {sum(loop.values())} "
          f"instructions a step, {regs} registers, {spills} B spilled ({S.mix(loop)})")
    sass, regs, _ = S.compile_sass(K.scan_bwd, *launch_spec(K.scan_bwd, "k4", BD, T), 1, maxnreg=168)
    loop = S.inner_loops(sass)[1]
    print(f"Triton's adjoint loop (scan_bwd's second): {sum(loop.values())} instructions a step, {regs} registers "
          f"({S.mix(loop)})")


if __name__ == "__main__":
    main()
