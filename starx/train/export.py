"""``starx export``: a run's weights as ``model.safetensors`` plus a ``config.json`` that
``starx.models.create_model`` / ``create_classifier`` read back.

    out/model.safetensors   the encoder and decoder (stage pretrain) or the classifier (finetune)
    out/config.json         {"factory": "create_model" | "create_classifier", "kwargs": {...}, ...}

``getattr(starx.models, config["factory"])(**config["kwargs"])`` builds the model the weights fit;
:func:`load_exported` does that and loads them. The file is safetensors: no pickle, readable
from plain PyTorch (``safetensors.torch.load_file``) and other frameworks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch

from starx.rundir import RunDir
from starx.train import checkpoint
from starx.train.errors import CheckpointInputError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMATS = ("safetensors",)
STAGES = ("pretrain", "finetune")


def _model_kwargs(cfg: Any) -> dict[str, Any]:
    from starx.models.config import SPEC_ONLY_KEYS

    return {k: v for k, v in cfg.model.items() if k not in SPEC_ONLY_KEYS and v is not None}


def default_stage(run_dir: Path) -> str:
    """finetune when the run has a fine-tuning checkpoint, else pretrain."""
    return "finetune" if RunDir(run_dir).checkpoint("finetune").exists() else "pretrain"


def export_run(run_dir: str | Path, stage: Optional[str] = None, fmt: str = "safetensors",
               out: Optional[str | Path] = None, ema: bool = False) -> Path:
    """Write ``<out>/model.safetensors`` and ``<out>/config.json`` (out: ``<run_dir>/export/<stage>``);
    returns ``out``. Bad input (not a run directory, no checkpoint of that stage, a torn file, an
    unknown format) raises CheckpointInputError naming what is wrong."""
    from omegaconf import OmegaConf

    from starx import provenance
    from starx.spec import load_spec

    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    if not rd.is_run():
        raise CheckpointInputError(f"{run_dir} is not a run directory (no {rd.spec.name})")
    if fmt not in FORMATS:
        raise CheckpointInputError(f"--format {fmt}: not one of {', '.join(FORMATS)}")
    stage = stage or default_stage(run_dir)
    if stage not in STAGES:
        raise CheckpointInputError(f"--stage {stage}: not one of {', '.join(STAGES)}")
    path = rd.checkpoint(stage)
    if not path.exists():
        raise CheckpointInputError(f"{run_dir} has no {stage} checkpoint ({path.name}): nothing to export")
    state = checkpoint.load(path, error=CheckpointInputError)
    if ema:
        if not isinstance(state.get("ema"), dict):
            raise CheckpointInputError(f"checkpoint {path} has no EMA weights (finetune.ema_decay was off)")
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items()}
    else:
        weights = checkpoint.model_state(state, path, error=CheckpointInputError)
    cfg = load_spec(rd.spec)
    kwargs: dict[str, Any] = {"name": cfg.model.name, **_model_kwargs(cfg)}
    if stage == "finetune":
        head = weights.get("head.weight")
        if head is None:
            raise CheckpointInputError(f"checkpoint {path} has no classifier head (head.weight)")
        kwargs.update(num_classes=int(head.shape[0]), img_size=cfg.finetune.img_size or cfg.model.img_size)
    factory = "create_classifier" if stage == "finetune" else "create_model"
    config = {
        "format": "starx-export-1",
        "factory": factory,
        "kwargs": kwargs,
        "stage": stage,
        "weights": "ema" if ema else "model",
        "step": int(state.get("step", -1)),
        "experiment": cfg.experiment,
        "run_id": run_dir.name,
        "code": provenance.code_id(run_dir),
        "spec": OmegaConf.to_container(cfg, resolve=True),
    }
    out = Path(out) if out is not None else rd.export / stage
    out.mkdir(parents=True, exist_ok=True)
    _save_safetensors(weights, out / WEIGHTS, {"stage": stage, "factory": factory, "run_id": run_dir.name})
    tmp = out / f".{CONFIG}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(config, indent=1, default=str) + "\n")
    os.replace(tmp, out / CONFIG)
    return out


def _save_safetensors(weights: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_exported(directory: str | Path, **overrides: Any) -> torch.nn.Module:
    """The model of an export directory with its weights loaded (``overrides``: e.g. backend="torch")."""
    import starx.models

    directory = Path(directory)
    config_path = directory / CONFIG
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointInputError(f"cannot read {config_path}: {e}") from None
    kwargs = {**config["kwargs"], **overrides}
    model = getattr(starx.models, config["factory"])(**kwargs)
    weights = checkpoint.load(directory / WEIGHTS, error=CheckpointInputError)
    model.load_state_dict(weights)
    return model
