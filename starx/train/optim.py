"""AdamW parameter groups: no weight decay on biases, norms, positions and separators;
layer-wise lr decay for fine-tuning through timm (the classifier provides ``group_matcher``)."""

from __future__ import annotations

import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay


def _no_decay_names(model: torch.nn.Module) -> set[str]:
    """The model's ``no_weight_decay()`` names; timm adds biases and norms (ndim <= 1) itself."""
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def adamw_pretrain(model: torch.nn.Module, *, weight_decay: float, betas, fused: bool = False) -> torch.optim.AdamW:
    groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=_no_decay_names(model))
    return torch.optim.AdamW(groups, lr=0.0, betas=tuple(betas), fused=fused or None)


def adamw_finetune(model: torch.nn.Module, *, weight_decay: float, layer_decay: float, betas,
                   fused: bool = False) -> torch.optim.AdamW:
    groups = param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay,
                                      no_weight_decay_list=_no_decay_names(model))
    return torch.optim.AdamW(groups, lr=0.0, betas=tuple(betas), fused=fused or None)
