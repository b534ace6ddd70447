"""The residual add + LayerNorm kernels (starx.ops.layer_norm) against the twin (starx.ops.norm).

CPU: the dispatch leaves CPU tensors and unsupported dtypes to the twin; the Triton kernels, run by
Triton's interpreter in a subprocess (tests/triton_interpreted.py layer_norm), match fp64 autograd
of the twin with and without residual, bias and the stream's own gradient, in fp32 and fp16, and
as custom ops through torch.library.opcheck and torch.compile. GPU (marked gpu): STAR-B's shape in
bf16, and a compiled MambaMLP block with the kernels against the twin.
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
from starx.ops import layer_norm as ln
from starx.ops.norm import add_layer_norm, add_layer_norm_torch
from starx.ops.triton_scan import triton_error

ROOT = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(triton_error() is not None, reason=f"Triton is not installed ({triton_error()})")
_STATUS = kernel_status()
requires_gpu = pytest.mark.skipif(not _STATUS["cuda_available"] or _STATUS["triton_error"] is not None,
                                  reason="needs CUDA and Triton")


def test_cpu_tensors_and_fp64_streams_take_the_twin(monkeypatch):
    monkeypatch.setattr(ln, "USE_KERNELS", True)
    x, r, w, b = torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(8), torch.randn(8)
    assert not ln.kernels_take(x, r, w, b)  # CPU
    y, s = add_layer_norm(x, r, w, b, 1e-5, backend="triton")
    want_y, want_s = add_layer_norm_torch(x, r, w, b, 1e-5)
    torch.testing.assert_close((y, s), (want_y, want_s), rtol=0, atol=0)
    meta = dict(device="meta")
    assert not ln.kernels_take(torch.empty(2, 5, 8, **meta, dtype=torch.float64), None, w.to(**meta), None)
    assert not ln.kernels_take(torch.empty(2, 5, 8, **meta), torch.empty(2, 5, 8, **meta, dtype=torch.bfloat16),
                               w.to(**meta), None)


@needs_triton
@pytest.mark.slow
def test_interpreted_layer_norm_kernels_match_fp64():
    """y, s and every gradient within each dtype's rounding of fp64 autograd (tried: a backward
    without the stream's incoming gradient added reads 0.99 off in dx and dresidual; one whose
    weight sums skip each band's last step 0.64 off in dweight)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    proc = subprocess.run([sys.executable, str(ROOT / "tests/triton_interpreted.py"), "layer_norm"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["case"]: r["errors"] for r in map(json.loads, filter(None, proc.stdout.splitlines()))
               if isinstance(r, dict)}
    assert set(results) == {"residual_bias_ds_fp32", "first_layer_no_residual", "no_bias_no_ds_in", "fp16",
                            "one_partial_step", "prefetch", "prefetch_no_ds_in", "prefetch_one_partial_step", "twice",
                            "twice_no_bias_no_ds_in_prefetch", "twice_fp16_first_layer", "compiled_op"}
    assert {"y2", "dweight2", "dbias2"} <= set(results["twice"])
    assert {f"d{n}_twice" for n in ("x", "residual", "weight", "bias", "weight2", "bias2")} <= set(
        results["compiled_op"])
    for case, errors in results.items():
        assert len(errors) >= 6
        for name, err in errors.items():
            # fp16: y, y2 and dx are stored in fp16 (2^-11 relative rounding); the rest is fp32
            tol = 2e-3 if "fp16" in case and name in ("y", "y2", "dx") else 1e-6
            assert err < tol, f"{case} {name}: {err:.2e}"


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("prefetch", [0, 1])
def test_kernels_match_the_twin_at_star_base_shape(prefetch, monkeypatch):
    """Forward and backward at STAR-B's width, 8 sequences of 624 tokens,
    the backward with and without issuing the next step's loads first."""
    monkeypatch.setitem(ln.TILES, "bwd", (*ln.TILES["bwd"][:3], prefetch))
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(8, 624, 768, generator=gen, device="cuda").to(torch.bfloat16).requires_grad_()
    r = torch.randn(8, 624, 768, generator=gen, device="cuda").mul(4).requires_grad_()
    w = torch.randn(768, generator=gen, device="cuda").requires_grad_()
    b = torch.randn(768, generator=gen, device="cuda").requires_grad_()
    dy = torch.randn(8, 624, 768, generator=gen, device="cuda").to(torch.bfloat16)
    ds = torch.randn(8, 624, 768, generator=gen, device="cuda")
    results = []
    for run in (lambda *a: ln.add_ln_fwd(*a, None, None, 1e-5)[0::2], lambda *a: add_layer_norm_torch(*a, 1e-5)):
        for t in (x, r, w, b):
            t.grad = None
        y, s = run(x, r, w, b)
        torch.autograd.backward([y, s], [dy, ds])
        results.append([y, s, x.grad, r.grad, w.grad, b.grad])
    rel = lambda a, ref: ((a.float() - ref.float()).norm() / ref.float().norm()).item()  # noqa: E731
    for name, got, want in zip(("y", "s", "dx", "dresidual", "dweight", "dbias"), *results):
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert rel(got, want) < (8e-3 if name in ("y", "dx") else 1e-5), f"{name}: {rel(got, want):.2e}"


@pytest.mark.gpu
@requires_gpu
def test_two_layer_norms_of_one_stream_match_the_twin_at_star_base_shape():
    """A block's norm1 and a decoder tap in one pass (add_ln_fwd with weight2): y, y2, s and every
    gradient against the twin, which normalises the stream twice."""
    from starx.ops.norm import add_layer_norm_twice_torch

    gen = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(8, 624, 768, generator=gen, device="cuda").to(torch.bfloat16).requires_grad_()
    r = torch.randn(8, 624, 768, generator=gen, device="cuda").mul(4).requires_grad_()
    params = [torch.randn(768, generator=gen, device="cuda").requires_grad_() for _ in range(4)]
    dy, dy2 = (torch.randn(8, 624, 768, generator=gen, device="cuda").to(torch.bfloat16) for _ in range(2))
    ds = torch.randn(8, 624, 768, generator=gen, device="cuda")
    results = []
    for run in (lambda *a: ln.add_ln_fwd(*a, 1e-5), lambda *a: add_layer_norm_twice_torch(*a, 1e-5)):
        for t in (x, r, *params):
            t.grad = None
        y, y2, s = run(x, r, *params)
        torch.autograd.backward([y, y2, s], [dy, dy2, ds])
        results.append([y, y2, s, x.grad, r.grad] + [p.grad for p in params])
    names = ("y", "y2", "s", "dx", "dresidual", "dweight", "dbias", "dweight2", "dbias2")
    for name, got, want in zip(names, *results):
        err = ((got.float() - want.float()).norm() / want.float().norm()).item()
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert err < (8e-3 if name in ("y", "y2", "dx") else 1e-5), f"{name}: {err:.2e}"


@pytest.mark.gpu
@requires_gpu
def test_a_compiled_block_runs_the_layer_norm_kernels(monkeypatch):
    """A MambaMLP block under torch.compile (bf16 autocast), normalising a decoder tap with its norm1
    (forward_tapped), the kernels against the twin: the same output, stream, tap and gradients
    (input, stream and every parameter, the tap's too) within bf16 rounding."""
    from starx.models.blocks import MambaMLPBlock
    from starx.models.mamba import Mamba

    torch.manual_seed(0)
    block = MambaMLPBlock(192, Mamba(192, backend="triton"), 512, backend="triton").cuda()
    tap = torch.nn.LayerNorm(192).cuda()
    with torch.no_grad():
        tap.weight.normal_(1, 0.1), tap.bias.normal_(0, 0.1)
    x = torch.randn(4, 197, 192, device="cuda")
    r = torch.randn(4, 197, 192, device="cuda")
    results = {}
    for use in (True, False):
        monkeypatch.setattr(ln, "USE_KERNELS", use)
        torch._dynamo.reset()
        block.zero_grad(), tap.zero_grad()
        xi, ri = x.clone().requires_grad_(), r.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out, res, tapped = torch.compile(block.forward_tapped)(xi, ri, tap)
        (out.float().square().sum() + res.square().sum() + tapped.float().square().sum()).backward()
        results[use] = [out, res, tapped, xi.grad, ri.grad] + [p.grad for p in (*block.parameters(), *tap.parameters())]
    for got, want in zip(results[True], results[False]):
        assert ((got.float() - want.float()).norm() / want.float().norm()).item() < 2e-2
