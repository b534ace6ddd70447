"""The SwiGLU gate, h = silu(a + bias_a) * (b + bias_b), with a = x w1^T and b = x w2^T.

Why kernels: under torch.compile the MambaMLP block's SwiGLU backward (with w1's and w2's bias
gradients, the column sums of da and db) is one Inductor split-reduction kernel that moves its
818 MB at about 2.8 TB/s on the H200, 0.29 ms a block at STAR-B k=4, where the forward's
``silu * mul`` runs at about 4.3 TB/s (bench/README.md, session 18: 3.4 ms a step, 12 blocks).
Here the backward (starx/ops/_swiglu_kernels.py) reads g, a and b once, writes da and db, and keeps
the bias sums in registers, one fp32 row of partials per band of rows that one torch sum adds up.
The biases come in separately (the GEMMs run without them), so that their gradients are those sums.

a and b come from one GEMM, x [w1; w2]^T, as the halves [a | b] of its output rows, and the
backward writes d[a | b] whole: x's gradient is then one GEMM too. With two GEMMs, x's gradient
was the sum of two, an add Inductor fused into the LayerNorm backward after it, but which
starx's add + LayerNorm kernels (starx.ops.layer_norm) would have run as a kernel of its own;
the forward's two weight casts are one, and the weights' gradients one GEMM as well.

``swiglu_mlp_gate`` runs the kernels where ``backend`` resolves to triton (starx.ops.scan_backend)
and USE_KERNELS is set (the default), and the twin (``silu(w1(x)) * w2(x)`` as written) elsewhere. The ops are torch custom ops
(``torch.ops.starx.swiglu_fwd/bwd``) with fake shapes, so torch.compile traces around them and
CUDA graphs capture them.
"""

# (no ``from __future__ import annotations``: custom_op infers the op schema from real annotations)
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Per program of the forward and of the backward: (rows a step, channels, rows a program, warps).
# Timed on the H200 (bench/swiglu.py, one MLP under CUDA graphs, bench/results/swiglu_h200_session19.jsonl):
# of eight sets, the backward's 4 x 128 rows over 2 warps (8 elements a thread, one 16-byte bf16 load)
# was fastest at k = 4 and 8 and within 0.01 ms at k=1: 0.224 ms at k=4 where 8 x 256 over 4 warps
# (session 18's pick by the static model) took 0.282 and Inductor's pointwise backward 0.189 plus its
# bias sums. The forward's tiles mattered less than the runs' noise (0.115-0.137 ms).
TILES = {"fwd": (16, 128, 64, 4), "bwd": (4, 128, 128, 2)}
# Whether the triton backend runs the gate on the kernels. With w1 and w2 as one GEMM, whole k=4 steps
# in one process alternating with Inductor's gate (bench/ab_step.py --flag mlp-gate, session 21, H200):
# median +2.7% images/s, every one of six rounds faster (+1.0% to +3.9%). One MLP alone (bench/swiglu.py):
# 0.935x Inductor's time at k=4, 0.906x at k=1, 0.949x at k=8.
USE_KERNELS = True
KERNEL_DTYPES = (torch.bfloat16, torch.float16, torch.float32)  # (fp32 arithmetic inside)


def _rows(t: Tensor) -> Tensor:
    """t as (M, N) contiguous rows (a view of a Linear's output)."""
    return t.reshape(-1, t.shape[-1]).contiguous()


def _halves(ab: Tensor) -> tuple[Tensor, Tensor]:
    """a and b: (M, N) views of [a | b] made contiguous (M, 2N) rows."""
    if ab.shape[-1] % 2:
        raise ValueError(f"the gate's input holds a and b side by side: its last dimension must be even, "
                         f"got {ab.shape[-1]}")
    return _rows(ab).chunk(2, dim=-1)


def _bands(M: int, tiles: tuple) -> int:
    """How many bands of rows (one program's rows each) cover M rows."""
    return -(-M // tiles[2])


def _launch(kernel, tiles, M: int, N: int, *args, has_bias: bool) -> None:
    """Launch ``kernel`` over (bands of rows, blocks of channels); [a | b] rows are 2N apart."""
    bm, bn, rows, warps = tiles
    kernel[(_bands(M, tiles), -(-N // bn))](*args, M, N, 2 * N, HAS_BIAS=has_bias, BM=bm, BN=bn, ROWS=rows,
                                            num_warps=warps)


def gate_forward(ab: Tensor, bias_a: Tensor | None, bias_b: Tensor | None) -> Tensor:
    """Launch the forward kernel: h (ab's shape with half its last dimension, contiguous, ab's dtype)
    of ab = [a | b]."""
    from starx.ops._swiglu_kernels import swiglu_fwd

    a2, b2 = _halves(ab)
    h = torch.empty(a2.shape, device=ab.device, dtype=ab.dtype)
    _launch(swiglu_fwd, TILES["fwd"], *a2.shape, a2, b2, bias_a if bias_a is not None else a2,
            bias_b if bias_b is not None else a2, h, has_bias=bias_a is not None)
    return h.view(*ab.shape[:-1], a2.shape[1])


def gate_backward(g: Tensor, ab: Tensor, bias_a: Tensor | None, bias_b: Tensor | None) -> tuple[Tensor, Tensor]:
    """Launch the backward kernel: (d[a | b] in ab's shape and dtype, (dbias_a, dbias_b) stacked
    (2, N) in the biases' dtype, or an empty tensor without biases)."""
    from starx.ops._swiglu_kernels import swiglu_bwd

    g2, (a2, b2) = _rows(g), _halves(ab)
    M, N = a2.shape
    dab = torch.empty((M, 2 * N), device=ab.device, dtype=ab.dtype)
    da, db = dab.chunk(2, dim=-1)
    has_bias = bias_a is not None
    # the bands' partial sums, [da's | db's] a row: one sum adds both up
    parts = torch.empty((_bands(M, TILES["bwd"]) if has_bias else 0, 2 * N), device=ab.device, dtype=torch.float32)
    sa, sb = parts.chunk(2, dim=-1)
    _launch(swiglu_bwd, TILES["bwd"], M, N, g2, a2, b2, bias_a if has_bias else a2, bias_b if has_bias else a2,
            da, db, sa, sb, has_bias=has_bias)
    if not has_bias:
        return dab.view(ab.shape), ab.new_empty(0)
    return dab.view(ab.shape), parts.sum(0).to(bias_a.dtype).view(2, N)


@torch.library.custom_op("starx::swiglu_fwd", mutates_args=(), device_types="cuda")
def swiglu_fwd(ab: Tensor, bias_a: Tensor | None, bias_b: Tensor | None) -> Tensor:
    return gate_forward(ab, bias_a, bias_b)


@swiglu_fwd.register_fake
def _(ab, bias_a, bias_b):
    return ab.new_empty((*ab.shape[:-1], ab.shape[-1] // 2))


@torch.library.custom_op("starx::swiglu_bwd", mutates_args=(), device_types="cuda")
def swiglu_bwd(g: Tensor, ab: Tensor, bias_a: Tensor | None, bias_b: Tensor | None) -> tuple[Tensor, Tensor]:
    """(d[a | b], the bias gradients stacked (2, N), or empty): one tensor, since a custom op's
    outputs may not alias each other."""
    return gate_backward(g, ab, bias_a, bias_b)


@swiglu_bwd.register_fake
def _(g, ab, bias_a, bias_b):
    return ab.new_empty(ab.shape), bias_a.new_empty((2, *bias_a.shape)) if bias_a is not None else ab.new_empty(0)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad):
    ab, bias_a, bias_b = ctx.saved_tensors
    dab, dbias = swiglu_bwd(grad, ab, bias_a, bias_b)
    return dab, *((dbias[0], dbias[1]) if bias_a is not None else (None, None))


swiglu_fwd.register_autograd(_backward, setup_context=_setup_context)


def swiglu_mlp_gate(x: Tensor, w1: nn.Linear, w2: nn.Linear, backend: str = "auto") -> Tensor:
    """silu(w1(x)) * w2(x), SwiGLU's gate before w3. On the kernels where ``backend`` resolves to
    triton for CUDA x (the GEMMs without bias, then the gate adding the biases in fp32), else as
    written; w1 and w2 have biases both or neither."""
    from starx.ops._kernels import scan_backend

    if (w1.bias is None) != (w2.bias is None):
        raise ValueError("swiglu_mlp_gate takes w1 and w2 with biases both or neither")
    # the GEMMs' output dtype, decided before running them: autocast's where it is on
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype
    if not (USE_KERNELS and x.is_cuda and dtype in KERNEL_DTYPES and scan_backend(backend, x) == "triton"):
        return F.silu(w1(x)) * w2(x)
    # one GEMM for a and b (the weights' cat is fused into autocast's cast under torch.compile)
    return swiglu_fwd(F.linear(x, torch.cat([w1.weight, w2.weight])), w1.bias, w2.bias)

__all__ = ["KERNEL_DTYPES", "TILES", "USE_KERNELS", "gate_backward", "gate_forward", "swiglu_mlp_gate"]
