"""STAR models on CPU: layout and mask, no leak, separators, every size, transfer, mixers."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from starx.models import (
    BiMamba4,
    Mamba,
    STARConfig,
    count_encoder_params,
    create_classifier,
    create_model,
    describe_models,
    list_models,
    load_pretrained,
)
from starx.models.blocks import PatchEmbed, patchify
from starx.models.layout import build_layout, cluster_order
from starx.models.mamba import column_order, direction_orders
from starx.models.star import decoder_taps
from starx.ops import mamba_inner, selective_scan_ref

# A tiny model: 8x8 px, patch 2 -> 4x4 grid, cluster 2 -> 4 clusters of 4 patches.
TINY = dict(embed_dim=16, depth=2, img_size=8, patch_size=2, cluster_size=2, in_chans=1,
            decoder_dim=16, decoder_depth=2, decoder_heads=2, backend="torch")


def tiny_model(**kw):
    torch.manual_seed(0)
    return create_model("star_tiny", **{**TINY, **kw}).double().eval()


# ----------------------------------------------------------------------------- layout
def test_cluster_order_is_clusters_raster_then_patches_raster():
    assert cluster_order(4, 4, 2).tolist() == [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
    assert cluster_order(2, 4, 2).tolist() == [0, 1, 4, 5, 2, 3, 6, 7]


def arm_mask(segments, tokens):  # ARM's mask_generate, as booleans (True = may attend)
    m = torch.tril(torch.ones(segments, segments, dtype=torch.bool))
    return m.repeat_interleave(tokens, 0).repeat_interleave(tokens, 1)


def test_k1_without_separator_is_exactly_arm():
    cfg = STARConfig(img_size=192, patch_size=16, cluster_size=4, separator="none", seq_multiplier=1)
    lay = build_layout(cfg)
    assert lay.num_tokens == 128 and lay.num_targets == 128  # encoder reads clusters 1..8, predicts 2..9
    assert torch.equal(lay.mask, arm_mask(8, 16))
    assert lay.target_index.tolist() == list(range(16, 144))
    assert decoder_taps(12, 4) == [6, 8, 10, 12] and decoder_taps(24, 4) == [12, 16, 20, 24]


def test_star_b_layout():
    cfg = STARConfig(img_size=192, patch_size=16, cluster_size=4, separator="cluster", seq_multiplier=4)
    lay = build_layout(cfg)
    assert lay.seq_len == 640 and lay.num_tokens == 624 and lay.num_targets == 4 * 144
    # the first target (image 0, cluster 0) sees exactly its separator
    assert lay.mask[0].nonzero().flatten().tolist() == list(range(16))


@pytest.mark.parametrize("cross", [True, False])
def test_none_with_k_gt_1_first_cluster_rule(cross):
    cfg = STARConfig(**{**TINY, "separator": "none", "seq_multiplier": 2, "decoder_cross_image": cross})
    lay = build_layout(cfg)
    # image 1's first cluster is a target iff the decoder may look at image 0
    assert lay.num_targets == (3 + 4 if cross else 3 + 3) * 4
    assert lay.mask.any(dim=1).all()


# ----------------------------------------------------------------------------- no leak
def target_starts(model):
    lay = model.layout
    image, pos = lay.target_index // lay.image_tokens, lay.target_index % lay.image_tokens
    return image * lay.segment + lay.sep_len + (pos // lay.cluster_tokens) * lay.cluster_tokens


def cluster_region(cfg, j):
    gw = cfg.grid[1] // cfg.cluster_size
    r, c = divmod(j, gw)
    s = cfg.cluster_size * cfg.patch_size
    return slice(r * s, (r + 1) * s), slice(c * s, (c + 1) * s)


LEAK_CASES = [(sep, k, True) for sep in ("none", "token", "cluster", "fixed", "distinct") for k in (1, 2)]
LEAK_CASES += [("none", 2, False), ("cluster", 2, False)]


@pytest.mark.parametrize("separator,k,cross", LEAK_CASES)
def test_no_leak(separator, k, cross):
    model = tiny_model(separator=separator, seq_multiplier=k, decoder_cross_image=cross)
    cfg, lay = model.cfg, model.layout
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2 * k, 1, 8, 8, generator=g, dtype=torch.float64)  # 2 sequences
    base = model(images).pred
    starts = target_starts(model)
    for i in range(k):
        for j in range(cfg.clusters_per_image):
            x = images.clone()
            rows, cols = cluster_region(cfg, j)
            x[i, :, rows, cols] += torch.randn(x[i, :, rows, cols].shape, generator=g, dtype=torch.float64)
            pred = model(x).pred
            start = i * lay.segment + lay.sep_len + j * lay.cluster_tokens
            upto = starts <= start
            assert torch.equal(pred[:, upto], base[:, upto]), f"leak from image {i} cluster {j}"
            assert torch.equal(pred[1], base[1]), "sequences mix"
            later = ~upto
            if cross:
                expect_change = bool(later.any()) and start < lay.num_tokens
            else:
                same_image = (starts > start) & (starts < (i + 1) * lay.segment)
                later, expect_change = same_image, bool(same_image.any())
            if expect_change:
                assert not torch.allclose(pred[0, later], base[0, later]), f"image {i} cluster {j} has no effect"
        # a whole later image leaves every earlier image's predictions unchanged
        x = images.clone()
        x[i] = torch.randn(x[i].shape, generator=g, dtype=torch.float64)
        before = starts < i * lay.segment
        assert torch.equal(model(x).pred[:, before], base[:, before])


# ----------------------------------------------------------------------------- separators
def separator_params(model):
    return {n: p for n, p in model.named_parameters() if n.startswith("separator.")}


def test_separator_parameters():
    k, S, D = 3, 4, TINY["embed_dim"]
    models = {s: tiny_model(separator=s, seq_multiplier=k) for s in ("none", "token", "cluster", "fixed", "distinct")}
    assert separator_params(models["none"]) == {} and models["none"].layout.sep_len == 0
    assert [p.shape for p in separator_params(models["token"]).values()] == [(1, D)]
    assert models["token"].layout.sep_len == 1
    assert [p.shape for p in separator_params(models["cluster"]).values()] == [(S, D)]
    assert [p.shape for p in separator_params(models["distinct"]).values()] == [(k, S, D)]
    assert separator_params(models["fixed"]) == {} and "separator.fixed" in models["fixed"].state_dict()
    for kind in ("token", "cluster", "fixed"):  # identical separators: one tensor for every slot
        seps = models[kind].separator()
        assert all(torch.equal(seps[0], seps[i]) for i in range(k))
    seps = models["distinct"].separator()
    assert not torch.equal(seps[0], seps[1])
    # a shared separator gets gradient from every slot; distinct ones each from their own
    model = models["cluster"].train()
    model(torch.randn(k, 1, 8, 8, dtype=torch.float64)).loss.backward()
    assert model.separator.tokens.grad.abs().sum() > 0
    assert tiny_model(separator="token", separator_len=3).layout.sep_len == 3


# ----------------------------------------------------------------------------- sizes
def test_registry():
    assert {"star_tiny", "star_small", "star_base", "star_large"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model"):
        create_model("star_gigantic")
    with pytest.raises(ValueError, match="unknown model argument"):
        create_model("star_tiny", seperator="cluster")
    rows = {r["name"]: r for r in describe_models()}
    assert rows["star_base"]["embed_dim"] == 768 and rows["star_large"]["depth"] == 24
    cfg = STARConfig(**{**TINY, "embed_dim": 32})
    assert count_encoder_params(cfg) == create_model("star_tiny", **{**TINY, "embed_dim": 32}).encoder_param_count()


@pytest.mark.parametrize("name", list_models())
def test_every_size_builds_and_trains(name):
    depth = {"star_tiny": 2, "star_small": 2}.get(name, 1)  # real widths; fewer blocks for speed
    kw = dict(img_size=32, patch_size=8, cluster_size=2, seq_multiplier=2, backend="torch", depth=depth)
    model = create_model(name, **kw)
    width = {"star_tiny": 192, "star_small": 384, "star_base": 768, "star_large": 1024, "star_huge": 1536}[name]
    assert model.cfg.embed_dim == width and model.num_tokens == 2 * (4 + 16) - 4
    out = model(torch.randn(4, 3, 32, 32))
    assert out.pred.shape == out.target.shape == (2, 2 * 16, 8 * 8 * 3)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("layers."))
    clf = create_classifier(name, 5, img_size=32, patch_size=8, backend="torch", depth=1, drop_path=0.1)
    clf(torch.randn(2, 3, 32, 32)).sum().backward()


def test_input_errors():
    model = tiny_model(seq_multiplier=2)
    with pytest.raises(ValueError, match="multiple of seq_multiplier"):
        model(torch.randn(3, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="8x8"):
        model(torch.randn(2, 1, 12, 12, dtype=torch.float64))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="cluster_size"):
        create_model("star_tiny", **{**TINY, "img_size": 10})
    with pytest.raises(ValueError, match="separator"):
        create_model("star_tiny", **{**TINY, "separator": "learned"})


# ----------------------------------------------------------------------------- loss and targets
def test_targets_are_normalised_patches_in_sequence_order():
    model = tiny_model(separator="none", seq_multiplier=1)
    images = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    out = model(images)
    patches = patchify(images, 2)[:, cluster_order(4, 4, 2)][:, 4:]  # ARM: drop the first cluster
    mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
    torch.testing.assert_close(out.target, (patches - mean) / (var + 1e-6) ** 0.5)
    torch.testing.assert_close(out.loss, ((out.pred - out.target) ** 2).mean())


def test_patch_embed_is_its_conv_as_a_matmul():
    """PatchEmbed computes Conv2d(stride = kernel) as patchify + linear with the conv's own weight
    (so ViT / ARM checkpoints load unchanged): same output, and the same gradients reach the weight."""
    torch.manual_seed(0)
    embed = PatchEmbed(4, 3, 24)
    nn.init.normal_(embed.proj.bias)
    x = torch.randn(2, 3, 16, 12)  # not square: rows and columns must not be swapped
    conv = embed.proj(x).flatten(2).transpose(1, 2)
    out = embed(x)
    assert out.shape == (2, 4 * 3, 24)
    torch.testing.assert_close(out, conv, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    (wc, bc) = torch.autograd.grad(conv, (embed.proj.weight, embed.proj.bias), g)
    (wm, bm) = torch.autograd.grad(out, (embed.proj.weight, embed.proj.bias), g)
    torch.testing.assert_close(wm, wc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bm, bc, rtol=1e-5, atol=1e-5)


def test_block_stream_is_plain_prenorm_residual():
    """A block carried as (branch output, residual) computes x + mixer(LN1 x), then + mlp(LN2 x)."""
    from starx.models.blocks import MambaMLPBlock

    torch.manual_seed(0)
    block = MambaMLPBlock(16, Mamba(16, d_state=4, backend="torch"), 32, backend="torch").double()

    def plain(x):
        x = x + block.mixer(block.norm1(x))
        return x + block.mlp(block.norm2(x))

    out0, res0 = torch.randn(2, 7, 16, dtype=torch.float64), torch.randn(2, 7, 16, dtype=torch.float64)
    out, residual = block(out0, res0)
    torch.testing.assert_close(out + residual, plain(out0 + res0))
    out, residual = block(out0, None)  # the first block: the stream is x alone
    torch.testing.assert_close(out + residual, plain(out0))


def test_autocast_bf16_keeps_fp32_params():
    model = create_model("star_tiny", **{**TINY, "seq_multiplier": 2}).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 1, 8, 8))
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(p.dtype == torch.float32 for p in model.parameters())


# ----------------------------------------------------------------------------- mixers
def test_mamba_matches_mamba_simple_layout_and_reference():
    torch.manual_seed(0)
    d, n = 24, 16
    m = Mamba(d, backend="torch").double()
    r = math.ceil(d / 16)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {"in_proj.weight": (2 * d, d), "conv1d.weight": (d, 1, 4), "conv1d.bias": (d,),
                      "x_proj.weight": (r + 2 * n, d), "dt_proj.weight": (d, r), "dt_proj.bias": (d,),
                      "A_log": (d, n), "D": (d,), "out_proj.weight": (d, d)}
    torch.testing.assert_close(m.A_log.exp(), torch.arange(1, n + 1, dtype=torch.float64).repeat(d, 1))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-9
    x = torch.randn(2, 7, d, dtype=torch.float64)
    # mamba_simple's slow path, written out
    xz = (x @ m.in_proj.weight.t()).transpose(1, 2)
    u, z = xz.chunk(2, dim=1)
    u = F.silu(F.conv1d(u, m.conv1d.weight, m.conv1d.bias, padding=3, groups=d)[..., :7])
    dt_, B, C = (u.transpose(1, 2) @ m.x_proj.weight.t()).split([r, n, n], dim=-1)
    y = selective_scan_ref(u, (dt_ @ m.dt_proj.weight.t()).transpose(1, 2), -m.A_log.exp(), B.transpose(1, 2),
                           C.transpose(1, 2), m.D, z, m.dt_proj.bias, delta_softplus=True)
    torch.testing.assert_close(m(x), y.transpose(1, 2) @ m.out_proj.weight.t())


def test_bimamba4_matches_arm_v3_square_grid():
    torch.manual_seed(0)
    d, side = 8, 3
    m = BiMamba4(d, backend="torch").double()
    for suffix in ("_b", "_c", "_c_b"):  # make the directions differ
        getattr(m, f"x_proj{suffix}").weight.data.normal_()
    L = side * side + 1
    x = torch.randn(2, L, d, dtype=torch.float64)
    perm = column_order(side, side, L // 2)
    out = m(x, *direction_orders(perm))
    # ARM's mamba_simple v3: transpose the patch grid around the middle cls token
    xz, t = (x @ m.in_proj.weight.t()).transpose(1, 2), L // 2

    def run(s, seq):  # one direction in the kernels' (b, d, l) layout, through the public op
        p = lambda name: getattr(m, name.replace("*", s))  # noqa: E731
        return mamba_inner(seq, p("conv1d*").weight, p("conv1d*").bias, p("x_proj*").weight, p("dt_proj*").weight,
                           None, None, -p("A*_log").exp(), p("D*"), p("dt_proj*").bias, backend="torch")

    rows = run("", xz) + run("_b", xz.flip(-1)).flip(-1)
    cls, rest = xz[..., t : t + 1], torch.cat([xz[..., :t], xz[..., t + 1 :]], -1)
    xc = rest.reshape(2, 2 * d, side, side).transpose(2, 3).reshape(2, 2 * d, -1)
    xc = torch.cat([xc[..., :t], cls, xc[..., t:]], -1)
    oc = run("_c", xc) + run("_c_b", xc.flip(-1)).flip(-1)
    cls, rest = oc[..., t : t + 1], torch.cat([oc[..., :t], oc[..., t + 1 :]], -1)
    oc = rest.reshape(2, d, side, side).transpose(2, 3).reshape(2, d, -1)
    oc = torch.cat([oc[..., :t], cls, oc[..., t:]], -1)
    torch.testing.assert_close(out, ((rows + oc) / 4).transpose(1, 2) @ m.out_proj.weight.t())


def test_column_order_non_square():
    perm = column_order(2, 3, cls_pos=3)  # patches 0..5 raster; cls at sequence index 3
    # columns: (0, 3), (1, 4), (2, 5) -> sequence indices with cls shift: 0, 4, 1, [cls 3], 5, 2, 6
    assert perm.tolist() == [0, 4, 1, 3, 5, 2, 6]


# ----------------------------------------------------------------------------- classifier and transfer
def test_transfer_loads_every_encoder_weight():
    torch.manual_seed(0)
    pre = create_model("star_tiny", **{**TINY, "separator": "distinct", "seq_multiplier": 2})
    clf = create_classifier("star_tiny", 10, **{**TINY, "img_size": 12})  # new grid: 6x6
    report = load_pretrained(clf, {"model": pre.state_dict()})
    assert report.missing_encoder_keys == []
    assert set(report.initialised) == {"cls_token", "pos_embed", "norm_f.weight", "norm_f.bias",
                                       "head.weight", "head.bias"}
    assert not [k for k in report.ignored if k.startswith(("layers.", "patch_embed."))]
    assert "separator.tokens" in report.ignored and any(k.startswith("dec_blocks.") for k in report.ignored)
    state = clf.state_dict()
    for name, tensor in pre.state_dict().items():
        if name.startswith(("layers.", "patch_embed.")):
            assert torch.equal(state[name], tensor), name
    for suffix in ("_b", "_c", "_c_b"):
        assert torch.equal(state[f"layers.1.mixer.conv1d{suffix}.weight"], state["layers.1.mixer.conv1d.weight"])
        assert torch.equal(state[f"layers.1.mixer.A{suffix}_log"], state["layers.1.mixer.A_log"])
        assert torch.equal(state[f"layers.0.mixer.D{suffix}"], state["layers.0.mixer.D"])
    assert "initialised fresh" in report.summary()
    with pytest.raises(ValueError, match="another size"):
        load_pretrained(create_classifier("star_tiny", 10, **{**TINY, "embed_dim": 32}), pre.state_dict())


def test_transfer_interpolates_a_checkpoint_position_table():
    clf = create_classifier("star_tiny", 3, **{**TINY, "img_size": 12})
    report = load_pretrained(clf, {"pos_embed": torch.randn(1, 16, TINY["embed_dim"])})  # 4x4 -> 6x6
    assert "pos_embed" in report.loaded and clf.pos_embed[0, clf.cls_pos].abs().sum() == 0


def test_classifier_is_bidirectional_and_pools():
    clf = create_classifier("star_tiny", 4, **TINY).double().eval()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    feats = clf.forward_features(x)
    x2 = x.clone()
    x2[..., -2:, -2:] += 1.0  # the last patch: a causal model's cls (middle) would not see it
    assert not torch.allclose(clf.forward_features(x2), feats)
    assert clf.num_tokens == 17 and clf(x).shape == (1, 4)
    assert create_classifier("star_tiny", 4, pool="cls", **TINY).forward_features(x.float()).shape == (1, 16)


def test_layer_decay_groups_with_timm():
    from timm.optim import param_groups_layer_decay

    clf = create_classifier("star_tiny", 4, **{**TINY, "drop_path": 0.1})
    nwd = clf.no_weight_decay()
    assert {"pos_embed", "cls_token", "layers.0.mixer.A_log", "layers.1.mixer.A_c_b_log"} <= nwd
    groups = param_groups_layer_decay(clf, weight_decay=0.05, no_weight_decay_list=nwd, layer_decay=0.65)
    scales = sorted({g["lr_scale"] for g in groups})
    assert len(scales) == TINY["depth"] + 2  # stem, blocks, head
    a_logs = [g for g in groups if any(p is clf.layers[0].mixer.A_log for p in g["params"])]
    assert a_logs[0]["weight_decay"] == 0.0
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in clf.layers]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1)


def test_pretraining_optimizer_spares_separators_and_ssm_parameters():
    from starx.train.optim import adamw_pretrain

    for kind in ("cluster", "token", "distinct"):
        model = create_model("star_tiny", **{**TINY, "separator": kind, "seq_multiplier": 2})
        opt = adamw_pretrain(model, weight_decay=0.05, betas=(0.9, 0.95))
        decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
        names = {id(p): n for n, p in model.named_parameters()}
        spared = {names[i] for i in names if i not in decay}
        assert {n for n in names.values() if n.startswith("separator.")} <= spared, kind
        assert {"layers.0.mixer.A_log", "layers.1.mixer.D", "layers.0.mixer.in_proj.weight"} - spared == \
            {"layers.0.mixer.in_proj.weight"}  # matrices keep their decay
        assert all(names[i] not in spared for i in decay)


def test_every_model_field_of_the_spec_reaches_the_model():
    """Each field of the spec's model section (but the size name) changes the built model's config:
    a field left out of the translation would validate, change the run id and do nothing."""
    from dataclasses import fields

    from starx.models import STARPretrain
    from starx.models.config import SPEC_ONLY_KEYS, model_config
    from starx.spec import load_spec
    from starx.spec.schema import ModelSpec

    base = ["model.img_size=32", "model.patch_size=4", "model.cluster_size=2", "model.in_chans=1",
            "model.depth=2", "model.embed_dim=32", "model.decoder_dim=32", "model.decoder_depth=1",
            "model.decoder_heads=2", "data.batch_size=64"]
    changed = {"img_size": 64, "patch_size": 8, "cluster_size": 4, "in_chans": 3, "separator": "token",
               "separator_len": 3, "seq_multiplier": 2, "depth": 4, "embed_dim": 64, "d_state": 8,
               "decoder_dim": 64, "decoder_depth": 2, "decoder_heads": 4, "decoder_cross_image": False,
               "state_reset": True, "norm_pix_loss": False, "backend": "torch"}
    spec_fields = {f.name for f in fields(ModelSpec)} - set(SPEC_ONLY_KEYS)
    assert spec_fields == set(changed), "a new model field needs a value here"
    before = model_config(load_spec(None, base).model)
    for name, value in changed.items():
        cfg = load_spec(None, [*base, f"model.{name}={str(value).lower()}"])
        after = model_config(cfg.model)
        assert getattr(after, name) == value != getattr(before, name), name
        assert getattr(STARPretrain(after).cfg, name) == value, name  # as the trainer builds it
