"""mamba-ssm's selective-scan kernel as a torch custom op (``torch.ops.starx.selective_scan_*``).

mamba-ssm calls its extension from an autograd.Function, which torch.compile cannot trace: every
scan split the compiled graph in two. As a custom op with a fake (shape-only) implementation
and a registered backward, the scan is one opaque node of the graph, and the conv, projections,
norms and MLP around it compile into one graph.

The fake forward must know how many chunk states the kernel returns (``x``, read by the
backward): ``scan_chunks`` mirrors the kernel's choice, including starx's patched build
(scripts/gpu_kernels/patch_mamba_ssm.py, MAMBA_SCAN_CONFIG); a GPU test checks the two agree.
"""

# (no ``from __future__ import annotations``: custom_op infers the op schema from real annotations)
import torch
from torch import Tensor

from starx.ops._kernels import kernels_or_raise, scan_config_mode

# The patched build's shapes (threads, items) for MAMBA_SCAN_CONFIG=auto, with their measured
# relative cost per padded token: keep in step with patch_mamba_ssm.py's scan_config_auto.
_AUTO = (((32, 16), 77), ((32, 24), 84), ((32, 8), 99), ((32, 4), 114))
_FIXED = {"64x16": (64, 16), "32x24": (32, 24), "32x16": (32, 16), "32x8": (32, 8), "32x4": (32, 4)}


def scan_chunk_shape(seqlen: int, is_complex: bool = False) -> tuple[int, int]:
    """(threads, items) of the chunk the installed kernel runs a sequence of ``seqlen`` in.

    The kernel reads MAMBA_SCAN_CONFIG once, at its first scan; this reads it at each call, so
    the variable must not change after a process's first scan (starx sets it before that)."""
    mode = scan_config_mode()
    if seqlen > 256 and not is_complex and mode != "stock":
        if mode == "auto":
            padded = lambda shape: -(-seqlen // (shape[0] * shape[1])) * shape[0] * shape[1]  # noqa: E731
            return min(_AUTO, key=lambda c: padded(c[0]) * c[1])[0]
        return _FIXED[mode]
    for limit, shape in ((128, (32, 4)), (256, (32, 8)), (512, (32, 16)), (1024, (64, 16))):
        if seqlen <= limit:
            return shape
    return 128, 16


def scan_chunks(seqlen: int, is_complex: bool = False) -> int:
    threads, items = scan_chunk_shape(seqlen, is_complex)
    return -(-seqlen // (threads * items))


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)  # stands for an absent optional output (custom ops return tensors)


@torch.library.custom_op("starx::selective_scan_fwd", mutates_args=(), device_types="cuda")
def selective_scan_fwd(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
    delta_bias: Tensor | None, delta_softplus: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """(out, chunk states x, out * silu(z) or an empty tensor without z). B, C: (b, g, n, l)."""
    out, x, *rest = kernels_or_raise().selective_scan_cuda.fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return out, x, rest[0] if z is not None else _empty(out)


@selective_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    b, d, L = u.shape
    x = u.new_empty((b, d, scan_chunks(L, A.is_complex()), 2 * A.shape[1]), dtype=A.dtype)
    return torch.empty_like(delta), x, torch.empty_like(z) if z is not None else _empty(delta)


@torch.library.custom_op("starx::selective_scan_bwd", mutates_args=(), device_types="cuda")
def selective_scan_bwd(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
    delta_bias: Tensor | None, dout: Tensor, x: Tensor, out: Tensor | None, delta_softplus: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(du, ddelta, dA, dB, dC, dD, ddelta_bias, dz), empty where the input is absent."""
    du, ddelta, dA, dB, dC, dD, ddelta_bias, *rest = kernels_or_raise().selective_scan_cuda.bwd(
        u, delta, A, B, C, D, z, delta_bias, dout, x, out, None, delta_softplus, False
    )
    return (du, ddelta, dA, dB, dC, dD if D is not None else _empty(du),
            ddelta_bias if delta_bias is not None else _empty(du), rest[0] if z is not None else _empty(du))


@selective_scan_bwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, dout, x, out, delta_softplus):
    maybe = lambda t: torch.empty_like(t) if t is not None else _empty(u)  # noqa: E731
    return (torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A), torch.empty_like(B),
            torch.empty_like(C), maybe(D), maybe(delta_bias), maybe(z))


def _setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, delta_bias, delta_softplus = inputs
    out, x, _ = output
    ctx.delta_softplus = delta_softplus
    ctx.present = (D is not None, z is not None, delta_bias is not None)
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, x, out if z is not None else None)


def _backward(ctx, grad_out, grad_x, grad_out_z):
    u, delta, A, B, C, D, z, delta_bias, x, out = ctx.saved_tensors
    has_D, has_z, has_bias = ctx.present
    dout = grad_out_z if has_z else grad_out
    du, ddelta, dA, dB, dC, dD, ddelta_bias, dz = selective_scan_bwd(
        u, delta, A, B, C, D, z, delta_bias, dout.contiguous(), x, out, ctx.delta_softplus
    )
    return (du, ddelta, dA, dB, dC, dD if has_D else None, dz if has_z else None,
            ddelta_bias if has_bias else None, None)


selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_kernel(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
    delta_bias: Tensor | None, delta_softplus: bool,
) -> Tensor:
    """mamba-ssm's ``selective_scan_fn`` (same arguments, same layouts) through the custom op.
    B and C: (b, n, l), or grouped (b, g, n, l)."""
    last_contiguous = lambda t: t if t is None or t.stride(-1) == 1 else t.contiguous()  # noqa: E731
    u, delta, B, C, z = map(last_contiguous, (u, delta, B, C, z))
    D = D.contiguous() if D is not None else None
    B = B.unsqueeze(1) if B.dim() == 3 else B
    C = C.unsqueeze(1) if C.dim() == 3 else C
    out, _, out_z = selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return out_z if z is not None else out
