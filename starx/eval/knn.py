"""Weighted k-nearest-neighbour classification of frozen features (DINO's, Caron et al. 2021).

Features are L2-normalised; a query's k most similar training images (cosine similarity) vote
for their labels with weight exp(similarity / T); the classes with the most votes are its top-1
and top-5 predictions. DINO's defaults: k = 20, T = 0.07.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from starx.eval.accuracy import TOPK, topk_correct


@torch.no_grad()
def knn_votes(bank: Tensor, bank_labels: Tensor, queries: Tensor, num_classes: int, *, k: int = 20,
              temperature: float = 0.07) -> Tensor:
    """(Q, num_classes) summed weights of each query's k nearest bank features."""
    bank, queries = F.normalize(bank.float(), dim=-1), F.normalize(queries.float(), dim=-1)
    k = min(k, bank.shape[0])
    sims, idx = (queries @ bank.T).topk(k, dim=-1)
    votes = torch.zeros(queries.shape[0], num_classes, device=queries.device)
    return votes.scatter_add_(1, bank_labels[idx], (sims / temperature).exp())


@torch.no_grad()
def knn_correct(bank: Tensor, bank_labels: Tensor, queries: Tensor, query_labels: Tensor, num_classes: int, *,
                k: int = 20, temperature: float = 0.07, chunk: int = 256) -> Tensor:
    """(len(TOPK),) int64: queries whose label is the top-1 / among the top-5 vote getters.
    Queries go in chunks of ``chunk`` so the similarity matrix stays chunk x bank (ImageNet-1k: 1.3 GB)."""
    counts = torch.zeros(len(TOPK), dtype=torch.int64, device=queries.device)
    for start in range(0, queries.shape[0], chunk):
        votes = knn_votes(bank, bank_labels, queries[start:start + chunk], num_classes, k=k,
                          temperature=temperature)
        counts += topk_correct(votes, query_labels[start:start + chunk])
    return counts
