"""Reading a sequence in several token orders at once, with cheap backwards.

``x[:, order]`` in autograd has an index_put with accumulation as its backward (a sort and
atomics: 41% of a fine-tuning step in the profile of issue 12). A permutation's adjoint is the
inverse permutation, so both directions here are plain gathers (index_select) in both passes.

orders, inverses: (g, l), inverses[j] = argsort(orders[j]).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _read(x: Tensor, index: Tensor) -> Tensor:
    """x (b, l, c) -> (b, g, l, c) with out[:, j, t] = x[:, index[j, t]]."""
    g, L = index.shape
    return x.index_select(1, index.reshape(-1)).view(x.shape[0], g, L, x.shape[2])


def _sum_back(y: Tensor, index: Tensor) -> Tensor:
    """y (b, g, l, c) -> (b, l, c) with out[:, i] = sum_j y[:, j, index[j, i]]."""
    b, g, L, c = y.shape
    offsets = (torch.arange(g, device=index.device) * L)[:, None]
    return y.reshape(b, g * L, c).index_select(1, (index + offsets).reshape(-1)).view(b, g, L, c).sum(1)


class _Scatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, orders: Tensor, inverses: Tensor) -> Tensor:
        ctx.save_for_backward(orders, inverses)
        return _read(x, orders)

    @staticmethod
    def backward(ctx, grad: Tensor):
        orders, inverses = ctx.saved_tensors
        return _Gather.apply(grad.contiguous(), orders, inverses), None, None


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: Tensor, orders: Tensor, inverses: Tensor) -> Tensor:
        ctx.save_for_backward(orders, inverses)
        return _sum_back(y, inverses)

    @staticmethod
    def backward(ctx, grad: Tensor):
        orders, inverses = ctx.saved_tensors
        return _Scatter.apply(grad.contiguous(), orders, inverses), None, None


def scatter_directions(x: Tensor, orders: Tensor, inverses: Tensor) -> Tensor:
    """x (b, l, c) -> (b, g, l, c): direction j reads x in orders[j]."""
    return _Scatter.apply(x, orders, inverses)


def gather_directions(y: Tensor, orders: Tensor, inverses: Tensor) -> Tensor:
    """y (b, g, l, c) -> (b, l, c): each direction mapped back to x's order, summed."""
    return _Gather.apply(y.contiguous(), orders, inverses)
