"""Load a YAML spec, apply dotted ``key=value`` overrides, validate, and derive numbers.

Every failure is a ``SpecError`` whose message is one line naming the file or the
field's dotted path, with a suggestion when a key or a choice looks like a typo.
:func:`load_typed` is the typed loading itself (schema dataclass <- YAML <- overrides); sweep
files use it too. Everything is checked here, once, before anything is written: the launch
section included. A spec file may extend others (``base: other.yaml``, :func:`spec_layers`);
``$STARX_RESULTS`` is the default ``output_dir``.
"""

from __future__ import annotations

import difflib
import enum
import math
import os
import re
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from starx.choices import not_one_of
from starx.data.errors import DataError
from starx.data.source_ref import is_beton_file, parse_source
from starx.rundir import name_problem
from starx.spec.schema import ExperimentSpec


class SpecError(ValueError):
    """A spec (file, override or combination of values) that cannot run. One line."""


def _schema_keys(schema: type, path: str) -> list[str]:
    """Field names valid at a dotted path of a schema dataclass ('' = top level)."""
    node: Any = schema
    for part in [p for p in path.split(".") if p]:
        sub = {f.name: f for f in fields(node)}.get(part)
        if sub is None:
            return []
        default = sub.default_factory() if callable(sub.default_factory) else sub.default  # type: ignore[misc]
        if not is_dataclass(default):
            return []
        node = type(default)
    return [f.name for f in fields(node)]


def _key_error(schema: type, full_key: str, origin: str, error: type[SpecError]) -> SpecError:
    parent, _, key = full_key.rpartition(".")
    close = difflib.get_close_matches(key, _schema_keys(schema, parent), n=1, cutoff=0.6)
    hint = f" (did you mean '{(parent + '.' if parent else '') + close[0]}'?)" if close else ""
    return error(f"{origin}: unknown field '{full_key}'{hint}")


def merge_typed(schema: type, base: DictConfig, other: Any, origin: str,
                error: type[SpecError] = SpecError) -> DictConfig:
    """``base`` <- ``other`` (a mapping or DictConfig) with every failure as a one-line ``error``:
    unknown keys with a suggestion, wrong types and values outside a choice naming the field."""
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except ConfigKeyError as e:
        raise _key_error(schema, str(e.full_key), origin, error) from None
    except ValidationError as e:
        enum_type = getattr(e.child_node, "enum_type", None)
        if isinstance(enum_type, type) and issubclass(enum_type, enum.Enum):
            raise error(f"{origin}: field '{e.full_key}': {not_one_of(enum_type, e.value)}") from None
        msg = str(e).splitlines()[0]
        raise error(f"{origin}: field '{e.full_key}': {msg}") from None
    except OmegaConfBaseException as e:
        raise error(f"{origin}: {str(e).splitlines()[0]}") from None


MAX_YAML_NODES = 100_000  # values a spec or sweep file may expand to (aliases counted each time they are used)


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (a second ``model:`` block would
    silently replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: construct_mapping below reports it
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first on line {first.start_mark.line + 1})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(data: Any, budget: int) -> int:
    """How many values ``data`` holds with shared (aliased) parts counted each time, stopping past ``budget``."""
    count, stack = 0, [data]
    while stack and count <= budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


def parse_yaml(text: str, origin: str, error: type[SpecError] = SpecError, what: str = "invalid YAML") -> Any:
    """YAML text as Python data (safe, duplicate keys refused, at most MAX_YAML_NODES values once
    aliases are expanded), or a one-line ``error`` naming ``origin`` (and the line)."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None and "\n" in text.strip() else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise error(f"{origin}{where}: {what}: {problem}") from None
    except (RecursionError, ValueError, OverflowError) as e:  # deeply nested text, a number YAML cannot hold
        raise error(f"{origin}: {what}: {type(e).__name__}") from None
    if _expanded_size(data, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise error(f"{origin}: expands to more than {MAX_YAML_NODES:,} values (an alias bomb?)")
    return data


def read_yaml_mapping(path: Path, error: type[SpecError] = SpecError, what: str = "spec") -> dict:
    """A YAML file's top-level mapping (safe_load), or a one-line ``error`` naming the file (and line).
    Refused: a missing or unreadable file, non-UTF-8 text, invalid YAML, a key given twice, an alias
    bomb, an empty file, anything but a mapping."""
    if not path.is_file():
        raise error(f"{what} file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read the {what} file: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    data = parse_yaml(text, str(path), error)
    if data is None:
        raise error(f"{path}: empty {what} file: give at least one field")
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} must be a mapping of fields, got {type(data).__name__}")
    return data


def parse_overrides(overrides: Iterable[str], error: type[SpecError] = SpecError) -> DictConfig:
    """Dotted ``key=value`` strings as a DictConfig (values parsed as YAML scalars)."""
    items = list(overrides)
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key or " " in key:
            raise error(f"override '{item}': expected key=value, e.g. model.seq_multiplier=2")
        parse_yaml(value, f"override '{item}'", error, what="not a valid value")
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as e:
        raise error(f"overrides: {str(e).splitlines()[0]}") from None
    except yaml.YAMLError as e:  # what the check above did not catch
        raise error(f"overrides: not a valid value: {str(e).splitlines()[0]}") from None


def load_typed(schema: type, layers: Iterable[tuple[Any, str]], error: type[SpecError] = SpecError) -> DictConfig:
    """``OmegaConf.structured(schema)`` <- each (mapping, origin) layer in turn, interpolations resolved."""
    cfg: DictConfig = OmegaConf.structured(schema)
    for data, origin in layers:
        cfg = merge_typed(schema, cfg, data, origin, error)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise error(f"interpolation: {str(e).splitlines()[0]}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise error(f"field '{missing[0]}': required, give it in the file or as {missing[0]}=VALUE")
    return cfg


BASE_KEY = "base"
RESULTS_ENV = "STARX_RESULTS"


def spec_layers(path: str | Path, error: type[SpecError] = SpecError,
                _chain: tuple[Path, ...] = ()) -> list[tuple[DictConfig, str]]:
    """A spec file as merge layers: the files it extends first, then its own fields.

    ``base: other.yaml`` (or a list of files, merged in order) names specs this one extends,
    relative to this file's directory; each base may extend others. The ``base`` key itself is
    not part of the spec. A missing base or a cycle is a one-line ``error``.
    """
    path = Path(path)
    here = path.resolve()
    if here in _chain:
        cycle = " -> ".join(p.name for p in (*_chain[_chain.index(here):], here))
        raise error(f"{path}: 'base' cycle: {cycle}")
    data = read_yaml_mapping(path, error)
    bases = data.pop(BASE_KEY, None)
    layers: list[tuple[DictConfig, str]] = []
    if bases is not None:
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not bases or not all(isinstance(b, str) and b for b in bases):
            raise error(f"{path}: field 'base': expected a spec file name or a list of them, got {bases!r}")
        for name in bases:
            base = Path(name).expanduser()
            base = base if base.is_absolute() else path.parent / base
            if not base.is_file():
                raise error(f"{path}: field 'base': base spec not found: {base}")
            layers += spec_layers(base, error, (*_chain, here))
    layers.append((OmegaConf.create(data), str(path)))
    return layers


def load_spec(path: str | Path | None, overrides: Iterable[str] = ()) -> DictConfig:
    """The validated spec: schema defaults <- ``$STARX_RESULTS`` as ``output_dir`` (when set) <-
    the spec's bases <- the YAML file <- overrides. Read-only."""
    layers: list[tuple[Any, str]] = []
    if os.environ.get(RESULTS_ENV):
        layers.append(({"output_dir": os.environ[RESULTS_ENV]}, f"${RESULTS_ENV}"))
    if path is not None:
        layers += spec_layers(path)
    layers.append((parse_overrides(overrides), "override"))
    cfg = load_typed(ExperimentSpec, layers)
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _positive(cfg: DictConfig, *keys: str, allow_zero: bool = False) -> None:
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise SpecError(f"field '{key}': must be {bound}, got {value}")


def _validate_launch(cfg: DictConfig) -> None:
    from starx.launch.config import LaunchConfigError
    from starx.launch.config import validate as validate_launch

    try:
        validate_launch(cfg.launch)
    except LaunchConfigError as e:
        field, _, rest = str(e).partition(" ")
        if field.startswith("launch.") and field.rstrip(":").replace(".", "").replace("_", "").isalnum():
            raise SpecError(f"field '{field.rstrip(':')}': {rest}") from None
        raise SpecError(str(e)) from None


SEED_MAX = 2**32 - 1  # numpy's seeds
# Upper bounds past which a value is a typo, not an experiment (a depth of 10**9 is a MemoryError)
_AT_MOST = {"model.depth": 1024, "model.embed_dim": 65536, "model.decoder_dim": 65536, "model.decoder_depth": 1024,
            "model.decoder_heads": 4096, "model.d_state": 4096, "model.img_size": 65536, "model.patch_size": 65536,
            "model.cluster_size": 65536, "model.seq_multiplier": 65536, "model.separator_len": 65536,
            "finetune.img_size": 65536, "cpu_threads": 4096, "data.num_workers": 4096}
_RANDAUG = re.compile(r"rand(-(mstd|mmax|m|n|p|inc)(\d+(\.\d*)?|\.\d+))*")


def _leaves(node: Any, prefix: str = ""):
    """(dotted key, value) of every leaf of a resolved spec."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
    if items is None:
        yield prefix, node
        return
    for key, value in items:
        yield from _leaves(value, f"{prefix}.{key}" if prefix and isinstance(key, str) else
                           f"{prefix}[{key}]" if prefix else str(key))


def _in_range(cfg: DictConfig, key: str, low: float, high: float, *, low_open: bool = False,
              high_open: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    if (value < low or (low_open and value == low)) or (value > high or (high_open and value == high)):
        raise SpecError(f"field '{key}': must be in {'(' if low_open else '['}{low:g}, {high:g}"
                        f"{')' if high_open else ']'}, got {value}")


def _validate_ranges(cfg: DictConfig) -> None:
    """Every field's own range, before anything is built: finite numbers, names, seeds, bounds."""
    problem = name_problem(cfg.experiment)
    if problem:
        raise SpecError(f"field 'experiment': {cfg.experiment!r} {problem}")
    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=True)):
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"field '{key}': must be a finite number, got {value}")
    if not 0 <= cfg.seed <= SEED_MAX:
        raise SpecError(f"field 'seed': must be in 0..{SEED_MAX} (2**32-1), got {cfg.seed}")
    _positive(cfg, "cpu_threads", "model.d_state", "model.decoder_dim", "model.decoder_depth", "model.decoder_heads",
              "eval.batch_size")
    _positive(cfg, "optim.min_lr", "finetune.min_lr", "finetune.mixup", "finetune.cutmix", allow_zero=True)
    for key, most in _AT_MOST.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value > most:
            raise SpecError(f"field '{key}': at most {most}, got {value}")
    for key in ("optim.clip_grad", "finetune.clip_grad"):
        value = OmegaConf.select(cfg, key)
        if value is not None and value <= 0:
            raise SpecError(f"field '{key}': must be > 0 or null (no clipping), got {value}")
    _in_range(cfg, "finetune.label_smoothing", 0, 1, high_open=True)
    _in_range(cfg, "finetune.drop_path", 0, 1, high_open=True)
    _in_range(cfg, "finetune.reprob", 0, 1)
    ra = cfg.finetune.randaug
    if ra is not None:
        parts = dict(re.findall(r"-(mstd|mmax|m|n|p|inc)([0-9.]+)", ra)) if _RANDAUG.fullmatch(ra) else None
        if parts is None or float(parts.get("inc", 0)) or not 0 <= float(parts.get("p", 0.5)) <= 1 \
                or float(parts.get("n", 2)) != int(float(parts.get("n", 2))):
            raise SpecError(f"field 'finetune.randaug': {ra!r} is not a RandAugment string like 'rand-m9-mstd0.5' "
                            f"(sections m, n (integer), mstd, mmax, p (0..1); 'inc1' is not implemented), or null")


def _validate_model(cfg: DictConfig) -> None:
    """The model configs the registry builds from the spec (pretraining and fine-tuning), checked here."""
    from starx.models.config import model_config

    ft = cfg.finetune
    try:
        if cfg.pretrain.enabled:
            model_config(cfg.model).check_pretrain()
        else:
            model_config(cfg.model)
        if ft.enabled:
            model_config(cfg.model, img_size=ft.img_size, drop_path=ft.drop_path)
    except (ValueError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SpecError(f"section 'model': {msg.removeprefix('invalid model config: ')}") from None


_BEST_METRICS = ("top1", "top5", "top1_ema", "top5_ema", "")  # what fine-tuning's evals report ("" = none)


def validate(cfg: DictConfig) -> None:
    """Checks that span several fields or need more than a type. Raises SpecError.

    (Choices are Enum-typed in the schema, so OmegaConf has checked them at load.)
    """
    _validate_ranges(cfg)
    _positive(cfg, "model.img_size", "model.patch_size", "model.cluster_size", "model.in_chans",
              "model.seq_multiplier", "model.depth", "model.embed_dim", "data.batch_size",
              "optim.base_lr", "optim.accum_steps", "finetune.batch_size", "finetune.base_lr",
              "finetune.img_size", "eval.batch_size", "log_every", "finetune.eval_every_epochs")
    _positive(cfg, "data.num_workers", "pretrain.epochs", "pretrain.warmup_epochs", "finetune.epochs",
              "finetune.warmup_epochs", "optim.weight_decay", "finetune.weight_decay",
              "checkpoint.every_steps", "checkpoint.every_minutes", "model.separator_len",
              "checkpoint.keep_every_epochs", "checkpoint.keep_last", allow_zero=True)
    if cfg.checkpoint.best_metric not in _BEST_METRICS:
        raise SpecError(f"field 'checkpoint.best_metric': {cfg.checkpoint.best_metric!r} is not a fine-tuning eval "
                        f"metric; one of {', '.join(repr(m) for m in _BEST_METRICS)}")
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
    if m.state_reset and m.backend == "cuda":
        raise SpecError("field 'model.state_reset': mamba-ssm's scan (backend cuda) cannot restart its state; "
                        "use backend triton, torch or auto")
    if m.separator != "none" and m.separator_len == 0:
        raise SpecError(f"field 'model.separator_len': separator '{m.separator}' needs a length >= 1")
    d = cfg.data
    if d.batch_size % m.seq_multiplier:
        raise SpecError(f"field 'data.batch_size': {d.batch_size} images do not split into sequences of "
                        f"model.seq_multiplier={m.seq_multiplier}")
    if (d.batch_size // m.seq_multiplier) % cfg.optim.accum_steps:
        raise SpecError(f"field 'optim.accum_steps': {d.batch_size // m.seq_multiplier} sequences per batch "
                        f"do not split into {cfg.optim.accum_steps} micro-batches")
    for key in ("data.dataset", "data.eval_dataset"):  # the source's form; whether it exists is the run's check
        source = OmegaConf.select(cfg, key)
        if source is not None and not is_beton_file(source):
            try:
                parse_source(source)
            except DataError as e:
                raise SpecError(f"field '{key}': {e}") from None
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
    if not (cfg.pretrain.enabled or ft.enabled or cfg.eval.pixel_baseline):
        raise SpecError("spec: every stage is off (pretrain, finetune, eval.pixel_baseline): nothing to run")
    _validate_readouts(cfg)
    _validate_tracking(cfg)
    _validate_model(cfg)


def _validate_tracking(cfg: DictConfig) -> None:
    """The optional packages the tracking section asks for."""
    import importlib.util

    for key, module in (("tracking.tensorboard", "tensorboard"), ("tracking.wandb.enabled", "wandb")):
        if OmegaConf.select(cfg, key) and importlib.util.find_spec(module) is None:
            raise SpecError(f"field '{key.removesuffix('.enabled')}': needs the '{module}' extra, which is not "
                            f"installed here: pip install 'starx[{module}]'")


def _validate_readouts(cfg: DictConfig) -> None:
    """eval.knn / eval.linear_probe / eval.every_epochs / eval.feature_blocks."""
    e = cfg.eval
    _positive(cfg, "eval.knn.k", "eval.knn.temperature", "eval.linear_probe.epochs", "eval.linear_probe.batch_size",
              "eval.linear_probe.base_lr")
    _positive(cfg, "eval.every_epochs", "eval.linear_probe.weight_decay", allow_zero=True)
    if (e.knn.enabled or e.linear_probe.enabled) and not cfg.pretrain.enabled:
        raise SpecError("field 'eval.knn' / 'eval.linear_probe': the read-outs score pretraining features and "
                        "need pretrain.enabled=true")
    blocks = list(e.feature_blocks)
    depth = cfg.model.depth
    if not blocks or 0 in blocks or (depth and any(not -depth <= b <= depth for b in blocks)):
        raise SpecError(f"field 'eval.feature_blocks': {blocks} must name encoder blocks 1..{depth or 'depth'} "
                        f"(or -1 for the last, -2 the one before, ...)")
    _validate_launch(cfg)


def derive(cfg: DictConfig, *, world_size: int = 1) -> dict:
    """Numbers computed from the spec (never written back into it): what the trainer uses.

    The token counts come from the model config's Geometry (``sequence_tokens``: the full packed
    sequence; ``encoder_tokens``: what the encoder reads, the sequence minus its last cluster).
    The trainer calls this again with its real ``world_size`` and writes derived.json from it.
    """
    from starx.models.config import model_config

    geo = model_config(cfg.model).geometry
    k = geo.k
    ft_batch = cfg.finetune.batch_size
    micro = cfg.data.batch_size // cfg.optim.accum_steps
    return {
        "world_size": world_size,
        **geo.as_dict(),
        "sequences_per_batch": cfg.data.batch_size // k,
        "pretrain_lr": cfg.optim.base_lr * cfg.data.batch_size / 256,
        "finetune_lr": cfg.finetune.base_lr * ft_batch / 256,
        "finetune_img_size": cfg.finetune.img_size or cfg.model.img_size,
        "micro_batch_images": micro,
        "micro_batch_images_per_rank": micro // world_size,
        "finetune_batch_images_per_rank": ft_batch // world_size,
    }
