"""Depthwise causal 1-D convolution (causal_conv1d.causal_conv1d_fn) and its torch twin.

out[b, d, t] = act(bias[d] + sum_k weight[d, k] * x[b, d, t - (w - 1) + k]), x = 0 before t = 0.
Shapes: x (b, d, l); weight (d, w); bias (d,); activation None, "silu" or "swish".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from starx.ops._kernels import kernels_or_raise, scan_backend, use_cuda_kernels
from starx.ops.triton_conv import causal_conv1d_triton

_ACTIVATIONS = (None, "silu", "swish")


def _check(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None) -> None:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"need x (b, d, l) and weight (d, w); got {tuple(x.shape)} and {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (x.shape[1],):
        raise ValueError(f"bias must be ({x.shape[1]},); got {tuple(bias.shape)}")


def causal_conv1d_torch(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None) -> Tensor:
    """Pure-PyTorch twin: a grouped conv padded on both sides, keeping the first l outputs."""
    _check(x, weight, bias, activation)
    width = weight.shape[1]
    out = F.conv1d(x, weight[:, None, :], bias, padding=width - 1, groups=x.shape[1])[..., : x.shape[-1]]
    return F.silu(out) if activation is not None else out


def segment_masks(seq_idx: Tensor | None, width: int) -> list[Tensor | None]:
    """For each shift s = 1..width-1, whether x[t - s] is in t's segment ((l,) or (b, l) bools;
    None everywhere without segments). seq_idx: segment ids, nondecreasing along time."""
    if seq_idx is None:
        return [None] * (width - 1)
    pad = F.pad(seq_idx, (width - 1, 0), value=-1)
    L = seq_idx.shape[-1]
    return [pad[..., width - 1 - s : width - 1 - s + L] == seq_idx for s in range(1, width)]


def causal_conv1d_time_major(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
    seq_idx: Tensor | None = None,
) -> Tensor:
    """The twin in time-major layout: x (l, b, d) -> (l, b, d), as w shifted multiply-adds
    (cheaper here than transposing to the (b, d, l) layout a grouped conv wants). With
    ``seq_idx`` ((l,) or (b, l) segment ids) no output reads an input of an earlier segment."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    width, L = weight.shape[1], x.shape[0]
    xp = torch.cat([x.new_zeros(width - 1, *x.shape[1:]), x])  # zeros before t = 0
    out = xp[width - 1 :] * weight[:, width - 1]
    if bias is not None:
        out = out + bias
    for k, same in zip(range(width - 1), reversed(segment_masks(seq_idx, width))):
        shifted = xp[k : k + L]
        if same is not None:
            shifted = shifted * (same.t() if same.dim() == 2 else same[:, None])[..., None].to(x.dtype)
        out = torch.addcmul(out, shifted, weight[:, k])
    return F.silu(out) if activation is not None else out


def triton_conv_applies(x: Tensor, backend: str) -> bool:
    """Whether ``causal_conv1d_channel_last`` runs starx's Triton conv for x: CUDA, and ``backend``
    resolving to triton (starx.ops.scan_backend)."""
    return x.is_cuda and backend in ("auto", "triton") and scan_backend(backend, x) == "triton"


def causal_conv1d_channel_last(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None, backend: str = "auto",
    seq_idx: Tensor | None = None,
) -> Tensor:
    """x (b, l, d) -> (b, l, d) contiguous, the channel-last layout of the Triton mixer. With
    ``seq_idx`` ((l,) or (b, l) segment ids) no output reads an input of an earlier segment.

    Where ``backend`` resolves to triton on CUDA (``scan_backend``), starx's Triton conv
    (starx.ops.triton_conv, a custom op: eagerly and under torch.compile alike), output in x's
    dtype. Else causal-conv1d's kernel where ``backend`` allows it (eagerly: torch.compile can't
    trace it), else this twin, w shifted multiply-adds: the oracle of both kernels."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    if triton_conv_applies(x, backend):
        return causal_conv1d_triton(x, weight, bias, activation, seq_idx)
    if not torch.compiler.is_compiling() and use_cuda_kernels(backend, x):
        x_bdl = x.contiguous().transpose(1, 2)  # (b, d, l) with channels contiguous
        if seq_idx is not None:
            seq_idx = seq_idx.to(torch.int32).expand(x.shape[0], x.shape[1]).contiguous()
        return kernels_or_raise().causal_conv1d_fn(x_bdl, weight, bias, seq_idx=seq_idx,
                                                   activation=activation).transpose(1, 2)
    width, L = weight.shape[1], x.shape[1]
    xp = F.pad(x, (0, 0, width - 1, 0))  # zeros before t = 0
    out = xp[:, width - 1 :] * weight[:, width - 1]
    if bias is not None:
        out = out + bias
    for k, same in zip(range(width - 1), reversed(segment_masks(seq_idx, width))):
        shifted = xp[:, k : k + L]
        if same is not None:
            shifted = shifted * (same if same.dim() == 2 else same[None])[..., None].to(x.dtype)
        out = torch.addcmul(out, shifted, weight[:, k])
    return F.silu(out) if activation is not None else out


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    backend: str = "auto",
) -> Tensor:
    """Causal depthwise conv on the chosen backend (``auto | cuda | torch``)."""
    if use_cuda_kernels(backend, x):
        _check(x, weight, bias, activation)
        return kernels_or_raise().causal_conv1d_fn(x, weight, bias, activation=activation)
    return causal_conv1d_torch(x, weight, bias, activation)
