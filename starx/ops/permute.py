"""Reading a sequence in several token orders at once, with cheap backwards.

``x[:, order]`` in autograd has an index_put with accumulation as its backward (a sort and
atomics: 41% of a fine-tuning step in the profile of issue 12). A permutation's adjoint is the
inverse permutation, so both directions here are plain gathers (index_select) in both passes.

orders, inverses: (g, l), inverses[j] = argsort(orders[j]). The directions sit next to the
channels, (b, l, g, c): a mixer that stacks its directions along channels reads (b, l, g * c)
as a view, with no copy on the way in or out.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _read(x: Tensor, index: Tensor) -> Tensor:
    """x (b, l, c), any strides -> (b, l, g, c) contiguous with out[:, t, j] = x[:, index[j, t]]."""
    g, L = index.shape
    return x.index_select(1, index.t().reshape(-1)).view(x.shape[0], L, g, x.shape[2])


def _sum_back(y: Tensor, index: Tensor) -> Tensor:
    """y (b, l, g, c) -> (b, l, c) with out[:, i] = sum_j y[:, index[j, i], j]."""
    b, L, g, c = y.shape
    flat = index.t() * g + torch.arange(g, device=index.device)  # (l, g): row index[j, i] of direction j
    return y.reshape(b, L * g, c).index_select(1, flat.reshape(-1)).view(b, L, g, c).sum(2)


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
    """x (b, l, c), any strides -> (b, l, g, c) contiguous: direction j reads x in orders[j]
    (out[:, t, j] = x[:, orders[j, t]])."""
    return _Scatter.apply(x, orders, inverses)


def gather_directions(y: Tensor, orders: Tensor, inverses: Tensor) -> Tensor:
    """y (b, l, g, c) -> (b, l, c): each direction mapped back to x's order, summed."""
    return _Gather.apply(y.contiguous(), orders, inverses)
