"""The typed schema of an experiment spec.

Every value a run reads is declared here once, with its type and default. YAML specs
and ``key=value`` overrides are merged onto ``OmegaConf.structured(ExperimentSpec)``,
so an unknown key or a wrong type fails with the field's dotted path (see load.py).
specs/REFERENCE.md (`starx reference`) is generated from these classes and their field comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Optional

from starx.choices import Backend, SeparatorKind, choice
from starx.launch.config import LaunchConfig


class Precision(StrEnum):
    auto = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    bf16 = "bf16"
    fp32 = "fp32"


class Device(StrEnum):
    auto = "auto"  # CUDA when available
    cpu = "cpu"
    cuda = "cuda"


CompileMode = choice("CompileMode", ("default", "reduce-overhead", "max-autotune"), "torch.compile's mode.")


@dataclass
class ModelSpec:
    """Backbone and STAR sequence layout. Every field but ``name`` is a STARConfig field, passed on as
    it is by ``starx.models.config.model_config`` (no list of names to keep in step)."""

    name: str = "star_tiny"  # registered size: star_tiny | star_small | star_base | star_large | ...
    img_size: int = 192  # pretraining input side (px)
    patch_size: int = 16  # patch side (px)
    cluster_size: int = 4  # patches per cluster side (ARM: 4 -> 16 patches a cluster)
    in_chans: int = 3  # 1 for grey images
    separator: SeparatorKind = SeparatorKind.cluster  # none | token | cluster | fixed | distinct
    separator_len: Optional[int] = None  # tokens per separator; null = 1 for token, one cluster (cluster_size**2) otherwise
    seq_multiplier: int = 4  # k: images per sequence (1 with separator none = ARM)
    depth: Optional[int] = None  # encoder blocks; null = the size's default
    embed_dim: Optional[int] = None  # encoder width; null = the size's default
    d_state: int = 16  # Mamba state size per channel (ARM: 16)
    decoder_dim: int = 512  # width of the cross-attention decoder (pretraining only)
    decoder_depth: int = 4  # decoder blocks, each reading one encoder depth
    decoder_heads: int = 8  # attention heads of the decoder
    decoder_cross_image: bool = True  # decoder may read features of earlier images (false: own image + separator)
    # the encoder's scan state (and conv) restarts at each image's separator: packed images do
    # not see each other, the control for cross-image context (backend triton, torch or auto)
    state_reset: bool = False
    norm_pix_loss: bool = True  # targets normalised per patch (ARM)
    # auto (on GPU triton, else cuda; torch on CPU) | triton (starx's Triton scan and conv, and
    # its span attention in the decoder from 256 encoder tokens) | cuda (mamba-ssm kernels) |
    # torch (pure-PyTorch twin)
    backend: Backend = Backend.auto


@dataclass
class DataSpec:
    """Where images come from and how they are loaded (FFCV)."""

    dataset: str = "embedded"  # embedded | idx:PATH | npz:PATH | imagefolder:PATH | path/to/file.beton
    eval_dataset: Optional[str] = None  # null = same source as dataset, split eval_split
    train_split: str = "train"  # split of the source used for training
    eval_split: str = "test"  # split the fine-tuned model (and the linear probe) is tested on
    cache_dir: str = "~/.cache/starx/datasets"  # where .beton files built from sources are kept
    batch_size: int = 256  # pretraining images per optimizer step (global); a multiple of k
    num_workers: int = 2  # FFCV decode threads per process
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])  # RandomResizedCrop scale
    hflip: bool = True  # random horizontal flips (pretraining and fine-tuning)


@dataclass
class OptimSpec:
    """Pretraining optimiser: AdamW, lr = base_lr x batch / 256, warm-up then cosine."""

    base_lr: float = 1.5e-4  # lr = base_lr x data.batch_size / 256
    min_lr: float = 0.0  # floor of the cosine schedule
    weight_decay: float = 0.05  # not on biases, norms, positions, separators, A_log and D
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW betas
    clip_grad: Optional[float] = 3.0  # max grad norm; null = no clipping
    accum_steps: int = 1  # micro-batches per optimizer step (batch_size is split across them)


@dataclass
class PretrainStage:
    """Autoregressive (next-cluster) pretraining."""

    enabled: bool = True  # false: skip pretraining (fine-tune from finetune.init)
    # none | path/to/weights: start from these weights (a starx checkpoint or export, or an ARM
    # checkpoint, its key names mapped); the optimiser and schedule start fresh
    init: str = "none"
    epochs: float = 300  # may be fractional for smoke runs
    warmup_epochs: float = 40  # linear warm-up before the cosine decay


@dataclass
class FinetuneStage:
    """Supervised fine-tuning of the bidirectional classifier (ARM recipe)."""

    enabled: bool = True  # false: stop after pretraining
    # pretrain (this run's weights) | none (from scratch) | path/to/checkpoint.pt (starx, ARM's
    # save_model, a bare state_dict) or .safetensors (starx export)
    init: str = "pretrain"
    img_size: Optional[int] = None  # null = model.img_size (ARM: 224)
    epochs: float = 100  # fine-tuning epochs over the training split
    warmup_epochs: float = 5  # linear warm-up before the cosine decay
    batch_size: int = 1024  # images per optimizer step (global)
    base_lr: float = 5e-4  # lr = base_lr x batch / 256
    min_lr: float = 1e-6  # floor of the cosine schedule
    weight_decay: float = 0.05  # not on biases, norms, positions, cls token, A_log and D
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    layer_decay: float = 0.65  # lr x layer_decay^(depth - layer): smaller steps for early blocks
    drop_path: float = 0.1  # stochastic depth of the last block (linear from 0)
    clip_grad: Optional[float] = None  # max grad norm; null = no clipping
    ema_decay: Optional[float] = 0.99992  # null = no EMA
    mixup: float = 0.8  # mixup alpha (timm); 0 = off
    cutmix: float = 1.0  # cutmix alpha (timm); 0 = off
    label_smoothing: float = 0.1  # 0 = plain cross-entropy
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop scale (timm's)
    randaug: Optional[str] = "rand-m9-mstd0.5"  # timm RandAugment string; null = off
    reprob: float = 0.25  # random erasing probability
    eval_every_epochs: float = 1  # test top-1 this often during fine-tuning (and always at the end)


@dataclass
class KnnReadout:
    """Weighted kNN on frozen pretraining features (DINO): train split = memory bank, held-out split = queries."""

    enabled: bool = False  # run it after pretraining (and every eval.every_epochs during it)
    k: int = 20  # neighbours that vote (DINO: 20)
    temperature: float = 0.07  # a neighbour's vote is exp(cosine similarity / temperature) (DINO: 0.07)


@dataclass
class ProbeReadout:
    """Linear probe on frozen pretraining features (MAE's head: BatchNorm without affine, then linear), cached."""

    enabled: bool = False  # run it after pretraining (and every eval.every_epochs during it)
    epochs: int = 100  # passes over the cached training features (seconds: no image is decoded again)
    batch_size: int = 1024  # features per SGD step (momentum 0.9, warm-up 1/10 then cosine)
    base_lr: float = 0.1  # lr = base_lr x batch_size / 256 (MAE: 0.1)
    weight_decay: float = 0.0  # on the linear layer (MAE: 0)


@dataclass
class EvalStage:
    """Held-out evaluation, read-outs of frozen features and baselines."""

    pixel_baseline: bool = False  # also fit a linear classifier on raw pixels (same split): a floor, not a probe
    batch_size: int = 512  # images per evaluation batch (each rank of a data-parallel run scores its share)
    knn: KnnReadout = field(default_factory=KnnReadout)
    linear_probe: ProbeReadout = field(default_factory=ProbeReadout)
    # Read-outs also every this many pretraining epochs (0 = only after pretraining); may be fractional
    every_epochs: float = 0.0
    # Encoder blocks whose features the read-outs use, concatenated: 1-based, negative from the last
    # (-1 = the last block). The causal pretraining encoder reads one image at a time in pretraining
    # layout (its separator in front); a block's feature is the mean over the image's tokens of its
    # output, normed by the LayerNorm through which the decoder reads that depth (parameter-free for a
    # block the decoder does not read). Why: these are the weights and the token order pretraining
    # trained, and the mean is the fine-tuning classifier's pool (the last token alone would weigh the
    # last cluster most). The classifier's 4-direction model would let every token see the whole image,
    # but its 3 extra directions are untrained copies of the forward weights: a read-out through it would
    # measure that untrained transfer, not what pretraining learned (starx/eval/features.py)
    feature_blocks: list[int] = field(default_factory=lambda: [-1])


class WandbMode(StrEnum):
    offline = "offline"  # write the run under the run directory; `wandb sync` uploads it later
    online = "online"
    disabled = "disabled"


@dataclass
class WandbTracking:
    """Weights & Biases (the 'wandb' extra): the run id is the W&B id and name, the experiment its group, the resolved spec its config."""

    enabled: bool = False  # log every metrics.jsonl scalar to W&B (rank 0)
    mode: WandbMode = WandbMode.offline  # offline (no network needed; `wandb sync` later) | online | disabled
    project: str = "starx"  # W&B project
    entity: Optional[str] = None  # W&B team or user; null = the logged-in default
    tags: list[str] = field(default_factory=list)  # W&B run tags


@dataclass
class TrackingSpec:
    """Live dashboards fed the same scalars as metrics.jsonl (rank 0 only); not part of the run id."""

    tensorboard: bool = False  # write TensorBoard event files into the run directory (the 'tensorboard' extra)
    wandb: WandbTracking = field(default_factory=WandbTracking)


@dataclass
class CheckpointSpec:
    """When the last-state checkpoint of a stage is written (also on SIGUSR1/USR2/TERM and at stage end)."""

    every_steps: int = 500  # save every N optimizer steps (0 = only by time, signals and stage end)
    every_minutes: float = 10.0  # also save when this long has passed since the last save (0 = off)
    # also keep <stage>_ep<E>.pt every this many epochs (may be fractional; 0 = none): full states,
    # resumable (copy one over <stage>_last.pt), hard links of the last checkpoint where possible
    keep_every_epochs: float = 0.0
    keep_last: int = 0  # keep only the newest N milestones per stage (0 = all); last and best are always kept
    # fine-tuning eval metric (maximised) whose best value's state is kept as finetune_best.pt (top1,
    # top1_ema, top5, ...; "" = none)
    best_metric: str = "top1"


@dataclass
class ExperimentSpec:
    """One experiment: what to train, on what, how, and where to run it."""

    experiment: str = "default"  # results/<experiment>/<run_id>/
    seed: int = 0  # seeds weights, data order and augmentation; part of the run id
    device: Device = Device.auto  # auto | cpu | cuda
    precision: Precision = Precision.auto  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    compile: bool = False  # torch.compile the model
    # torch.compile mode when compile is on: default | reduce-overhead (CUDA graphs of the whole
    # forward and backward: the fastest on GPU, bench/README.md) | max-autotune
    compile_mode: CompileMode = CompileMode.default
    deterministic: bool = False  # deterministic algorithms (exact resume on CPU)
    cpu_threads: Optional[int] = None  # torch threads for CPU compute; null = all cores of this process
    output_dir: str = "results"  # results root ($STARX_RESULTS when set): runs go to <output_dir>/<experiment>/<run_id>/
    log_every: int = 10  # optimizer steps between metrics lines
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    pretrain: PretrainStage = field(default_factory=PretrainStage)
    finetune: FinetuneStage = field(default_factory=FinetuneStage)
    eval: EvalStage = field(default_factory=EvalStage)
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
