"""STARConfig: every architecture number of the pretraining model and the classifier, checked once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

SEPARATORS = ("none", "token", "cluster", "fixed", "distinct")
POOLS = ("mean", "cls")


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
    (True) or only of the target's own image and its separator (False).
    ``norm_pix_loss``: targets normalised per patch (ARM). ``drop_path`` is the stochastic-depth
    rate of the last block (linear from 0). ``backend``: auto | cuda | torch (see starx.ops).
    """

    embed_dim: int = 768
    depth: int = 12
    img_size: int | tuple[int, int] = 192
    patch_size: int = 16
    cluster_size: int = 4
    in_chans: int = 3
    separator: str = "cluster"
    separator_len: int | None = None
    seq_multiplier: int = 4
    decoder_dim: int = 512
    decoder_depth: int = 4
    decoder_heads: int = 8
    decoder_cross_image: bool = True
    norm_pix_loss: bool = True
    d_state: int = 16
    d_conv: int = 4
    drop_path: float = 0.0
    backend: str = "auto"

    def __post_init__(self) -> None:
        self._validate()

    # ----- derived numbers -----
    @property
    def img_hw(self) -> tuple[int, int]:
        s = self.img_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per image side (rows, columns)."""
        h, w = self.img_hw
        return h // self.patch_size, w // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def cluster_tokens(self) -> int:
        return self.cluster_size**2

    @property
    def clusters_per_image(self) -> int:
        return self.num_patches // self.cluster_tokens

    @property
    def sep_len(self) -> int:
        """Tokens per separator, with the kind's default resolved."""
        if self.separator == "none":
            return 0
        if self.separator_len is not None:
            return self.separator_len
        return 1 if self.separator == "token" else self.cluster_tokens

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
        need(self.separator in SEPARATORS, f"separator must be one of {SEPARATORS}, got {self.separator!r}")
        if self.separator_len is not None:
            need(isinstance(self.separator_len, int) and self.separator_len >= 1,
                 f"separator_len must be a positive integer or None, got {self.separator_len!r}")
        need(self.backend in ("auto", "cuda", "torch"), f"backend must be auto | cuda | torch, got {self.backend!r}")
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
