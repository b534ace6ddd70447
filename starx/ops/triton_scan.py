"""Selective scan (Mamba-1 S6) in Triton, built for vision lengths: starx's ``triton`` backend.

Same semantics and layouts as ``selective_scan_fn`` (see starx.ops.scan), plus an optional
per-position state reset. Needs only torch and Triton: no build step, no mamba-ssm.

Design (bench/README.md has the roofline, the timings and the designs that lost):

* One program owns ``BD`` channels of one sequence for the whole sequence, with their
  (BD, d_state) state in registers, and walks the steps one by one: ``h_t = a_t h_{t-1} + x_t``
  is one multiply-add per state, so the sequential chain is short, and each step's inputs are
  loaded one step ahead. Tensors are read through their strides; in the channel-last (b, l, d)
  layout of the projections each step's channels are one coalesced load, and no (b, d, n, l)
  tensor ever reaches memory.
* The forward saves the state every ``T`` steps (b, tiles, d, n). The backward walks the tiles
  from the last: a forward sweep restarts from the saved state and computes what needs the state
  but not the adjoint (dz, dy, dC), keeping ``a_t h_{t-1}`` and dy for the tile; a backward
  sweep runs the adjoint ``g_t = C_t dy_t + a_{t+1} g_{t+1}`` and the remaining gradients.
  Two kernels do this (``default_backward``): on Hopper GPUs a Gluon one
  (starx.ops._gluon_scan_kernels) with one channel a lane and the tile's ``a_t h_{t-1}`` in
  shared memory; elsewhere Triton's ``scan_bwd`` (starx.ops._triton_scan_kernels), with the
  tile in a small per-program buffer in global memory.
* dB and dC (shared by all channels) are summed over the program's channels, then over channel
  blocks: each block adds its step's sums into the group's (b, l, n) fp32 total with relaxed
  atomics, off the sequential chain (``TILES["sums"] = "atomic"``). Under
  ``torch.use_deterministic_algorithms(True)`` (or ``"blocks"``) every block writes its own partial
  sums instead and torch adds them up: bit-reproducible, but at k=4 that is 2 x 61 MB of fp32 a
  layer written and read again. dA, dD and the dt bias gradient are summed over sequences the
  same way: atomics into one total, or per-sequence partials that torch adds up.
* Reset: where ``reset[b, t]`` is set, ``a_t = 0``: the state restarts from zero at t (images
  packed in one sequence that do not see each other). Upstream Mamba-1 cannot do this.

The ops are torch custom ops (``torch.ops.starx.triton_scan_fwd/bwd``) with fake shapes, so
torch.compile traces around them and CUDA graphs capture them.
"""

# (no ``from __future__ import annotations``: custom_op infers the op schema from real annotations)
import functools
import math
import os

import torch
from torch import Tensor

LOG2E = 1.4426950408889634


@functools.lru_cache(maxsize=1)
def triton_error() -> str | None:
    """Why the Triton scan cannot run here (None when it can): Triton missing, or no CUDA."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return f"Triton does not import ({type(e).__name__}: {e}); it ships with the CUDA builds of torch"
    return None


# Channels per program (BD) and warps per program of the forward and the backward, and the
# steps per saved state (T), chosen by bench/triton_scan.py on an H200 at STAR shapes. T is
# shared: the backward restarts each tile of T steps from the state the forward saved there.
# The backward's 168-register cap (ptxas spills 112 bytes) fits 12 one-warp programs on a
# multiprocessor instead of 8: STAR-B k=4's 1536 programs in one wave, 2.06 ms fwd+bwd instead
# of 2.60 (bench/results/triton_scan_v5_maxnreg_h200.jsonl). T = 8, not 16: the backward's work
# buffer (T x 32 x 17 floats a program) then stays near the multiprocessor (at 16 it spilled to
# DRAM: ncu read 2.4 TB/s of DRAM traffic for 0.56 GB of operands); 2.05 -> 1.90 ms at k=4, 1.62 -> 1.50
# at k=1, 4.76 -> 4.39 at the fine-tune shape, 2.93 -> 2.98 at k=8
# (bench/results/triton_scan_v5_tile_steps_h200.jsonl), for twice the saved states: STAR-B k=4's
# peak memory at 256 images went 20.0 -> 21.3 GB.
# "bwd_kernel": None launches the default backward (default_backward()); bench/ may set another.
# "sums": how the backward sums dB / dC over channel blocks and dA / dD / dbias over sequences
# ("atomic" or "blocks": module docstring).
# "fwd_l2_ahead": (steps ahead, from which sequence length) of scan_fwd's L2 prefetch (_l2_ahead):
# on the H200 it took k=4's forward 0.400 -> 0.365 ms and k=8's 0.725 -> 0.542, and slowed the
# shorter k=1 (128 steps) and fine-tune (197) shapes, hence 512 (bench/results/triton_scan_fwd_l2_prefetch_h200.txt).
# "fast_math": the kernels ("fwd", "bwd", "fwd+bwd"; "" none) that compute softplus and the gate's
# sigmoid with the GPU's approximate log2 and divides and log1p's series (_softplus_slope's FAST_MATH).
# Both kernels: on the H200, scan forward + backward 1.36 -> 1.30 ms a layer at k=4, 2.12 -> 2.04 at
# k=8, 3.17 -> 3.04 at the fine-tune shape; whole steps k=4 0.718 -> 0.729x (within the run to run
# spread), fine-tune 0.474 -> 0.489x (bench/results/triton_scan_fast_math_h200.txt, bench/README.md,
# session 16). "" restores the precise
# log2 and divides; "bwd" the backward alone (a backward whose dt differs from the forward's in the
# last bits recomputes the states as closely).
TILES = {"fwd": (32, 1), "bwd": (32, 1), "steps": 8, "unroll": 1, "stages": 1, "bwd_maxnreg": 168, "bwd_kernel": None,
         "sums": "atomic", "fwd_l2_ahead": (2, 512), "fast_math": "fwd+bwd"}
REGISTERS: dict[str, int | None] = {}  # registers per thread of the last launch of each kernel (bench/)


class WithConstants:
    """A backward kernel launched with some constexprs fixed (they override the launcher's):
    ``WithConstants(k, STAGES=2)[grid](...)``. What scan_backward reads of it: work_states, the
    (BD, N) tiles a step of the global work buffer it allocates (0: a_t h_{t-1} in shared memory,
    1: a_t h_{t-1}, 2: and a_t), and work_rows, its (BD,) rows a step (dy; with KEEP_DT also dt and
    softplus' slope); fp32_bc, whether to pass B and C converted to fp32; pack_bc, whether to let
    the kernel read bf16 B and C as words of two states (PACKED_BC) where their layout allows."""

    def __init__(self, kernel, fp32_bc: bool = False, pack_bc: bool = False, **constants):
        self.kernel, self.constants, self.fp32_bc, self.pack_bc = kernel, constants, fp32_bc, pack_bc
        self.work_states = 2 if constants.get("KEEP_A") else 0 if constants.get("SMEM_WORK") else 1
        self.work_rows = 3 if constants.get("KEEP_DT") else 1

    def __getitem__(self, grid):
        launch = self.kernel[grid]
        return lambda *args, **kwargs: launch(*args, **(kwargs | self.constants))


def _hopper(device: torch.device) -> bool:
    """An NVIDIA GPU of compute capability 9.x (H100, H200: 228 KB of shared memory an SM)."""
    return torch.version.hip is None and torch.cuda.get_device_capability(device)[0] == 9


@functools.lru_cache(maxsize=16)
def default_backward(device_type: str, interpreted: bool, channels: int = 32, d_state: int = 16,
                     hopper: bool = True):
    """The scan backward starx launches: the Gluon kernel (starx.ops._gluon_scan_kernels, one
    channel a lane, the tile's a_t h_{t-1} in shared memory, dt kept and the loads a step ahead
    clamped: KEEP_DT, CLAMP; 0.80x scan_bwd's time at k=4 on an H200 before those two, which took
    3-4% more off; bf16 B and C read as words of two states where their layout allows, and each
    tile's adjoint sweep starting from the recompute sweep's last loads: pack_bc, CARRY_LAST,
    another 3-4% at every STAR shape, bench/results/scan_bwd_packed_carry_h200.txt) on Hopper
    GPUs where this Triton has Gluon and the program's channels fill whole warps with d_state 16
    (its layouts' shape), else scan_bwd: Triton's CPU interpreter (which does not
    run Gluon), a Triton older than 3.5, other shapes, and other GPUs, where it was not measured
    (with less shared memory an SM, fewer of its 19 KB programs fit: on an A100, 8 where scan_bwd
    fits 12)."""
    from starx.ops._triton_scan_kernels import scan_bwd

    if device_type != "cuda" or interpreted or channels % 32 or d_state != 16 or not hopper:
        return scan_bwd
    try:
        from starx.ops._gluon_scan_kernels import scan_bwd_rows
    except Exception:  # no Gluon, or another API: the plain Triton backward
        return scan_bwd
    return WithConstants(scan_bwd_rows, pack_bc=True, STAGES=2, SMEM_WORK=True, SMEM_DY=False, KEEP_A=False,
                         KEEP_DT=True, CLAMP=True, CARRY_LAST=True)


def _default_backward_on(device: torch.device, channels: int = 32, d_state: int = 16):
    """default_backward for tensors on ``device``."""
    return default_backward(device.type, os.environ.get("TRITON_INTERPRET") == "1", channels, d_state,
                            device.type == "cuda" and _hopper(device))


def backward_name() -> str:
    """Which backward the scan launches on this machine's GPU (``starx doctor``)."""
    k = _default_backward_on(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return "gluon (one channel a lane, shared-memory tile)" if isinstance(k, WithConstants) else "triton (scan_bwd)"


def _block_channels(channels_per_group: int, wanted: int) -> int:
    """The largest power of two <= wanted that divides one group's channels (a program's
    channels must share one group's B and C)."""
    bd = wanted
    while bd > 1 and channels_per_group % bd:
        bd //= 2
    return bd


def _register_cap(maxnreg: int | None) -> dict:
    """Launch option capping registers a thread (ptxas spills the rest): fewer registers fit more
    programs on a multiprocessor, and each program runs the whole sequence, so all of them
    should be resident at once (bench/README.md). None: ptxas decides."""
    return {} if maxnreg is None else {"maxnreg": maxnreg}


def _grouped(t: Tensor) -> Tensor:
    return t.unsqueeze(1) if t.dim() == 3 else t


def _like_layout(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A new (b, d, l) tensor laid out as t: channel-last where t is, else contiguous."""
    if t.stride(1) == 1 and t.shape[1] > 1:
        return torch.empty((t.shape[0], t.shape[2], t.shape[1]), device=t.device, dtype=dtype).transpose(1, 2)
    return torch.empty(t.shape, device=t.device, dtype=dtype)


def _bdl(t: Tensor) -> tuple[int, int, int]:
    """Strides (batch, time, channel) of a (b, d, l) tensor."""
    return t.stride(0), t.stride(2), t.stride(1)


def _bgln(t: Tensor) -> tuple[int, int, int, int]:
    """Strides (batch, group, time, state) of a (b, g, n, l) tensor."""
    return t.stride(0), t.stride(1), t.stride(3), t.stride(2)


def _fp32_steps(t: Tensor) -> Tensor:
    """(b, g, n, l) -> the same values in fp32, each step's n states contiguous (for a backward
    candidate that reads B and C in fp32: bench/scan_bwd_rows.py)."""
    return t.transpose(2, 3).to(torch.float32, memory_format=torch.contiguous_format).transpose(2, 3)


def _packable(t: Tensor) -> bool:
    """Whether a bf16 (b, g, n, l) B or C can be read as words of two adjacent states: n
    contiguous and every other stride and the offset even (x_proj's output, dt_rank even)."""
    return (t.dtype == torch.bfloat16 and t.stride(2) == 1 and t.storage_offset() % 2 == 0
            and all(s % 2 == 0 for s in (t.stride(0), t.stride(1), t.stride(3))) and t.shape[2] % 2 == 0)


def _reset_rows(reset: Tensor | None) -> tuple[Tensor | None, int]:
    """reset as (b, l) or (l,) (shared by the batch) -> (tensor, batch stride)."""
    if reset is None:
        return None, 0
    return reset, (reset.stride(0) if reset.dim() == 2 else 0)


def _check(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, reset: Tensor | None) -> None:
    b, d, L = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (b, d, l); got {tuple(u.shape)}, {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != d or A.is_complex():
        raise ValueError(f"A must be real (d={d}, n); got {tuple(A.shape)} {A.dtype}")
    n = A.shape[1]
    if n & (n - 1):
        raise ValueError(f"the Triton scan needs a power-of-two d_state; got {n}")
    if B.dim() != 4 or B.shape[0] != b or B.shape[2:] != (n, L) or C.shape != B.shape or d % B.shape[1]:
        raise ValueError(f"B and C must be (b, n, l) or (b, g, n, l) with g dividing d={d}; got "
                         f"{tuple(B.shape)}, {tuple(C.shape)}")
    if reset is not None and (reset.dim() not in (1, 2) or reset.shape[-1] != L):
        raise ValueError(f"reset must be (l,) or (b, l) with l={L}; got {tuple(reset.shape)}")


def _l2_ahead(u: Tensor, L: int) -> int:
    """scan_fwd's L2_AHEAD for a sequence of L steps: TILES["fwd_l2_ahead"] = (steps ahead, from
    which length), 0 (off) for shorter sequences, off the GPU, and in Triton's CPU interpreter
    (which cannot run the prefetch's inline PTX)."""
    ahead, min_len = TILES["fwd_l2_ahead"]
    if L < min_len or not _nvidia_compiled(u):
        return 0
    return ahead


def _nvidia_compiled(u: Tensor) -> bool:
    """Whether the kernels for ``u`` compile for an NVIDIA GPU, so may use its own instructions
    (inline PTX, libdevice's approximations): not off the GPU, on ROCm, or in Triton's CPU interpreter."""
    return u.device.type == "cuda" and not torch.version.hip and os.environ.get("TRITON_INTERPRET") != "1"


def fast_math_in(kernel: str, setting: str) -> bool:
    """Whether a TILES["fast_math"] ``setting`` ("", "bwd", "fwd+bwd", ...) names ``kernel`` ("fwd" or "bwd")."""
    return kernel in setting.split("+")


def _fast_math(u: Tensor, kernel: str) -> int:
    """FAST_MATH for ``kernel`` ("fwd" or "bwd"): 0 unless TILES["fast_math"] names it; 1 on
    NVIDIA GPUs; 2 (the series, with the precise log2 and divides) in Triton's CPU interpreter and
    on ROCm, which have no such approximations to call."""
    if not fast_math_in(kernel, TILES["fast_math"]):
        return 0
    return 1 if _nvidia_compiled(u) else 2


def scan_forward(u, delta, A, B, C, D, z, delta_bias, reset, delta_softplus: bool, save_states: bool):
    """Launch the forward kernel: (out (b, d, l) in u's dtype and layout, states
    (b, tiles, d, n) fp32, or an empty tensor without save_states). B, C: (b, g, n, l), any strides."""
    from starx.ops._triton_scan_kernels import scan_fwd

    b, d, L = u.shape
    n, groups = A.shape[1], B.shape[1]
    bd, warps = TILES["fwd"]
    bd, T = _block_channels(d // groups, bd), TILES["steps"]
    out = _like_layout(u, u.dtype)
    states = u.new_empty((b, -(-L // T), d, n) if save_states else (0,), dtype=torch.float32)
    reset, sr_b = _reset_rows(reset)
    zz = z if z is not None else u
    kernel = scan_fwd[(d // bd, b)](
        u, delta, zz, out, A, D if D is not None else A, delta_bias if delta_bias is not None else A, B, C,
        reset if reset is not None else u, states, L, d // groups, d,
        *_bdl(u), *_bdl(delta), *_bdl(zz), *_bdl(out), *_bgln(B), *_bgln(C), sr_b,
        N=n, BD=bd, T=T, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=delta_softplus, HAS_RESET=reset is not None, SAVE_STATES=save_states,
        UNROLL=TILES["unroll"], STAGES=TILES["stages"], L2_AHEAD=_l2_ahead(u, L), FAST_MATH=_fast_math(u, "fwd"),
        num_warps=warps,
    )  # fmt: skip
    REGISTERS["fwd"] = getattr(kernel, "n_regs", None)
    return out, states


def sums_layout(b: int, d: int, groups: int, L: int, n: int) -> tuple[dict[str, tuple[int, tuple[int, ...]]], int]:
    """Where the scan backward's summed gradients sit in its one fp32 buffer: ({name: (offset,
    shape)}, the buffer's size), dB and dC as (b, g, L, n) (their (b, g, n, l) views are
    transposes), dD and dbias always present."""
    shapes = {"dB": (b, groups, L, n), "dC": (b, groups, L, n), "dA": (d, n), "dD": (d,), "dbias": (d,)}
    out, offset = {}, 0
    for name, shape in shapes.items():
        out[name] = (offset, shape)
        offset += math.prod(shape)
    return out, offset


def split_sums(sums: Tensor, b: int, d: int, groups: int, L: int, n: int) -> tuple[Tensor, ...]:
    """(dA, dB, dC, dD, dbias) as fp32 views of the backward's buffer, dB and dC (b, g, n, l)."""
    layout, _ = sums_layout(b, d, groups, L, n)
    views = {k: sums[o : o + math.prod(sh)].view(sh) for k, (o, sh) in layout.items()}
    return views["dA"], views["dB"].transpose(2, 3), views["dC"].transpose(2, 3), views["dD"], views["dbias"]


def scan_backward(u, delta, A, B, C, D, z, delta_bias, reset, states, dout, delta_softplus: bool):
    """Launch the backward kernel: (du, ddelta, sums, dz), du, ddelta and dz laid out as u (dz an
    empty tensor without z), sums one flat fp32 buffer of the gradients summed over the batch and
    channels (``split_sums`` views dA, dB, dC, dD, ddelta_bias in it).

    Why one buffer: the atomic sums start from zeros, so one fill a layer instead of five, and the
    casts of dB and dC to B's dtype happen outside the op, where Inductor fuses them into their
    consumers (the op's outputs may not alias one another, so its views are taken by the caller)."""
    b, d, L = u.shape
    n, groups = A.shape[1], B.shape[1]
    bd, warps = TILES["bwd"]
    bd, T = _block_channels(d // groups, bd), TILES["steps"]
    if states.shape[1] != -(-L // T):
        raise ValueError(f"saved states cover {states.shape[1]} tiles; {L} steps in tiles of {T} need {-(-L // T)}")
    f32 = torch.float32
    blocks = d // bd
    du, ddelta = _like_layout(u, u.dtype), _like_layout(u, delta.dtype)
    dz = _like_layout(u, z.dtype) if z is not None else u.new_empty(0)
    kernel = TILES["bwd_kernel"] or _default_backward_on(u.device, bd, n)
    atomic = TILES["sums"] == "atomic" and not torch.are_deterministic_algorithms_enabled()
    if atomic:  # every block of a group adds into the group's dB / dC, every sequence into dA / dD / dbias
        sums = torch.zeros(sums_layout(b, d, groups, L, n)[1], device=u.device, dtype=f32)
        dA, dB, dC, dD, dbias = split_sums(sums, b, d, groups, L, n)
        dB, dC = dB.transpose(2, 3), dC.transpose(2, 3)  # the kernel's (b, g, L, n)
    else:  # one partial sum a channel block / a sequence, added up below
        dB = torch.empty((b, blocks, L, n), device=u.device, dtype=f32)
        dC = torch.empty((b, blocks, L, n), device=u.device, dtype=f32)
        dA = torch.empty((b, d, n), device=u.device, dtype=f32)
        dD = torch.empty((b, d), device=u.device, dtype=f32)
        dbias = torch.empty((b, d), device=u.device, dtype=f32)
    Bk, Ck = (_fp32_steps(B), _fp32_steps(C)) if getattr(kernel, "fp32_bc", False) else (B, C)
    packed = {"PACKED_BC": _packable(Bk) and _packable(Ck)} if getattr(kernel, "pack_bc", False) else {}
    # per program: a_t h_{t-1} and dy for a tile (a candidate may keep more a step: work_states, work_rows)
    per_step = n * getattr(kernel, "work_states", 1) + getattr(kernel, "work_rows", 1)
    work = torch.empty((b, blocks, T * bd * per_step), device=u.device, dtype=f32)
    reset, sr_b = _reset_rows(reset)
    zz = z if z is not None else u
    kernel = kernel[(blocks, b)](
        u, delta, zz, dout, A, D if D is not None else A, delta_bias if delta_bias is not None else A, Bk, Ck,
        reset if reset is not None else u, states, work,
        du, ddelta, dz if z is not None else du, dB, dC, dA, dD, dbias, L, d // groups, d,
        *_bdl(u), *_bdl(delta), *_bdl(zz), *_bdl(dout), *_bgln(Bk), *_bgln(Ck), sr_b,
        *_bdl(du), dB.stride(0), dB.stride(2), work.stride(1),
        N=n, BD=bd, T=T, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=delta_softplus, HAS_RESET=reset is not None, UNROLL=TILES["unroll"], STAGES=TILES["stages"],
        ATOMIC_SUMS=atomic, FAST_MATH=_fast_math(u, "bwd"), num_warps=warps, **_register_cap(TILES["bwd_maxnreg"]), **packed,
    )  # fmt: skip
    REGISTERS["bwd"] = getattr(kernel, "n_regs", None)
    if not atomic:  # the partials added up, into the same layout as the atomic path's buffer
        per_group = lambda t: t.view(b, groups, blocks // groups, L, n).sum(2)  # noqa: E731
        sums = torch.cat([per_group(dB).reshape(-1), per_group(dC).reshape(-1)]
                         + [t.sum(0).reshape(-1) for t in (dA, dD, dbias)])
    return du, ddelta, sums, dz


@torch.library.custom_op("starx::triton_scan_fwd", mutates_args=())
def triton_scan_fwd(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
    delta_bias: Tensor | None, reset: Tensor | None, delta_softplus: bool, save_states: bool,
) -> tuple[Tensor, Tensor]:
    """(out, states saved for the backward or an empty tensor). B, C: (b, g, n, l)."""
    return scan_forward(u, delta, A, B, C, D, z, delta_bias, reset, delta_softplus, save_states)


@triton_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, reset, delta_softplus, save_states):
    b, d, L = u.shape
    n_tiles = -(-L // TILES["steps"])
    states = u.new_empty((b, n_tiles, d, A.shape[1]) if save_states else (0,), dtype=torch.float32)
    return _like_layout(u, u.dtype), states


@torch.library.custom_op("starx::triton_scan_bwd", mutates_args=())
def triton_scan_bwd(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
    delta_bias: Tensor | None, reset: Tensor | None, states: Tensor, dout: Tensor, delta_softplus: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(du, ddelta, sums, dz): ``scan_gradients`` makes the inputs' gradients of them."""
    return scan_backward(u, delta, A, B, C, D, z, delta_bias, reset, states, dout, delta_softplus)


@triton_scan_bwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, reset, states, dout, delta_softplus):
    b, d, L = u.shape
    n, g = A.shape[1], B.shape[1]
    return (_like_layout(u, u.dtype), _like_layout(u, delta.dtype),
            u.new_empty(sums_layout(b, d, g, L, n)[1], dtype=torch.float32),
            _like_layout(u, z.dtype) if z is not None else u.new_empty(0))


def scan_gradients(u, delta, A, B, C, D, z, delta_bias, reset, states, dout, delta_softplus: bool) -> tuple:
    """The backward op's results as the inputs' gradients, each in its input's dtype (None for an
    absent input): (du, ddelta, dA, dB, dC, dD, ddelta_bias, dz)."""
    du, ddelta, sums, dz = triton_scan_bwd(u, delta, A, B, C, D, z, delta_bias, reset, states, dout, delta_softplus)
    dA, dB, dC, dD, dbias = split_sums(sums, u.shape[0], u.shape[1], B.shape[1], u.shape[2], A.shape[1])
    return (du, ddelta, dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype), dD.to(D.dtype) if D is not None else None,
            dbias.to(delta_bias.dtype) if delta_bias is not None else None, dz if z is not None else None)


def _setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, delta_bias, reset, delta_softplus, _ = inputs
    ctx.delta_softplus = delta_softplus
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, reset, output[1])


def _backward(ctx, grad_out, _grad_states):
    u, delta, A, B, C, D, z, delta_bias, reset, states = ctx.saved_tensors
    if states.numel() == 0:
        raise RuntimeError("the Triton scan's forward ran without saving states (no input needed a gradient)")
    du, ddelta, dA, dB, dC, dD, dbias, dz = scan_gradients(
        u, delta, A, B, C, D, z, delta_bias, reset, states, grad_out, ctx.delta_softplus
    )
    return du, ddelta, dA, dB, dC, dD, dz, dbias, None, None, None


triton_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def scan_arguments(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                   delta_bias: Tensor | None, reset: Tensor | None) -> tuple:
    """The scan ops' arguments checked and as they take them: (A, B, C, D, delta_bias, reset)
    with B and C grouped (b, g, n, l), reset int8, A, D and delta_bias contiguous."""
    B, C = _grouped(B), _grouped(C)
    _check(u, delta, A, B, C, reset)
    if reset is not None:
        reset = reset.to(torch.int8).contiguous()
    A, D, delta_bias = (None if t is None else t.contiguous() for t in (A, D, delta_bias))
    return A, B, C, D, delta_bias, reset


def selective_scan_triton(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, z: Tensor | None = None,
    delta_bias: Tensor | None = None, delta_softplus: bool = False, reset: Tensor | None = None,
) -> Tensor:
    """``selective_scan_fn``'s arguments and layouts (B, C (b, n, l) or grouped (b, g, n, l)), on
    the Triton kernels, plus ``reset`` ((l,) or (b, l), nonzero = the state restarts at that step)."""
    A, B, C, D, delta_bias, reset = scan_arguments(u, delta, A, B, C, D, delta_bias, reset)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias))
    out, _ = triton_scan_fwd(u, delta, A, B, C, D, z, delta_bias, reset, delta_softplus, needs_grad)
    return out


__all__ = ["TILES", "scan_arguments", "scan_backward", "scan_forward", "scan_gradients", "selective_scan_triton",
           "split_sums", "triton_error"]
