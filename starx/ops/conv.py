"""Depthwise causal 1-D convolution (causal_conv1d.causal_conv1d_fn) and its torch twin.

out[b, d, t] = act(bias[d] + sum_k weight[d, k] * x[b, d, t - (w - 1) + k]), x = 0 before t = 0.
Shapes: x (b, d, l); weight (d, w); bias (d,); activation None, "silu" or "swish".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from starx.ops._kernels import kernels_or_raise, use_cuda_kernels

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


def causal_conv1d_time_major(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None
) -> Tensor:
    """The twin in time-major layout: x (l, b, d) -> (l, b, d), as w shifted multiply-adds
    (cheaper here than transposing to the (b, d, l) layout a grouped conv wants)."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    width, L = weight.shape[1], x.shape[0]
    xp = torch.cat([x.new_zeros(width - 1, *x.shape[1:]), x])  # zeros before t = 0
    out = xp[width - 1 :] * weight[:, width - 1]
    if bias is not None:
        out = out + bias
    for k in range(width - 1):
        out = torch.addcmul(out, xp[k : k + L], weight[:, k])
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
