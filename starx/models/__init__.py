"""STAR models: registry, pretraining model, fine-tuning classifier and their parts.

    from starx.models import create_model, create_classifier, load_pretrained
    model = create_model("star_tiny", img_size=32, patch_size=4, cluster_size=2, in_chans=1)
    out = model(images)            # images (sequences * k, C, H, W) -> out.loss, out.pred, out.target
    clf = create_classifier("star_tiny", num_classes=10, img_size=32, patch_size=4, in_chans=1)
    report = load_pretrained(clf, model.state_dict()); print(report.summary())

Lazy: importing the package (or ``starx.models.config``) does not import torch; the modules
behind the names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starx._lazy import lazy_getattr

_LAZY = {
    "SEPARATORS": "starx.models.config",
    "Geometry": "starx.models.config",
    "STARConfig": "starx.models.config",
    "model_config": "starx.models.config",
    "BiMamba4": "starx.models.mamba",
    "Mamba": "starx.models.mamba",
    "LoadReport": "starx.models.classifier",
    "STARClassifier": "starx.models.classifier",
    "load_pretrained": "starx.models.classifier",
    "count_encoder_params": "starx.models.registry",
    "create_classifier": "starx.models.registry",
    "create_model": "starx.models.registry",
    "describe_models": "starx.models.registry",
    "get_config": "starx.models.registry",
    "list_models": "starx.models.registry",
    "register_model": "starx.models.registry",
    "PretrainOutput": "starx.models.star",
    "STARPretrain": "starx.models.star",
}

__all__ = [
    "BiMamba4",
    "Geometry",
    "LoadReport",
    "Mamba",
    "PretrainOutput",
    "SEPARATORS",
    "STARClassifier",
    "STARConfig",
    "STARPretrain",
    "count_encoder_params",
    "create_classifier",
    "create_model",
    "describe_models",
    "get_config",
    "list_models",
    "load_pretrained",
    "model_config",
    "register_model",
]

if TYPE_CHECKING:
    from starx.models.classifier import LoadReport, STARClassifier, load_pretrained
    from starx.models.config import SEPARATORS, Geometry, STARConfig, model_config
    from starx.models.mamba import BiMamba4, Mamba
    from starx.models.registry import (
        count_encoder_params,
        create_classifier,
        create_model,
        describe_models,
        get_config,
        list_models,
        register_model,
    )
    from starx.models.star import PretrainOutput, STARPretrain

__getattr__ = lazy_getattr(__name__, _LAZY)
