"""starx's Triton selective scan (starx.ops.triton_scan) and the state reset.

CPU: the kernels themselves, run by Triton's interpreter in a subprocess, against the
sequential fp64 reference (outputs and every gradient, both layouts, groups, reset, tile
boundaries; the Gluon backward too, through tests/gluon_interpreted.py), and the channel-last
mixers against the torch-twin mixers; the reset in the twin and in the STAR model. GPU (marked
gpu): the compiled kernels against the twin at STAR's lengths in fp32 and bf16, opcheck, a
compiled STAR-B step in one graph, and the loss curve against mamba-ssm's backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from starx.ops import kernel_status, selective_scan, selective_scan_ref
from starx.ops.triton_scan import triton_error

ROOT = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(triton_error() is not None, reason=f"Triton is not installed ({triton_error()})")


def _interpreted(what: str) -> list[dict]:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "tests/triton_interpreted.py"), what], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@needs_triton
@pytest.mark.slow
def test_interpreted_triton_scan_matches_the_sequential_reference():
    """Output and all eight gradients within fp32 rounding of the fp64 oracle, in every case."""
    results = _interpreted("kernel")
    assert {r["case"] for r in results} == {"plain", "channel_last", "no_gate_skip_bias_softplus", "two_groups",
                                            "two_groups_two_blocks_each", "block_partials", "reset",
                                            "tile_boundary_64", "d_state_16_full_tile", "fast_math",
                                            "fast_math_bwd"}
    for r in results:
        assert len(r["errors"]) >= 6
        for name, err in r["errors"].items():
            assert err < 1e-5, f"{r['case']} {name}: rel err {err:.2e}"


@needs_triton
def test_interpreted_softplus_is_fp32_accurate_both_ways():
    """softplus and its slope as the kernels compute them (_softplus_slope), Goldberg's log1p
    (FAST_MATH 0) and the series / log2 blend (2, the precise log2 standing in for the GPU's
    approximate one), element by element against fp64 from -30 to 30: within what computing e^v
    as exp2(v log2 e) in fp32 allows (1.7e-6 at v = -30). A coefficient of the series off by 0.05
    reads 1e-4."""
    (r,) = _interpreted("softplus")
    assert set(r["errors"]) == {"softplus_0", "slope_0", "softplus_2", "slope_2"}
    for name, err in r["errors"].items():
        assert err < 3e-6, f"{name}: rel err {err:.2e}"


def _gluon_error() -> str | None:
    try:
        import triton.experimental.gluon  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return None


@needs_triton
@pytest.mark.skipif(_gluon_error() is not None, reason=f"this Triton has no Gluon ({_gluon_error()})")
@pytest.mark.slow
def test_interpreted_gluon_backward_matches_the_sequential_reference():
    """The Gluon backward starx launches on Hopper GPUs, and each candidate the GPU tests check,
    run on CPU by the interpreter (tests/gluon_interpreted.py): every gradient within fp32
    rounding of the fp64 oracle in every case, so that CI catches what a change breaks in it
    (with bf16 B and C, their gradients come back in bf16: within its rounding)."""
    from bench.scan_bwd_rows import VARIANTS

    results = _interpreted("gluon")
    assert {r["case"] for r in results if r["variant"] == "default"} == {
        "plain", "channel_last", "no_gate_skip_bias_softplus", "reset", "two_groups_two_blocks_each",
        "block_partials", "tile_boundary_48", "bf16_bc", "fast_math"}
    assert {r["variant"] for r in results} == {"default", *VARIANTS}
    for r in results:
        assert len(r["errors"]) >= 6
        for name, err in r["errors"].items():
            tol = 1e-2 if r["case"] == "bf16_bc" and name in ("dB", "dC") else 1e-5
            assert err < tol, f"{r['case']} ({r['variant']}) {name}: rel err {err:.2e}"


@needs_triton
@pytest.mark.slow
def test_interpreted_channel_last_mixers_match_the_twin_mixers():
    (r,) = _interpreted("mixer")
    assert set(r["errors"]) == {"uni", "uni_reset", "fused", "fused_reset", "four_directions"}
    for name, err in r["errors"].items():
        assert err < 1e-5, f"{name}: rel err {err:.2e}"


def test_reset_restarts_the_twin_scan_exactly_like_separate_sequences():
    g = torch.Generator().manual_seed(0)
    b, d, L, n = 2, 4, 13, 4
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    u, delta, B, C, z = r(b, d, L), r(b, d, L), r(b, n, L), r(b, n, L), r(b, d, L)
    A = -torch.rand(d, n, generator=g, dtype=torch.float64)
    reset = torch.zeros(L, dtype=torch.bool)
    reset[[5, 9]] = True
    out = selective_scan(u, delta, A, B, C, z=z, delta_softplus=True, backend="torch", reset=reset)
    torch.testing.assert_close(out, selective_scan_ref(u, delta, A, B, C, z=z, delta_softplus=True, reset=reset))
    alone = selective_scan_ref(u[..., 5:9], delta[..., 5:9], A, B[..., 5:9], C[..., 5:9], z=z[..., 5:9],
                               delta_softplus=True)
    torch.testing.assert_close(out[..., 5:9], alone)
    assert not torch.allclose(out[..., 5:9], selective_scan_ref(u, delta, A, B, C, z=z, delta_softplus=True)[..., 5:9])


def test_state_reset_isolates_each_packed_image():
    """With state_reset an image's encoder features do not depend on the images packed before it
    (scan and conv both restart at its separator); without it they do."""
    from starx.models import create_model

    torch.manual_seed(0)
    kw = dict(img_size=16, patch_size=4, cluster_size=2, in_chans=1, seq_multiplier=4, separator="cluster",
              backend="torch", depth=2, embed_dim=32, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    model = create_model("star_tiny", state_reset=True, **kw)
    segment = 4 + 16  # separator cluster + patches
    assert model.reset.nonzero().flatten().tolist() == [segment, 2 * segment, 3 * segment]
    x = torch.randn(4, 1, 16, 16)
    moved = x[[2, 1, 0, 3]]  # image 2 first

    def last_stream(images):  # the encoder's stream after its last block, normalised for the decoder (per token)
        return model.encode(images)[-1]

    with torch.no_grad():
        in_place, first = last_stream(x)[0, 2 * segment : 3 * segment], last_stream(moved)[0, :segment]
        torch.testing.assert_close(in_place, first)
        model.reset = None
        assert not torch.allclose(last_stream(x)[0, 2 * segment : 3 * segment], last_stream(moved)[0, :segment])


def test_state_reset_on_the_mamba_ssm_backend_is_refused_at_load(tmp_path):
    from starx.spec import SpecError, load_spec

    with pytest.raises(SpecError, match="state_reset"):
        load_spec(ROOT / "specs/quickstart.yaml", ["model.state_reset=true", "model.backend=cuda"])


def test_permutation_ops_have_inverse_permutation_gradients():
    from starx.models.mamba import column_order, direction_orders
    from starx.ops.permute import gather_directions, scatter_directions

    orders, inverses = direction_orders(column_order(3, 4, 6))
    x = torch.randn(2, 13, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 13, 4, 5, dtype=torch.float64, requires_grad=True)  # (b, l, directions, c)
    assert torch.autograd.gradcheck(lambda t: scatter_directions(t, orders, inverses), (x,))
    assert torch.autograd.gradcheck(lambda t: gather_directions(t, orders, inverses), (y,))
    assert torch.autograd.gradcheck(lambda t: scatter_directions(t[..., 1:4], orders, inverses), (x,))  # strided
    torch.testing.assert_close(gather_directions(y, orders, inverses),
                               sum(y[:, :, j][:, inverses[j]] for j in range(4)))
    torch.testing.assert_close(scatter_directions(x, orders, inverses)[:, :, 2], x[:, orders[2]])
    torch.testing.assert_close(scatter_directions(x[..., 1:4], orders, inverses)[:, :, 1], x[:, orders[1], 1:4])


# ----- GPU -----
_STATUS = kernel_status()
requires_gpu = pytest.mark.skipif(not _STATUS["cuda_available"] or _STATUS["triton_error"] is not None,
                                  reason="needs CUDA and Triton")


def test_fp32_steps_keeps_the_values_with_each_steps_states_contiguous():
    """What scan_backward hands a candidate that reads B and C in fp32: B as the mixer passes it,
    a (b, 1, n, l) view of the x_proj output (b, l, dt_rank + 2n), every step's n states adjacent."""
    from starx.ops.triton_scan import _fp32_steps

    x = torch.randn(2, 7, 48 + 32).to(torch.bfloat16)
    B = x[..., 48:64].transpose(1, 2).unsqueeze(1)
    F = _fp32_steps(B)
    assert F.dtype == torch.float32 and F.shape == B.shape and torch.equal(F, B.float())
    assert (F.stride(2), F.stride(3)) == (1, 16)


def test_b_and_c_pack_as_words_only_where_their_layout_allows():
    """PACKED_BC reads two bf16 states a 32-bit word: x_proj's output (dt_rank 48) packs; an odd
    dt_rank (B at an odd offset), fp32, or states not adjacent do not."""
    from starx.ops.triton_scan import _packable

    def view(dt_rank: int, dtype=torch.bfloat16) -> torch.Tensor:  # B as the mixer hands it: (b, 1, n, l)
        x = torch.zeros(2, 7, dt_rank + 32, dtype=dtype)
        return x[..., dt_rank : dt_rank + 16].transpose(1, 2).unsqueeze(1)

    assert _packable(view(48))
    assert not _packable(view(13))
    assert not _packable(view(48, torch.float32))
    assert not _packable(view(48).contiguous())  # (b, 1, n, l) contiguous: a state's steps adjacent


@needs_triton
def test_the_backward_falls_back_to_scan_bwd_where_the_gluon_kernel_cannot_run():
    """Off CUDA, in Triton's interpreter (no Gluon there), where its layouts do not fit (a
    program's channels not whole warps, d_state not 16) and off Hopper (not measured there) the
    plain Triton scan_bwd runs."""
    from starx.ops._triton_scan_kernels import scan_bwd
    from starx.ops.triton_scan import default_backward

    assert default_backward("cpu", False) is scan_bwd
    assert default_backward("cuda", True) is scan_bwd
    assert default_backward("cuda", False, 16, 16) is scan_bwd
    assert default_backward("cuda", False, 32, 8) is scan_bwd
    assert default_backward("cuda", False, 32, 16, hopper=False) is scan_bwd


@needs_triton
@pytest.mark.slow
def test_the_forwards_l2_prefetch_compiles_to_one_prefetch_an_input_row_for_hopper():
    """scan_fwd's L2_AHEAD (inline PTX, which the CPU interpreter cannot run) compiled for sm_90
    with Triton's own ptxas, no GPU needed: a prefetch to L2 for each of u, dt, B, C and z a step
    when asked, none otherwise; and the launcher asks only for long sequences on a CUDA device."""
    sys.path.insert(0, str(ROOT))
    from bench import sass
    from bench.triton_scan import launch_spec
    from starx.ops import _triton_scan_kernels as K
    from starx.ops import triton_scan as ts

    counts = {}
    for ahead in (0, 2):
        types, values, consts = launch_spec(K.scan_fwd, "k4", 32, 8)
        code, _, _ = sass.compile_sass(K.scan_fwd, types, values, consts | {"L2_AHEAD": ahead}, 1)
        counts[ahead] = sum("CCTL.E.PF2" in line for line in code.splitlines())
    assert counts == {0: 0, 2: 5}
    assert ts._l2_ahead(torch.zeros(1), 10_000) == 0  # (off the GPU)


# the cases a kernel candidate is checked against the twin in: k=1, k=4 and the fine-tune shape (b, d, L,
# groups), fp32 and bf16, with and without resets
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
RESETS = pytest.mark.parametrize("reset", [False, True], ids=["", "reset"])
SHAPES_3 = pytest.mark.parametrize("shape", [(4, 768, 128, 1), (2, 768, 624, 1), (2, 3072, 197, 4)],
                                   ids=["k1", "k4", "finetune4dir"])


def TWIN_CASES(test):  # noqa: N802 (a decorator, named as the markers it stacks)
    return SHAPES_3(DTYPES(RESETS(test)))


def _gpu_inputs(b, d, L, g, dtype, seed=0, channel_last=True):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, device="cuda")  # noqa: E731
    t = {"u": r(b, d, L), "delta": 0.5 * r(b, d, L) - 1, "A": -torch.exp(0.5 * r(d, 16)), "B": r(b, g, 16, L),
         "C": r(b, g, 16, L), "D": r(d), "z": r(b, d, L), "delta_bias": 0.3 * r(d)}
    out = {}
    for k, v in t.items():
        v = v.to(torch.float32 if k in ("A", "D", "delta_bias") else dtype)
        if channel_last and v.dim() == 3 and k != "A":
            v = v.transpose(1, 2).contiguous().transpose(1, 2)
        out[k] = v.requires_grad_()
    return out


def _scan_and_grads(inputs, backend, reset=None):
    ins = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    B, C = ins["B"], ins["C"]
    if B.shape[1] == 1:
        B, C = B[:, 0], C[:, 0]
    out = selective_scan(ins["u"], ins["delta"], ins["A"], B, C, ins["D"], ins.get("z"), ins["delta_bias"],
                         True, backend=backend, reset=reset)
    w = torch.randn(out.shape, generator=torch.Generator(device="cuda").manual_seed(1), device="cuda")
    (out.float() * w).sum().backward()
    return out, {k: v.grad for k, v in ins.items()}


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("shape", [(4, 768, 128, 1), (2, 768, 624, 1), (1, 768, 1264, 1), (2, 3072, 197, 4)],
                         ids=["k1", "k4", "k8", "finetune4dir"])
@DTYPES
@RESETS
@pytest.mark.parametrize("bwd", ["default", "scan_bwd", "default/precise", "default/fast_math_bwd", "scan_bwd/precise"])
def test_triton_scan_matches_the_twin_on_gpu(shape, dtype, reset, bwd, request, monkeypatch):
    """default: the backward starx launches here (the Gluon kernel); scan_bwd: the plain Triton
    backward it falls back to without Gluon. Both as starx launches them, with softplus and the
    gate's sigmoid on the GPU's approximate log2 and divides in forward and backward
    (TILES["fast_math"]); /precise: with the precise ones; /fast_math_bwd: approximate in the
    backward alone."""
    from starx.ops import triton_scan as ts
    from starx.ops._triton_scan_kernels import scan_bwd

    bwd, _, fast_math = bwd.partition("/")
    if bwd == "scan_bwd":
        monkeypatch.setitem(ts.TILES, "bwd_kernel", scan_bwd)
    if fast_math:
        monkeypatch.setitem(ts.TILES, "fast_math", {"precise": "", "fast_math_bwd": "bwd"}[fast_math])
    _matches_the_twin(shape, dtype, reset, request)


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("shape", [(2, 768, 624, 1), (2, 3072, 197, 4)], ids=["k4", "finetune4dir"])
@DTYPES
def test_triton_scan_without_a_gate_matches_the_twin_on_gpu(shape, dtype, request):
    """z = None, as the fine-tuning mixer runs its grouped scan (it gates once, after the directions
    are summed back): the kernels' HAS_Z = False variants, forward and the default backward."""
    _matches_the_twin(shape, dtype, False, request, gate=False)


@pytest.mark.gpu
@requires_gpu
def test_the_gluon_backward_is_what_runs_on_this_gpu():
    from starx.ops import kernel_status
    from starx.ops.triton_scan import WithConstants, default_backward

    assert isinstance(default_backward("cuda", False, 32, 16), WithConstants)
    assert kernel_status()["triton_scan_backward"].startswith("gluon")


@pytest.mark.gpu
@requires_gpu
@TWIN_CASES
@pytest.mark.parametrize("variant", ["rows", "rows_prefetch", "rows_keep_a", "rows_f32bc", "rows_keep_a_f32bc",
                                     "rows_keep_a_f32bc/4warps", "rows_smem", "rows_smem_noprefetch", "rows_smem_h",
                                     "rows_keep_dt_clamp", "rows_bc_in_step"])
def test_rows_backward_candidate_matches_the_twin_on_gpu(shape, dtype, reset, variant, request, monkeypatch):
    """bench/scan_bwd_rows.py's variants (one channel a lane, in Gluon) through the same launcher;
    /4warps: 128 channels a program (4 warps; dB and dC summed over them in the kernel)."""
    from starx.ops import triton_scan as ts

    sys.path.insert(0, str(ROOT))
    rows = pytest.importorskip("bench.scan_bwd_rows", reason="needs Triton's Gluon")
    name, _, warps = variant.partition("/")
    monkeypatch.setitem(ts.TILES, "bwd_kernel", rows.VARIANTS[name])
    if warps:
        monkeypatch.setitem(ts.TILES, "bwd", (128, 4))
    # (B and C with each step's states adjacent, as x_proj's output hands them: what PACKED_BC reads)
    _matches_the_twin(shape, dtype, reset, request, states_adjacent=rows.VARIANTS[name].pack_bc)


def _matches_the_twin(shape, dtype, reset, request, states_adjacent=False, gate=True):
    b, d, L, g = shape
    if reset and g > 1:
        pytest.skip("the twin has no grouped reset")
    rs = None
    if reset:
        rs = torch.zeros(L, dtype=torch.int8, device="cuda")
        rs[L // 4 :: L // 4] = 1
    inputs = _gpu_inputs(b, d, L, g, dtype)
    if not gate:
        del inputs["z"]
    if states_adjacent:
        for k in ("B", "C"):
            inputs[k] = inputs[k].detach().transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()
    out, grads = _scan_and_grads(inputs, "triton", rs)
    twin = {k: v.detach().float().cuda().requires_grad_() for k, v in inputs.items()}
    ref, ref_grads = _scan_and_grads(twin, "torch", rs)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    rel = lambda a, r: ((a.double() - r.double()).norm() / r.double().norm()).item()  # noqa: E731
    errors = {"out": rel(out, ref), **{k: rel(grads[k], ref_grads[k]) for k in grads}}
    print(f"\n  {request.node.callspec.id}: " + " ".join(f"{k} {v:.1e}" for k, v in errors.items()), end="")
    assert max(errors.values()) < tol, errors


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("shape", [(2, 768, 624, 1), (2, 3072, 197, 4)], ids=["k4", "finetune4dir"])
def test_dB_dC_summed_by_atomics_match_the_deterministic_block_partials_on_gpu(shape, monkeypatch):
    """TILES["sums"]: the default adds each block's dB / dC into the group's sums (and each sequence's
    dA / dD / dbias into their totals) with atomics; under
    torch.use_deterministic_algorithms the per-block partials are summed by torch instead, run to run
    bit-identical. Both give the same gradients; the others are untouched by the choice."""
    from starx.ops import triton_scan as ts

    inputs = _gpu_inputs(*shape, torch.float32)
    monkeypatch.setitem(ts.TILES, "sums", "atomic")
    _, atomic = _scan_and_grads(inputs, "triton")
    monkeypatch.setitem(ts.TILES, "sums", "blocks")
    _, blocks = _scan_and_grads(inputs, "triton")
    for name in ("B", "C", "A", "D", "delta_bias"):  # (dA, dD, dbias: summed over sequences the same way)
        rel = ((atomic[name] - blocks[name]).norm() / blocks[name].norm()).item()
        assert rel < 1e-6, (name, rel)
    for name in ("u", "delta", "z"):
        assert torch.equal(atomic[name], blocks[name]), name
    monkeypatch.setitem(ts.TILES, "sums", "atomic")
    torch.use_deterministic_algorithms(True)
    try:
        runs = [_scan_and_grads(inputs, "triton")[1] for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert all(torch.equal(runs[0][k], blocks[k]) for k in ("B", "C", "A", "D", "delta_bias"))


@pytest.mark.gpu
@requires_gpu
def test_triton_scan_opcheck():
    ins = _gpu_inputs(2, 768, 624, 1, torch.bfloat16)
    args = tuple(ins[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")) + (None, True, True)
    torch.library.opcheck(torch.ops.starx.triton_scan_fwd.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


@pytest.mark.gpu
@requires_gpu
def test_compiled_star_base_on_triton_is_one_graph_and_matches_eager():
    import torch._dynamo
    from torch._dynamo.utils import counters

    from starx.models import create_model

    torch.manual_seed(0)
    model = create_model("star_base", img_size=192, seq_multiplier=4, separator="cluster", backend="triton").cuda()
    images = torch.randn(2 * 4, 3, 192, 192, device="cuda")
    torch._dynamo.reset()
    counters.clear()
    losses = {}
    for name, run in (("eager", model), ("compiled", torch.compile(model))):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = run(images).loss
        loss.backward()
        losses[name] = loss.item()
    assert not dict(counters["graph_break"]), dict(counters["graph_break"])
    assert abs(losses["compiled"] - losses["eager"]) / losses["eager"] < 1e-2, losses


@pytest.mark.gpu
@requires_gpu
def test_twenty_steps_on_triton_follow_the_mamba_ssm_loss_curve():
    """A fixed-seed 20-step STAR-B k=4 run (bf16, the engine's loop): per-step losses of the Triton
    and mamba-ssm backends within 2% (bench/backend_parity.py's tolerance), the same as cuda vs torch."""
    if not _STATUS["kernels_ok"]:
        pytest.skip("needs mamba-ssm for the comparison")
    sys.path.insert(0, str(ROOT))
    from bench.backend_parity import TOLERANCE, loss_curve
    from starx.models import create_model
    from starx.spec import load_spec
    from starx.train.stages import model_kwargs

    torch.manual_seed(0)
    cfg = load_spec(ROOT / "specs/star_base_in1k.yaml")
    state = create_model(cfg.model.name, **model_kwargs(cfg)).state_dict()
    g = torch.Generator(device="cuda").manual_seed(0)
    batches = [torch.randn(32, 3, 192, 192, device="cuda", generator=g) for _ in range(20)]
    curves = {b: loss_curve(b, state, batches, 20) for b in ("cuda", "triton")}
    rel = [abs(a - b) / abs(b) for a, b in zip(curves["triton"], curves["cuda"])]
    print(f"\n  max rel diff over 20 steps: {max(rel):.2e}", end="")
    assert max(rel) <= TOLERANCE, rel


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_four_direction_mixer_on_triton_matches_the_twin_on_gpu(dtype, compiled, request):
    """The fine-tuning mixer at ViT-B/16's 224 px shape (197 tokens, cls in the middle): output,
    input and every parameter gradient of the Triton path (direction gathers in (b, l, g, c),
    channel-last scan) against the torch twin's indexing path in fp32."""
    from starx.models.mamba import BiMamba4, column_order, direction_orders

    torch.manual_seed(0)
    tri = BiMamba4(768, backend="triton").cuda()
    twin = BiMamba4(768, backend="torch").cuda()
    twin.load_state_dict(tri.state_dict())
    orders, inverses = (t.cuda() for t in direction_orders(column_order(14, 14, 98)))
    x = torch.randn(2, 197, 768, device="cuda")
    w = torch.randn(2, 197, 768, device="cuda")

    def grads(module, call, autocast):
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            out = call(xi, orders, inverses)
        (out.float() * w).sum().backward()
        return {"out": out.detach().float(), "x": xi.grad, **{n: p.grad for n, p in module.named_parameters()}}

    got = grads(tri, torch.compile(tri) if compiled else tri, dtype == torch.bfloat16)
    ref = grads(twin, twin, False)
    assert set(got) == set(ref) and len(ref) > 8
    errors = {k: ((got[k].double() - ref[k].double()).norm() / ref[k].double().norm()).item() for k in ref}
    print(f"\n  {request.node.callspec.id}: " + " ".join(f"{k} {v:.1e}" for k, v in errors.items()), end="")
    assert max(errors.values()) < (1e-4 if dtype == torch.float32 else 3e-2), errors
