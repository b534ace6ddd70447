"""ARM checkpoints (OliverRensu/ARM) in starx: loaded without running foreign pickles, their key
names and layouts mapped, for fine-tuning (finetune.init) and continued pretraining (pretrain.init).

The ARM side is rebuilt here from ARM's own model definition (models_pretrain.py at commit 996d93e:
VisionMamba, Block, SwiGLU, DecoderBlock, CrossAttention; the mixer is mamba_simple.Mamba, whose
parameter names and math starx's Mamba shares) and its checkpoint from utils/misc.py's save_model:
``{model, optimizer, epoch, scaler, args}`` with ``args`` an argparse.Namespace.
"""

from __future__ import annotations

import argparse
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from starx.cli import app
from starx.models import create_classifier, create_model
from starx.models.mamba import Mamba
from starx.train import checkpoint
from starx.train.errors import CheckpointInputError
from tests.test_engine import QUICKSTART, tiny


# ----------------------------------------------------------------------------- ARM, as its code has it
def _arm_sincos(dim: int, grid: int) -> np.ndarray:  # utils/pos_embed.py (MAE's)
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))

    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float32) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one(dim // 2, gw), one(dim // 2, gh)], axis=1)


class ArmSwiGLU(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.w1, self.w2, self.w3 = nn.Linear(d, h), nn.Linear(d, h), nn.Linear(h, d)

    def forward(self, x):
        return self.w3(nn.functional.silu(self.w1(x)) * self.w2(x))


class ArmBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.mixer = Mamba(d, d_state=16, d_conv=4, expand=1, backend="torch")  # mamba_simple.Mamba's names
        self.mlp = ArmSwiGLU(d, d * 4 * 2 // 3)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, h):
        h = h + self.mixer(self.norm1(h))
        return h + self.mlp(self.norm2(h))


class ArmCrossAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, dim * 2), nn.Linear(dim, dim)

    def forward(self, q, kv, mask):
        B, N, C = q.shape
        q = self.q(q).reshape(B, N, 1, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)[0]
        kv = self.kv(kv).reshape(B, N, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ kv[0].transpose(-2, -1)) * self.scale + mask).softmax(dim=-1)
        return self.proj((attn @ kv[1]).transpose(1, 2).reshape(B, N, C))


class ArmMlp(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d, h), nn.GELU(), nn.Linear(h, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ArmDecoderBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.attn2 = ArmCrossAttention(dim, heads)
        self.norm2_1, self.norm2_2, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp = ArmMlp(dim, dim * 4)

    def forward(self, q, kv, mask):
        q = q + self.attn2(self.norm2_1(q), self.norm2_2(kv), mask)
        return q + self.mlp(self.norm2(q))


class ArmVisionMamba(nn.Module):
    """models_pretrain.VisionMamba: 192 px, patch 16, clusters of 4x4 patches, 4 decoder blocks."""

    def __init__(self, embed_dim=32, depth=12, dec_embed_dim=64, img_size=192, patch=16, chans=3):
        super().__init__()
        self.skip = {12: [6, 8, 10, 12], 24: [12, 16, 20, 24]}[depth]
        n = (img_size // patch) ** 2
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(chans, embed_dim, patch, patch)
        self.pos_embed = nn.Parameter(torch.from_numpy(_arm_sincos(embed_dim, img_size // patch)).float()[None],
                                      requires_grad=False)
        self.layers = nn.ModuleList(ArmBlock(embed_dim) for _ in range(depth))
        self.ar_token = nn.Parameter(torch.randn(1, 1, dec_embed_dim) * 0.02)
        self.dec_pos_embed = nn.Parameter(torch.from_numpy(_arm_sincos(dec_embed_dim, img_size // patch)).float()[None],
                                          requires_grad=False)
        self.enc2dec = nn.Linear(embed_dim * 4, dec_embed_dim * 4)
        self.dec_block = nn.ModuleList(ArmDecoderBlock(dec_embed_dim, dec_embed_dim // 64) for _ in range(4))
        self.norm_1, self.norm_2 = nn.LayerNorm(embed_dim), nn.LayerNorm(embed_dim)
        self.norm_3, self.norm_4 = nn.LayerNorm(embed_dim), nn.LayerNorm(embed_dim)
        self.ar_norm = nn.LayerNorm(dec_embed_dim)
        self.ar_pred = nn.Linear(dec_embed_dim, 768)
        mask = torch.tril(torch.ones(8, 8))
        mask = mask.masked_fill(mask == 0, float("-inf")).masked_fill(mask == 1, 0)
        mask = mask.repeat_interleave(16, dim=0).repeat_interleave(16, dim=1)
        self.register_buffer("mask", mask)
        assert n == 144

    @staticmethod
    def _clusters(x):  # rearrange "b (h p1) (w p2) c -> b (h w) (p1 p2) c", p1 = p2 = 4
        B, N, C = x.shape
        H = int(math.isqrt(N))
        return x.reshape(B, H // 4, 4, H // 4, 4, C).permute(0, 1, 3, 2, 4, 5).reshape(B, -1, 16, C)

    def forward(self, x):
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        h = self._clusters(t)[:, :-1].reshape(t.shape[0], -1, t.shape[-1])
        feats = []
        for i, layer in enumerate(self.layers, start=1):
            h = layer(h)
            if i in self.skip:
                feats.append(h)
        feats = [self.norm_1(feats[0]), self.norm_2(feats[1]), self.norm_3(feats[2]), self.norm_4(feats[3])]
        lat = self.enc2dec(torch.cat(feats, dim=-1))
        B, N, C = lat.shape
        lat = lat.reshape(B, N, C // 4, 4)
        q = self._clusters(self.ar_token + self.dec_pos_embed)[:, 1:].reshape(1, -1, lat.shape[2]).repeat(B, 1, 1)
        for i, blk in enumerate(self.dec_block):
            q = blk(q, lat[:, :, :, i], self.mask)
        return self.ar_pred(self.ar_norm(q))


def _randomise(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "pos_embed" not in name and p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def save_arm_checkpoint(path: Path, model: nn.Module, epoch: int = 299) -> dict:
    """utils/misc.py save_model: {model, optimizer, epoch, scaler, args}."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    args = argparse.Namespace(batch_size=64, epochs=300, accum_iter=1, clip_grad=3.0, model="arm_base_pz16",
                              input_size=192, norm_pix_loss=False, weight_decay=0.05, lr=0.0006, blr=1.5e-4,
                              min_lr=0.0, warmup_epochs=40, data_path="/datasets01/imagenet", output_dir="./out",
                              log_dir="./out", device="cuda", seed=0, resume="", start_epoch=0, num_workers=10,
                              pin_mem=True, world_size=8, local_rank=-1, dist_on_itp=False, dist_url="env://",
                              distributed=True, rank=0, gpu=0, dist_backend="nccl")
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 17}
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "scaler": scaler,
             "args": args}
    torch.save(state, path)
    return state


def _star_like_arm(**kw):
    return create_model("star_tiny", img_size=192, patch_size=16, cluster_size=4, in_chans=3, embed_dim=32,
                        depth=12, decoder_dim=64, decoder_depth=4, decoder_heads=1, separator="none",
                        seq_multiplier=1, backend="torch", norm_pix_loss=True, **kw)


# ----------------------------------------------------------------------------- the tests
def test_arm_checkpoint_is_a_namespace_pickle_that_plain_weights_only_refuses(tmp_path):
    path = tmp_path / "checkpoint-299.pth"
    save_arm_checkpoint(path, ArmVisionMamba())
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):
        torch.load(path, weights_only=True)
    raw = checkpoint.load(path)
    assert isinstance(raw["args"], argparse.Namespace) and raw["epoch"] == 299


def test_arm_weights_map_onto_starx_and_predict_the_same(tmp_path):
    torch.manual_seed(0)
    arm = ArmVisionMamba()
    _randomise(arm)
    path = tmp_path / "checkpoint-299.pth"
    save_arm_checkpoint(path, arm)
    weights, notes = checkpoint.load_weights(path)
    text = " ".join(notes)
    assert "ARM checkpoint (epoch 299)" in text and "enc2dec output rows permuted" in text
    assert "norm_<j> -> enc_norms" in text and "dropped ARM's fixed dec_pos_embed, mask" in text
    star = _star_like_arm()
    report = checkpoint.load_into_pretrain(star, weights, path)
    assert "0 initialised fresh" in report and "1 file keys ignored (pos_embed)" in report
    own = star.state_dict()
    for name, value in weights.items():
        if name in own:
            assert torch.equal(own[name], value), name
    images = torch.randn(2, 3, 192, 192)
    with torch.no_grad():
        expected = arm(images)
        pred = star.decode(star.encode(images))
    torch.testing.assert_close(pred, expected, rtol=1e-4, atol=1e-4)


def test_arm_checkpoint_initialises_the_classifier(tmp_path):
    from starx.train.stages import _load_finetune_init

    arm = ArmVisionMamba()
    _randomise(arm)
    path = tmp_path / "arm.pth"
    save_arm_checkpoint(path, arm)
    clf = create_classifier("star_tiny", num_classes=10, img_size=224, patch_size=16, in_chans=3, embed_dim=32,
                            depth=12, backend="torch")
    weights, notes = checkpoint.load_weights(path)
    summary = _load_finetune_init(clf, (weights, str(path), notes))
    assert "ARM checkpoint" in summary and "pos_embed interpolated 12x12 -> 14x14" in summary
    sd = clf.state_dict()
    arm_sd = arm.state_dict()
    for name in ("layers.3.mixer.in_proj.weight", "layers.11.mixer.A_log", "layers.0.mlp.w3.bias",
                 "patch_embed.proj.weight"):
        assert torch.equal(sd[name], arm_sd[name]), name
    assert torch.equal(sd["layers.5.mixer.conv1d_c_b.weight"], arm_sd["layers.5.mixer.conv1d.weight"])


def _arm_for_tiny_spec() -> nn.Module:
    """ARM's names and layout at the tiny test sizes (32 px grey, patch 8, width 32, decoder 32 x 4)."""
    arm = ArmVisionMamba.__new__(ArmVisionMamba)
    nn.Module.__init__(arm)
    d, dd = 32, 32
    arm.patch_embed = nn.Module()
    arm.patch_embed.proj = nn.Conv2d(1, d, 8, 8)
    arm.pos_embed = nn.Parameter(torch.from_numpy(_arm_sincos(d, 4)).float()[None], requires_grad=False)
    arm.layers = nn.ModuleList(ArmBlock(d) for _ in range(2))
    arm.ar_token = nn.Parameter(torch.zeros(1, 1, dd))
    arm.dec_pos_embed = nn.Parameter(torch.zeros(1, 16, dd), requires_grad=False)
    arm.enc2dec = nn.Linear(d * 4, dd * 4)
    arm.dec_block = nn.ModuleList(ArmDecoderBlock(dd, 1) for _ in range(4))
    for j in range(1, 5):
        setattr(arm, f"norm_{j}", nn.LayerNorm(d))
    arm.ar_norm, arm.ar_pred = nn.LayerNorm(dd), nn.Linear(dd, 64)
    arm.register_buffer("mask", torch.zeros(12, 12))
    return arm


def test_fine_tune_and_continue_pretraining_from_an_arm_checkpoint(tmp_path):
    path = tmp_path / "arm.pth"
    save_arm_checkpoint(path, _arm_for_tiny_spec())
    runner = CliRunner()
    ft = runner.invoke(app, ["run", str(QUICKSTART), *tiny(tmp_path / "ft", "pretrain.enabled=false",
                                                            f"finetune.init={path}")])
    assert ft.exit_code == 0, ft.output
    pt = runner.invoke(app, ["run", str(QUICKSTART), *tiny(tmp_path / "pt", f"pretrain.init={path}",
                                                            "model.decoder_depth=4", "finetune.enabled=false",
                                                            "pretrain.epochs=0.02")])
    assert pt.exit_code == 0, pt.output
    for root, stage in ((tmp_path / "ft", "finetune"), (tmp_path / "pt", "pretrain")):
        log_text = next(root.glob("results/*/*/train.log")).read_text()
        assert f"{stage}: weights from {path}" in log_text and "ARM checkpoint (epoch 299)" in log_text


class Foreign:
    pass


@pytest.mark.parametrize("problem", ["foreign global", "truncated", "other size"])
def test_bad_init_file_is_one_line_exit_2_and_loses_nothing(tmp_path, problem):
    path = tmp_path / "init.pth"
    if problem == "foreign global":
        torch.save({"model": _arm_for_tiny_spec().state_dict(), "args": Foreign()}, path)
        expect = "needs the pickle global tests.test_arm_import.Foreign"
    elif problem == "truncated":
        save_arm_checkpoint(path, _arm_for_tiny_spec())
        path.write_bytes(path.read_bytes()[:5000])
        expect = "corrupt or unreadable checkpoint"
    else:
        save_arm_checkpoint(path, ArmVisionMamba())  # width 32 at 192 px, patch 16 RGB: another model
        expect = "do not fit this classifier (another size?)"
    before = path.read_bytes()
    result = CliRunner().invoke(app, ["run", str(QUICKSTART), *tiny(tmp_path, "pretrain.epochs=0.02",
                                                                    f"finetune.init={path}")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(path) in lines[0] and expect in lines[0], result.output
    assert path.read_bytes() == before
    # refused before any training: the pretraining stage never started
    run_dir = next((tmp_path / "results").glob("*/*"))
    assert not (run_dir / "checkpoints" / "pretrain_last.pt").exists()
    with pytest.raises(CheckpointInputError):
        checkpoint.load_weights(path) if problem != "other size" else _raise_size(path)


def _raise_size(path):
    checkpoint.load_into_pretrain(create_model("star_tiny", img_size=32, patch_size=8, cluster_size=2, in_chans=1,
                                               embed_dim=32, depth=2, decoder_dim=32, decoder_depth=4,
                                               backend="torch"), checkpoint.load_weights(path)[0], path)
