"""Residual add + LayerNorm, fused on CUDA.

A pre-norm block computes x = x + branch, then LN(x) for the next branch. Carrying the stream
as (last branch output, residual) lets one kernel do both: mamba-ssm's Triton ``layer_norm_fn``
reads the branch output and the fp32 residual, writes the new fp32 residual and the normalised
activations in the branch's dtype, and its backward computes the weight and bias gradients in
the same pass. That replaces a separate fp32 add, casts and torch's two LayerNorm backward
kernels per sub-layer (the profile in bench/README.md).

Under ``torch.compile`` the torch twin runs even on the ``cuda`` backend: Inductor fuses it
into its own kernel, while the Triton function would break the graph. On the ``triton`` backend
starx's own kernels can run instead, eagerly and compiled alike (starx.ops.layer_norm, custom
ops: its USE_KERNELS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from starx.ops import layer_norm
from starx.ops._kernels import kernels_or_raise, scan_backend, use_cuda_kernels


def _on_kernels(backend: str, x: Tensor, residual: Tensor | None, *params: Tensor | None) -> bool:
    """Whether starx's add + LayerNorm kernels run it: on, taking these tensors, on the triton backend."""
    return layer_norm.USE_KERNELS and layer_norm.kernels_take(x, residual, *params) and \
        scan_backend(backend, x) == "triton"


def add_layer_norm(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    eps: float,
    prenorm: bool = True,
    backend: str = "auto",
) -> tuple[Tensor, Tensor] | Tensor:
    """With ``prenorm``: (LN(x + residual), x + residual); else LN(x + residual).

    ``residual`` None means the stream is x alone. The sum is taken and returned in fp32 (fp64
    for fp64 inputs); the normalised output has x's dtype.
    """
    if _on_kernels(backend, x, residual, weight, bias):
        y, _, stream = layer_norm.add_ln_fwd(x, residual, weight, bias, None, None, eps)
        return (y, stream) if prenorm else y
    if not torch.compiler.is_compiling() and use_cuda_kernels(backend, x, residual):
        return kernels_or_raise().layer_norm_fn(
            x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, residual_in_fp32=True
        )
    return add_layer_norm_torch(x, residual, weight, bias, eps, prenorm)


def add_layer_norm_twice(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    weight2: Tensor,
    bias2: Tensor | None,
    eps: float,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """(LN(x + residual) by weight / bias, LN(x + residual) by weight2 / bias2, x + residual): the
    stream and its statistics once for two LayerNorms of it (one eps; biases both or neither), as
    ``add_layer_norm`` with ``prenorm`` computes one. STAR's decoder taps are the second: the
    stream the next block normalises is the one the decoder reads (starx.models.star)."""
    if (bias is None) != (bias2 is None):
        raise ValueError("add_layer_norm_twice takes two LayerNorms with biases both or neither")
    if _on_kernels(backend, x, residual, weight, bias, weight2, bias2):
        return layer_norm.add_ln_fwd(x, residual, weight, bias, weight2, bias2, eps)
    if not torch.compiler.is_compiling() and use_cuda_kernels(backend, x, residual):
        y, stream = add_layer_norm(x, residual, weight, bias, eps, backend=backend)
        return y, F.layer_norm(stream, (stream.shape[-1],), weight2, bias2, eps).to(x.dtype), stream
    return add_layer_norm_twice_torch(x, residual, weight, bias, weight2, bias2, eps)


def _stream(x: Tensor, residual: Tensor | None) -> Tensor:
    """x + residual in fp32 (or fp64 for fp64 inputs): the twin's stream."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    if residual is not None:
        dtype = torch.promote_types(dtype, residual.dtype)
    return x.to(dtype) if residual is None else x.to(dtype) + residual.to(dtype)


def add_layer_norm_torch(
    x: Tensor, residual: Tensor | None, weight: Tensor, bias: Tensor | None, eps: float, prenorm: bool = True
) -> tuple[Tensor, Tensor] | Tensor:
    """The torch twin of ``add_layer_norm``, the same arithmetic: sum and statistics in fp32
    (or in fp64 for fp64 inputs)."""
    stream = _stream(x, residual)
    out = F.layer_norm(stream, (stream.shape[-1],), weight, bias, eps).to(x.dtype)
    return (out, stream) if prenorm else out


def add_layer_norm_twice_torch(x: Tensor, residual: Tensor | None, weight: Tensor, bias: Tensor | None,
                               weight2: Tensor, bias2: Tensor | None, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """The torch twin of ``add_layer_norm_twice``."""
    stream = _stream(x, residual)
    shape = (stream.shape[-1],)
    return (F.layer_norm(stream, shape, weight, bias, eps).to(x.dtype),
            F.layer_norm(stream, shape, weight2, bias2, eps).to(x.dtype), stream)
