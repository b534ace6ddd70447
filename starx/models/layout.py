"""Where every token of a STAR pretraining sequence sits, which patches are targets, and the
decoder's block-causal mask. Pure index arithmetic, computed once per model.

A sequence of k images is ``[sep_0, image_0, sep_1, image_1, ..., sep_{k-1}, image_{k-1}]``;
each separator has S tokens (S = 0 for ``none``), each image N patches in cluster order: clusters
in raster order, the P = c*c patches of a cluster in raster order. The encoder reads the whole
sequence except the last cluster of the last image (nothing is predicted from it, as in ARM).

Target rule: an image cluster is a target iff the decoder may see at least one encoder token for
it; its queries see exactly the tokens strictly before the cluster's first token (separators,
earlier clusters, and with ``cross_image`` earlier images; without it only the cluster's own
image and separator). So with a separator every cluster of every image is a target; with
``none``, k = 1 this is ARM (clusters 2..n predicted from 1..n-1); with ``none``, k > 1 the first
cluster of image i > 0 is a target predicted from the earlier images when ``cross_image`` is on,
and not a target when it is off (nothing visible).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from starx.models.config import Geometry, STARConfig
from starx.ops.span_attention import check_spans, spans_to_mask


def cluster_order(grid_h: int, grid_w: int, c: int) -> Tensor:
    """Raster patch index of each position in cluster order, (grid_h * grid_w,)."""
    raster = torch.arange(grid_h * grid_w).view(grid_h // c, c, grid_w // c, c)
    return raster.permute(0, 2, 1, 3).flatten()  # (cluster row, cluster col, row in, col in)


@dataclass(frozen=True)
class SequenceLayout:
    geometry: Geometry  # the token counts (S, N, P, k and the totals): STARConfig.geometry
    order: Tensor  # (N,) raster index of each cluster-ordered patch
    target_index: Tensor  # (T,) index into the k*N cluster-ordered image patches of a sequence
    target_raster: Tensor  # (T,) raster index (within its image) of each target patch
    spans: Tensor  # (T, 2) int32: the encoder tokens [lo, hi) a target's query may read (both ends non-decreasing)
    mask: Tensor  # (T, encoder_tokens) bool, True where a target's query may read an encoder token (of spans)

    @property
    def sep_len(self) -> int:  # S
        return self.geometry.sep_len

    @property
    def image_tokens(self) -> int:  # N
        return self.geometry.patches_per_image

    @property
    def cluster_tokens(self) -> int:  # P
        return self.geometry.cluster_tokens

    @property
    def k(self) -> int:
        return self.geometry.k

    @property
    def segment(self) -> int:
        return self.geometry.segment_tokens

    @property
    def seq_len(self) -> int:
        """Tokens of the full sequence (separators + images): Geometry.sequence_tokens."""
        return self.geometry.sequence_tokens

    @property
    def num_tokens(self) -> int:
        """Tokens the encoder reads, the sequence minus its last cluster: Geometry.encoder_tokens."""
        return self.geometry.encoder_tokens

    @property
    def num_targets(self) -> int:
        return int(self.target_index.numel())


def build_layout(cfg: STARConfig) -> SequenceLayout:
    geo = cfg.geometry
    S, N, P, k = geo.sep_len, geo.patches_per_image, geo.cluster_tokens, geo.k
    seg = geo.segment_tokens
    num_tokens = geo.encoder_tokens
    order = cluster_order(*geo.grid, cfg.cluster_size)
    index, raster, spans = [], [], []
    for i in range(k):
        lo = 0 if cfg.decoder_cross_image else i * seg
        for j in range(N // P):
            start = i * seg + S + j * P
            if start <= lo:  # nothing visible: not a target
                continue
            patches = torch.arange(j * P, (j + 1) * P)
            index.append(i * N + patches)
            raster.append(order[patches])
            spans.append(torch.tensor([[lo, start]], dtype=torch.int32).expand(P, 2))
    if not index:
        raise ValueError("this layout has no targets (one image, one cluster, no separator)")
    spans = torch.cat(spans)
    if not spans.is_meta:  # (a model built on the meta device, to load a checkpoint into, has no values to check)
        check_spans(spans, num_tokens)  # (the kernels' assumption: a tile of rows reads one range of keys)
    return SequenceLayout(geo, order, torch.cat(index), torch.cat(raster), spans, spans_to_mask(spans, num_tokens))
