"""STARConfig: every architecture number of the pretraining model and the classifier, checked once;
:class:`Geometry`: the one owner of a STAR sequence's token counts; :func:`model_config`: the one
place that turns a spec's ``model`` section into a STARConfig.

Torch-free (the spec loader, ``starx show`` and derived.json read it without loading torch).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from starx.choices import Backend, SeparatorKind

SEPARATORS: tuple[str, ...] = tuple(k.value for k in SeparatorKind)
POOLS = ("mean", "cls")

# Keys of the spec's model section that are not STARConfig fields: the registered size it starts from.
SPEC_ONLY_KEYS = ("name",)


@dataclass(frozen=True)
class Geometry:
    """Token counts of a STAR pretraining sequence, named by what they count.

    A sequence is ``[sep_0, image_0, ..., sep_{k-1}, image_{k-1}]``: each separator has
    ``sep_len`` (S) tokens, each image ``patches_per_image`` (N) patches. The encoder reads the
    whole sequence except its last cluster (nothing is predicted from it, as in ARM). STAR-B at
    k=4 (192 px, patch 16, 4x4 clusters, cluster separator): ``sequence_tokens`` = 4 x (16 + 144)
    = 640, ``encoder_tokens`` = 640 - 16 = 624.
    """

    img_hw: tuple[int, int]
    patch_size: int
    cluster_size: int
    k: int  # images per sequence (seq_multiplier)
    sep_len: int  # S, tokens per separator (0 for none)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per image side (rows, columns)."""
        return self.img_hw[0] // self.patch_size, self.img_hw[1] // self.patch_size

    @property
    def patches_per_image(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def cluster_tokens(self) -> int:
        """Patches of one cluster (P = cluster_size**2): the unit of next-cluster prediction."""
        return self.cluster_size**2

    @property
    def clusters_per_image(self) -> int:
        return self.patches_per_image // self.cluster_tokens

    @property
    def segment_tokens(self) -> int:
        """One separator and its image (S + N)."""
        return self.sep_len + self.patches_per_image

    @property
    def sequence_tokens(self) -> int:
        """The full packed sequence: k x (S + N)."""
        return self.k * self.segment_tokens

    @property
    def encoder_tokens(self) -> int:
        """What the encoder reads per sequence: the full sequence minus its last cluster."""
        return self.sequence_tokens - self.cluster_tokens

    @property
    def encoder_tokens_per_image(self) -> int:
        """encoder_tokens // k: what tokens/s counts per image in the metrics."""
        return self.encoder_tokens // self.k

    @property
    def image_starts(self) -> tuple[int, ...]:
        """Sequence positions where each image's segment (its separator, then its patches) begins."""
        return tuple(j * self.segment_tokens for j in range(self.k))

    def as_dict(self) -> dict[str, int]:
        return {"patches_per_image": self.patches_per_image, "clusters_per_image": self.clusters_per_image,
                "separator_tokens": self.sep_len, "sequence_tokens": self.sequence_tokens,
                "encoder_tokens": self.encoder_tokens}


@dataclass(frozen=True)
class STARConfig:
    """Architecture of a STAR model (see DESIGN.md section 1 for the ARM numbers).

    Encoder: ``depth`` MambaMLP blocks of width ``embed_dim`` (Mamba expand 1, ``d_state``,
    ``d_conv``, dt_rank ceil(d/16); SwiGLU hidden int(d*8/3)). Images of ``img_size`` px are cut
    into ``patch_size`` px patches; ``cluster_size`` x ``cluster_size`` patches form a cluster,
    the unit of next-cluster prediction. A pretraining sequence holds ``seq_multiplier`` (k)
    images, each preceded by a separator of ``separator_len`` tokens (None: 1 for ``token``,
    one cluster = cluster_size**2 for the other kinds; 0 for ``none``).
    ``decoder_cross_image``: whether the decoder may read encoder features of earlier images
    (True) or only of the target's own image and its separator (False). ``state_reset``: the
    encoder's scan state restarts at each image's first token (its separator), so packed images
    do not see each other: the control that tells cross-image context from sequence length.
    ``norm_pix_loss``: targets normalised per patch (ARM). ``drop_path`` is the stochastic-depth
    rate of the last block (linear from 0). ``backend``: auto | cuda | triton | torch (starx.ops).
    """

    embed_dim: int = 768
    depth: int = 12
    img_size: int | tuple[int, int] = 192
    patch_size: int = 16
    cluster_size: int = 4
    in_chans: int = 3
    separator: SeparatorKind = SeparatorKind.cluster
    separator_len: int | None = None
    seq_multiplier: int = 4
    decoder_dim: int = 512
    decoder_depth: int = 4
    decoder_heads: int = 8
    decoder_cross_image: bool = True
    state_reset: bool = False
    norm_pix_loss: bool = True
    d_state: int = 16
    d_conv: int = 4
    drop_path: float = 0.0
    backend: Backend = Backend.auto

    def __post_init__(self) -> None:
        for name, enum in (("separator", SeparatorKind), ("backend", Backend)):
            value = getattr(self, name)
            if value in enum.__members__.values():
                object.__setattr__(self, name, enum(value))
        self._validate()

    # ----- derived numbers -----
    @property
    def img_hw(self) -> tuple[int, int]:
        s = self.img_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def geometry(self) -> Geometry:
        """The token counts of this config's pretraining sequence (the one place they are computed)."""
        return Geometry(self.img_hw, self.patch_size, self.cluster_size, self.seq_multiplier, self.sep_len)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per image side (rows, columns)."""
        return self.geometry.grid

    @property
    def num_patches(self) -> int:
        return self.geometry.patches_per_image

    @property
    def cluster_tokens(self) -> int:
        return self.geometry.cluster_tokens

    @property
    def clusters_per_image(self) -> int:
        return self.geometry.clusters_per_image

    @property
    def sep_len(self) -> int:
        """Tokens per separator, with the kind's default resolved."""
        if self.separator == SeparatorKind.none:
            return 0
        if self.separator_len is not None:
            return self.separator_len
        return 1 if self.separator == SeparatorKind.token else self.cluster_size**2

    @property
    def patch_pixels(self) -> int:
        return self.patch_size**2 * self.in_chans

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.embed_dim / 16)

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * 4 * 2 / 3)

    def replace(self, **overrides: Any) -> STARConfig:
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    # ----- checks -----
    def _validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"invalid model config: {msg}")

        for name in ("embed_dim", "depth", "patch_size", "cluster_size", "in_chans", "seq_multiplier",
                     "decoder_dim", "decoder_depth", "decoder_heads", "d_state", "d_conv"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) > 0,
                 f"{name} must be a positive integer, got {getattr(self, name)!r}")
        need(isinstance(self.separator, SeparatorKind), f"separator must be one of {SEPARATORS}, got {self.separator!r}")
        if self.separator_len is not None:
            need(isinstance(self.separator_len, int) and self.separator_len >= 1,
                 f"separator_len must be a positive integer or None, got {self.separator_len!r}")
        need(isinstance(self.backend, Backend),
             f"backend must be one of {tuple(b.value for b in Backend)}, got {self.backend!r}")
        need(not (self.state_reset and self.backend == Backend.cuda),
             "state_reset needs backend triton, torch or auto: mamba-ssm's scan (cuda) cannot restart its state")
        need(0.0 <= self.drop_path < 1.0, f"drop_path must be in [0, 1), got {self.drop_path}")
        need(self.embed_dim % 4 == 0, f"embed_dim must be divisible by 4 (2-D sin-cos positions), got {self.embed_dim}")
        need(self.decoder_dim % 4 == 0, f"decoder_dim must be divisible by 4, got {self.decoder_dim}")
        need(self.decoder_dim % self.decoder_heads == 0,
             f"decoder_dim {self.decoder_dim} must be divisible by decoder_heads {self.decoder_heads}")
        h, w = self.img_hw
        need(h % self.patch_size == 0 and w % self.patch_size == 0,
             f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")

    def check_pretrain(self) -> None:
        """The extra constraints of next-cluster pretraining (the classifier has no clusters)."""
        gh, gw = self.grid
        c = self.cluster_size
        if gh % c or gw % c:
            raise ValueError(
                f"invalid model config: the patch grid {gh}x{gw} (img_size {self.img_size} / patch_size "
                f"{self.patch_size}) must be divisible by cluster_size {c}"
            )
        if self.seq_multiplier == 1 and self.sep_len == 0 and self.clusters_per_image < 2:
            raise ValueError(
                "invalid model config: with one image, no separator and one cluster there is nothing to predict"
            )


def model_config(model_section: Mapping[str, Any], **stage: Any) -> STARConfig:
    """The STARConfig a spec's ``model`` section describes: its registered size (``name``) with every
    other key of the section applied (null = the size's default), then ``stage`` (what a stage
    sets on top: the fine-tuning ``img_size`` and ``drop_path``).

    The section's keys are passed as they are, with no list of names kept here: a spec field that
    is not a STARConfig field fails at once (tests/test_models.py checks that each one reaches
    the model).
    """
    from starx.models.registry import get_config

    section = dict(model_section.items())
    name = section.pop("name")
    for key in SPEC_ONLY_KEYS:
        section.pop(key, None)
    return get_config(name, **{**section, **{k: v for k, v in stage.items() if v is not None}})
