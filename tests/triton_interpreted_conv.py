"""Runs starx's Triton causal conv under Triton's CPU interpreter (TRITON_INTERPRET=1, set before
Triton is imported: tests/test_triton_conv.py starts this file in a subprocess) and prints one
JSON line per case: the relative error of the output and of the gradients of x, weight and bias
against the twin (starx.ops.conv, the torch backend) in fp64.

    TRITON_INTERPRET=1 python tests/triton_interpreted_conv.py
"""

from __future__ import annotations

import json
import os

assert os.environ.get("TRITON_INTERPRET") == "1", "set TRITON_INTERPRET=1 before starting this file"

import torch  # noqa: E402

from starx.ops import triton_conv as tc  # noqa: E402
from starx.ops.conv import causal_conv1d_channel_last  # noqa: E402


def conv_case(*, L=37, d=6, width=4, bias=True, silu=True, seq=None, strided=False,
              tiles=((8, 8, 2, 1), (8, 8, 3, 1)), sums="atomic") -> dict:
    """The Triton conv against the twin (starx.ops.conv, torch backend) in fp64: output and the
    gradients of x, weight and bias. seq: None, "l" or "bl" (segment ids shared or per sequence);
    tiles: TILES' fwd and bwd (steps, channels, steps loaded ahead, warps), small so that chunk,
    channel-block and group edges all fall inside the sequence; sums: TILES["sums"], how dweight
    and dbias are summed over programs."""
    tc.TILES.update(fwd=tiles[0], bwd=tiles[1], sums=sums)
    gen = torch.Generator().manual_seed(L * 7 + d + width)
    b = 2
    wide = torch.randn(b, L, 2 * d if strided else d, generator=gen)
    x = wide[..., :d]  # strided: a chunk of a wider tensor (row stride 2d), as xz.chunk(2, -1)
    weight, bias_ = torch.randn(d, width, generator=gen), torch.randn(d, generator=gen)
    seq_idx = None
    if seq is not None:  # segments starting at 0, L // 3 and L // 2 (per sequence: shifted by one in the second)
        starts = torch.zeros(b, L, dtype=torch.int64)
        starts[:, [L // 3, L // 2]] = 1
        starts[1] = starts[1].roll(1)
        seq_idx = starts.cumsum(-1)[0] if seq == "l" else starts.cumsum(-1)
    act = "silu" if silu else None
    leaves = [x.double().requires_grad_(), weight.double().requires_grad_(), bias_.double().requires_grad_()]
    ref = causal_conv1d_channel_last(leaves[0], leaves[1], leaves[2] if bias else None, act, backend="torch",
                                     seq_idx=seq_idx)
    dout = torch.randn(b, L, d, generator=gen)
    ref.backward(dout.double())
    mine = [t.detach().clone().requires_grad_() for t in (x, weight, bias_)]
    out = tc.causal_conv1d_triton(mine[0], mine[1], mine[2] if bias else None, act, seq_idx)
    out.backward(dout)
    assert out.is_contiguous() and out.dtype == x.dtype
    rel = lambda x, y: ((x.double() - y).norm() / y.norm()).item()  # noqa: E731
    errors = {"out": rel(out, ref.detach()), "dx": rel(mine[0].grad, leaves[0].grad),
              "dweight": rel(mine[1].grad, leaves[1].grad)}
    if bias:
        errors["dbias"] = rel(mine[2].grad, leaves[2].grad)
    return errors


def conv_gate_case(*, L=37, d=6, seq="bl", dtype=torch.float32) -> dict:
    """The backward as the Mamba mixer's fused inner node calls it (conv_backward with gate_grad and
    dout2): dx's first d channels against the twin's dx for the gradient dout + dout2, its last d
    equal to gate_grad bit for bit, and dweight / dbias against the twin's."""
    tc.TILES.update(fwd=(8, 8, 2, 1), bwd=(8, 8, 3, 1), sums="atomic")
    gen = torch.Generator().manual_seed(L + d)
    b = 2
    xz = torch.randn(b, L, 2 * d, generator=gen)
    x = xz[..., :d]
    weight, bias = torch.randn(d, 4, generator=gen), torch.randn(d, generator=gen)
    starts = torch.zeros(b, L, dtype=torch.int64)
    starts[:, [L // 3, L // 2]] = 1
    seq_idx = starts.cumsum(-1).to(torch.int32) if seq == "bl" else None
    dout, dout2, gate = (torch.randn(b, L, d, generator=gen) for _ in range(3))
    leaves = [x.double().requires_grad_(), weight.double().requires_grad_(), bias.double().requires_grad_()]
    ref = causal_conv1d_channel_last(*leaves, "silu", backend="torch", seq_idx=seq_idx)
    ref.backward(dout.double() + dout2.double())
    dx, dweight, dbias = tc.conv_backward(x.to(dtype), weight, bias, seq_idx, dout.to(dtype), True,
                                          gate_grad=gate.to(dtype), dout2=dout2.to(dtype))
    assert dx.shape == (b, L, 2 * d) and dx.dtype == dtype
    rel = lambda x, y: ((x.double() - y).norm() / y.norm()).item()  # noqa: E731
    return {"dx": rel(dx[..., :d], leaves[0].grad), "gate": (dx[..., d:] - gate.to(dtype)).abs().max().item(),
            "dweight": rel(dweight, leaves[1].grad), "dbias": rel(dbias, leaves[2].grad)}


def conv_op_case() -> dict:
    """torch.library.opcheck of the backward op, bias and segments on, atomic and per-block sums (it
    compares the real outputs' metadata with its fake implementation's), and the storage offset of
    each output, which must be 0: dweight and dbias are sums in one buffer, and an output that stays
    a view of it (fp32 dbias under atomics did, session 21) fails opcheck on the GPU."""
    gen = torch.Generator().manual_seed(3)
    x, dout = torch.randn(2, 19, 6, generator=gen), torch.randn(2, 19, 6, generator=gen)
    weight, bias = torch.randn(6, 4, generator=gen), torch.randn(6, generator=gen)
    seq_idx = (torch.arange(19) // 7).to(torch.int32)
    offsets = {}
    for sums in ("atomic", "blocks"):
        tc.TILES.update(fwd=(8, 8, 2, 1), bwd=(8, 8, 3, 1), sums=sums)
        args = (x, weight, bias, seq_idx, dout, True)
        torch.library.opcheck(torch.ops.starx.triton_conv_bwd.default, args)
        outs = torch.ops.starx.triton_conv_bwd.default(*args)
        offsets |= {f"{sums}_{name}_offset": float(t.storage_offset()) for name, t in zip(("dx", "dw", "db"), outs)}
    return offsets


CONV_CASES = {
    "plain": {},
    "no_bias_no_silu": {"bias": False, "silu": False},
    "seq_idx_l": {"seq": "l"},
    "seq_idx_bl": {"seq": "bl"},
    "strided_x": {"strided": True, "seq": "bl"},
    "ahead_3": {"tiles": ((16, 8, 3, 1), (16, 8, 3, 1))},
    "width_2": {"width": 2, "L": 19},
    "width_3_tile_16": {"width": 3, "L": 40, "d": 12, "tiles": ((16, 8, 4, 1), (16, 8, 4, 1))},
    "short": {"L": 2, "seq": "bl"},
    "block_partials": {"sums": "blocks", "seq": "l"},  # the deterministic path
}


if __name__ == "__main__":
    for case, kwargs in CONV_CASES.items():
        print(json.dumps({"case": case, "errors": conv_case(**kwargs)}), flush=True)
    print(json.dumps({"case": "gate_and_dout2", "errors": conv_gate_case()}), flush=True)
    print(json.dumps({"case": "gate_and_dout2_no_segments", "errors": conv_gate_case(L=19, seq=None)}), flush=True)
    print(json.dumps({"case": "opcheck", "errors": conv_op_case()}), flush=True)
