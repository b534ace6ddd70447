"""The SwiGLU gate's kernels (starx.ops.swiglu): silu(a + bias_a) * (b + bias_b) of one GEMM's
output [a | b] and its backward, d[a | b] and the bias gradients.

CPU: the MLP off the kernels is w3(silu(w1 x) * w2 x) as written, biases must come both or neither,
and the Triton kernels, run by Triton's interpreter in a subprocess (tests/triton_interpreted.py
swiglu), match fp64 autograd with and without biases, across their tiles' edges, also as custom ops
through torch.library.opcheck and torch.compile. GPU (marked
gpu): the compiled kernels at STAR-B's shape in bf16, and a MambaMLP block through torch.compile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from starx.models.blocks import SwiGLU
from starx.ops import kernel_status
from starx.ops import swiglu as sw
from starx.ops.triton_scan import triton_error

ROOT = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(triton_error() is not None, reason=f"Triton is not installed ({triton_error()})")
_STATUS = kernel_status()
requires_gpu = pytest.mark.skipif(not _STATUS["cuda_available"] or _STATUS["triton_error"] is not None,
                                  reason="needs CUDA and Triton")


def fp64_reference(g, a, b, bias_a, bias_b) -> list:
    """[h, da, db] (+ [dbias_a, dbias_b] with biases) of silu(a + bias_a) * (b + bias_b) by fp64 autograd."""
    ins = [t.double().requires_grad_() for t in (a, b, bias_a, bias_b) if t is not None]
    ra, rb = (ins[0] + ins[2], ins[1] + ins[3]) if bias_a is not None else (ins[0], ins[1])
    h = F.silu(ra) * rb
    h.backward(g.double())
    return [h.detach()] + [t.grad for t in ins]


def test_off_the_kernels_it_is_the_formula():
    torch.manual_seed(0)
    mlp, x = SwiGLU(8, 16), torch.randn(2, 5, 8)
    torch.testing.assert_close(mlp(x), mlp.w3(F.silu(mlp.w1(x)) * mlp.w2(x)), rtol=0, atol=0)
    assert set(mlp.state_dict()) == {f"w{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}


def test_one_bias_alone_is_refused():
    w1, w2 = torch.nn.Linear(4, 6), torch.nn.Linear(4, 6, bias=False)
    with pytest.raises(ValueError, match="biases both or neither"):
        sw.swiglu_mlp_gate(torch.randn(3, 4), w1, w2)


def test_the_gate_takes_a_and_b_side_by_side():
    """The kernels' input is one GEMM's output [a | b]: an odd last dimension cannot be split."""
    with pytest.raises(ValueError, match="last dimension must be even, got 5"):
        sw.gate_forward(torch.randn(3, 5), None, None)


@needs_triton
def test_interpreted_swiglu_kernels_match_fp64():
    """Output, da, db and the bias gradients within each dtype's rounding of fp64 autograd (every
    band's bias sums stored to the first partials row: 4e18 off; silu' without its a (1 - s) term:
    da 0.16 off)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "tests/triton_interpreted.py"), "swiglu"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {(r := json.loads(line))["case"]: r["errors"] for line in proc.stdout.splitlines()
               if line.startswith("{")}
    assert set(results) == {"bias_fp32", "no_bias_fp32", "bias_fp16", "one_partial_tile", "compiled_op"}
    # the custom ops passed torch.library.opcheck and ran under torch.compile, with and without biases
    assert set(results["compiled_op"]) == {f"{n}_bias" for n in ("h", "da", "db", "dbias_a", "dbias_b")} | {
        f"{n}_no_bias" for n in ("h", "da", "db")}
    assert set(results["bias_fp32"]) == {"h", "da", "db", "dbias_a", "dbias_b"}
    assert results["no_bias_fp32"]["no_bias_grads"] == 0
    for case, errors in results.items():
        bound = 2e-3 if case == "bias_fp16" else 1e-5  # fp16 outputs; the bias sums are fp32 in every case
        for name, err in errors.items():
            assert err < (1e-5 if name.startswith("dbias") else bound), f"{case} {name}: rel err {err:.2e}"


# ----- GPU -----
@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("bias", [True, False])
def test_swiglu_kernels_match_fp64_on_gpu(bias):
    """STAR-B's MLP shape at k=4 (64 sequences x 624 tokens, 2048 channels) in bf16: outputs within
    bf16 rounding of fp64 autograd, bias gradients (fp32 sums of 39936 rows) within 1e-4."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    ab = torch.randn(64, 624, 4096, device="cuda", generator=gen).mul(2).bfloat16()  # [a | b]
    g = torch.randn(64, 624, 2048, device="cuda", generator=gen).mul(2).bfloat16()
    ba, bb = (torch.randn(2048, device="cuda", generator=gen) if bias else None for _ in range(2))
    h = sw.gate_forward(ab, ba, bb)
    dab, dbias = sw.gate_backward(g, ab, ba, bb)
    dba, dbb = dbias if bias else (dbias, dbias)
    da, db = dab.chunk(2, dim=-1)
    ref = fp64_reference(g, *ab.chunk(2, dim=-1), ba, bb)
    rel = lambda x, r: ((x.double() - r).abs().max() / r.abs().max()).item()  # noqa: E731
    for name, x, r in zip(("h", "da", "db"), (h, da, db), ref):
        assert rel(x, r) < 8e-3, f"{name}: {rel(x, r):.2e}"
    if bias:
        assert rel(dba, ref[3]) < 1e-4 and rel(dbb, ref[4]) < 1e-4
    else:
        assert dba.numel() == dbb.numel() == 0


@pytest.mark.gpu
@requires_gpu
def test_a_compiled_mlp_runs_the_swiglu_kernels(monkeypatch):
    """SwiGLU under torch.compile (bf16 autocast), triton against torch backend: the same output
    and gradients (x and every parameter) within bf16 rounding, and the gate's ops in the graph."""
    monkeypatch.setattr(sw, "USE_KERNELS", True)
    torch.manual_seed(0)
    x = torch.randn(4, 624, 768, device="cuda")
    results = {}
    for backend in ("torch", "triton"):
        torch.manual_seed(1)
        mlp = SwiGLU(768, 2048, backend=backend).cuda()
        with torch.no_grad():
            for lin in (mlp.w1, mlp.w2):
                lin.bias.normal_()  # (zero at init: give the bias gradients' path something to carry)
        xs = x.clone().requires_grad_()
        with torch.autocast("cuda", torch.bfloat16):
            out = torch.compile(mlp)(xs)
        out.float().square().mean().backward()
        results[backend] = [out.float(), xs.grad] + [p.grad for p in mlp.parameters()]
    for a, b in zip(results["torch"], results["triton"]):
        torch.testing.assert_close(b, a, atol=2e-2 * a.abs().max().item(), rtol=0)
    with torch.autocast("cuda", torch.bfloat16):
        mlp = SwiGLU(768, 2048, backend="triton").cuda()
        code = torch._inductor.utils.run_and_get_code(torch.compile(mlp), x.requires_grad_())[1]
    assert any("swiglu_fwd" in c for c in code)
