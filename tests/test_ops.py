"""The torch twins of the kernel ops against plain references written from the equations."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from starx.ops import (
    KernelUnavailableError,
    add_layer_norm,
    causal_conv1d,
    causal_conv1d_time_major,
    causal_conv1d_torch,
    kernel_status,
    mamba_inner,
    mamba_inner_directions,
    selective_scan,
    selective_scan_ref,
    selective_scan_torch,
)

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def scan_inputs(b, d, l, n, dtype, seed=0, with_D=True, with_z=True, with_bias=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    t = {
        "u": r(b, d, l),
        "delta": 0.5 * r(b, d, l),
        "A": -torch.exp(0.5 * r(d, n)),  # negative real, like -exp(A_log)
        "B": r(b, n, l),
        "C": r(b, n, l),
        "D": r(d) if with_D else None,
        "z": r(b, d, l) if with_z else None,
        "delta_bias": 0.3 * r(d) if with_bias else None,
    }
    return {k: (v.to(dtype).requires_grad_() if v is not None else None) for k, v in t.items()}


def grads(out, inputs, seed=1):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out.shape, generator=g, dtype=out.dtype)
    live = [v for v in inputs.values() if v is not None]
    return torch.autograd.grad((out * weight).sum(), live)


@pytest.mark.parametrize(
    "shape,chunk",
    [((2, 3, 1, 4), None), ((1, 5, 17, 3), 4), ((3, 4, 33, 16), 7), ((2, 8, 64, 16), None), ((2, 2, 9, 2), 1)],
)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("softplus", [True, False])
def test_scan_twin_matches_sequential_reference(shape, chunk, dtype, tol, softplus):
    inputs = scan_inputs(*shape, dtype, seed=sum(shape))
    if not softplus:  # keep dt positive without softplus, as the model would
        inputs["delta"] = inputs["delta"].detach().abs().requires_grad_()
    ref = selective_scan_ref(**inputs, delta_softplus=softplus)
    out = selective_scan_torch(**inputs, delta_softplus=softplus, chunk_len=chunk)
    assert out.dtype == dtype and out.shape == shape[:3]
    scale = ref.abs().max().item() + 1e-12
    assert (out - ref).abs().max().item() <= tol * scale
    for name, gr, go in zip(NAMES, grads(ref, inputs), grads(out, inputs)):
        err = (gr - go).abs().max().item() / (gr.abs().max().item() + 1e-12)
        assert err <= tol * 10, f"d{name}: rel err {err:.2e}"


@pytest.mark.parametrize("with_D,with_z,with_bias", [(False, False, False), (True, False, True), (False, True, False)])
def test_scan_optional_inputs(with_D, with_z, with_bias):
    inputs = scan_inputs(2, 3, 11, 4, torch.float64, with_D=with_D, with_z=with_z, with_bias=with_bias)
    ref = selective_scan_ref(**inputs, delta_softplus=True)
    out = selective_scan(**inputs, delta_softplus=True, backend="torch")
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_scan_gradcheck_across_chunks():
    inputs = scan_inputs(2, 3, 7, 2, torch.float64)
    fn = lambda *a: selective_scan_torch(*a, delta_softplus=True, chunk_len=3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(inputs[k] for k in NAMES))


def test_scan_low_precision_inputs_compute_in_fp32():
    inputs = scan_inputs(2, 4, 20, 8, torch.float32)
    low = {k: (v.detach().to(torch.bfloat16) if v is not None else None) for k, v in inputs.items()}
    out = selective_scan_torch(**low, delta_softplus=True)
    ref = selective_scan_ref(**{k: (v.float() if v is not None else None) for k, v in low.items()}, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


def test_scan_rejects_bad_shapes():
    inputs = scan_inputs(2, 3, 5, 4, torch.float32)
    inputs["B"] = inputs["B"][:, :, :4]
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_torch(**inputs)


def conv_loop(x, weight, bias, activation):
    b, d, l = x.shape
    w = weight.shape[1]
    out = torch.zeros_like(x)
    for t in range(l):
        for k in range(w):
            src = t - (w - 1) + k
            if src >= 0:
                out[:, :, t] += weight[:, k] * x[:, :, src]
    if bias is not None:
        out = out + bias[:, None]
    return F.silu(out) if activation else out


@pytest.mark.parametrize("activation", [None, "silu", "swish"])
@pytest.mark.parametrize("shape,width", [((2, 3, 9), 4), ((1, 5, 2), 4), ((2, 4, 6), 2)])
def test_causal_conv_twin_matches_loop(activation, shape, width):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(shape[1], width, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(shape[1], generator=g, dtype=torch.float64, requires_grad=True)
    ref = conv_loop(x, weight, bias, activation)
    out = causal_conv1d(x, weight, bias, activation, backend="torch")
    torch.testing.assert_close(out, ref)
    gr = torch.autograd.grad(ref.sum(), (x, weight, bias))
    go = torch.autograd.grad(out.sum(), (x, weight, bias))
    for a, b in zip(gr, go):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(causal_conv1d_torch(x, weight), conv_loop(x, weight, None, None))
    tm = causal_conv1d_time_major(x.permute(2, 0, 1), weight, bias, activation).permute(1, 2, 0)
    torch.testing.assert_close(tm, ref)


def test_causal_conv_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d(torch.zeros(1, 2, 3), torch.zeros(2, 4), activation="relu", backend="torch")


def test_mamba_inner_torch_matches_composition():
    g = torch.Generator().manual_seed(0)
    b, dm, di, l, n, r, w = 2, 6, 6, 13, 4, 2, 4
    rnd = lambda *s: 0.5 * torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    xz, conv_w, conv_b = rnd(b, 2 * di, l), rnd(di, 1, w), rnd(di)
    x_proj, dt_proj, out_proj = rnd(r + 2 * n, di), rnd(di, r), rnd(dm, di)
    A, D, dt_bias = -torch.exp(rnd(di, n)), rnd(di), rnd(di)
    out = mamba_inner(xz, conv_w, conv_b, x_proj, dt_proj, out_proj, None, A, D, dt_bias, backend="torch")
    x, z = xz.chunk(2, dim=1)
    x = conv_loop(x, conv_w[:, 0], conv_b, "silu")
    x_dbl = torch.einsum("bdl,ed->ble", x, x_proj)
    dt = torch.einsum("blr,dr->bdl", x_dbl[..., :r], dt_proj)
    B, C = x_dbl[..., r : r + n].transpose(1, 2), x_dbl[..., r + n :].transpose(1, 2)
    y = selective_scan_ref(x, dt, A, B, C, D, z, dt_bias, delta_softplus=True)
    torch.testing.assert_close(out, torch.einsum("bdl,ed->ble", y, out_proj))
    no_proj = mamba_inner(xz, conv_w, conv_b, x_proj, dt_proj, None, None, A, D, dt_bias, backend="torch")
    torch.testing.assert_close(no_proj, y)


def test_grouped_scan_matches_one_scan_per_group():
    g, dg = 3, 4
    t = scan_inputs(2, g * dg, 11, 5, torch.float64)
    grouped_B = torch.stack([scan_inputs(2, dg, 11, 5, torch.float64, seed=s)["B"] for s in range(g)], 1)
    grouped_C = torch.stack([scan_inputs(2, dg, 11, 5, torch.float64, seed=s)["C"] for s in range(g)], 1)
    out = selective_scan(t["u"], t["delta"], t["A"], grouped_B, grouped_C, t["D"], t["z"], t["delta_bias"],
                         delta_softplus=True, backend="torch")
    part = lambda name, j: t[name][..., j * dg : (j + 1) * dg, :] if t[name].dim() == 3 else t[name][j * dg : (j + 1) * dg]  # noqa: E731,E501
    for j in range(g):
        ref = selective_scan_ref(part("u", j), part("delta", j), part("A", j), grouped_B[:, j], grouped_C[:, j],
                                 part("D", j), part("z", j), part("delta_bias", j), delta_softplus=True)
        torch.testing.assert_close(out[:, j * dg : (j + 1) * dg], ref)
    with pytest.raises(ValueError, match="do not divide"):
        five = lambda x: torch.cat([x, x[:, :2]], 1)  # noqa: E731  (5 groups for 12 channels)
        selective_scan(t["u"], t["delta"], t["A"], five(grouped_B), five(grouped_C), backend="torch")


def test_mamba_inner_directions_matches_one_call_per_direction():
    g = torch.Generator().manual_seed(0)
    b, di, l, n, r, w, dirs = 2, 6, 9, 4, 2, 4, 4
    rnd = lambda *s: 0.5 * torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    xz = rnd(b, 2 * di, l)
    orders = torch.stack([torch.randperm(l, generator=g) for _ in range(dirs)])
    inverses = torch.argsort(orders, dim=1)
    conv_w, conv_b = rnd(dirs, di, 1, w), rnd(dirs, di)
    x_proj, dt_proj = rnd(dirs, r + 2 * n, di), rnd(dirs, di, r)
    A, D, dt_bias = -torch.exp(rnd(dirs, di, n)), rnd(dirs, di), rnd(dirs, di)
    out = mamba_inner_directions(xz, orders, inverses, conv_w[:, :, 0].reshape(dirs * di, w), conv_b.flatten(),
                                 x_proj, dt_proj, A.reshape(dirs * di, n), D.flatten(), dt_bias.flatten(),
                                 backend="torch")
    expected = sum(
        mamba_inner(xz[..., orders[j]], conv_w[j], conv_b[j], x_proj[j], dt_proj[j], None, None, A[j], D[j],
                    dt_bias[j], backend="torch")[..., inverses[j]]
        for j in range(dirs)
    )
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_add_layer_norm_twin(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=g).to(dtype).requires_grad_()
    wide = torch.promote_types(dtype, torch.float32)  # the sum and statistics are never below fp32
    residual = torch.randn(2, 5, 8, generator=g, dtype=wide).requires_grad_()
    w, b = (torch.randn(8, generator=g, dtype=wide).requires_grad_() for _ in range(2))  # the model's params
    out, stream = add_layer_norm(x, residual, w, b, 1e-5, backend="torch")
    assert out.dtype == dtype and stream.dtype == wide
    expected_stream = x.to(wide) + residual
    torch.testing.assert_close(stream, expected_stream)
    torch.testing.assert_close(out, F.layer_norm(expected_stream, (8,), w, b, 1e-5).to(dtype))
    # gradients flow to the branch, the residual and the norm's parameters
    (out.float().sum() + stream.float().square().sum()).backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (x, residual, w, b))
    # no residual: the stream is x itself; without prenorm only the normalised stream comes back
    out0, stream0 = add_layer_norm(x, None, w, b, 1e-5, backend="torch")
    torch.testing.assert_close(stream0, x.detach().to(wide))
    torch.testing.assert_close(add_layer_norm(x, None, w, b, 1e-5, prenorm=False, backend="torch"), out0)


def test_backend_choice():
    x = torch.zeros(1, 2, 3)
    w = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="backend"):
        causal_conv1d(x, w, backend="tpu")  # ("triton" is a backend now)
    causal_conv1d(x, w, backend="auto")  # CPU tensors: the twin, whatever is installed
    status = kernel_status()
    assert status["torch_twin"] is True
    assert {"torch", "cuda_available", "mamba_ssm", "causal_conv1d", "kernels_ok", "error", "scan_config", "triton",
            "triton_error", "auto_backend"} <= status.keys()
    if status["mamba_ssm"] is None or "+starx.scan" not in status["mamba_ssm"]:
        assert status["scan_config"] == "stock"  # only starx's build reads MAMBA_SCAN_CONFIG
    if not status["kernels_ok"] or not status["cuda_available"]:
        with pytest.raises(KernelUnavailableError, match="mamba-ssm==2.3.2.post1|CUDA"):
            causal_conv1d(x, w, backend="cuda")
        assert status["auto_backend"] == "torch"


def test_importing_ops_does_not_import_kernels():
    code = "import sys, starx.ops, starx.models; print('mamba_ssm' in sys.modules or 'causal_conv1d' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_scan_chunk_mirror_of_stock_kernel(monkeypatch):
    """Without starx's patched build the kernel sizes chunks as mamba-ssm 2.3.2 does, whatever
    MAMBA_SCAN_CONFIG says; the custom op's fake shapes rely on this mirror (checked on GPU too)."""
    from starx.ops import _kernels, _scan_op

    monkeypatch.setattr(_kernels, "_version", lambda dist: "2.3.2.post1")
    monkeypatch.setenv("MAMBA_SCAN_CONFIG", "auto")
    assert [_scan_op.scan_chunk_shape(L) for L in (128, 200, 304, 624, 1264)] == [
        (32, 4), (32, 8), (32, 16), (64, 16), (128, 16)]
    assert _scan_op.scan_chunks(624) == 1 and _scan_op.scan_chunks(5000) == 3
    monkeypatch.setattr(_kernels, "_version", lambda dist: "2.3.2.post1+starx.scan")  # the patched build reads it
    assert [_scan_op.scan_chunk_shape(L) for L in (200, 304, 624, 1264)] == [(32, 8), (32, 16), (32, 24), (32, 16)]
    assert _scan_op.scan_chunks(1264) == 3
    monkeypatch.setenv("MAMBA_SCAN_CONFIG", "32x4")
    assert _scan_op.scan_chunks(624) == 5
    monkeypatch.setenv("MAMBA_SCAN_CONFIG", "stock")
    assert _scan_op.scan_chunks(624) == 1
