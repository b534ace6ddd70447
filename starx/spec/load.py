"""Load a YAML spec, apply dotted ``key=value`` overrides, validate, and derive numbers.

Every failure is a ``SpecError`` whose message is one line naming the file or the
field's dotted path, with a suggestion when a key looks like a typo.
"""

from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from starx.spec.schema import BACKENDS, COMPILE_MODES, DEVICES, PRECISIONS, SEPARATORS, ExperimentSpec


class SpecError(ValueError):
    """A spec (file, override or combination of values) that cannot run. One line."""


def _schema_keys(path: str) -> list[str]:
    """Field names valid at a dotted path of the schema ('' = top level)."""
    node: Any = ExperimentSpec
    for part in [p for p in path.split(".") if p]:
        sub = {f.name: f for f in fields(node)}.get(part)
        if sub is None:
            return []
        default = sub.default_factory() if callable(sub.default_factory) else sub.default  # type: ignore[misc]
        if not is_dataclass(default):
            return []
        node = type(default)
    return [f.name for f in fields(node)]


def _key_error(full_key: str, origin: str) -> SpecError:
    parent, _, key = full_key.rpartition(".")
    close = difflib.get_close_matches(key, _schema_keys(parent), n=1, cutoff=0.6)
    hint = f" (did you mean '{(parent + '.' if parent else '') + close[0]}'?)" if close else ""
    return SpecError(f"{origin}: unknown field '{full_key}'{hint}")


def _merge(base: DictConfig, other: DictConfig, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except ConfigKeyError as e:
        raise _key_error(str(e.full_key), origin) from None
    except ValidationError as e:
        msg = str(e).splitlines()[0]
        raise SpecError(f"{origin}: field '{e.full_key}': {msg}") from None
    except OmegaConfBaseException as e:
        raise SpecError(f"{origin}: {str(e).splitlines()[0]}") from None


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec must be a mapping of fields, got {type(data).__name__}")
    return data


def _parse_overrides(overrides: Iterable[str]) -> DictConfig:
    items = list(overrides)
    for item in items:
        key, eq, _ = item.partition("=")
        if not eq or not key or " " in key:
            raise SpecError(f"override '{item}': expected key=value, e.g. model.seq_multiplier=2")
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as e:
        raise SpecError(f"overrides: {str(e).splitlines()[0]}") from None


def load_spec(path: str | Path | None, overrides: Iterable[str] = ()) -> DictConfig:
    """The validated spec: schema defaults <- YAML file <- overrides. Read-only."""
    cfg: DictConfig = OmegaConf.structured(ExperimentSpec)
    if path is not None:
        path = Path(path)
        cfg = _merge(cfg, OmegaConf.create(_read_yaml(path)), str(path))
    cfg = _merge(cfg, _parse_overrides(overrides), "override")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise SpecError(f"interpolation: {str(e).splitlines()[0]}") from None
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _choice(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SpecError(f"field '{key}': '{value}' is not one of {', '.join(allowed)}{hint}")


def _positive(cfg: DictConfig, *keys: str, allow_zero: bool = False) -> None:
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise SpecError(f"field '{key}': must be {bound}, got {value}")


def validate(cfg: DictConfig) -> None:
    """Checks that span several fields or need more than a type. Raises SpecError."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise SpecError(f"field '{missing[0]}': required, give it in the spec or as {missing[0]}=VALUE")
    _choice(cfg, "model.separator", SEPARATORS)
    _choice(cfg, "model.backend", BACKENDS)
    _choice(cfg, "precision", PRECISIONS)
    _choice(cfg, "compile_mode", COMPILE_MODES)
    _choice(cfg, "device", DEVICES)
    _positive(cfg, "model.img_size", "model.patch_size", "model.cluster_size", "model.in_chans",
              "model.seq_multiplier", "model.depth", "model.embed_dim", "data.batch_size",
              "optim.base_lr", "optim.accum_steps", "finetune.batch_size", "finetune.base_lr",
              "finetune.img_size", "eval.batch_size", "log_every", "finetune.eval_every_epochs")
    _positive(cfg, "data.num_workers", "pretrain.epochs", "pretrain.warmup_epochs", "finetune.epochs",
              "finetune.warmup_epochs", "optim.weight_decay", "finetune.weight_decay",
              "checkpoint.every_steps", "checkpoint.every_minutes", "model.separator_len", allow_zero=True)
    m = cfg.model
    if m.in_chans not in (1, 3):
        raise SpecError(f"field 'model.in_chans': must be 1 or 3, got {m.in_chans}")
    if m.img_size % m.patch_size:
        raise SpecError(f"field 'model.img_size': {m.img_size} is not a multiple of model.patch_size={m.patch_size}")
    grid = m.img_size // m.patch_size
    if grid % m.cluster_size:
        raise SpecError(f"field 'model.cluster_size': the {grid}x{grid} patch grid is not divisible "
                        f"into clusters of {m.cluster_size}x{m.cluster_size}")
    if grid // m.cluster_size < 2 and m.separator == "none" and m.seq_multiplier == 1:
        raise SpecError("field 'model.cluster_size': one cluster per image leaves nothing to predict without a separator")
    if m.separator == "none" and m.separator_len not in (None, 0):
        raise SpecError(f"field 'model.separator_len': separator 'none' takes no length (got {m.separator_len})")
    if m.separator != "none" and m.separator_len == 0:
        raise SpecError(f"field 'model.separator_len': separator '{m.separator}' needs a length >= 1")
    d = cfg.data
    if d.batch_size % m.seq_multiplier:
        raise SpecError(f"field 'data.batch_size': {d.batch_size} images do not split into sequences of "
                        f"model.seq_multiplier={m.seq_multiplier}")
    if (d.batch_size // m.seq_multiplier) % cfg.optim.accum_steps:
        raise SpecError(f"field 'optim.accum_steps': {d.batch_size // m.seq_multiplier} sequences per batch "
                        f"do not split into {cfg.optim.accum_steps} micro-batches")
    for key in ("data.crop_scale", "finetune.crop_scale"):
        scale = list(OmegaConf.select(cfg, key))
        if len(scale) != 2 or not (0 < scale[0] <= scale[1] <= 1):
            raise SpecError(f"field '{key}': expected [low, high] with 0 < low <= high <= 1, got {scale}")
    for key in ("optim.betas", "finetune.betas"):
        betas = list(OmegaConf.select(cfg, key))
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise SpecError(f"field '{key}': expected two values in [0, 1), got {betas}")
    ft = cfg.finetune
    if ft.enabled:
        if ft.init == "pretrain" and not cfg.pretrain.enabled:
            raise SpecError("field 'finetune.init': 'pretrain' needs pretrain.enabled=true "
                            "(or give a checkpoint path, or 'none' to train from scratch)")
        if ft.init not in ("pretrain", "none") and not Path(ft.init).expanduser().is_file():
            raise SpecError(f"field 'finetune.init': checkpoint not found: {ft.init}")
        ft_img = ft.img_size or m.img_size
        if ft_img % m.patch_size:
            raise SpecError(f"field 'finetune.img_size': {ft_img} is not a multiple of model.patch_size={m.patch_size}")
        if not 0 < ft.layer_decay <= 1:
            raise SpecError(f"field 'finetune.layer_decay': must be in (0, 1], got {ft.layer_decay}")
        if ft.ema_decay is not None and not 0 < ft.ema_decay < 1:
            raise SpecError(f"field 'finetune.ema_decay': must be in (0, 1) or null, got {ft.ema_decay}")
    if not (cfg.pretrain.enabled or ft.enabled or cfg.eval.linear_baseline):
        raise SpecError("spec: every stage is off (pretrain, finetune, eval.linear_baseline): nothing to run")


def derive(cfg: DictConfig, *, world_size: int = 1) -> dict:
    """Numbers computed from the spec (never written back into it)."""
    m = cfg.model
    grid = m.img_size // m.patch_size
    clusters = (grid // m.cluster_size) ** 2
    cluster_tokens = m.cluster_size**2
    default_len = 1 if m.separator == "token" else cluster_tokens
    sep_len = 0 if m.separator == "none" else (m.separator_len or default_len)
    k = m.seq_multiplier
    ft_batch = cfg.finetune.batch_size
    return {
        "world_size": world_size,
        "patches_per_image": grid * grid,
        "clusters_per_image": clusters,
        "separator_tokens": sep_len,
        "tokens_per_sequence": k * (sep_len + grid * grid),
        "sequences_per_batch": cfg.data.batch_size // k,
        "pretrain_lr": cfg.optim.base_lr * cfg.data.batch_size / 256,
        "finetune_lr": cfg.finetune.base_lr * ft_batch / 256,
        "finetune_img_size": cfg.finetune.img_size or m.img_size,
        "micro_batch_images": cfg.data.batch_size // cfg.optim.accum_steps,
    }
