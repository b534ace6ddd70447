"""Selective scan (Mamba-1 S6): the sequential reference, the pure-PyTorch twin, the dispatcher.

Semantics (mamba_ssm.ops.selective_scan_interface.selective_scan_fn), per batch b, channel d,
state n, step t::

    dt_t  = softplus(delta_t + delta_bias)      (bias / softplus optional)
    h_t   = exp(dt_t * A[d, n]) * h_{t-1} + dt_t * B[b, n, t] * u_t,    h_{-1} = 0
    y_t   = sum_n C[b, n, t] * h_t[n] + D[d] * u_t
    out_t = y_t * silu(z_t)                     (z optional)

With ``reset`` ((l,) or (b, l), nonzero at step t) the state restarts there: h_t = dt_t B_t u_t,
as if exp(dt_t A) were 0 (images packed in one sequence that must not see each other).

Shapes: u, delta, z (b, d, l); A (d, n); B, C (b, n, l); D, delta_bias (d,). The state is
computed in fp32 (fp64 if the inputs are fp64); the output has u's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from starx.ops._kernels import KernelUnavailableError, scan_backend
from starx.ops._scan_op import selective_scan_kernel
from starx.ops.triton_scan import selective_scan_triton


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _groups(u: Tensor, B: Tensor) -> int:
    """Channel groups of a grouped scan: B and C (b, g, n, l) serve channels [j*d/g, (j+1)*d/g)."""
    if B.dim() != 4:
        return 1
    g = B.shape[1]
    if u.shape[1] % g:
        raise ValueError(f"grouped B has {g} groups, which do not divide the {u.shape[1]} channels")
    return g


def _check_shapes(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (b, d, l); got {tuple(u.shape)}, {tuple(delta.shape)}")
    b, d, l = u.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (d={d}, n); got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape) != (b, n, l):
            raise ValueError(f"{name} must be (b, n, l) = {(b, n, l)}; got {tuple(t.shape)}")


def _prepare_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, dtype: torch.dtype) -> Tensor:
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    return F.softplus(delta) if delta_softplus else delta


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype_out: torch.dtype) -> Tensor:
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype_out)


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    reset: Tensor | None = None,
) -> Tensor:
    """The scan written step by step from the equations: slow, the oracle for the twin and kernels."""
    _check_shapes(u, delta, A, B, C)
    dtype = _compute_dtype(u)
    u_, A_, B_, C_ = u.to(dtype), A.to(dtype), B.to(dtype), C.to(dtype)
    dt = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    h = u_.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    keep = None if reset is None else (reset == 0).to(dtype).expand(u.shape[0], u.shape[2])
    ys = []
    for t in range(u.shape[2]):
        decay = torch.exp(dt[:, :, t, None] * A_)  # (b, d, n)
        if keep is not None:
            decay = decay * keep[:, t, None, None]
        h = decay * h + dt[:, :, t, None] * B_[:, None, :, t] * u_[:, :, t, None]
        ys.append((h * C_[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    return _finish(y, u_, D, z, u.dtype)


CHUNK_ELEMENTS = 1 << 19  # (tuned on a 2-core EPYC: 2^17..2^20 are within 10%)
MIN_CHUNK = 4  # below this the per-chunk work (e.g. saving its last state) dominates


def _chunk_len(numel_per_step: int) -> int:
    """Steps per chunk: a chunk's (T, b, d, n) temporaries hold about CHUNK_ELEMENTS each."""
    return max(MIN_CHUNK, CHUNK_ELEMENTS // max(1, numel_per_step))


class _ScanCore(torch.autograd.Function):
    """y_t = C_t . h_t with h_t = exp(dt_t A) h_{t-1} + w_t B_t; hand-written backward.

    Time-major (l, b, d, n) layout, so each step is one contiguous slab and one fused op:
    the recurrence stays the plain sequential one (exact), and the Python loop costs
    microseconds a step. Time is walked in chunks of a few steps whose (T, b, d, n)
    temporaries stay in cache; the whole (l, b, d, n) state is never stored. Like the CUDA
    kernel, the forward keeps only the state at chunk ends and the backward recomputes each
    chunk's states from there, then runs the adjoint recurrence backwards in time,
    g_t = dL/dh_t + a_{t+1} g_{t+1}; every gradient is a per-chunk contraction of g or of
    q_t = g_t a_t h_{t-1} = dL/d(dt_t A).
    """

    @staticmethod
    def forward(ctx, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, w: Tensor, chunk: int | None,
                keep: Tensor | None = None) -> Tensor:
        # Time-major: dt, w (l, b, d); A (d, n); B, C (l, b, n); all in the compute dtype.
        # keep (l, b or 1, 1, 1): 0 where the state restarts (reset), else 1.
        ctx.keep = keep
        with torch.autocast(dt.device.type, enabled=False):  # the state stays in the compute dtype
            return _ScanCore._forward(ctx, dt, A, B, C, w, chunk)

    @staticmethod
    def backward(ctx, dy: Tensor):
        with torch.autocast(dy.device.type, enabled=False):
            return _ScanCore._backward(ctx, dy.to(ctx.saved_tensors[0].dtype))

    @staticmethod
    def _forward(ctx, dt_l: Tensor, A: Tensor, B_l: Tensor, C_l: Tensor, w_l: Tensor, chunk: int | None) -> Tensor:
        dt_l, w_l, B_l, C_l = (t.contiguous() for t in (dt_l, w_l, B_l, C_l))
        L, b, d = dt_l.shape
        n = A.shape[1]
        T = min(chunk or _chunk_len(b * d * n), L)
        y = dt_l.new_empty(L, b, d)
        starts = range(0, L, T)
        ends = dt_l.new_empty(len(starts), b, d, n)  # h at the last step of each chunk
        a, h, tmp = (dt_l.new_empty(T, b, d, n) for _ in range(3))
        for c, s in enumerate(starts):
            e = min(s + T, L)
            ac, hc = a[: e - s], h[: e - s]
            _chunk_states(ac, hc, dt_l[s:e], w_l[s:e], A, B_l[s:e], ends[c - 1] if c else None, _rows(ctx.keep, s, e))
            ends[c].copy_(hc[-1])
            # (mul + sum beats bmm for these many tiny mat-vecs on CPU)
            torch.sum(torch.mul(hc, C_l[s:e, :, None, :], out=tmp[: e - s]), -1, out=y[s:e])
        ctx.save_for_backward(dt_l, A, B_l, C_l, w_l, ends)
        ctx.chunk = T
        return y

    @staticmethod
    def _backward(ctx, dy: Tensor):
        dt_l, A, B_l, C_l, w_l, ends = ctx.saved_tensors
        T = ctx.chunk
        dy_l = dy.contiguous()
        L, b, d = dt_l.shape
        n = A.shape[1]
        ddt, dw = torch.empty_like(dt_l), torch.empty_like(dt_l)
        dB, dC = torch.empty_like(B_l), torch.empty_like(C_l)
        dA = torch.zeros_like(A)
        a, h, g, tmp = (dt_l.new_empty(T, b, d, n) for _ in range(4))
        carry = None  # a_e * g_e from the chunk after this one
        for c, s in reversed(list(enumerate(range(0, L, T)))):
            e = min(s + T, L)
            ac, hc, gc, tc = a[: e - s], h[: e - s], g[: e - s], tmp[: e - s]
            h0 = ends[c - 1] if c else None
            _chunk_states(ac, hc, dt_l[s:e], w_l[s:e], A, B_l[s:e], h0, _rows(ctx.keep, s, e))
            torch.mul(dy_l[s:e, :, :, None], C_l[s:e, :, None, :], out=gc)  # direct dL/dh_t
            if carry is not None:
                gc[-1].add_(carry)
            for i in range(e - s - 2, -1, -1):
                gc[i].addcmul_(ac[i + 1], gc[i + 1])
            carry = ac[0] * gc[0]
            torch.sum(torch.mul(gc, B_l[s:e, :, None, :], out=tc), -1, out=dw[s:e])
            torch.bmm(w_l[s:e].view(-1, 1, d), gc.view(-1, d, n), out=dB[s:e].view(-1, 1, n))
            torch.bmm(dy_l[s:e].view(-1, 1, d), hc.view(-1, d, n), out=dC[s:e].view(-1, 1, n))
            q = ac.mul_(gc)  # q_t = g_t a_t h_{t-1}, in a's memory
            q[1:].mul_(hc[:-1])
            if h0 is None:
                q[0].zero_()
            else:
                q[0].mul_(h0)
            torch.sum(torch.mul(q, A, out=tc), -1, out=ddt[s:e])
            dA += torch.mul(q, dt_l[s:e, :, :, None], out=tc).sum((0, 1))
        return ddt, dA, dB, dC, dw, None, None


def _rows(keep: Tensor | None, s: int, e: int) -> Tensor | None:
    return None if keep is None else keep[s:e]


def _chunk_states(a: Tensor, h: Tensor, dt: Tensor, w: Tensor, A: Tensor, B: Tensor, h0: Tensor | None,
                  keep: Tensor | None = None) -> None:
    """Fill a with exp(dt A) (times keep: 0 where the state restarts) and h with the states of
    one chunk, starting from state h0."""
    torch.mul(dt[..., None], A, out=a).exp_()
    if keep is not None:
        a.mul_(keep)
    torch.mul(w[..., None], B[:, :, None, :], out=h)  # x_t = w_t B_t
    if h0 is not None:
        h[0].addcmul_(a[0], h0)
    for i in range(1, h.shape[0]):
        h[i].addcmul_(a[i], h[i - 1])


@torch.compiler.disable  # an opaque call for torch.compile: its step loop would unroll into a huge graph
def _scan_core(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, w: Tensor, chunk: int | None,
               keep: Tensor | None = None) -> Tensor:
    return _ScanCore.apply(dt, A, B, C, w, chunk, keep)


def _keep_time_major(reset: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """reset (l,) or (b, l) -> keep (l, b or 1, 1, 1): 0 where the state restarts, else 1."""
    if reset is None:
        return None
    keep = (reset == 0).to(dtype)
    return (keep[:, None] if keep.dim() == 1 else keep.t())[:, :, None, None].contiguous()


def selective_scan_time_major(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    reset: Tensor | None = None,
    *,
    chunk_len: int | None = None,
) -> Tensor:
    """The torch twin in time-major layout: u, delta, z (l, b, d); B, C (l, b, n) -> (l, b, d).

    The layout the twin computes in; the torch Mamba mixer stays in it end to end, which
    saves the transposes of the kernels' (b, d, l) layout.
    """
    dtype = _compute_dtype(u)
    u_ = u.to(dtype)
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)
    if delta_softplus:
        dt = F.softplus(dt)
    y = _scan_core(dt, A.to(dtype), B.to(dtype), C.to(dtype), dt * u_, chunk_len, _keep_time_major(reset, dtype))
    if D is not None:
        y = y + u_ * D.to(dtype)
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y.to(u.dtype)


def selective_scan_torch(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    reset: Tensor | None = None,
    *,
    chunk_len: int | None = None,
) -> Tensor:
    """Pure-PyTorch twin of ``selective_scan_fn``: same signature, same result, autograd-ready.

    ``chunk_len`` (time steps per cache-sized chunk) only changes speed; None picks it from
    the batch size, width and state size.
    """
    _check_shapes(u, delta, A, B, C)
    tm = lambda t: None if t is None else t.permute(2, 0, 1)  # noqa: E731  (b, c, l) -> (l, b, c)
    y = selective_scan_time_major(
        tm(u), tm(delta), A, tm(B), tm(C), D, tm(z), delta_bias, delta_softplus, reset, chunk_len=chunk_len
    )
    return y.permute(1, 2, 0)


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    backend: str = "auto",
    reset: Tensor | None = None,
) -> Tensor:
    """Selective scan on the chosen backend (``auto | cuda | triton | torch``); see the module docstring.

    ``triton`` runs starx's Triton scan and ``cuda`` mamba_ssm's kernel (each as a torch custom op,
    which torch.compile traces); each raises KernelUnavailableError where it can't run; ``auto``
    takes the first that runs for CUDA tensors (starx.ops._kernels.scan_backend), else the torch
    twin. B and C may also be grouped, (b, g, n, l): group j serves channels [j*d/g, (j+1)*d/g),
    as in the kernel. ``reset`` restarts the state (not on ``cuda``: mamba-ssm cannot).
    """
    which = scan_backend(backend, u)
    if which == "triton":
        return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reset)
    if which == "cuda":
        if reset is not None:
            raise KernelUnavailableError("mamba-ssm's scan cannot restart the state (reset): use backend 'triton' or 'torch'")
        return selective_scan_kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    g = _groups(u, B)
    if g == 1:
        return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reset)
    if reset is not None:
        raise ValueError("reset with grouped B and C is not supported by the torch twin")
    part = lambda t, j: None if t is None else t.chunk(g, dim=1 if t.dim() == 3 else 0)[j]  # noqa: E731  channels
    return torch.cat([
        selective_scan_torch(part(u, j), part(delta, j), part(A, j), B[:, j], C[:, j], part(D, j), part(z, j),
                             part(delta_bias, j), delta_softplus)
        for j in range(g)
    ], dim=1)
