"""The Mamba mixer's inner computation (conv -> projections -> selective scan -> out_proj).

Mirrors ``mamba_ssm.ops.selective_scan_interface.mamba_inner_fn`` with input-dependent B and C.
On CUDA with the kernels it runs the fused ``mamba_inner_fn`` (one autograd node, recomputes the
conv in the backward). It composes ``causal_conv1d_fn`` and the scan instead without
``out_proj_weight`` (the bidirectional classifier sums directions before projecting) and under
torch.compile, which cannot trace mamba_inner_fn but traces the conv and the scan's custom op.

``mamba_inner_directions`` runs several scans of one input in different token orders (ARM's
4-direction mixer) as one conv and one scan over the directions stacked along channels, each
direction a group with its own B and C: a quarter of the kernel launches of four separate scans.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from starx.ops._kernels import kernels_or_raise, use_cuda_kernels
from starx.ops.conv import causal_conv1d, causal_conv1d_channel_last, causal_conv1d_time_major, triton_conv_applies
from starx.ops.permute import gather_directions, scatter_directions
from starx.ops.scan import selective_scan, selective_scan_time_major
from starx.ops.triton_inner import mamba_inner_triton
from starx.ops.triton_scan import selective_scan_triton


def mamba_inner(
    xz: Tensor,
    conv1d_weight: Tensor,
    conv1d_bias: Tensor | None,
    x_proj_weight: Tensor,
    delta_proj_weight: Tensor,
    out_proj_weight: Tensor | None,
    out_proj_bias: Tensor | None,
    A: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    backend: str = "auto",
) -> Tensor:
    """xz (b, 2*d_inner, l) -> (b, l, d_model), or (b, d_inner, l) when out_proj_weight is None.

    conv1d_weight is nn.Conv1d's (d_inner, 1, w); x_proj_weight (dt_rank + 2n, d_inner);
    delta_proj_weight (d_inner, dt_rank); A (d_inner, n), already negative (-exp(A_log)).
    """
    use_kernels = use_cuda_kernels(backend, xz)
    if use_kernels and out_proj_weight is not None and not torch.compiler.is_compiling():  # the fused path
        return kernels_or_raise().mamba_inner_fn(
            xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
            out_proj_weight, out_proj_bias, A, None, None, D,
            delta_bias=delta_bias, delta_softplus=delta_softplus,
        )  # fmt: skip
    if use_kernels:  # compose the two kernels: no out_proj, or under torch.compile
        L, dt_rank, n = xz.shape[-1], delta_proj_weight.shape[1], A.shape[1]
        x, z = xz.chunk(2, dim=1)
        # contiguous: the conv kernel's custom op writes an output shaped like x, and dynamo
        # traces a custom op's out= tensor only when it is contiguous
        x = causal_conv1d(x.contiguous(), rearrange(conv1d_weight, "d 1 w -> d w"), conv1d_bias, "silu",
                          backend="cuda")
        x_dbl = F.linear(rearrange(x, "b d l -> (b l) d"), x_proj_weight)
        dt, B, C = x_dbl.split([dt_rank, n, n], dim=-1)
        dt = rearrange(F.linear(dt, delta_proj_weight), "(b l) d -> b d l", l=L)
        B = rearrange(B, "(b l) n -> b n l", l=L).contiguous()
        C = rearrange(C, "(b l) n -> b n l", l=L).contiguous()
        y = selective_scan(x, dt, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                           backend="cuda")
        if out_proj_weight is None:
            return y
        return F.linear(rearrange(y, "b d l -> b l d"), out_proj_weight, out_proj_bias)
    out = mamba_inner_time_major(
        xz.permute(2, 0, 1), conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
        out_proj_weight, out_proj_bias, A, D, delta_bias, delta_softplus,
    )  # fmt: skip
    return out.transpose(0, 1) if out_proj_weight is not None else out.permute(1, 2, 0)


def _segments(reset: Tensor | None) -> Tensor | None:
    """The conv's segment ids for a scan ``reset``: the conv restarts where the scan does."""
    return None if reset is None else reset.to(torch.int32).cumsum(-1)


def _project(x: Tensor, x_proj_weight: Tensor, delta_proj_weight: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """(dt, B, C) from the conv output x (..., d_inner), channels last: dt (..., d_inner), and B,
    C (..., n) as views of x_proj's output (the scans read them strided, no copy)."""
    dt_rank = delta_proj_weight.shape[1]
    x_dbl = F.linear(x, x_proj_weight)  # (..., dt_rank + 2n)
    dt = F.linear(x_dbl[..., :dt_rank], delta_proj_weight)
    return dt, x_dbl[..., dt_rank : dt_rank + n], x_dbl[..., dt_rank + n :]


def mamba_inner_time_major(
    xz: Tensor,
    conv1d_weight: Tensor,
    conv1d_bias: Tensor | None,
    x_proj_weight: Tensor,
    delta_proj_weight: Tensor,
    out_proj_weight: Tensor | None,
    out_proj_bias: Tensor | None,
    A: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    reset: Tensor | None = None,
) -> Tensor:
    """The torch twin of ``mamba_inner`` in time-major layout, which it computes in:
    xz (l, b, 2*d_inner) -> (l, b, d_model), or (l, b, d_inner) without out_proj_weight.
    ``reset`` ((l,) or (b, l)) restarts the scan's state at marked steps, and the conv reads
    nothing from before them."""
    x, z = xz.chunk(2, dim=-1)
    x = causal_conv1d_time_major(x, conv1d_weight[:, 0], conv1d_bias, "silu", _segments(reset))
    dt, B, C = _project(x, x_proj_weight, delta_proj_weight, A.shape[1])
    y = selective_scan_time_major(x, dt, A, B, C, D, z, delta_bias, delta_softplus, reset)
    if out_proj_weight is None:
        return y
    return F.linear(y, out_proj_weight, out_proj_bias)


def mamba_inner_directions(
    xz: Tensor,
    orders: Tensor,
    inverses: Tensor,
    conv1d_weight: Tensor,
    conv1d_bias: Tensor | None,
    x_proj_weight: Tensor,
    delta_proj_weight: Tensor,
    A: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool = True,
    backend: str = "auto",
) -> Tensor:
    """Sum over g token orders of the scan of xz read in that order, mapped back to xz's order.

    xz (b, 2*di, l); orders, inverses (g, l), inverses[j] = argsort(orders[j]). Per-direction
    parameters stacked along a leading g (or g*di channel) axis: conv1d_weight (g*di, w),
    conv1d_bias (g*di,), x_proj_weight (g, dt_rank + 2n, di), delta_proj_weight (g, di, dt_rank),
    A (g*di, n) already negative, D and delta_bias (g*di,). Returns (b, di, l).
    """
    (g, L), (b, two_di) = orders.shape, xz.shape[:2]
    di, n, dt_rank = two_di // 2, A.shape[1], delta_proj_weight.shape[2]
    xs = xz[:, :, orders].transpose(1, 2)  # (b, g, 2*di, l): direction j reads xz in orders[j]
    x = xs[:, :, :di].reshape(b, g * di, L)
    z = xs[:, :, di:].reshape(b, g * di, L)
    x = causal_conv1d(x, conv1d_weight, conv1d_bias, "silu", backend=backend)
    # (weights in the activations' dtype: einsum mixes no dtypes, with or without autocast)
    x_dbl = torch.einsum("bgdl,gkd->bgkl", x.view(b, g, di, L), x_proj_weight.to(x.dtype))
    dt, B, C = x_dbl.split([dt_rank, n, n], dim=2)
    dt = torch.einsum("bgrl,gdr->bgdl", dt, delta_proj_weight.to(dt.dtype)).reshape(b, g * di, L)
    y = selective_scan(x, dt, A, B.contiguous(), C.contiguous(), D, z=z, delta_bias=delta_bias,
                       delta_softplus=delta_softplus, backend=backend)
    back = inverses.view(1, g, 1, L).expand(b, g, di, L)
    return y.view(b, g, di, L).gather(3, back).sum(1)


def mamba_inner_channel_last(
    xz: Tensor,
    conv1d_weight: Tensor,
    conv1d_bias: Tensor | None,
    x_proj_weight: Tensor,
    delta_proj_weight: Tensor,
    out_proj_weight: Tensor | None,
    out_proj_bias: Tensor | None,
    A: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    reset: Tensor | None = None,
    backend: str = "triton",
) -> Tensor:
    """``mamba_inner`` in channel-last layout on the Triton scan: xz (b, l, 2*d_inner) ->
    (b, l, d_model), or (b, l, d_inner) without out_proj_weight.

    The projections' natural layout all the way: the conv reads channel-last, x_proj, dt_proj
    and out_proj are plain linears over (b, l, .), and the scan reads B and C as strided views
    of x_proj's output, so no transpose copy is made. ``reset`` ((l,) or (b, l)) restarts the
    scan's state at marked steps, and the conv reads nothing from before them.
    conv1d_weight is nn.Conv1d's (d_inner, 1, w). On CUDA (the Triton conv) conv, projections
    and scan are one autograd node (starx.ops.triton_inner); elsewhere they are composed.
    """
    if triton_conv_applies(xz, backend):  # one autograd node (starx.ops.triton_inner says why)
        y = mamba_inner_triton(xz, conv1d_weight[:, 0], conv1d_bias, x_proj_weight, delta_proj_weight, A, D,
                               delta_bias, delta_softplus, _segments(reset), reset)
    else:  # the conv's twin (CPU): the Triton scan runs only under Triton's interpreter there
        x, z = xz.chunk(2, dim=-1)
        x = causal_conv1d_channel_last(x, conv1d_weight[:, 0], conv1d_bias, "silu", backend=backend,
                                       seq_idx=_segments(reset))
        dt, B, C = _project(x, x_proj_weight, delta_proj_weight, A.shape[1])
        y = selective_scan_triton(x.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2),
                                  D, z.transpose(1, 2), delta_bias, delta_softplus, reset).transpose(1, 2)
    if out_proj_weight is None:
        return y
    return F.linear(y, out_proj_weight, out_proj_bias)


def mamba_inner_directions_channel_last(
    xz: Tensor,
    orders: Tensor,
    inverses: Tensor,
    conv1d_weight: Tensor,
    conv1d_bias: Tensor | None,
    x_proj_weight: Tensor,
    delta_proj_weight: Tensor,
    A: Tensor,
    D: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool = True,
    backend: str = "triton",
) -> Tensor:
    """``mamba_inner_directions`` in channel-last layout on the Triton scan: xz (b, l, 2*di) ->
    (b, l, di), the sum over directions mapped back to xz's token order. Parameters as there.

    The token orders are applied by permutation ops whose backward is the inverse permutation
    (a gather, never an index_put with accumulation), and the directions are stacked along
    channels so that one conv and one grouped scan serve all of them.

    The gate y * silu(z) is applied once, after the directions are mapped back and summed: the
    directions only reorder tokens, so each reads the same token's z, and the gated sum equals the
    sum of the gated. z is then never copied into the four orders, nor its gradient gathered back.
    """
    (g, L), (b, two_di) = orders.shape, (xz.shape[0], xz.shape[2])
    di, n, dt_rank = two_di // 2, A.shape[1], delta_proj_weight.shape[2]
    # direction j reads x in orders[j]: (b, l, g, di), so (b, l, g * di) is a view
    x = scatter_directions(xz[..., :di], orders, inverses).view(b, L, g * di)
    x = causal_conv1d_channel_last(x, conv1d_weight, conv1d_bias, "silu", backend=backend)
    x_dbl = torch.einsum("blgd,gkd->blgk", x.view(b, L, g, di), x_proj_weight.to(x.dtype))
    dt, B, C = x_dbl.split([dt_rank, n, n], dim=3)
    dt = torch.einsum("blgr,gdr->blgd", dt, delta_proj_weight.to(dt.dtype)).reshape(b, L, g * di)
    y = selective_scan_triton(x.transpose(1, 2), dt.transpose(1, 2), A, B.permute(0, 2, 3, 1), C.permute(0, 2, 3, 1),
                              D, None, delta_bias, delta_softplus)  # (b, g*di, l), channel-last
    y = gather_directions(y.transpose(1, 2).view(b, L, g, di), orders, inverses)
    z = xz[..., di:]
    return (y.float() * F.silu(z.float())).to(y.dtype)  # (fp32 as the scan's own gate)
