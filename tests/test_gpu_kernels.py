"""Fused CUDA kernels (mamba-ssm, causal-conv1d) against the torch twins, on a GPU.

Run standalone on a CUDA machine with the kernels installed:  pytest tests/test_gpu_kernels.py -q
Every check prints its measured error (max |a - b| / max |b|) next to its tolerance. Shapes are
STAR-B's: width 768, 640 tokens (k = 4 images of 144 patches + 16-token separators), batch 2.

Tolerances (relative to the largest magnitude of the reference):
  fp32: outputs 1e-4, gradients 1e-3 (the kernels and the twin both accumulate in fp32, in a
        different order);
  bf16: outputs 2e-2, gradients 5e-2 (bf16 inputs / outputs, eps 2^-8; both compute the state in
        fp32); whole-model losses 1e-2 in bf16, 1e-4 in fp32.
"""

from __future__ import annotations

import copy

import pytest
import torch

from starx.ops import add_layer_norm, causal_conv1d, kernel_status, selective_scan, selective_scan_ref

_STATUS = kernel_status()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not (_STATUS["cuda_available"] and _STATUS["kernels_ok"]),
        reason=f"needs CUDA and the mamba-ssm / causal-conv1d kernels ({_STATUS['error'] or 'no CUDA'})",
    ),
]

B, D, L, N = 2, 768, 640, 16
TOL = {torch.float32: (1e-4, 1e-3), torch.bfloat16: (2e-2, 5e-2)}
DTYPES = [torch.float32, torch.bfloat16]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


@pytest.fixture
def check(capsys):
    """check(name, a, ref, tol): print the measured error and assert it is within tol."""

    def _check(name: str, a: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
        err = rel_err(a, ref)
        with capsys.disabled():
            print(f"\n  {name:<48s} rel err {err:.2e}  (tol {tol:.0e})", end="")
        assert err <= tol, f"{name}: rel err {err:.2e} > {tol:.0e}"

    return _check


def scan_inputs(dtype: torch.dtype, seed: int = 0, L: int = L) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    t = {
        "u": r(B, D, L), "delta": 0.5 * r(B, D, L), "A": -torch.exp(0.5 * r(D, N)), "B": r(B, N, L),
        "C": r(B, N, L), "D": r(D), "z": r(B, D, L), "delta_bias": 0.3 * r(D),
    }  # fmt: skip
    weights_fp32 = ("A", "D", "delta_bias")  # the kernels want fp32 weights, like the model gives them
    return {k: v.to(torch.float32 if k in weights_fp32 else dtype).requires_grad_() for k, v in t.items()}


def run_scan(inputs, backend: str):
    out = selective_scan(**inputs, delta_softplus=True, backend=backend)
    g = torch.Generator(device="cuda").manual_seed(1)
    weight = torch.randn(out.shape, generator=g, device="cuda")
    grads = torch.autograd.grad((out.float() * weight).sum(), list(inputs.values()))
    return out, dict(zip(inputs, grads))


# 640 and 1264 tokens (k = 4, 8): with starx's mamba-ssm build (MAMBA_SCAN_CONFIG=auto) one
# 768-token chunk and three 512-token chunks, i.e. the chunk-to-chunk state is exercised too.
@pytest.mark.parametrize("seqlen", [L, 1264])
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_selective_scan_fused_vs_twin(dtype, seqlen, check):
    tol_out, tol_grad = TOL[dtype]
    inputs = scan_inputs(dtype, L=seqlen)
    out_k, grads_k = run_scan(inputs, "cuda")
    out_t, grads_t = run_scan(inputs, "torch")
    ref = selective_scan_ref(**{k: v.detach().double() for k, v in inputs.items()}, delta_softplus=True)
    check(f"scan {dtype} out: twin vs fp64 ref", out_t, ref, tol_out)
    check(f"scan {dtype} out: kernel vs fp64 ref", out_k, ref, tol_out)
    check(f"scan {dtype} out: kernel vs twin", out_k, out_t, tol_out)
    for name in inputs:
        check(f"scan {dtype} d{name}: kernel vs twin", grads_k[name], grads_t[name], tol_grad)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_causal_conv1d_fused_vs_twin(dtype, check):
    tol_out, tol_grad = TOL[dtype]
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(B, D, L, generator=g, device="cuda").to(dtype).requires_grad_()
    w = torch.randn(D, 4, generator=g, device="cuda").requires_grad_()
    b = torch.randn(D, generator=g, device="cuda").requires_grad_()
    outs, grads = {}, {}
    for backend in ("cuda", "torch"):
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            outs[backend] = causal_conv1d(x, w, b, "silu", backend=backend)
        grads[backend] = torch.autograd.grad(outs[backend].float().square().sum(), (x, w, b))
    check(f"conv {dtype} out: kernel vs twin", outs["cuda"], outs["torch"], tol_out)
    for name, gk, gt in zip(("x", "weight", "bias"), grads["cuda"], grads["torch"]):
        check(f"conv {dtype} d{name}: kernel vs twin", gk, gt, tol_grad)


@pytest.mark.parametrize("with_residual", [False, True], ids=["first", "residual"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_add_layer_norm_fused_vs_twin(dtype, with_residual, check):
    tol_out, tol_grad = TOL[dtype]
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    x = r(B, L, D).to(dtype).requires_grad_()  # a branch output
    residual = r(B, L, D).requires_grad_() if with_residual else None  # the fp32 stream
    weight, bias = (1 + 0.1 * r(D)).requires_grad_(), (0.1 * r(D)).requires_grad_()
    inputs = [x, weight, bias] + ([residual] if with_residual else [])
    results = {}
    for backend in ("cuda", "torch"):
        out, stream = add_layer_norm(x, residual, weight, bias, 1e-5, backend=backend)
        assert out.dtype == dtype and stream.dtype == torch.float32
        g.manual_seed(1)  # the same loss weights for both backends
        loss = (out.float() * r(B, L, D)).sum() + (stream * r(B, L, D)).sum()
        results[backend] = (out, stream, torch.autograd.grad(loss, inputs))
    (out_k, stream_k, grads_k), (out_t, stream_t, grads_t) = results["cuda"], results["torch"]
    check(f"add+LN {dtype} out: kernel vs twin", out_k, out_t, tol_out)
    check(f"add+LN {dtype} stream: kernel vs twin", stream_k, stream_t, 1e-6)
    for name, gk, gt in zip(("x", "weight", "bias", "residual"), grads_k, grads_t):
        check(f"add+LN {dtype} d{name}: kernel vs twin", gk, gt, tol_grad)


def _twins(module: torch.nn.Module):
    """The module on the cuda backend and an identical copy on the torch backend."""
    fused = module.cuda()
    twin = copy.deepcopy(fused)
    for m in twin.modules():
        if hasattr(m, "backend"):
            m.backend = "torch"
    return fused, twin


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["mamba", "bimamba4"])
def test_mixer_fused_vs_twin(kind, dtype, check):
    from starx.models import BiMamba4, Mamba
    from starx.models.mamba import column_order, direction_orders

    tol_out, tol_grad = TOL[dtype]
    torch.manual_seed(0)
    if kind == "mamba":
        fused, twin = _twins(Mamba(D, backend="cuda"))
        seq, kwargs = L, {}
    else:  # the fine-tuning mixer at 224 px: 14 x 14 patches + cls
        fused, twin = _twins(BiMamba4(D, backend="cuda"))
        seq = 14 * 14 + 1
        perm = column_order(14, 14, seq // 2).cuda()
        kwargs = dict(zip(("orders", "inverses"), direction_orders(perm)))
    x = torch.randn(B, seq, D, device="cuda")
    results = {}
    for name, mixer in (("cuda", fused), ("torch", twin)):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = mixer(x, **kwargs)
        out.float().square().mean().backward()
        results[name] = (out, {n: p.grad for n, p in mixer.named_parameters()})
    check(f"{kind} {dtype} out: fused vs twin", results["cuda"][0], results["torch"][0], tol_out)
    for name, g in results["torch"][1].items():
        check(f"{kind} {dtype} d{name}: fused vs twin", results["cuda"][1][name], g, tol_grad)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_star_base_pretrain_step_both_backends(dtype, check):
    from starx.models import create_model

    torch.manual_seed(0)
    fused, twin = _twins(create_model("star_base", img_size=192, seq_multiplier=4, separator="cluster", backend="cuda"))
    assert fused.num_tokens == 624
    images = torch.randn(2 * 4, 3, 192, 192, device="cuda")
    results = {}
    for name, model in (("cuda", fused), ("torch", twin)):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = model(images)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        results[name] = (out.loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    tol_loss = 1e-4 if dtype == torch.float32 else 1e-2
    check(f"star_base {dtype} loss: fused vs twin", results["cuda"][0], results["torch"][0], tol_loss)
    for name in ("layers.0.mixer.A_log", "layers.11.mixer.in_proj.weight", "patch_embed.proj.weight",
                 "separator.tokens", "dec_blocks.3.mlp.0.weight"):
        check(f"star_base {dtype} d{name}", results["cuda"][1][name], results["torch"][1][name], 5 * TOL[dtype][1])


@pytest.mark.parametrize("seqlen", [L, 1264])
@pytest.mark.parametrize("groups", [1, 4])
def test_scan_custom_op_opcheck(seqlen, groups):
    """The custom op's fake shapes (incl. the chunk states the kernel returns), schema and
    autograd registration agree with the real kernel (torch.library.opcheck)."""
    inputs = scan_inputs(torch.bfloat16, L=seqlen)
    b, n = B, N
    inputs["B"] = inputs["B"].detach()[:, None].expand(b, groups, n, seqlen).contiguous().requires_grad_()
    inputs["C"] = inputs["C"].detach()[:, None].expand(b, groups, n, seqlen).contiguous().requires_grad_()
    args = tuple(inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")) + (True,)
    out, x, out_z = torch.ops.starx.selective_scan_fwd(*args)
    from starx.ops._scan_op import scan_chunk_shape

    assert x.shape[2] == -(-seqlen // (lambda t, i: t * i)(*scan_chunk_shape(seqlen)))
    print(f"\n  L={seqlen}: chunk {scan_chunk_shape(seqlen)}, {x.shape[2]} chunk states", end="")
    torch.library.opcheck(torch.ops.starx.selective_scan_fwd.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_compiled_star_base_matches_eager_in_one_graph(check):
    """torch.compile traces the whole STAR-B model, scans included, without a graph break, and
    gives the eager (fused mamba_inner_fn) loss and gradients."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from starx.models import create_model

    torch.manual_seed(0)
    model = create_model("star_base", img_size=192, seq_multiplier=4, separator="cluster", backend="cuda").cuda()
    images = torch.randn(2 * 4, 3, 192, 192, device="cuda")
    results = {}
    torch._dynamo.reset()
    counters.clear()
    for name, run in (("eager", model), ("compiled", torch.compile(model))):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = run(images).loss
        loss.backward()
        results[name] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    breaks = dict(counters["graph_break"])
    assert not breaks, f"graph breaks: {breaks}"
    check("star_base bf16 loss: compiled vs eager", results["compiled"][0], results["eager"][0], 1e-2)
    for name in ("layers.0.mixer.A_log", "layers.11.mixer.in_proj.weight", "layers.5.norm2.weight",
                 "patch_embed.proj.weight", "separator.tokens"):
        check(f"star_base bf16 d{name}: compiled vs eager", results["compiled"][1][name],
              results["eager"][1][name], 5 * TOL[torch.bfloat16][1])
