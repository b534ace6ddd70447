"""Model registry (timm style): names state architecture and size only; the rest is overrides.
Torch loads only when a model is built (the configs are plain dataclasses).

    create_model("star_base", img_size=192, seq_multiplier=4, separator="cluster")
    create_classifier("star_base", num_classes=1000, img_size=224, drop_path=0.1)
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable

from starx.models.config import STARConfig

_REGISTRY: dict[str, Callable[..., STARConfig]] = {}


def register_model(fn: Callable[..., STARConfig]) -> Callable[..., STARConfig]:
    """Register ``fn(**overrides) -> STARConfig`` under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_config(name: str, **overrides: Any) -> STARConfig:
    """The size's STARConfig with ``overrides`` (any STARConfig field) applied; None values are ignored."""
    if name not in _REGISTRY:
        close = fnmatch.filter(_REGISTRY, f"*{name.split('_')[-1]}*")
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; registered: {', '.join(list_models())}")
    unknown = set(overrides) - set(STARConfig.field_names())
    if unknown:
        raise ValueError(f"unknown model argument(s) {sorted(unknown)}; valid: {', '.join(STARConfig.field_names())}")
    return _REGISTRY[name](**{k: v for k, v in overrides.items() if v is not None})


def create_model(name: str, **overrides: Any):
    """The pretraining model (STARPretrain) of a registered size."""
    from starx.models.star import STARPretrain

    return STARPretrain(get_config(name, **overrides))


def create_classifier(name: str, num_classes: int, pool: str = "mean", **overrides: Any):
    """The fine-tuning classifier (STARClassifier) of a registered size.

    Pretraining-only overrides (separator, seq_multiplier, cluster_size, decoder_*) are accepted
    and have no effect, so the same model section can build both.
    """
    from starx.models.classifier import STARClassifier

    return STARClassifier(get_config(name, **overrides), num_classes, pool=pool)


def count_encoder_params(cfg: STARConfig) -> int:
    """Encoder parameters (patch embedding + blocks) without allocating them (meta device)."""
    import torch

    from starx.models.blocks import PatchEmbed
    from starx.models.mamba import Mamba
    from starx.models.star import build_encoder_layers

    with torch.device("meta"):
        modules = [PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim), build_encoder_layers(cfg, Mamba, 0.0)]
    return sum(p.numel() for m in modules for p in m.parameters())


def describe_models() -> list[dict[str, Any]]:
    """One row per registered size: name, embed_dim, depth, encoder_params_m (at its defaults)."""
    rows = []
    for name in _REGISTRY:  # registration order: smallest first
        cfg = get_config(name)
        rows.append({"name": name, "embed_dim": cfg.embed_dim, "depth": cfg.depth,
                     "encoder_params_m": count_encoder_params(cfg) / 1e6})
    return rows


def _size(embed_dim: int, depth: int) -> Callable[..., STARConfig]:
    def make(**overrides: Any) -> STARConfig:
        return STARConfig(**{"embed_dim": embed_dim, "depth": depth, **overrides})

    return make


def _register_sizes() -> None:
    for name, dim, depth in (("star_tiny", 192, 12), ("star_small", 384, 12), ("star_base", 768, 12),
                             ("star_large", 1024, 24), ("star_huge", 1536, 24)):
        fn = _size(dim, depth)
        fn.__name__ = name
        fn.__doc__ = f"STAR {name.split('_')[1]}: width {dim}, depth {depth} (decoder 512 x 4, ARM)."
        register_model(fn)


_register_sizes()
