"""The fine-tuning classifier (ARM's recipe) and the transfer of pretrained encoder weights.

Tokens: patches in raster order with a learned cls token inserted in the middle (index N // 2),
plus a learned position embedding initialised to 2-D sin-cos (zero for cls). Blocks are
MambaMLP blocks with ARM's 4-direction mixer (BiMamba4). Head: final LayerNorm, then the mean
of the patch tokens (``pool="mean"``, ARM's global pool) or the cls token (``pool="cls"``),
then a linear layer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import Tensor

from starx.models.blocks import PatchEmbed, add_norm, init_mamba_weights, init_token
from starx.models.config import POOLS, STARConfig
from starx.models.mamba import DIRECTIONS, BiMamba4, column_order, direction_orders, ssm_no_weight_decay
from starx.models.pos_embed import sincos_2d
from starx.models.star import build_encoder_layers

log = logging.getLogger(__name__)


def _pos_with_cls(dim: int, gh: int, gw: int, cls_pos: int) -> Tensor:
    pos = sincos_2d(dim, gh, gw)
    return torch.cat([pos[:cls_pos], pos.new_zeros(1, dim), pos[cls_pos:]])[None]


class STARClassifier(nn.Module):
    def __init__(self, cfg: STARConfig, num_classes: int, pool: str = "mean"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.cfg, self.num_classes, self.pool = cfg, num_classes, pool
        D = self.num_features = cfg.embed_dim
        gh, gw = cfg.grid
        self.cls_pos = gh * gw // 2

        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(_pos_with_cls(D, gh, gw, self.cls_pos))
        self.layers = build_encoder_layers(cfg, BiMamba4, cfg.drop_path)
        self.norm_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, num_classes)
        orders, inverses = direction_orders(column_order(gh, gw, self.cls_pos))
        self.register_buffer("orders", orders, persistent=False)
        self.register_buffer("inverses", inverses, persistent=False)

        self.apply(lambda m: init_mamba_weights(m, cfg.depth))
        init_token(self.cls_token)
        trunc_normal_(self.head.weight, std=0.02)

    @property
    def num_tokens(self) -> int:
        return self.pos_embed.shape[1]

    def forward_features(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> pooled features (B, D)."""
        cfg = self.cfg
        if images.dim() != 4 or images.shape[1] != cfg.in_chans or tuple(images.shape[2:]) != cfg.img_hw:
            raise ValueError(
                f"expected images (B, {cfg.in_chans}, {cfg.img_hw[0]}, {cfg.img_hw[1]}), got {tuple(images.shape)}"
            )
        x = self.patch_embed(images)
        c = self.cls_pos
        x = torch.cat([x[:, :c], self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x[:, c:]], dim=1)
        x = x + self.pos_embed
        residual = None
        for block in self.layers:
            x, residual = block(x, residual, orders=self.orders, inverses=self.inverses)
        x = add_norm(self.norm_f, x, residual, cfg.backend, prenorm=False)
        if self.pool == "cls":
            return x[:, c]
        return torch.cat([x[:, :c], x[:, c + 1 :]], dim=1).mean(dim=1)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.forward_features(images))

    # ----- optimiser helpers (timm.optim.param_groups_layer_decay) -----
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names without weight decay: positions, cls token, and every SSM A_log / D."""
        return {"pos_embed", "cls_token"} | ssm_no_weight_decay(self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer groups for layer-wise lr decay: embeddings, one group per block, then the head."""
        return {
            "stem": r"^cls_token|^pos_embed|^patch_embed",
            "blocks": [(r"^layers\.(\d+)", None), (r"^norm_f", (99999,))],
        }


@dataclass
class LoadReport:
    """What ``load_pretrained`` did to each classifier tensor."""

    loaded: list[str] = field(default_factory=list)  # copied under the same name
    copied: dict[str, str] = field(default_factory=dict)  # classifier name <- checkpoint name
    initialised: list[str] = field(default_factory=list)  # kept at their fresh initialisation
    ignored: list[str] = field(default_factory=list)  # checkpoint keys not used (decoder, separators, ...)
    notes: list[str] = field(default_factory=list)

    @property
    def missing_encoder_keys(self) -> list[str]:
        """Encoder weights (patch embedding, blocks) left at their fresh init: should be empty."""
        return [k for k in self.initialised if k.startswith(("patch_embed.", "layers."))]

    def summary(self) -> str:
        parts = [
            f"{len(self.loaded)} tensors loaded",
            f"{len(self.copied)} direction copies from forward weights",
            f"{len(self.initialised)} initialised fresh ({_abbrev(self.initialised)})",
            f"{len(self.ignored)} checkpoint keys ignored ({_abbrev(self.ignored)})",
        ]
        if self.missing_encoder_keys:
            parts.append(f"MISSING encoder weights: {_abbrev(self.missing_encoder_keys)}")
        return "; ".join(parts + self.notes)


def _abbrev(names: list[str], n: int = 4) -> str:
    roots = sorted({k.split(".")[0] for k in names})
    return ", ".join(roots[:n]) + (", ..." if len(roots) > n else "") if roots else "none"


def _forward_name(name: str) -> str | None:
    """'layers.3.mixer.conv1d_c_b.weight' -> 'layers.3.mixer.conv1d.weight' (None if not a direction copy)."""
    parts = name.split(".")
    leaf_i = next((i for i, p in enumerate(parts) if p.startswith(("conv1d", "x_proj", "dt_proj", "A", "D"))), None)
    if leaf_i is None:
        return None
    leaf = parts[leaf_i]
    for suffix in DIRECTIONS[1:]:
        for stem in ("conv1d", "x_proj", "dt_proj", "D"):
            if leaf == stem + suffix:
                return ".".join(parts[:leaf_i] + [stem] + parts[leaf_i + 1 :])
        if leaf == f"A{suffix}_log":
            return ".".join(parts[:leaf_i] + ["A_log"] + parts[leaf_i + 1 :])
    return None


def _resize_pos(pos: Tensor, classifier: STARClassifier, report: LoadReport) -> Tensor | None:
    """A checkpoint position table (1, n[+1], D) resized to the classifier's grid, cls at the middle."""
    gh, gw = classifier.cfg.grid
    target = classifier.pos_embed
    if pos.shape == target.shape:
        return pos
    n = pos.shape[1]
    side = int(round(n**0.5))
    if side * side != n or pos.shape[-1] != target.shape[-1]:
        report.notes.append(f"pos_embed {tuple(pos.shape)} not a square grid: re-made as sin-cos")
        return None
    grid = pos[0].reshape(side, side, -1).permute(2, 0, 1)[None].float()
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
    grid = grid[0].permute(1, 2, 0).reshape(gh * gw, -1)
    c = classifier.cls_pos
    report.notes.append(f"pos_embed interpolated {side}x{side} -> {gh}x{gw}")
    return torch.cat([grid[:c], grid.new_zeros(1, grid.shape[1]), grid[c:]])[None]


def load_pretrained(classifier: STARClassifier, state_dict: Mapping[str, Tensor]) -> LoadReport:
    """Load a pretraining state_dict into the classifier, in place.

    Same-name, same-shape tensors are loaded (patch embedding, blocks, their forward SSM
    weights); each extra direction (_b, _c, _c_b) gets a copy of the forward conv1d / x_proj /
    dt_proj / A_log / D (ARM). Positions: a checkpoint ``pos_embed`` is interpolated to the new
    grid if present; starx pretraining stores none (fixed sin-cos), so the classifier keeps its
    sin-cos table for its own grid. cls token, final norm and head start fresh; decoder,
    separators and other pretraining-only keys are ignored. A ``{"model": state_dict}`` wrapper
    is accepted. Raises ValueError when an encoder tensor has a different shape (another size).
    """
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    state_dict = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state_dict.items()}
    report = LoadReport()
    new_state: dict[str, Tensor] = {}
    mismatched = []
    used = set()
    for name, param in classifier.state_dict().items():
        src = name if name in state_dict else _forward_name(name)
        if name == "pos_embed" and "pos_embed" in state_dict:
            pos = _resize_pos(state_dict["pos_embed"], classifier, report)
            used.add("pos_embed")
            if pos is not None:
                new_state[name] = pos
                report.loaded.append(name)
                continue
        if src is None or src not in state_dict:
            report.initialised.append(name)
            continue
        value = state_dict[src]
        if value.shape != param.shape:
            mismatched.append(f"{name}: checkpoint {tuple(value.shape)} vs model {tuple(param.shape)}")
            continue
        new_state[name] = value
        used.add(src)
        if src == name:
            report.loaded.append(name)
        else:
            report.copied[name] = src
    if mismatched:
        raise ValueError("pretrained weights do not fit this classifier (another size?): " + "; ".join(mismatched[:5]))
    if "pos_embed" in report.initialised:
        report.notes.append("pos_embed: 2-D sin-cos for the %dx%d grid" % classifier.cfg.grid)
    report.ignored = sorted(set(state_dict) - used)
    classifier.load_state_dict(new_state, strict=False)
    log.info("load_pretrained: %s", report.summary())
    return report
