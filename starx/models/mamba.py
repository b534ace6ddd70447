"""Mamba mixers: the unidirectional one (pretraining) and ARM's 4-direction one (fine-tuning).

Parameter names, shapes and initialisation follow ``mamba_ssm.modules.mamba_simple.Mamba``
(in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj), so state_dicts move between the CUDA
kernels and the torch twin, and to / from mamba-ssm itself. The 4-direction variant adds ARM's
(``bimamba_type="v3"``) per-direction copies: suffix ``_b`` (rows backwards), ``_c`` (columns),
``_c_b`` (columns backwards), e.g. conv1d_c_b, x_proj_b, dt_proj_c, A_c_b_log, D_b.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from starx.ops import (
    KernelUnavailableError,
    check_backend,
    mamba_inner,
    mamba_inner_channel_last,
    mamba_inner_directions,
    mamba_inner_directions_channel_last,
    mamba_inner_time_major,
    preload_kernels,
    scan_backend,
)

DIRECTIONS = ("", "_b", "_c", "_c_b")  # ARM's suffixes: rows fwd / bwd, columns fwd / bwd


def _init_dt_proj(dt_proj: nn.Linear, dt_rank: int, dt_min=0.001, dt_max=0.1, dt_init_floor=1e-4) -> None:
    # Weight ~ U(-r^-1/2, r^-1/2); bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max].
    std = dt_rank**-0.5
    nn.init.uniform_(dt_proj.weight, -std, std)
    d = dt_proj.out_features
    dt = torch.exp(torch.rand(d) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
    with torch.no_grad():
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
    dt_proj.bias._no_reinit = True  # the model-level init zeroes Linear biases except this one


def _a_log(d_inner: int, d_state: int) -> nn.Parameter:
    # S4D-real init: A = -(1..n) for every channel, stored as log(1..n), kept in fp32.
    A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
    p = nn.Parameter(torch.log(A))
    p._no_weight_decay = True
    return p


def ssm_no_weight_decay(module: nn.Module) -> set[str]:
    """Names of the parameters flagged ``_no_weight_decay`` (every mixer's A_log and D, as in
    mamba-ssm): the models' ``no_weight_decay()`` include them."""
    return {n for n, p in module.named_parameters() if getattr(p, "_no_weight_decay", False)}


def _d_skip(d_inner: int) -> nn.Parameter:
    p = nn.Parameter(torch.ones(d_inner))
    p._no_weight_decay = True
    return p


class Mamba(nn.Module):
    """Unidirectional (causal) Mamba-1 mixer: (b, l, d_model) -> (b, l, d_model).

    ``backend``: ``auto | cuda | triton | torch`` (see starx.ops). ``triton`` runs starx's Triton
    scan in the projections' channel-last layout (``mamba_inner_channel_last``); ``cuda``
    mamba_ssm's fused ``mamba_inner_fn``; ``torch`` the twin of the same computation.
    ``forward(x, reset=None)``: ``reset`` ((l,) or (b, l)) restarts the state at marked steps
    (not on ``cuda``: mamba-ssm's scan cannot).
    """

    directions: tuple[str, ...] = ("",)

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 1,
        dt_rank: int | str = "auto",
        conv_bias: bool = True,
        bias: bool = False,
        backend: str = "auto",
    ):
        super().__init__()
        check_backend(backend)
        if backend != "torch":
            preload_kernels()  # now, not at the first forward, which torch.compile may be tracing
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.backend = backend
        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias)
        for suffix in self.directions:
            self._add_direction(suffix, conv_bias)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def _add_direction(self, suffix: str, conv_bias: bool) -> None:
        di = self.d_inner
        conv = nn.Conv1d(di, di, self.d_conv, groups=di, padding=self.d_conv - 1, bias=conv_bias)
        dt_proj = nn.Linear(self.dt_rank, di, bias=True)
        _init_dt_proj(dt_proj, self.dt_rank)
        setattr(self, f"conv1d{suffix}", conv)
        setattr(self, f"x_proj{suffix}", nn.Linear(di, self.dt_rank + 2 * self.d_state, bias=False))
        setattr(self, f"dt_proj{suffix}", dt_proj)
        setattr(self, f"A{suffix}_log", _a_log(di, self.d_state))
        setattr(self, f"D{suffix}", _d_skip(di))

    def _in_proj(self, x: Tensor, kernels: bool) -> Tensor:
        """xz in the layout of the backend: (b, 2*d_inner, l) for the kernels, (l, b, 2*d_inner)
        (time-major) for the torch twin, each without a transpose copy of the 2*d_inner-wide output."""
        if not kernels:
            return F.linear(x.transpose(0, 1), self.in_proj.weight, self.in_proj.bias)
        L = x.shape[1]
        xz = rearrange(self.in_proj.weight @ rearrange(x, "b l d -> d (b l)"), "d (b l) -> b d l", l=L)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.to(xz.dtype)[:, None]
        return xz

    def _args(self, suffix: str, project: bool) -> tuple:
        """The inner computation's parameters for one direction, as the ops take them."""
        return (
            getattr(self, f"conv1d{suffix}").weight,
            getattr(self, f"conv1d{suffix}").bias,
            getattr(self, f"x_proj{suffix}").weight,
            getattr(self, f"dt_proj{suffix}").weight,
            self.out_proj.weight if project else None,
            self.out_proj.bias if project else None,
            -torch.exp(getattr(self, f"A{suffix}_log").float()),
            getattr(self, f"D{suffix}").float(),
            getattr(self, f"dt_proj{suffix}").bias.float(),
            True,  # delta_softplus
        )

    def _direction(self, xz: Tensor, suffix: str, project: bool, kernels: bool, reset: Tensor | None = None) -> Tensor:
        if kernels:
            return mamba_inner(xz, *self._args(suffix, project), backend="cuda")
        return mamba_inner_time_major(xz, *self._args(suffix, project), reset=reset)

    def forward(self, x: Tensor, reset: Tensor | None = None) -> Tensor:
        which = scan_backend(self.backend, x)
        if which == "triton":
            xz = F.linear(x, self.in_proj.weight, self.in_proj.bias)  # (b, l, 2 * d_inner)
            return mamba_inner_channel_last(xz, *self._args("", True), reset=reset, backend=self.backend)
        kernels = which == "cuda"
        if kernels and reset is not None:
            raise KernelUnavailableError("mamba-ssm's scan (backend cuda) cannot restart the state: use triton or torch")
        out = self._direction(self._in_proj(x, kernels), "", project=True, kernels=kernels, reset=reset)
        return out if kernels else out.transpose(0, 1)


class BiMamba4(Mamba):
    """ARM's fine-tuning mixer: four scans (rows forwards / backwards, columns forwards /
    backwards) with their own conv / x_proj / dt_proj / A / D, sharing in_proj and out_proj;
    the four outputs are summed and divided by 4 before out_proj.

    ``forward(x, orders, inverses)``: x (b, l, d) in the classifier's token order (raster
    patches with the cls token in the middle); ``orders`` (4, l) says in which order each
    direction reads the tokens and ``inverses`` maps back (see ``direction_orders``). With the
    kernels the four directions run as one grouped conv and scan (``mamba_inner_directions``).
    """

    directions = DIRECTIONS

    def _stacked(self, name: str) -> list[Tensor]:
        return [getattr(self, name.replace("*", s)) for s in self.directions]

    def _stacked_args(self) -> tuple:
        """The four directions' parameters stacked as ``mamba_inner_directions`` takes them."""
        convs = self._stacked("conv1d*")
        return (
            torch.cat([c.weight[:, 0] for c in convs]),
            torch.cat([c.bias for c in convs]) if convs[0].bias is not None else None,
            torch.stack([p.weight for p in self._stacked("x_proj*")]),
            torch.stack([p.weight for p in self._stacked("dt_proj*")]),
            -torch.exp(torch.cat(self._stacked("A*_log")).float()), torch.cat(self._stacked("D*")).float(),
            torch.cat([p.bias for p in self._stacked("dt_proj*")]).float(), True,
        )

    def forward(self, x: Tensor, orders: Tensor, inverses: Tensor) -> Tensor:
        which = scan_backend(self.backend, x)
        if which == "triton":
            xz = F.linear(x, self.in_proj.weight, self.in_proj.bias)  # (b, l, 2 * d_inner)
            y = mamba_inner_directions_channel_last(xz, orders, inverses, *self._stacked_args(), backend=self.backend)
            return F.linear(y / 4, self.out_proj.weight, self.out_proj.bias)
        kernels = which == "cuda"
        xz = self._in_proj(x, kernels)
        if kernels:
            y = mamba_inner_directions(xz, orders, inverses, *self._stacked_args(), backend="cuda")
            return F.linear(rearrange(y / 4, "b d l -> b l d"), self.out_proj.weight, self.out_proj.bias)
        y = sum(
            self._direction(xz.index_select(0, order), suffix, project=False, kernels=False).index_select(0, inverse)
            for suffix, order, inverse in zip(self.directions, orders, inverses)
        )
        return F.linear(y / 4, self.out_proj.weight, self.out_proj.bias).transpose(0, 1)


def direction_orders(col_perm: Tensor) -> tuple[Tensor, Tensor]:
    """(orders, inverses), each (4, l), for the DIRECTIONS rows, rows backwards, columns,
    columns backwards, from ``col_perm`` (``column_order``): direction j reads token orders[j]
    at its step t, and inverses[j][i] is the step at which it reads token i."""
    L = col_perm.numel()
    rows = torch.arange(L, device=col_perm.device)
    col_inv = torch.argsort(col_perm)
    orders = torch.stack([rows, rows.flip(0), col_perm, col_perm.flip(0)])
    inverses = torch.stack([rows, rows.flip(0), col_inv, L - 1 - col_inv])
    return orders, inverses


def column_order(grid_h: int, grid_w: int, cls_pos: int | None) -> Tensor:
    """Index (l,) that reorders raster tokens (cls inserted at ``cls_pos``) column by column.

    The cls token stays at ``cls_pos``; ARM does the same with a transpose for square grids.
    """
    raster = torch.arange(grid_h * grid_w).view(grid_h, grid_w)
    cols = raster.t().flatten()  # raster index of the j-th patch in column order
    if cls_pos is None:
        return cols
    seq_of_patch = torch.where(cols < cls_pos, cols, cols + 1)  # position in the sequence with cls
    return torch.cat([seq_of_patch[:cls_pos], torch.tensor([cls_pos]), seq_of_patch[cls_pos:]])
