"""starx's Triton causal conv (starx.ops.triton_conv) against its twin (starx.ops.conv).

CPU: the kernels themselves, run by Triton's interpreter in a subprocess
(tests/triton_interpreted_conv.py), against the fp64 twin: output and the gradients of x, weight and bias, with and without
bias and SiLU, segments (l,) and (b, l), a strided x, widths 2-4, lengths and channels that are
not multiples of the tile, sequences shorter than the width. GPU (marked gpu): fp32 and bf16 at STAR
shapes, opcheck, and a compiled mixer in one graph that runs the Triton conv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from starx.ops import kernel_status
from starx.ops.conv import causal_conv1d_channel_last
from starx.ops.triton_conv import causal_conv1d_triton
from starx.ops.triton_scan import triton_error

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(triton_error() is not None, reason=f"Triton is not installed ({triton_error()})")
@pytest.mark.slow
def test_interpreted_triton_conv_matches_the_fp64_twin():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "tests/triton_interpreted_conv.py")], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert {r["case"] for r in results} == {"plain", "no_bias_no_silu", "seq_idx_l", "seq_idx_bl", "strided_x",
                                            "ahead_3", "width_2", "width_3_tile_16", "short", "block_partials",
                                            "gate_and_dout2", "gate_and_dout2_no_segments", "opcheck"}
    for r in results:
        assert len(r["errors"]) >= 3
        for name, err in r["errors"].items():
            assert err < 1e-5, f"{r['case']} {name}: rel err {err:.2e}"


def test_triton_conv_refuses_what_it_cannot_run():
    x = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="w <= 4"):
        causal_conv1d_triton(x, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="seq_idx"):
        causal_conv1d_triton(x, torch.zeros(3, 4), seq_idx=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d_triton(x, torch.zeros(3, 4), activation="relu")


def test_triton_conv_refuses_backward_tiles_seen_wrong_on_gpu(monkeypatch):
    """A backward loading fewer than 3 steps ahead gave wrong dx on the H200 (cause not found):
    the launcher refuses such tiles before it launches anything."""
    from starx.ops import triton_conv as tc

    monkeypatch.setitem(tc.TILES, "bwd", (32, 128, 2, 1))
    x = torch.zeros(1, 4, 3)
    with pytest.raises(ValueError, match="loads 2 steps ahead; the backward needs at least 3"):
        tc.conv_backward(x, torch.zeros(3, 4), None, None, x, True)


# ----- GPU -----
_STATUS = kernel_status()
requires_gpu = pytest.mark.skipif(not _STATUS["cuda_available"] or _STATUS["triton_error"] is not None,
                                  reason="needs CUDA and Triton")
SHAPES = {"k4_chunk": (64, 624, 768, True), "finetune4dir": (128, 197, 3072, False)}  # (b, l, d, x a chunk of xz)


def _conv_and_grads(x, weight, bias, seq_idx, backend):
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias)]  # (detach keeps x's strides)
    out = causal_conv1d_channel_last(*leaves, "silu", backend=backend, seq_idx=seq_idx)
    w = torch.randn(out.shape, generator=torch.Generator(device="cuda").manual_seed(1), device="cuda")
    (out.float() * w).sum().backward()
    return out, [t.grad for t in leaves]


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("segments", [False, True], ids=["", "seq_idx"])
def test_triton_conv_matches_the_twin_on_gpu(shape, dtype, segments, request):
    b, L, d, chunk = SHAPES[shape]
    gen = torch.Generator(device="cuda").manual_seed(0)
    xz = torch.randn(b, L, 2 * d if chunk else d, generator=gen, device="cuda").to(dtype)
    x = xz[..., :d]  # as xz.chunk(2, -1): row stride 2d
    assert x.is_contiguous() != chunk
    weight = torch.randn(d, 4, generator=gen, device="cuda") * 0.5  # fp32, as the module's parameter
    bias = torch.randn(d, generator=gen, device="cuda") * 0.1
    seq_idx = None
    if segments:
        seq_idx = torch.zeros(b, L, dtype=torch.int32, device="cuda")
        seq_idx[:, L // 4 :: L // 4] = 1
        seq_idx = seq_idx.cumsum(-1)
    out, grads = _conv_and_grads(x, weight, bias, seq_idx, "triton")
    assert out.dtype == dtype and out.is_contiguous()
    ref, ref_grads = _conv_and_grads(x.float(), weight, bias, seq_idx, "torch")
    rel = lambda a, r: ((a.double() - r.double()).norm() / r.double().norm()).item()  # noqa: E731
    errors = {"out": rel(out, ref), **{k: rel(g, r) for k, g, r in zip(("dx", "dweight", "dbias"), grads, ref_grads)}}
    print(f"\n  {request.node.callspec.id}: " + " ".join(f"{k} {v:.1e}" for k, v in errors.items()), end="")
    assert max(errors.values()) < (1e-5 if dtype == torch.float32 else 1e-2), errors


@pytest.mark.gpu
@requires_gpu
def test_weight_sums_by_atomics_match_the_deterministic_partials_on_gpu(monkeypatch):
    """TILES["sums"]: every program adds dweight / dbias into one total by atomics; under
    torch.use_deterministic_algorithms each stores its partial and torch adds them up, run to run
    bit-identical. Same gradients both ways; dx does not depend on the choice."""
    from starx.ops import triton_conv as tc

    b, L, d, _ = SHAPES["k4_chunk"]
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(b, L, d, generator=gen, device="cuda").to(torch.bfloat16)
    weight, bias = torch.randn(d, 4, generator=gen, device="cuda") * 0.5, torch.randn(d, generator=gen, device="cuda")
    monkeypatch.setitem(tc.TILES, "sums", "atomic")
    atomic = _conv_and_grads(x, weight, bias, None, "triton")[1]
    monkeypatch.setitem(tc.TILES, "sums", "blocks")
    blocks = _conv_and_grads(x, weight, bias, None, "triton")[1]
    assert torch.equal(atomic[0], blocks[0])
    for a, p in zip(atomic[1:], blocks[1:]):
        assert ((a - p).norm() / p.norm()).item() < 1e-6
    monkeypatch.setitem(tc.TILES, "sums", "atomic")
    torch.use_deterministic_algorithms(True)
    try:
        runs = [_conv_and_grads(x, weight, bias, None, "triton")[1] for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(r, p) for r, p in zip(runs[0], runs[1])) and torch.equal(runs[0][1], blocks[1])


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("with_extras", [False, True], ids=["plain", "bias_seq_idx"])
def test_triton_conv_opcheck(with_extras):
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(2, 100, 2 * 96, generator=gen, device="cuda").to(torch.bfloat16)[..., :96].requires_grad_()
    weight = torch.randn(96, 4, generator=gen, device="cuda", requires_grad=True)
    bias = torch.randn(96, generator=gen, device="cuda", requires_grad=True) if with_extras else None
    seq_idx = (torch.arange(100, device="cuda", dtype=torch.int32) // 30) if with_extras else None
    dout = torch.randn(2, 100, 96, generator=gen, device="cuda").to(torch.bfloat16)
    torch.library.opcheck(torch.ops.starx.triton_conv_fwd.default, (x, weight, bias, seq_idx, True))
    torch.library.opcheck(torch.ops.starx.triton_conv_bwd.default,
                          (x.detach(), weight.detach(), None if bias is None else bias.detach(), seq_idx, dout, True))
    # as the Mamba mixer's fused node calls it: the gate's gradient beside dx, a second output gradient
    torch.library.opcheck(torch.ops.starx.triton_conv_bwd.default,
                          (x.detach(), weight.detach(), None if bias is None else bias.detach(), seq_idx, dout, True,
                           torch.randn_like(dout), torch.randn_like(dout)))


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("mixer", ["uni_reset", "four_directions"])
def test_compiled_mixer_runs_the_triton_conv_in_one_graph(mixer):
    """The compiled mixer (inductor) has no graph break, its graph holds the Triton conv op (not
    the twin's multiply-adds), and its output and input gradient match the eager torch twin."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    from torch._inductor.compile_fx import compile_fx

    from starx.models.mamba import BiMamba4, Mamba, column_order, direction_orders

    torch.manual_seed(0)
    L = 197
    if mixer == "uni_reset":
        module = Mamba(192, backend="triton").cuda()
        reset = torch.zeros(L, dtype=torch.int8, device="cuda")
        reset[[60, 120]] = 1
        extra = {"reset": reset}
    else:
        module = BiMamba4(192, backend="triton").cuda()
        orders, inverses = direction_orders(column_order(14, 14, 98))
        extra = {"orders": orders.cuda(), "inverses": inverses.cuda()}
    x = torch.randn(4, L, 192, device="cuda")
    graphs = []

    def recording_inductor(gm, example_inputs):
        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    torch._dynamo.reset()
    counters.clear()
    results = {}
    for name, run in (("compiled", torch.compile(module, backend=recording_inductor)), ("twin", module)):
        module.backend = "triton" if name == "compiled" else "torch"
        xi = x.clone().requires_grad_()
        module.zero_grad()
        out = run(xi, **extra)
        out.square().sum().backward()
        results[name] = (out.detach(), xi.grad, *(p.grad.clone() for p in module.parameters()))
    assert not dict(counters["graph_break"]), dict(counters["graph_break"])
    assert len(graphs) == 1
    # (the uni mixer's conv sits inside its fused autograd node: a subgraph of the captured graph)
    nodes = [n for m in graphs[0].modules() if isinstance(m, torch.fx.GraphModule) for n in m.graph.nodes]
    assert any("triton_conv_fwd" in str(n.target) for n in nodes)
    for got, want in zip(results["compiled"], results["twin"]):  # output, input and every parameter gradient
        assert ((got - want).norm() / want.norm()).item() < 1e-3
