"""Runs starx's Triton scan under Triton's CPU interpreter (TRITON_INTERPRET=1, set before
Triton is imported: tests/test_triton_scan.py starts this file in a subprocess) and prints one
JSON line per case: the largest relative error of the output and each gradient against the
sequential fp64 reference, or of the channel-last mixers against the torch-twin mixers.

    TRITON_INTERPRET=1 python tests/triton_interpreted.py {kernel|gluon|softplus|mixer|span|swiglu}

``gluon``: the Gluon backward, run by the interpreter through tests/gluon_interpreted.py.
``span``: the decoder's span attention (starx.ops.span_attention) against fp64 SDPA with the mask.
``swiglu``: the SwiGLU gate's kernels (starx.ops.swiglu) against fp64 autograd.
"""

from __future__ import annotations

import json
import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "set TRITON_INTERPRET=1 before starting this file"
# No Inductor caches: the AOTAutograd cache is keyed on the forward graph, so after a custom op's
# backward changes (its outputs, their shapes) it served the old compiled backward (seen 2026-12-02:
# "wrong number of dimensions" from swiglu_bwd's new stacked bias gradients).
os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from starx.ops import triton_scan as ts  # noqa: E402
from starx.ops._triton_scan_kernels import _softplus_slope  # noqa: E402


def reference(u, delta, A, B, C, D, z, bias, softplus, reset):
    """The scan step by step in fp64, grouped B/C and reset included (the oracle)."""
    b, d, L = u.shape
    g = B.shape[1]
    dt = delta + (bias[:, None] if bias is not None else 0)
    dt = F.softplus(dt) if softplus else dt
    Bx, Cx = B[:, torch.arange(d) // (d // g)], C[:, torch.arange(d) // (d // g)]  # (b, d, n, l)
    h, ys = u.new_zeros(b, d, A.shape[1]), []
    for t in range(L):
        a = torch.exp(dt[:, :, t, None] * A)
        if reset is not None and reset[t]:
            a = a * 0
        h = a * h + dt[:, :, t, None] * Bx[..., t] * u[:, :, t, None]
        ys.append((h * Cx[..., t]).sum(-1))
    y = torch.stack(ys, -1)
    y = y + u * D[:, None] if D is not None else y
    return y * F.silu(z) if z is not None else y


def kernel_case(*, L=37, d=8, n=4, g=1, gate=True, skip=True, bias=True, softplus=True, reset=False,
                channel_last=False, tiles=((4, 1), (4, 1), 8), sums="atomic", bc_bf16=False, fast_math="",
                dt=(0.5, 0.0)) -> dict:
    """``fast_math``: the kernels computing softplus by the series and log2 blend (TILES["fast_math"]);
    ``dt``: (scale, shift) of the raw dt values, so that softplus sees both sides of the blend."""
    ts.TILES.update(fwd=tiles[0], bwd=tiles[1], steps=tiles[2], sums=sums, fast_math=fast_math)
    gen = torch.Generator().manual_seed(L * 7 + d + g)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    b = 2
    u, delta, z = r(b, d, L), dt[0] * r(b, d, L) + dt[1], r(b, d, L)
    A = -torch.rand(d, n, generator=gen) * 2 - 0.1
    B, C = r(b, g, n, L), r(b, g, n, L)
    D, bias_ = r(d), 0.3 * r(d)
    if channel_last:  # the same values laid out (b, l, d)
        u, delta, z = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (u, delta, z))
        B, C = (t.transpose(2, 3).contiguous().transpose(2, 3) for t in (B, C))
    if bc_bf16:  # B and C as the mixer hands them under autocast
        B, C = B.bfloat16(), C.bfloat16()
    rs = None
    if reset:
        rs = torch.zeros(L, dtype=torch.int8)
        rs[[0, L // 3, L // 2]] = 1
    args = [u, delta, A, B, C, D if skip else None, z if gate else None, bias_ if bias else None]
    leaves = [None if t is None else t.double().requires_grad_() for t in args]
    ref = reference(*leaves, softplus, rs)
    dout = r(b, d, L)
    ref.backward(dout.double())
    out, states = ts.scan_forward(*args, rs, softplus, True)
    du, ddelta, sums, dz = ts.scan_backward(*args, rs, states, dout, softplus)
    grads = (du, ddelta, *ts.split_sums(sums, b, d, g, L, n), dz)
    rel = lambda x, y: ((x.double() - y).norm() / y.norm()).item()  # noqa: E731
    errors = {"out": rel(out, ref.detach())}
    names = ("du", "ddelta", "dA", "dB", "dC", "dD", "dbias", "dz")
    refs = (leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], leaves[5], leaves[7], leaves[6])
    for name, got, want in zip(names, grads, refs):
        if want is not None:
            errors[name] = rel(got, want.grad)
    return errors


@triton.jit
def softplus_kernel(v_ptr, sp_ptr, slope_ptr, n, FAST_MATH: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    sp, slope = _softplus_slope(tl.load(v_ptr + i, mask=i < n), FAST_MATH)
    tl.store(sp_ptr + i, sp, mask=i < n)
    tl.store(slope_ptr + i, slope, mask=i < n)


def softplus_cases() -> dict:
    """The largest relative error of softplus and of its slope (sigmoid) from _softplus_slope,
    each FAST_MATH the interpreter runs (0: Goldberg's log1p; 2: the series / log2 blend), over
    pre-activations from -30 to 30, element by element against fp64."""
    v = torch.linspace(-30, 30, 6001)
    want_sp, want_slope = F.softplus(v.double()), torch.sigmoid(v.double())
    errors = {}
    for mode in (0, 2):
        sp, slope = torch.empty_like(v), torch.empty_like(v)
        softplus_kernel[(-(-v.numel() // 1024),)](v, sp, slope, v.numel(), FAST_MATH=mode, BLOCK=1024)
        errors[f"softplus_{mode}"] = ((sp.double() - want_sp).abs() / want_sp).max().item()
        errors[f"slope_{mode}"] = ((slope.double() - want_slope).abs() / want_slope).max().item()
    return errors


def mixer_cases() -> dict:
    from starx.models.mamba import BiMamba4, Mamba, column_order, direction_orders
    from starx.ops.inner import mamba_inner_channel_last, mamba_inner_directions_channel_last

    ts.TILES.update(fwd=(4, 1), bwd=(4, 1), steps=4)
    torch.manual_seed(0)
    errors = {}
    uni = Mamba(16, d_state=4, backend="torch")
    reset = torch.zeros(11, dtype=torch.int8)
    reset[6] = 1
    for name, rs in (("uni", None), ("uni_reset", reset)):
        x = torch.randn(2, 11, 16, requires_grad=True)
        ref = uni(x, reset=rs)
        ref_grad = torch.autograd.grad(ref.square().sum(), x)[0]
        x2 = x.detach().clone().requires_grad_()
        out = mamba_inner_channel_last(F.linear(x2, uni.in_proj.weight), *uni._args("", True), reset=rs, backend="torch")
        grad = torch.autograd.grad(out.square().sum(), x2)[0]
        errors[name] = max(((out - ref).norm() / ref.norm()).item(), ((grad - ref_grad).norm() / ref_grad.norm()).item())
    # the fused node the GPU runs (starx.ops.triton_inner: the Triton conv too), every gradient
    from starx.ops.inner import _segments
    from starx.ops.triton_inner import mamba_inner_triton

    params = [p for _, p in uni.named_parameters()]
    for name, rs in (("fused", None), ("fused_reset", reset)):
        x = torch.randn(2, 11, 16, requires_grad=True)
        ref = uni(x, reset=rs)
        want = torch.autograd.grad(ref.square().sum(), [x, *params])
        x2 = x.detach().clone().requires_grad_()
        conv_w, conv_b, x_proj_w, dt_proj_w, _, _, A, D, dt_bias, _ = uni._args("", False)
        y = mamba_inner_triton(F.linear(x2, uni.in_proj.weight), conv_w[:, 0], conv_b, x_proj_w, dt_proj_w, A, D,
                               dt_bias, True, _segments(rs), rs)
        out = F.linear(y, uni.out_proj.weight, uni.out_proj.bias)
        got = torch.autograd.grad(out.square().sum(), [x2, *params])
        errors[name] = max([((out - ref).norm() / ref.norm()).item()]
                           + [((g - w).norm() / w.norm()).item() for g, w in zip(got, want)])
    bi = BiMamba4(16, d_state=4, backend="torch")
    orders, inverses = direction_orders(column_order(2, 5, 5))
    x = torch.randn(2, 11, 16, requires_grad=True)
    ref = bi(x, orders, inverses)
    ref_grad = torch.autograd.grad(ref.square().sum(), x)[0]
    x2 = x.detach().clone().requires_grad_()
    y = mamba_inner_directions_channel_last(F.linear(x2, bi.in_proj.weight), orders, inverses, *bi._stacked_args(),
                                            backend="torch")
    out = F.linear(y / 4, bi.out_proj.weight, bi.out_proj.bias)
    grad = torch.autograd.grad(out.square().sum(), x2)[0]
    errors["four_directions"] = max(((out - ref).norm() / ref.norm()).item(),
                                    ((grad - ref_grad).norm() / ref_grad.norm()).item())
    return errors


KERNEL_CASES = {
    "plain": {},
    "channel_last": {"channel_last": True},
    "no_gate_skip_bias_softplus": {"gate": False, "skip": False, "bias": False, "softplus": False},
    "two_groups": {"g": 2},
    "two_groups_two_blocks_each": {"g": 2, "d": 16},  # dB / dC: two blocks add into each group's sums
    "block_partials": {"g": 2, "d": 16, "sums": "blocks"},  # the deterministic path
    "reset": {"reset": True},
    "tile_boundary_64": {"L": 64, "d": 16, "tiles": ((8, 1), (8, 1), 16)},
    "d_state_16_full_tile": {"L": 40, "d": 64, "n": 16, "tiles": ((32, 1), (32, 1), 16)},
    # softplus' series / log2 blend (the precise log2 in its place: the interpreter has no approximate
    # one), with the pre-activations spread over both sides of e^v = 1/8 and past the linear branch
    "fast_math": {"channel_last": True, "fast_math": "fwd+bwd", "dt": (6.0, -3.0)},
    "fast_math_bwd": {"channel_last": True, "fast_math": "bwd", "dt": (6.0, -3.0)},  # (the forward's dt exact)
}

# The Gluon backward (starx's on Hopper GPUs) in tests/gluon_interpreted.py's interpreter shim: one
# channel a lane, so 32 channels a program and d_state 16, as it launches on the GPU
GLUON_CASE = {"n": 16, "d": 32, "tiles": ((32, 1), (32, 1), 8)}
GLUON_CASES = {
    "plain": {},
    "channel_last": {"channel_last": True},
    "no_gate_skip_bias_softplus": {"gate": False, "skip": False, "bias": False, "softplus": False},
    "reset": {"reset": True},
    "two_groups_two_blocks_each": {"g": 2, "d": 128},
    "block_partials": {"g": 2, "d": 128, "sums": "blocks"},
    "tile_boundary_48": {"L": 48, "reset": True, "tiles": ((32, 1), (32, 1), 16)},
    "bf16_bc": {"channel_last": True, "reset": True, "bc_bf16": True},  # (where PACKED_BC applies)
    "fast_math": {"channel_last": True, "fast_math": "fwd+bwd", "dt": (6.0, -3.0)},
}


def staircase(queries: int, keys: int, cluster: int, own_from: int | None) -> torch.Tensor:
    """Spans as the decoder's: clusters of ``cluster`` queries reading the keys before their
    cluster's, from key 0 (cross-image) or, from query row ``own_from`` on, from key 10 (own image)."""
    rows = torch.arange(queries)
    hi = (3 + cluster * (rows // cluster)).clamp(max=keys)
    lo = torch.where(rows >= own_from, 10, 0) if own_from is not None else torch.zeros_like(rows)
    return torch.stack([lo, hi], 1).to(torch.int32)


def span_case(*, queries=37, keys=45, d=16, cluster=4, own_from=None, tiles=16) -> dict:
    """The largest relative error of the span kernels' output and gradients (fp16: the interpreter
    has no bf16 tl.dot) against fp64 SDPA with the same mask."""
    from starx.ops import span_attention as sa

    spans = staircase(queries, keys, cluster, own_from)
    sa.check_spans(spans, keys)
    sa.TILES.update(fwd=(tiles, tiles, 4, 1), dq=(tiles, tiles, 4, 1), dkdv=(tiles, tiles, 4, 1))
    gen = torch.Generator().manual_seed(queries + keys)
    b, h = 2, 2
    q = torch.randn(b, queries, h, d, generator=gen).transpose(1, 2).half()  # heads of a Linear's output
    k, v = torch.randn(b, keys, 2, h, d, generator=gen).permute(2, 0, 3, 1, 4).half()
    o, lse = sa.attention_forward(q, k, v, spans)
    do = torch.randn(o.shape, generator=gen).half()
    grads = sa.attention_backward(q, k, v, o, lse, do, spans)
    ref_in = [t.double().requires_grad_() for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*ref_in, attn_mask=sa.spans_to_mask(spans, keys))
    ref.backward(do.double())
    rel = lambda a, r: ((a.double() - r).abs().max() / r.abs().max()).item()  # noqa: E731
    return {"o": rel(o, ref), **{f"d{n}": rel(g, t.grad) for n, g, t in zip("qkv", grads, ref_in)}}


# one tile row of BM queries reads one key range: cases at and across the tiles' edges
SPAN_CASES = {
    "cross_image": {},
    "own_image": {"own_from": 20},  # lo steps up mid-way, inside a query tile
    "one_tile": {"queries": 12, "keys": 14, "tiles": 16},  # rows and keys past the ends, masked
    "cluster_across_tiles": {"queries": 40, "keys": 48, "cluster": 6, "d": 32},
}


def swiglu_case(*, rows=37, channels=40, bias=True, dtype="float32") -> dict:
    """The largest relative error of the gate's kernels (output, da, db, the two bias gradients)
    against fp64 autograd of silu(a + bias_a) * (b + bias_b), on small tiles so that rows and
    channels end inside a tile and a program's band spans several steps."""
    from starx.ops import swiglu as sw
    from tests.test_swiglu import fp64_reference

    sw.TILES.update(fwd=(4, 16, 8, 1), bwd=(4, 16, 8, 1))
    gen = torch.Generator().manual_seed(rows + channels)
    dt = getattr(torch, dtype)
    ab = torch.randn(2, rows, 2 * channels, generator=gen).mul(3).to(dt)  # [a | b], one GEMM's rows
    g = torch.randn(2, rows, channels, generator=gen).mul(3).to(dt)
    ba, bb = (torch.randn(channels, generator=gen) if bias else None for _ in range(2))
    h = sw.gate_forward(ab, ba, bb)
    dab, dbias = sw.gate_backward(g, ab, ba, bb)
    dba, dbb = dbias if bias else (dbias, dbias)
    da, db = dab.chunk(2, dim=-1)
    ref = fp64_reference(g, *ab.chunk(2, dim=-1), ba, bb)
    rel = lambda x, r: ((x.double() - r).abs().max() / r.abs().max()).item()  # noqa: E731
    errors = {"h": rel(h, ref[0]), "da": rel(da, ref[1]), "db": rel(db, ref[2])}
    if bias:
        errors |= {"dbias_a": rel(dba, ref[3]), "dbias_b": rel(dbb, ref[4])}
    else:
        errors["no_bias_grads"] = float(dba.numel() + dbb.numel())
    return errors


def swiglu_op_case() -> dict:
    """The gate's custom ops (fake shapes, autograd) through torch.library.opcheck and torch.compile:
    the kernels, registered here for CPU tensors (the interpreter runs them), with and without
    biases; errors of the compiled output and gradients against fp64 autograd."""
    from starx.ops import swiglu as sw
    from tests.test_swiglu import fp64_reference

    sw.TILES.update(fwd=(4, 16, 8, 1), bwd=(4, 16, 8, 1))
    torch.library.register_kernel("starx::swiglu_fwd", "cpu", sw.gate_forward)
    torch.library.register_kernel("starx::swiglu_bwd", "cpu", sw.gate_backward)
    gen = torch.Generator().manual_seed(3)
    errors = {}
    for bias in (True, False):
        ins = [torch.randn(*shape, generator=gen).requires_grad_() for shape in ((2, 9, 80), (40,), (40,))]
        args = ins if bias else ins[:1] + [None, None]
        torch.library.opcheck(torch.ops.starx.swiglu_fwd.default, tuple(args))
        out = torch.compile(sw.swiglu_fwd)(*args)
        g = torch.randn(out.shape, generator=gen)
        out.backward(g)
        ref = fp64_reference(g, *ins[0].detach().chunk(2, dim=-1), *(t.detach() if t is not None else None
                                                                     for t in args[1:]))
        rel = lambda x, r: ((x.double() - r).abs().max() / r.abs().max()).item()  # noqa: E731
        grads = [*ins[0].grad.chunk(2, dim=-1), ins[1].grad, ins[2].grad]
        pairs = [("h", out, ref[0])] + [(f"d{n}", t, r) for n, t, r in zip(("a", "b", "bias_a", "bias_b"), grads,
                                                                         ref[1:])]
        errors |= {f"{n}_{'bias' if bias else 'no_bias'}": rel(x, r) for n, x, r in pairs}
    return errors


SWIGLU_CASES = {
    "bias_fp32": {},
    "no_bias_fp32": {"bias": False},
    "bias_fp16": {"dtype": "float16"},
    "one_partial_tile": {"rows": 3, "channels": 5},
}


def layer_norm_case(*, rows=37, channels=40, residual=True, bias=True, ds_in=True, dtype="float32",
                    prefetch=0, twice=False) -> dict:
    """The largest relative error of the add + LayerNorm kernels (y, s, dx, dresidual, dweight,
    dbias) against fp64 autograd of the twin (starx.ops.norm), on small tiles so that rows end
    inside a step and a band, and channels inside BLOCK_N. ds_in: the stream output has a gradient
    of its own (the next layer's), else only y does. prefetch: the backward issuing the next step's
    loads first. twice: a second LayerNorm of the stream (y2, dweight2, dbias2: a decoder tap)."""
    from starx.ops import layer_norm as ln
    from starx.ops.norm import add_layer_norm_twice_torch

    ln.TILES.update(fwd=(4, 1), bwd=(4, 8, 1, prefetch))
    gen = torch.Generator().manual_seed(rows + channels)
    dt = getattr(torch, dtype)
    x = torch.randn(2, rows, channels, generator=gen).mul(2).add(0.5).to(dt)
    r = torch.randn(2, rows, channels, generator=gen) if residual else None
    w, b = torch.randn(channels, generator=gen), torch.randn(channels, generator=gen) if bias else None
    w2, b2 = (torch.randn(channels, generator=gen), torch.randn(channels, generator=gen) if bias else None) if twice \
        else (None, None)
    dy = torch.randn(2, rows, channels, generator=gen).to(dt)
    dy2 = torch.randn(2, rows, channels, generator=gen).to(dt) if twice else None
    ds = torch.randn(2, rows, channels, generator=gen) if ds_in else None
    y, y2, st = ln.layer_norm_forward(x, r, w, b, w2, b2, 1e-5)
    dx, dr, sums = ln.layer_norm_backward(dy, dy2, ds, st, w, w2, 1e-5, bias, residual)
    grads = dict(zip(["dweight", "dbias", "dweight2", "dbias2"] if bias else ["dweight", "dweight2"], sums))
    params = {"x": x, "r": r, "w": w, "b": b, "w2": w2, "b2": b2}
    leaves = {k: t.double().requires_grad_() for k, t in params.items() if t is not None}
    lw2 = leaves.get("w2", leaves["w"].detach())  # (without a second LayerNorm its output is not used)
    ref_y, ref_y2, ref_s = add_layer_norm_twice_torch(leaves["x"], leaves.get("r"), leaves["w"], leaves.get("b"),
                                                      lw2, leaves.get("b2"), 1e-5)
    outs, douts = [ref_y], [dy.double()]
    if twice:
        outs, douts = outs + [ref_y2], douts + [dy2.double()]
    if ds_in:
        outs, douts = outs + [ref_s], douts + [ds.double()]
    torch.autograd.backward(outs, douts)
    rel = lambda a, ref: ((a.double() - ref).abs().max() / ref.abs().max()).item()  # noqa: E731
    errors = {"y": rel(y, ref_y.detach()), "s": rel(st, ref_s.detach()), "dx": rel(dx, leaves["x"].grad),
              "dweight": rel(grads["dweight"], leaves["w"].grad)}
    errors["dresidual"] = rel(dr, leaves["r"].grad) if residual else float(dr.numel())
    errors["dbias"] = rel(grads["dbias"], leaves["b"].grad) if bias else float(sums.shape[0] - (2 if twice else 1))
    if twice:
        errors |= {"y2": rel(y2, ref_y2.detach()), "dweight2": rel(grads["dweight2"], leaves["w2"].grad)}
        if bias:
            errors["dbias2"] = rel(grads["dbias2"], leaves["b2"].grad)
    else:
        errors["no_y2"] = float(y2.numel())
    return errors


def layer_norm_op_case() -> dict:
    """The add + LayerNorm custom ops through torch.library.opcheck and torch.compile (the kernels
    registered here for CPU tensors, which the interpreter runs), with one LayerNorm (the stream
    used downstream and not) and with two (a decoder tap): errors of the compiled outputs and
    gradients against fp64 autograd of the twin."""
    from starx.ops import layer_norm as ln
    from starx.ops.norm import add_layer_norm_twice_torch

    ln.TILES.update(fwd=(4, 1), bwd=(4, 8, 1, 0))
    torch.library.register_kernel("starx::add_ln_fwd", "cpu", ln.layer_norm_forward)
    torch.library.register_kernel("starx::add_ln_bwd", "cpu", ln.layer_norm_backward)
    gen = torch.Generator().manual_seed(5)
    names = ("x", "residual", "weight", "bias", "weight2", "bias2")
    errors = {}
    for tag in ("stream_used", "stream_unused", "twice"):
        ins = [torch.randn(*shape, generator=gen).requires_grad_()
               for shape in ((2, 9, 40), (2, 9, 40), (40,), (40,), (40,), (40,))]
        args = ins if tag == "twice" else ins[:4] + [None, None]
        torch.library.opcheck(torch.ops.starx.add_ln_fwd.default, (*args, 1e-5))

        def loss(y, y2, st, tag=tag):
            if tag == "stream_unused":
                return y.square().sum()
            return (y * st).sum() + ((y2 * y).sum() if tag == "twice" else 0)

        torch.compile(lambda *a: loss(*ln.add_ln_fwd(*a, 1e-5)))(*args).backward()
        ref_ins = [t.detach().double().requires_grad_() for t in ins]
        loss(*add_layer_norm_twice_torch(*ref_ins, 1e-5)).backward()
        rel = lambda a, ref: ((a.double() - ref).abs().max() / ref.abs().max()).item()  # noqa: E731
        used = names if tag == "twice" else names[:4]
        errors |= {f"d{n}_{tag}": rel(t.grad, r.grad) for n, t, r in zip(names, ins, ref_ins) if n in used}
    return errors


LAYER_NORM_CASES = {
    "residual_bias_ds_fp32": {},
    "first_layer_no_residual": {"residual": False},
    "no_bias_no_ds_in": {"bias": False, "ds_in": False},
    "fp16": {"dtype": "float16"},
    "one_partial_step": {"rows": 1, "channels": 7},
    "prefetch": {"prefetch": 1},
    "prefetch_no_ds_in": {"ds_in": False, "residual": False, "prefetch": 1},
    "prefetch_one_partial_step": {"rows": 1, "channels": 7, "prefetch": 1},
    "twice": {"twice": True},
    "twice_no_bias_no_ds_in_prefetch": {"twice": True, "bias": False, "ds_in": False, "prefetch": 1},
    "twice_fp16_first_layer": {"twice": True, "dtype": "float16", "residual": False},
}


def gluon_cases():
    """(case, variant, errors): starx's default Gluon backward in every case, and each candidate of
    bench/scan_bwd_rows.py (the ones the GPU tests check) in the reset case, or in bf16_bc where
    it reads bf16 B and C packed."""
    from gluon_interpreted import interpreted

    from bench.scan_bwd_rows import VARIANTS
    from starx.ops import _gluon_scan_kernels

    kernel = interpreted(_gluon_scan_kernels, "scan_bwd_rows")
    default = ts.default_backward("cuda", False)  # what starx launches on a Hopper GPU
    as_interpreted = lambda k: ts.WithConstants(kernel, fp32_bc=k.fp32_bc, pack_bc=k.pack_bc, **k.constants)  # noqa: E731
    runs = [(case, "default", as_interpreted(default), kw) for case, kw in GLUON_CASES.items()]
    for name, k in VARIANTS.items():
        case = "bf16_bc" if k.pack_bc else "reset"
        runs.append((case, name, as_interpreted(k), GLUON_CASES[case]))
    for case, variant, k, kw in runs:
        ts.TILES["bwd_kernel"] = k
        yield case, variant, kernel_case(**(GLUON_CASE | kw))


if __name__ == "__main__":
    if sys.argv[1] == "kernel":
        for case, kwargs in KERNEL_CASES.items():
            print(json.dumps({"case": case, "errors": kernel_case(**kwargs)}), flush=True)
    elif sys.argv[1] == "gluon":
        for case, variant, errors in gluon_cases():
            print(json.dumps({"case": case, "variant": variant, "errors": errors}), flush=True)
    elif sys.argv[1] == "span":
        for case, kwargs in SPAN_CASES.items():
            print(json.dumps({"case": case, "errors": span_case(**kwargs)}), flush=True)
    elif sys.argv[1] == "swiglu":
        for case, kwargs in SWIGLU_CASES.items():
            print(json.dumps({"case": case, "errors": swiglu_case(**kwargs)}), flush=True)
        print(json.dumps({"case": "compiled_op", "errors": swiglu_op_case()}), flush=True)
    elif sys.argv[1] == "layer_norm":
        for case, kwargs in LAYER_NORM_CASES.items():
            print(json.dumps({"case": case, "errors": layer_norm_case(**kwargs)}), flush=True)
        print(json.dumps({"case": "compiled_op", "errors": layer_norm_op_case()}), flush=True)
    elif sys.argv[1] == "softplus":
        print(json.dumps({"case": "softplus", "errors": softplus_cases()}), flush=True)
    else:
        print(json.dumps({"case": "mixers", "errors": mixer_cases()}), flush=True)
