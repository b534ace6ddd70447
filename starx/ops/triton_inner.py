"""The Mamba mixer's inner computation on the Triton kernels as one autograd node.

conv (+ SiLU) -> x_proj -> dt_proj -> selective scan with the gate, channel-last: xz (b, l, 2 d)
-> y (b, l, d), ``mamba_inner_channel_last`` without out_proj (which stays a plain linear).

Why one node: composed of separate autograd ops, the backward spends two kernels a layer only
moving bytes. The conv's output feeds both the scan and x_proj, so autograd adds their two
gradients in a kernel of its own; and x and the gate z are xz's two halves, so autograd
concatenates dx and dz into d(xz) in another. Here the conv's backward kernel takes both
gradients and writes d(xz) whole (``triton_conv_bwd`` with ``dout2`` and ``gate_grad``). At
STAR-B k=4 on the H200 the two kernels took 0.54 + 0.66 ms of an 80 ms step (bench/README.md,
session 18's profile).

The backward of the two projections is written out (four GEMMs, as autograd runs them), in the
activations' dtype: the weights are cast once in the forward, as autocast would.

The gate y * silu(z) runs inside the scan's kernels. Applied after the scan instead, in pointwise
ops of its own, the scan's backward has no y to recompute for dz (static sm_90 model at k=4: 570
-> 485 instructions a step; bench/results/triton_scan_static_gate_session21.txt), at the cost of
saving the ungated y and one more pass over y, z and the gradients each way. Built so in session
21, whole k=4 steps on an H200 read 1.004x this node's (six alternating rounds, 5 ahead), but the
compiled fp32 mixer with resets returned zeros in its GPU test, so it was removed
(bench/results/gpu_tests_session22.txt, ab_step_h200_session22.jsonl).
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from starx.ops.triton_conv import conv_arguments, triton_conv_bwd, triton_conv_fwd
from starx.ops.triton_scan import scan_arguments, scan_gradients, triton_scan_fwd


def _scan_views(xc: Tensor, dt: Tensor, x_dbl: Tensor, z: Tensor, dt_rank: int, n: int) -> tuple:
    """The scan's (u, delta, B, C, z) as (b, d, l) / (b, 1, n, l) views of the channel-last tensors."""
    B = x_dbl[..., dt_rank : dt_rank + n].transpose(1, 2).unsqueeze(1)
    C = x_dbl[..., dt_rank + n :].transpose(1, 2).unsqueeze(1)
    return xc.transpose(1, 2), dt.transpose(1, 2), B, C, z.transpose(1, 2)


def _rows(t: Tensor) -> Tensor:
    """(b, l, c) with channels contiguous -> (b l, c), a view."""
    return t.reshape(-1, t.shape[-1])


class _MambaInner(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz, conv_w, conv_b, x_proj_w, dt_proj_w, A, D, delta_bias, seq_idx, reset, softplus, save):
        d, n, r = xz.shape[-1] // 2, A.shape[1], dt_proj_w.shape[1]
        xc = triton_conv_fwd(xz[..., :d], conv_w, conv_b, seq_idx, True)
        wx, wdt = x_proj_w.to(xc.dtype), dt_proj_w.to(xc.dtype)
        x_dbl = F.linear(xc, wx)  # (b, l, dt_rank + 2n): B and C are read from it in place
        dt = F.linear(x_dbl[..., :r], wdt)
        u, delta, B, C, z = _scan_views(xc, dt, x_dbl, xz[..., d:], r, n)
        A, B, C, D, delta_bias, reset = scan_arguments(u, delta, A, B, C, D, delta_bias, reset)
        y, states = triton_scan_fwd(u, delta, A, B, C, D, z, delta_bias, reset, softplus, save)
        ctx.softplus = softplus
        ctx.dtypes = (x_proj_w.dtype, dt_proj_w.dtype)
        ctx.save_for_backward(xz, conv_w, conv_b, seq_idx, wx, wdt, xc, x_dbl, dt, A, D, delta_bias, reset, states)
        return y.transpose(1, 2)  # (b, l, d)

    @staticmethod
    def backward(ctx, dy):
        xz, conv_w, conv_b, seq_idx, wx, wdt, xc, x_dbl, dt, A, D, delta_bias, reset, states = ctx.saved_tensors
        if states.numel() == 0:
            raise RuntimeError("the Mamba inner node's forward ran without saving states (no input needed a gradient)")
        d, n, r = xc.shape[-1], A.shape[1], wdt.shape[1]
        u, delta, B, C, z = _scan_views(xc, dt, x_dbl, xz[..., d:], r, n)
        du, ddelta, dA, dB, dC, dD, dbias, dz = scan_gradients(
            u, delta, A, B, C, D, z, delta_bias, reset, states, dy.transpose(1, 2), ctx.softplus)
        dz = dz.transpose(1, 2)  # (b, l, d)
        ddt = _rows(ddelta.transpose(1, 2))  # (b l, d): the scan's gradients come laid out as u, channel-last
        # x_dbl's gradient (under torch.compile the casts of dB and dC fuse into the concatenation)
        d_x_dbl = torch.cat([ddt @ wdt, _rows(dB[:, 0].transpose(1, 2)), _rows(dC[:, 0].transpose(1, 2))], dim=-1)
        dxz, dconv_w, dconv_b = triton_conv_bwd(
            xz[..., :d], conv_w, conv_b, seq_idx, du.transpose(1, 2), True, dz,
            (d_x_dbl @ wx).view_as(xc))  # x_proj's input gradient, added to the scan's inside the kernel
        dx_proj_w = (d_x_dbl.t() @ _rows(xc)).to(ctx.dtypes[0])
        ddt_proj_w = (ddt.t() @ _rows(x_dbl[..., :r])).to(ctx.dtypes[1])
        return (dxz, dconv_w, dconv_b if conv_b is not None else None, dx_proj_w, ddt_proj_w, dA, dD, dbias,
                None, None, None, None)


def mamba_inner_triton(
    xz: Tensor, conv1d_weight: Tensor, conv1d_bias: Tensor | None, x_proj_weight: Tensor, delta_proj_weight: Tensor,
    A: Tensor, D: Tensor | None, delta_bias: Tensor | None, delta_softplus: bool = True,
    seq_idx: Tensor | None = None, reset: Tensor | None = None,
) -> Tensor:
    """xz (b, l, 2 d) -> y (b, l, d): conv1d_weight (d, w); x_proj_weight (dt_rank + 2n, d);
    delta_proj_weight (d, dt_rank); A (d, n) already negative; ``seq_idx`` the conv's segments and
    ``reset`` the scan's restarts (starx.ops.inner._segments makes one from the other)."""
    d, n, r = xz.shape[-1] // 2, A.shape[1], delta_proj_weight.shape[1]
    conv1d_weight, conv1d_bias, seq_idx = conv_arguments(xz[..., :d], conv1d_weight, conv1d_bias, "silu", seq_idx)
    if tuple(x_proj_weight.shape) != (r + 2 * n, d):
        raise ValueError(f"x_proj_weight must be (dt_rank + 2 d_state, d_inner) = ({r + 2 * n}, {d}); "
                         f"got {tuple(x_proj_weight.shape)}")
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (
        xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, D, delta_bias))
    return _MambaInner.apply(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, D, delta_bias,
                             seq_idx, reset, delta_softplus, save)


__all__ = ["mamba_inner_triton"]
