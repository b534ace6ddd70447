"""The pretraining and fine-tuning stages: build model, data, optimiser and step for the loop."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from starx.eval import readout
from starx.eval.accuracy import evaluate_classifier
from starx.models.config import SPEC_ONLY_KEYS, model_config
from starx.train import checkpoint
from starx.train.dist import DistInfo
from starx.train.loop import StageLoop, StagePlan
from starx.train.metrics import MetricsLog
from starx.train.optim import adamw_finetune, adamw_pretrain
from starx.train.progress import StageProgress

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Everything a stage needs besides the spec: where to write and what runs here."""

    cfg: DictConfig
    run_dir: Path
    dist: DistInfo
    metrics: MetricsLog
    train_data: Path
    eval_data: Path
    num_train: int
    num_classes: int
    autocast_dtype: Optional[torch.dtype]
    derived: dict[str, Any]  # starx.spec.derive(cfg, world_size=...): what derived.json says

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


def model_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The spec's model section as create_model arguments: every key but ``name``, nulls (the
    size's default) left out. No list of names: ``starx.models.config.model_config`` owns the
    translation, and a spec field that is not a model field fails there."""
    return {k: v for k, v in cfg.model.items() if k not in SPEC_ONLY_KEYS and v is not None}


def _epoch_loader(ctx: RunContext, *, stage: str, per_rank_batch: int, img_size: int, k: int, **augment):
    """A loader built once; ``fn(epoch, first_batch)`` iterates that epoch from a given batch."""
    from starx.data import make_loader

    cfg = ctx.cfg
    loader = make_loader(ctx.train_data, stage=stage, batch_size=per_rank_batch, img_size=img_size,
                         in_chans=cfg.model.in_chans, seq_multiplier=k, num_workers=cfg.data.num_workers,
                         seed=cfg.seed, epoch=0, device=ctx.dist.device, rank=ctx.dist.rank,
                         world_size=ctx.dist.world_size, **augment)

    def batches(epoch: int, first_batch: int):
        loader.set_epoch(epoch, start_batch=first_batch)
        return loader

    return loader, batches


def _steps(epochs: float, steps_per_epoch: int) -> int:
    return max(1, math.ceil(epochs * steps_per_epoch))


def _stage_plan(ctx: RunContext, name: str, *, global_batch: int, epochs: float, warmup_epochs: float, lr: float,
                min_lr: float, clip: Optional[float], accum: int, tokens_per_image: int,
                eval_every_epochs: float = 0.0) -> StagePlan:
    cfg = ctx.cfg
    steps_per_epoch = ctx.num_train // global_batch
    if steps_per_epoch < 1:
        raise ValueError(f"{name}: the batch of {global_batch} images is larger than the {ctx.num_train} "
                         f"training images of {ctx.train_data}")
    return StagePlan(
        name=name, total_steps=_steps(epochs, steps_per_epoch), steps_per_epoch=steps_per_epoch,
        warmup_steps=round(warmup_epochs * steps_per_epoch), peak_lr=lr, min_lr=min_lr, clip_grad=clip,
        accum_steps=accum, images_per_step=global_batch, tokens_per_image=tokens_per_image,
        log_every=cfg.log_every, checkpoint_every_steps=cfg.checkpoint.every_steps,
        checkpoint_every_minutes=cfg.checkpoint.every_minutes,
        eval_every_steps=round(eval_every_epochs * steps_per_epoch) if eval_every_epochs else 0,
        keep_every_steps=max(1, round(cfg.checkpoint.keep_every_epochs * steps_per_epoch))
        if cfg.checkpoint.keep_every_epochs > 0 else 0,
        keep_last=cfg.checkpoint.keep_last, best_metric=cfg.checkpoint.best_metric if name == "finetune" else "",
        seed=cfg.seed,
        cpu_threads=cfg.cpu_threads or len(os.sched_getaffinity(0)))


def wrap_ddp(model: torch.nn.Module, dist: DistInfo) -> torch.nn.Module:
    if dist.world_size == 1:
        return model
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _maybe_compile(model: torch.nn.Module, cfg: DictConfig) -> torch.nn.Module:
    if not cfg.compile:
        return model
    # CUDA graphs (reduce-overhead, max-autotune) under DDP have known failures upstream
    # (pytorch/pytorch#128218, #140395); for starx's models they were measured to give default mode's
    # losses on 2 GPUs (issue 16: bench/multi_gpu.sh, bench/results/multi_gpu_h200x2.md), so no warning.
    return torch.compile(model, mode=None if cfg.compile_mode == "default" else cfg.compile_mode)


def run_pretrain(ctx: RunContext, progress: StageProgress) -> dict[str, Any]:
    from starx.models import STARPretrain

    cfg = ctx.cfg
    k = cfg.model.seq_multiplier
    model_cfg = model_config(cfg.model)
    geo = model_cfg.geometry
    model = STARPretrain(model_cfg).to(ctx.dist.device)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("pretrain: %s, %.2fM parameters, %d encoder tokens per sequence (%d in the packed sequence)",
             cfg.model.name, n_params / 1e6, geo.encoder_tokens, geo.sequence_tokens)
    global_batch = cfg.data.batch_size
    per_rank = ctx.derived["micro_batch_images_per_rank"]
    if per_rank % k or per_rank == 0:
        raise ValueError(f"data.batch_size={global_batch} split over {ctx.dist.world_size} processes and "
                         f"{cfg.optim.accum_steps} micro-batches gives {per_rank} images, not a multiple of k={k}")
    spec = _stage_plan(ctx, "pretrain", global_batch=global_batch, epochs=cfg.pretrain.epochs,
                       warmup_epochs=cfg.pretrain.warmup_epochs, lr=ctx.derived["pretrain_lr"],
                       min_lr=cfg.optim.min_lr, clip=cfg.optim.clip_grad, accum=cfg.optim.accum_steps,
                       tokens_per_image=geo.encoder_tokens_per_image, eval_every_epochs=cfg.eval.every_epochs)
    readouts = None
    if readout.enabled(cfg):  # kNN / linear probe of frozen features, after pretraining and every eval.every_epochs
        readouts = readout.Readouts(ctx, spec.cpu_threads)
    optimizer = adamw_pretrain(model, weight_decay=cfg.optim.weight_decay, betas=cfg.optim.betas,
                               fused=ctx.dist.device.type == "cuda")
    _, batches = _epoch_loader(ctx, stage="pretrain", per_rank_batch=per_rank, img_size=cfg.model.img_size, k=k,
                               scale=tuple(cfg.data.crop_scale), hflip=cfg.data.hflip)
    if cfg.pretrain.init != "none" and not (ctx.ckpt_dir / "pretrain_last.pt").exists():  # a resume wins
        path = Path(cfg.pretrain.init).expanduser()
        weights, notes = checkpoint.load_weights(path)
        report = checkpoint.load_into_pretrain(model, weights, path)
        log.info("pretrain: weights from %s: %s", path, "; ".join([report, *notes]))
    train_model = wrap_ddp(_maybe_compile(model, cfg), ctx.dist)

    def step(batch):
        images, _ = batch
        return train_model(images).loss, images.shape[0]

    loop = StageLoop(spec, model=train_model, optimizer=optimizer, loader_fn=batches, step_fn=step, dist=ctx.dist,
                     ckpt_dir=ctx.ckpt_dir, metrics=ctx.metrics, autocast_dtype=ctx.autocast_dtype,
                     eval_fn=(lambda: readouts(model)) if readouts is not None else None)
    state = loop.run(progress)
    tail = state.losses[-max(1, len(state.losses) // 10):]
    out = {"pretrain_loss": state.last_loss, "pretrain_loss_tail": sum(tail) / len(tail) if tail else state.last_loss,
           "pretrain_steps": spec.total_steps, "pretrain_images_seen": spec.total_steps * global_batch,
           "params_m": round(n_params / 1e6, 3)}
    if readouts is not None:
        out.update({key: v for key, v in state.evals[-1].items() if key.startswith(("knn_", "probe_", "readout_"))})
    return out


def _init_weights(ctx: RunContext) -> Optional[tuple[dict, str, list[str]]]:
    init = ctx.cfg.finetune.init
    if init == "none":
        return None
    if init == "pretrain":
        path = ctx.ckpt_dir / "pretrain_last.pt"
        return checkpoint.model_state(checkpoint.load(path), path), str(path), []
    path = Path(init).expanduser()
    weights, notes = checkpoint.load_weights(path)  # a file from elsewhere: starx, ARM or safetensors
    return weights, str(path), notes


def _load_finetune_init(model: torch.nn.Module, init: tuple[dict, str, list[str]]) -> str:
    from starx.models import load_pretrained

    weights, path, notes = init
    try:
        report = load_pretrained(model, weights)
    except ValueError as e:  # another model size
        raise checkpoint.CheckpointInputError(f"checkpoint {path}: {e}") from None
    if report.missing_encoder_keys:
        raise checkpoint.CheckpointInputError(
            f"checkpoint {path} lacks encoder weights of this classifier: {', '.join(report.missing_encoder_keys[:3])}")
    return "; ".join([report.summary(), *notes])


def preflight(ctx: RunContext) -> None:
    """Read and fit the init files this run will use (pretrain.init, finetune.init) before anything
    trains: a bad file is a one-line CheckpointInputError now, not after hours of pretraining. The
    models are built on the meta device (no memory, no compute)."""
    import warnings

    from starx.models import STARClassifier, STARPretrain

    cfg = ctx.cfg
    rd_done = lambda stage: (ctx.ckpt_dir / f"{stage}.done.json").exists()  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copying into meta tensors is a no-op, and torch says so
        if cfg.pretrain.enabled and cfg.pretrain.init != "none" and not rd_done("pretrain") \
                and not (ctx.ckpt_dir / "pretrain_last.pt").exists():
            path = Path(cfg.pretrain.init).expanduser()
            with torch.device("meta"):
                model = STARPretrain(model_config(cfg.model))
            checkpoint.load_into_pretrain(model, checkpoint.load_weights(path)[0], path)
        ft = cfg.finetune
        if ft.enabled and ft.init not in ("none", "pretrain") and not rd_done("finetune") \
                and not (ctx.ckpt_dir / "finetune_last.pt").exists():
            img_size = ft.img_size or cfg.model.img_size
            with torch.device("meta"):
                model = STARClassifier(model_config(cfg.model, img_size=img_size, drop_path=ft.drop_path),
                                       ctx.num_classes)
            _load_finetune_init(model, _init_weights(ctx))


def run_finetune(ctx: RunContext, progress: StageProgress) -> dict[str, Any]:
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.utils import ModelEmaV3

    from starx.data import make_loader
    from starx.models import STARClassifier

    cfg, ft = ctx.cfg, ctx.cfg.finetune
    img_size = ft.img_size or cfg.model.img_size
    model = STARClassifier(model_config(cfg.model, img_size=img_size, drop_path=ft.drop_path), ctx.num_classes)
    init = _init_weights(ctx)
    if init is not None:
        log.info("finetune: weights from %s: %s", init[1], _load_finetune_init(model, init))
    model = model.to(ctx.dist.device)
    per_rank = ctx.derived["finetune_batch_images_per_rank"]
    spec = _stage_plan(ctx, "finetune", global_batch=ft.batch_size, epochs=ft.epochs, warmup_epochs=ft.warmup_epochs,
                       lr=ctx.derived["finetune_lr"], min_lr=ft.min_lr, clip=ft.clip_grad, accum=1,
                       tokens_per_image=(img_size // cfg.model.patch_size) ** 2 + 1,
                       eval_every_epochs=ft.eval_every_epochs)
    optimizer = adamw_finetune(model, weight_decay=ft.weight_decay, layer_decay=ft.layer_decay, betas=ft.betas,
                               fused=ctx.dist.device.type == "cuda")
    ema = ModelEmaV3(model, decay=ft.ema_decay) if ft.ema_decay else None
    _, batches = _epoch_loader(ctx, stage="finetune", per_rank_batch=per_rank, img_size=img_size, k=1,
                               scale=tuple(ft.crop_scale), hflip=cfg.data.hflip, randaug=ft.randaug, reprob=ft.reprob)
    eval_loader = make_loader(ctx.eval_data, stage="eval", batch_size=cfg.eval.batch_size, img_size=img_size,
                              in_chans=cfg.model.in_chans, num_workers=cfg.data.num_workers, seed=cfg.seed,
                              device=ctx.dist.device, rank=ctx.dist.rank, world_size=ctx.dist.world_size)
    mixup = None
    if ft.mixup > 0 or ft.cutmix > 0:
        mixup = Mixup(mixup_alpha=ft.mixup, cutmix_alpha=ft.cutmix, label_smoothing=ft.label_smoothing,
                      num_classes=ctx.num_classes)
        criterion: torch.nn.Module = SoftTargetCrossEntropy()
    elif ft.label_smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(ft.label_smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()
    train_model = wrap_ddp(_maybe_compile(model, cfg), ctx.dist)

    def step(batch):
        images, labels = batch
        if mixup is not None:
            images, labels = mixup(images, labels)
        return criterion(train_model(images), labels), images.shape[0]

    def evaluate() -> dict[str, float]:
        args = (eval_loader, ctx.dist.device, ctx.autocast_dtype, spec.cpu_threads)
        result = evaluate_classifier(model, *args)  # top1, top5: each rank scores its share, counts summed
        if ema is not None:
            result.update(evaluate_classifier(ema.module, *args, suffix="_ema"))
        return result

    loop = StageLoop(spec, model=train_model, optimizer=optimizer, loader_fn=batches, step_fn=step, dist=ctx.dist,
                     ckpt_dir=ctx.ckpt_dir, metrics=ctx.metrics, autocast_dtype=ctx.autocast_dtype, ema=ema,
                     eval_fn=evaluate)
    state = loop.run(progress)
    final = state.evals[-1]
    out = {"top1": final["top1"], "best_top1": max(e["top1"] for e in state.evals),
           "finetune_loss": state.last_loss, "finetune_steps": spec.total_steps}
    out.update({key: final[key] for key in ("top5", "top1_ema", "top5_ema") if key in final})
    return out
