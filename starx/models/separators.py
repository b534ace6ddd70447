"""Separator strategies: what precedes each image of a STAR sequence.

  none      no separator (plain concatenation); no parameters
  token     one learned embedding, repeated over the separator's S tokens, shared by all images
  cluster   S learned embeddings (default S = one cluster), shared by all images (STAR)
  fixed     S constant embeddings (a seeded N(0, 0.02^2) draw, a buffer: never trained)
  distinct  a different learned S-token separator for each of the k image slots (control)
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from starx.models.blocks import init_token

FIXED_SEED = 0


class Separator(nn.Module):
    def __init__(self, kind: str, length: int, k: int, dim: int):
        super().__init__()
        self.kind, self.length, self.k, self.dim = kind, length, k, dim
        if kind == "token":
            self.token = nn.Parameter(torch.zeros(1, dim))
            init_token(self.token)
        elif kind == "cluster":
            self.tokens = nn.Parameter(torch.zeros(length, dim))
            init_token(self.tokens)
        elif kind == "distinct":
            self.tokens = nn.Parameter(torch.zeros(k, length, dim))
            init_token(self.tokens)
        elif kind == "fixed":
            g = torch.Generator().manual_seed(FIXED_SEED)
            self.register_buffer("fixed", 0.02 * torch.randn(length, dim, generator=g))
        elif kind != "none":
            raise ValueError(f"unknown separator kind {kind!r}")

    def forward(self) -> Tensor | None:
        """(k, S, D) separator embeddings for the k image slots, or None for ``none``."""
        if self.kind == "none":
            return None
        if self.kind == "token":
            return self.token.expand(self.k, self.length, self.dim)
        if self.kind == "distinct":
            return self.tokens
        src = self.tokens if self.kind == "cluster" else self.fixed
        return src.expand(self.k, self.length, self.dim)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, length={self.length}, k={self.k}"
