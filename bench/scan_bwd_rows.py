"""The one-channel-a-lane scan backward's variants (issue 12): what bench/triton_scan.py --bwd-kernels
and the GPU tests launch. The kernel itself is starx's default backward on CUDA since 2026-12-01
(starx/ops/_gluon_scan_kernels.py: rows_smem_h below, then with KEEP_DT and CLAMP, then with
pack_bc and CARRY_LAST: starx.ops.triton_scan.default_backward); its constexprs select the variants
that lost. Measured: bench/results/scan_bwd_rows_h200.md (session 10) and
bench/results/triton_scan_smem_bwd_h200.jsonl (the shared-memory tile, 2026-12-01).

Session 10's notes on it follow.

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

from starx.ops._gluon_scan_kernels import scan_bwd_rows
from starx.ops.triton_scan import WithConstants

# the variants bench/triton_scan.py times (--bwd-kernels) and the GPU test checks
VARIANTS = {
    "rows": WithConstants(scan_bwd_rows, STAGES=1, KEEP_A=False, SMEM_WORK=False),
    "rows_prefetch": WithConstants(scan_bwd_rows, STAGES=2, KEEP_A=False, SMEM_WORK=False),  # inputs a step ahead
    "rows_keep_a": WithConstants(scan_bwd_rows, STAGES=1, KEEP_A=True, SMEM_WORK=False),  # a_t kept, not recomputed
    "rows_f32bc": WithConstants(scan_bwd_rows, fp32_bc=True, STAGES=1, KEEP_A=False, SMEM_WORK=False),  # fp32 B, C
    "rows_keep_a_f32bc": WithConstants(scan_bwd_rows, fp32_bc=True, STAGES=1, KEEP_A=True, SMEM_WORK=False),
    # the tile's a_t h_{t-1} and dy in shared memory (20 KB a program: 11 an SM), with and without the prefetch
    "rows_smem": WithConstants(scan_bwd_rows, STAGES=2, KEEP_A=False, SMEM_WORK=True, SMEM_DY=True),
    "rows_smem_noprefetch": WithConstants(scan_bwd_rows, STAGES=1, KEEP_A=False, SMEM_WORK=True, SMEM_DY=True),
    # a_t h_{t-1} alone there (19 KB: 12 an SM, k=4 in one wave): starx's default backward
    "rows_smem_h": WithConstants(scan_bwd_rows, STAGES=2, KEEP_A=False, SMEM_WORK=True, SMEM_DY=False),
    # session 14 (bench/results/scan_bwd_candidates_h200.txt): rows_smem_h with KEEP_DT and CLAMP (3-4% off the
    # backward at every shape; B and C in fp32 on top of it lost): starx's default until session 15, when reading bf16
    # B and C packed with the adjoint sweep starting from the recompute sweep's last loads (pack_bc, CARRY_LAST) took
    # another 3-4% off (bench/results/scan_bwd_packed_carry_h200.txt) and became the default; packing alone lost
    "rows_keep_dt_clamp": WithConstants(scan_bwd_rows, STAGES=2, SMEM_WORK=True, KEEP_DT=True, CLAMP=True),
    # session 15, CPU-checked only (no device time left): starx's default with B_t and C_t loaded in their own step
    # instead of a step ahead (the same words in every lane: L1 hits), dropping their loop-carried copies
    "rows_bc_in_step": WithConstants(scan_bwd_rows, pack_bc=True, STAGES=2, SMEM_WORK=True, KEEP_DT=True, CLAMP=True,
                                     CARRY_LAST=True, BC_IN_STEP=True),
}
