"""STAR models: registry, pretraining model, fine-tuning classifier and their parts.

    from starx.models import create_model, create_classifier, load_pretrained
    model = create_model("star_tiny", img_size=32, patch_size=4, cluster_size=2, in_chans=1)
    out = model(images)            # images (sequences * k, C, H, W) -> out.loss, out.pred, out.target
    clf = create_classifier("star_tiny", num_classes=10, img_size=32, patch_size=4, in_chans=1)
    report = load_pretrained(clf, model.state_dict()); print(report.summary())
"""

from starx.models.classifier import LoadReport, STARClassifier, load_pretrained
from starx.models.config import SEPARATORS, STARConfig
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

__all__ = [
    "SEPARATORS",
    "BiMamba4",
    "LoadReport",
    "Mamba",
    "PretrainOutput",
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
    "register_model",
]
