"""Kernel ops: the only place in starx that touches mamba-ssm / causal-conv1d or Triton.

Every op takes ``backend`` = ``auto | cuda | triton | torch``:
  * ``torch``: the pure-PyTorch twin (any device, autograd, exact sequential semantics);
  * ``cuda``: mamba-ssm / causal-conv1d's kernels; raises KernelUnavailableError (with the
    install hint) where they or CUDA can't load, never a silent fallback;
  * ``triton``: starx's Triton selective scan (starx.ops.triton_scan) and causal conv
    (starx.ops.triton_conv), which need only torch's Triton, with the Mamba mixer in
    channel-last layout; add + LayerNorm uses mamba-ssm's kernel where it loads, else its twin;
  * ``auto``: for CUDA tensors the first of triton, cuda that runs (``scan_backend``), else the twin.
"""

from starx.ops._kernels import (
    BACKENDS,
    INSTALL_HINT,
    KernelUnavailableError,
    check_backend,
    kernel_status,
    preload_kernels,
    scan_backend,
    use_cuda_kernels,
)
from starx.ops.conv import causal_conv1d, causal_conv1d_channel_last, causal_conv1d_time_major, causal_conv1d_torch
from starx.ops.inner import (
    mamba_inner,
    mamba_inner_channel_last,
    mamba_inner_directions,
    mamba_inner_directions_channel_last,
    mamba_inner_time_major,
)
from starx.ops.norm import add_layer_norm, add_layer_norm_torch, add_layer_norm_twice
from starx.ops.scan import selective_scan, selective_scan_ref, selective_scan_time_major, selective_scan_torch

__all__ = [
    "BACKENDS",
    "INSTALL_HINT",
    "KernelUnavailableError",
    "add_layer_norm",
    "add_layer_norm_torch",
    "add_layer_norm_twice",
    "causal_conv1d",
    "causal_conv1d_channel_last",
    "causal_conv1d_time_major",
    "causal_conv1d_torch",
    "check_backend",
    "kernel_status",
    "mamba_inner",
    "mamba_inner_channel_last",
    "mamba_inner_directions",
    "mamba_inner_directions_channel_last",
    "mamba_inner_time_major",
    "preload_kernels",
    "scan_backend",
    "selective_scan",
    "selective_scan_ref",
    "selective_scan_time_major",
    "selective_scan_torch",
    "use_cuda_kernels",
]
