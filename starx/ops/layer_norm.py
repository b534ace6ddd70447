"""Residual add + LayerNorm on Triton kernels of starx's own: the triton backend's ``add_layer_norm``.

Why kernels: under torch.compile, Inductor's LayerNorm backward is a mix-order reduction kernel
that writes the fp32 stream gradient; the bf16 copy that the branch's GEMM reads is a kernel of
its own (``triton_poi_fused__to_copy_view_28``: 21 launches, 0.88 ms of STAR-B's 80 ms k=4 step
on the H200), and each LayerNorm's weight / bias partial sums are added up by two more launches
(112 ``aten::sum`` a step, 0.54 ms; bench/README.md, sessions 18 and 19). Here the backward
writes the stream gradient in fp32 and in x's dtype in one pass, and its weight and bias partial
sums are one tensor, added up by one sum. Design in starx/ops/_layer_norm_kernels.py.

The ops are torch custom ops (``torch.ops.starx.add_ln_fwd/bwd``) with fake shapes, so
torch.compile traces around them and CUDA graphs capture them. ``starx.ops.norm.add_layer_norm``
runs them where ``backend`` resolves to triton for CUDA tensors and USE_KERNELS is set.
"""

# (no ``from __future__ import annotations``: custom_op infers the op schema from real annotations)
import torch
from torch import Tensor

# Forward: (rows a program, warps); backward: (rows a step, rows a program, warps, prefetch: 1 to
# issue the next step's loads before this step's arithmetic, 0 not). A row of 768
# channels is one BLOCK_N = 1024 vector. Timed alone at k=4 on the H200 (bench/layer_norm.py --time,
# bench/README.md sessions 20-21): the forward 0.090 ms whatever its tiles (its bytes at 4.1 TB/s);
# the backward 0.133 ms at 1x16x4 with prefetch (0.134 at 1x16x8x1, 0.138 at 1x8x4x1, 0.151 at
# session 20's 1x64x4 without; Inductor's LayerNorm backward 0.149, without the bf16 copy);
# 2-8 rows a step or 8 warps without prefetch were slower (0.17-0.30).
TILES = {"fwd": (2, 4), "bwd": (1, 16, 4, 1)}
# Whether the triton backend runs add + LayerNorm on these kernels. On: whole k=4 steps in one process,
# alternating with Inductor's LayerNorm (bench/ab_step.py --flag add-norm, session 21, H200): median
# +2.4% images/s, every one of six rounds faster (+1.3% to +4.7%); in fine-tuning (drop path, which
# Inductor fuses into its LayerNorm) 1699 against 1672 images/s in one call.
USE_KERNELS = True
KERNEL_DTYPES = (torch.bfloat16, torch.float16, torch.float32)  # x's; the stream is fp32
MAX_CHANNELS = 4096  # a row is one program's vector


def _block(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def layer_norm_forward(x: Tensor, residual: Tensor | None, weight: Tensor, bias: Tensor | None,
                       weight2: Tensor | None, bias2: Tensor | None, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the forward kernel: (y in x's dtype; y2, the stream's second LayerNorm (weight2,
    bias2), in x's dtype or an empty tensor without weight2; s = x + residual in fp32), y, y2 and s
    shaped like x."""
    from starx.ops._layer_norm_kernels import add_ln_fwd

    N = x.shape[-1]
    x2 = x.reshape(-1, N).contiguous()
    r2 = residual.reshape(-1, N).contiguous() if residual is not None else x2
    M = x2.shape[0]
    y, s = torch.empty_like(x2), torch.empty((M, N), device=x.device, dtype=torch.float32)
    y2 = torch.empty_like(x2) if weight2 is not None else x2.new_empty(0)
    bm, warps = TILES["fwd"]
    add_ln_fwd[(-(-M // bm),)](x2, r2, weight, bias if bias is not None else weight,
                               weight2 if weight2 is not None else weight, bias2 if bias2 is not None else weight,
                               s, y, y2 if weight2 is not None else y, M, N, eps,
                               HAS_RES=residual is not None, HAS_BIAS=bias is not None, HAS_Y2=weight2 is not None,
                               BM=bm, BLOCK_N=_block(N), num_warps=warps)
    return y.view(x.shape), y2.view(x.shape) if weight2 is not None else y2, s.view(x.shape)


def layer_norm_backward(dy: Tensor, dy2: Tensor | None, ds: Tensor | None, s: Tensor, weight: Tensor,
                        weight2: Tensor | None, eps: float, has_bias: bool, has_residual: bool
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the backward kernel: (dx in dy's dtype, dresidual in fp32 or an empty tensor, the
    parameters' gradients stacked in the weight's dtype: rows dweight, dbias, then with weight2
    dweight2, dbias2 (the bias rows only with has_bias)). dy2: the gradient of y2, or None (zero);
    ds: the gradient of the stream output s, or None."""
    from starx.ops._layer_norm_kernels import add_ln_bwd

    N = s.shape[-1]
    g, s2 = dy.reshape(-1, N).contiguous(), s.reshape(-1, N).contiguous()
    g2 = dy2.reshape(-1, N).contiguous() if dy2 is not None else g
    ds2 = ds.reshape(-1, N).contiguous() if ds is not None else s2
    has_y2 = weight2 is not None and dy2 is not None
    M = s2.shape[0]
    bm, rows, warps, prefetch = TILES["bwd"]
    programs = -(-M // rows)
    dx = torch.empty_like(g)
    dr = torch.empty((M, N) if has_residual else (0,), device=s.device, dtype=torch.float32)
    parts = torch.empty((programs, 4 if has_y2 else 2, N), device=s.device, dtype=torch.float32)
    add_ln_bwd[(programs,)](g, g2, ds2, s2, weight, weight2 if has_y2 else weight, dx, dr if has_residual else dx,
                            parts, M, N, eps, HAS_DS_IN=ds is not None, HAS_RES=has_residual, HAS_Y2=has_y2, BM=bm,
                            BLOCK_N=_block(N), ROWS=rows, PREFETCH=bool(prefetch), num_warps=warps)
    # one launch adds up every sum (and they stay one tensor: a custom op's outputs may not alias)
    sums = parts.sum(0).to(weight.dtype)
    if weight2 is not None and not has_y2:  # y2 had no gradient: its parameters' are zero
        sums = torch.cat([sums, torch.zeros_like(sums)])
    if not has_bias:
        sums = sums[0::2]
    return dx.view(dy.shape), dr.view(s.shape) if has_residual else dr, sums


@torch.library.custom_op("starx::add_ln_fwd", mutates_args=(), device_types="cuda")
def add_ln_fwd(x: Tensor, residual: Tensor | None, weight: Tensor, bias: Tensor | None, weight2: Tensor | None,
               bias2: Tensor | None, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(LN(x + residual) in x's dtype, its second LayerNorm by weight2 / bias2 or an empty tensor,
    x + residual in fp32)."""
    return layer_norm_forward(x, residual, weight, bias, weight2, bias2, eps)


@add_ln_fwd.register_fake
def _(x, residual, weight, bias, weight2, bias2, eps):
    return (x.new_empty(x.shape), x.new_empty(x.shape if weight2 is not None else (0,)),
            x.new_empty(x.shape, dtype=torch.float32))


@torch.library.custom_op("starx::add_ln_bwd", mutates_args=(), device_types="cuda")
def add_ln_bwd(dy: Tensor, dy2: Tensor | None, ds: Tensor | None, s: Tensor, weight: Tensor,
               weight2: Tensor | None, eps: float, has_bias: bool, has_residual: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dresidual or empty, the parameters' gradients stacked: see layer_norm_backward)."""
    return layer_norm_backward(dy, dy2, ds, s, weight, weight2, eps, has_bias, has_residual)


@add_ln_bwd.register_fake
def _(dy, dy2, ds, s, weight, weight2, eps, has_bias, has_residual):
    rows = (2 if has_bias else 1) * (2 if weight2 is not None else 1)
    return (dy.new_empty(dy.shape), s.new_empty(s.shape if has_residual else (0,)),
            weight.new_empty((rows, weight.shape[0])))


def _setup_context(ctx, inputs, output) -> None:
    x, residual, weight, bias, weight2, bias2, eps = inputs
    ctx.eps, ctx.has_bias, ctx.has_residual = eps, bias is not None, residual is not None
    ctx.save_for_backward(output[2], weight, weight2)


def _backward(ctx, dy, dy2, ds):
    s, weight, weight2 = ctx.saved_tensors
    dx, dr, sums = add_ln_bwd(dy, dy2 if weight2 is not None else None, ds, s, weight, weight2, ctx.eps,
                              ctx.has_bias, ctx.has_residual)
    per_norm = 2 if ctx.has_bias else 1  # rows of sums a LayerNorm: dweight (, dbias)
    first, second = sums[:per_norm], sums[per_norm:]
    return (dx, dr if ctx.has_residual else None, first[0], first[1] if ctx.has_bias else None,
            second[0] if weight2 is not None else None,
            second[1] if weight2 is not None and ctx.has_bias else None, None)


add_ln_fwd.register_autograd(_backward, setup_context=_setup_context)


def kernels_take(x: Tensor, residual: Tensor | None, weight: Tensor, bias: Tensor | None,
                 weight2: Tensor | None = None, bias2: Tensor | None = None) -> bool:
    """Whether the kernels run this add + LayerNorm (USE_KERNELS aside): CUDA, x's dtype in
    KERNEL_DTYPES, an fp32 stream, fp32 weights and biases of the last dimension, at most MAX_CHANNELS."""
    params = [t for t in (weight, bias, weight2, bias2) if t is not None]
    return (x.is_cuda and x.dtype in KERNEL_DTYPES and (residual is None or residual.dtype == torch.float32)
            and all(t.dtype == torch.float32 for t in params)
            and x.shape[-1] <= MAX_CHANNELS and (residual is None or residual.shape == x.shape))


__all__ = ["KERNEL_DTYPES", "MAX_CHANNELS", "TILES", "USE_KERNELS", "add_ln_fwd", "kernels_take",
           "layer_norm_backward", "layer_norm_forward"]
