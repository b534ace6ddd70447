"""The decoder's span attention (starx.ops.span_attention): query i reads keys [lo_i, hi_i).

CPU: the layouts' spans are their masks, the spans' checks name what is wrong, and the Triton
kernels, run by Triton's interpreter in a subprocess (tests/triton_interpreted.py span), match
fp64 SDPA with the mask at and across their tiles' edges (fp16: the interpreter has no bf16
tl.dot). GPU (marked gpu): the compiled kernels at STAR-B's decoder shapes against fp32 SDPA,
as close as SDPA itself gets in bf16, and a decoder block through torch.compile.
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

from starx.models.config import STARConfig
from starx.models.layout import build_layout
from starx.ops import kernel_status
from starx.ops import span_attention as span_ops
from starx.ops.span_attention import check_spans, span_attention, spans_to_mask
from starx.ops.triton_scan import triton_error

ROOT = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(triton_error() is not None, reason=f"Triton is not installed ({triton_error()})")
_STATUS = kernel_status()
requires_gpu = pytest.mark.skipif(not _STATUS["cuda_available"] or _STATUS["triton_error"] is not None,
                                  reason="needs CUDA and Triton")


@pytest.mark.parametrize("separator,k,cross", [("none", 1, True), ("cluster", 4, True), ("none", 2, False),
                                               ("cluster", 3, False)])
def test_the_layouts_spans_are_its_mask(separator, k, cross):
    cfg = STARConfig(img_size=32, patch_size=4, cluster_size=2, separator=separator, seq_multiplier=k,
                     decoder_cross_image=cross)
    lay = build_layout(cfg)
    check_spans(lay.spans, lay.num_tokens)
    assert torch.equal(spans_to_mask(lay.spans, lay.num_tokens), lay.mask)
    assert lay.spans.shape == (lay.num_targets, 2) and bool((lay.spans[:, 1] > lay.spans[:, 0]).all())
    assert bool((lay.spans[:, 0] > 0).any()) == (not cross and k > 1)  # own image only: spans start later


def test_a_layout_builds_on_the_meta_device():
    """Models built on the meta device (to load a checkpoint into) build their layout there too."""
    with torch.device("meta"):
        lay = build_layout(STARConfig(img_size=32, patch_size=4, cluster_size=2, seq_multiplier=2))
    assert lay.spans.is_meta and lay.mask.shape == (lay.num_targets, lay.num_tokens)


@pytest.mark.parametrize("spans,keys,message", [
    (torch.tensor([[0, 3], [0, 2]]), 5, "int32"),
    (torch.tensor([[0, 3], [0, 2]], dtype=torch.int32), 5, "non-decreasing"),
    (torch.tensor([[0, 3], [0, 6]], dtype=torch.int32), 5, "hi <= 5"),
    (torch.tensor([[2, 1]], dtype=torch.int32), 5, "lo <= hi"),
    (torch.tensor([0, 3], dtype=torch.int32), 5, "(queries, 2)"),
])
def test_bad_spans_are_named(spans, keys, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_spans(spans, keys)


def test_off_the_gpu_it_is_sdpa_with_the_mask():
    spans = torch.tensor([[0, 2], [0, 2], [0, 4], [1, 5]], dtype=torch.int32)
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    mask = spans_to_mask(spans, 5)
    out = span_attention(q, k, v, spans, mask, "auto")
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    # row 3 reads keys 1..4 alone: its softmax by hand
    w = torch.softmax(q[..., 3:4, :] @ k[..., 1:5, :].transpose(-1, -2) / 8**0.5, -1)
    torch.testing.assert_close(out[..., 3:4, :], w @ v[..., 1:5, :])


@needs_triton
def test_interpreted_span_kernels_match_sdpa():
    """Output and the three gradients within fp16 rounding of fp64 SDPA, in every case (a
    kernel that ignores the spans' lower ends reads 0.5 in own_image)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "tests/triton_interpreted.py"), "span"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert {r["case"] for r in results} == {"cross_image", "own_image", "one_tile", "cluster_across_tiles"}
    for r in results:
        assert set(r["errors"]) == {"o", "dq", "dk", "dv"}
        for name, err in r["errors"].items():
            assert err < 2e-3, f"{r['case']} {name}: rel err {err:.2e}"


# ----- GPU -----
def _star_b_spans(k: int, cross: bool = True) -> torch.Tensor:
    cfg = STARConfig(img_size=192, patch_size=16, cluster_size=4, separator="none" if k == 1 else "cluster",
                     seq_multiplier=k, decoder_cross_image=cross)
    return build_layout(cfg).spans


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("k,cross", [(1, True), (4, True), (8, True), (4, False)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_span_kernels_match_sdpa_on_gpu(k, cross, dtype, monkeypatch):
    """Against fp32 SDPA with the mask: within twice what SDPA itself gets in this dtype (+1e-3),
    at every k (whatever MIN_KEYS says)."""
    monkeypatch.setattr(span_ops, "MIN_KEYS", 0)
    spans = _star_b_spans(k, cross).cuda()
    nq, nk = spans.shape[0], int(spans[-1, 1]) + 16  # (keys past every span, as the encoder's last tokens)
    mask = spans_to_mask(spans, nk)
    torch.manual_seed(k)
    q = torch.randn(3, nq, 8, 64, device="cuda").transpose(1, 2)
    kk, v = torch.randn(3, nk, 2, 8, 64, device="cuda").permute(2, 0, 3, 1, 4)
    do = torch.randn(3, 8, nq, 64, device="cuda")

    def run(fn, dt):
        xs = [t.to(dt).detach().requires_grad_() for t in (q, kk, v)]
        out = fn(*xs)
        out.backward(do.to(dt))
        return [out.float()] + [t.grad.float() for t in xs]

    ref = run(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask), torch.float32)
    sdpa = run(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask), dtype)
    span = run(lambda a, b, c: span_attention(a, b, c, spans, mask, "triton"), dtype)
    for name, r, s, t in zip(("o", "dq", "dk", "dv"), ref, sdpa, span):
        bound = 2 * (s - r).abs().max().item() + 1e-3
        assert (t - r).abs().max().item() <= bound, f"{name}: {(t - r).abs().max().item():.2e} > {bound:.2e}"


@pytest.mark.gpu
@requires_gpu
def test_a_compiled_decoder_block_runs_the_span_kernels(monkeypatch):
    """A STAR-B k=4 decoder block under torch.compile (bf16 autocast), triton against torch
    backend: the same output and gradients within bf16 rounding, and the span op in the graph."""
    from starx.models.blocks import DecoderBlock

    monkeypatch.setattr(span_ops, "MIN_KEYS", 0)
    spans = _star_b_spans(4).cuda()
    nq, nk = spans.shape[0], int(spans[-1, 1])
    mask = spans_to_mask(spans, nk)
    torch.manual_seed(0)
    q, kv = torch.randn(2, nq, 512, device="cuda"), torch.randn(2, nk, 512, device="cuda")
    results = {}
    for backend in ("torch", "triton"):
        torch.manual_seed(1)
        block = DecoderBlock(512, 8, backend=backend).cuda()
        xs = [q.clone().requires_grad_(), kv.clone().requires_grad_()]
        with torch.autocast("cuda", torch.bfloat16):
            out = torch.compile(block)(*xs, mask, spans)
        out.float().square().mean().backward()
        results[backend] = [out.float()] + [x.grad for x in xs]
    for a, b in zip(results["torch"], results["triton"]):
        torch.testing.assert_close(b, a, atol=2e-2 * a.abs().max().item(), rtol=0)
    with torch.autocast("cuda", torch.bfloat16):
        block = DecoderBlock(512, 8, backend="triton").cuda()
        code = torch._inductor.utils.run_and_get_code(torch.compile(block), q, kv, mask, spans)[1]
    assert any("span_attn_fwd" in c for c in code)
