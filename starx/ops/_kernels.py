"""Lazy loading of the CUDA kernels (mamba-ssm, causal-conv1d).

This is the only module of starx that imports ``mamba_ssm`` or ``causal_conv1d``; it does so
on first use, never at import time, so CPU installs work without them.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from starx.choices import Backend

log = logging.getLogger(__name__)

# The backend names are declared once, in starx.choices.Backend (torch-free: the spec reads them too).
BACKENDS: tuple[str, ...] = tuple(b.value for b in Backend)

INSTALL_HINT = (
    "install the kernels on a CUDA machine, after torch: "
    "MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE "
    "pip install --no-build-isolation mamba-ssm==2.3.2.post1 causal-conv1d==1.7.0"
)


# starx's build of mamba-ssm (scripts/gpu_kernels/build_mamba_ssm.sh, version "+starx.scan")
# reads this once, at its first scan: "auto" runs each length > 256 in the chunk shape with the
# least padded length x measured cost (e.g. STAR's 624-token k=4 sequence as one 768-token chunk
# instead of 1024: -20% scan time, bench/results/scan_configs_h100.jsonl). A value already in
# the environment wins; the stock release ignores the variable.
SCAN_CONFIG_ENV = "MAMBA_SCAN_CONFIG"


class KernelUnavailableError(RuntimeError):
    """The ``cuda`` backend was asked for but its kernels (or CUDA) cannot be used here."""


@dataclass(frozen=True)
class _Kernels:
    mamba_inner_fn: Any
    causal_conv1d_fn: Any
    layer_norm_fn: Any  # mamba-ssm's Triton LayerNorm with a fused residual add
    selective_scan_cuda: Any  # the scan's extension module (fwd / bwd), for starx's custom op


def _try_import(module: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(module), None
    except Exception as e:  # ImportError, but also OSError / undefined symbols from a mismatched build
        return None, f"{type(e).__name__}: {e}"


@functools.lru_cache(maxsize=1)
def _import_errors() -> dict[str, str | None]:
    """Import each kernel package once; map distribution name -> error text (None = loads)."""
    _, cc_err = _try_import("causal_conv1d")
    _, ms_err = _try_import("mamba_ssm.ops.selective_scan_interface")
    return {"causal_conv1d": cc_err, "mamba_ssm": ms_err}


_LOADED: tuple[_Kernels | None, str | None] | None = None  # what _load found, once it has run


@torch.compiler.disable  # importing mamba_ssm under dynamo tracing fails (its lazy transformers imports)
def _load_now() -> None:
    global _LOADED
    os.environ.setdefault(SCAN_CONFIG_ENV, "auto")
    errors = _import_errors()
    failed = "; ".join(f"{name}: {err}" for name, err in errors.items() if err)
    if failed:
        _LOADED = None, failed
        return
    ssi = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    cc = importlib.import_module("causal_conv1d")
    ln = importlib.import_module("mamba_ssm.ops.triton.layer_norm")
    _LOADED = _Kernels(ssi.mamba_inner_fn, cc.causal_conv1d_fn, ln.layer_norm_fn,
                       importlib.import_module("selective_scan_cuda")), None


def _load() -> tuple[_Kernels | None, str | None]:
    """The kernels, or (None, error text); imported on first use.

    Under torch.compile this reads a plain global, which dynamo traces; only a first load
    during tracing would split the graph, so models load the kernels when built (preload_kernels).
    """
    if _LOADED is None:
        _load_now()
    return _LOADED


def preload_kernels() -> None:
    """Import the kernels now if CUDA is here, so that compiled code finds them already loaded."""
    if torch.cuda.is_available():
        _load()


def kernels_or_raise() -> _Kernels:
    """The loaded kernels, or KernelUnavailableError saying why and how to fix it."""
    if not torch.cuda.is_available():
        raise KernelUnavailableError(
            "backend 'cuda' needs a CUDA device, and torch.cuda.is_available() is False here; "
            "use backend='torch' (pure-PyTorch twin) or 'auto'"
        )
    kernels, err = _load()
    if kernels is None:
        raise KernelUnavailableError(
            f"backend 'cuda' needs mamba-ssm and causal-conv1d, which failed to import ({err}); "
            f"{INSTALL_HINT}"
        )
    return kernels


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def use_cuda_kernels(backend: str, *tensors: torch.Tensor | None) -> bool:
    """Whether an op other than the scan (conv, add + LayerNorm) runs mamba-ssm / causal-conv1d's
    kernel (True) or its torch twin (False) for these tensors.

    ``cuda`` raises if the kernels can't be used (never a silent fallback); ``auto`` and
    ``triton`` use them when the tensors are on CUDA and they import (where the backend resolves to
    triton, the scan and the channel-last conv are starx's own Triton kernels instead).
    """
    check_backend(backend)
    if backend == "torch":
        return False
    on_cuda = all(t is None or t.is_cuda for t in tensors)
    if backend == "cuda":
        kernels_or_raise()
        if not on_cuda:
            raise KernelUnavailableError("backend 'cuda' was given tensors that are not on a CUDA device")
        return True
    return on_cuda and torch.cuda.is_available() and _load()[0] is not None


# (a constant to torch.compile: dynamo calls it once while tracing instead of tracing through
# triton_error's lru_cache, which it warns about at every compile)
@torch.compiler.assume_constant_result
def _triton_error() -> str | None:
    from starx.ops.triton_scan import triton_error

    return triton_error()


def _triton_backward() -> str:
    from starx.ops.triton_scan import backward_name

    return backward_name()


def triton_or_raise() -> None:
    """Raise KernelUnavailableError unless starx's Triton scan can run here."""
    if not torch.cuda.is_available():
        raise KernelUnavailableError(
            "backend 'triton' needs a CUDA device, and torch.cuda.is_available() is False here; "
            "use backend='torch' (pure-PyTorch twin) or 'auto'"
        )
    err = _triton_error()
    if err is not None:
        raise KernelUnavailableError(f"backend 'triton' needs Triton: {err}")


def scan_backend(backend: str, *tensors: torch.Tensor | None) -> str:
    """Which selective scan (and so which mixer layout) runs for these tensors: ``triton``,
    ``cuda`` or ``torch``. ``cuda`` and ``triton`` raise where they can't run (never a silent
    fallback); ``auto`` takes the first of triton, cuda that runs on CUDA tensors, else torch."""
    check_backend(backend)
    if backend == "torch":
        return "torch"
    on_cuda = all(t is None or t.is_cuda for t in tensors)
    if backend in ("cuda", "triton"):
        if backend == "cuda":
            kernels_or_raise()
        else:
            triton_or_raise()
        if not on_cuda:
            raise KernelUnavailableError(f"backend '{backend}' was given tensors that are not on a CUDA device")
        return backend
    if not (on_cuda and torch.cuda.is_available()):
        return "torch"
    if _triton_error() is None:
        return "triton"
    return "cuda" if _load()[0] is not None else "torch"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def scan_config_mode() -> str:
    """The scan chunking of the installed mamba-ssm: MAMBA_SCAN_CONFIG on starx's build (version
    "+starx.scan"), else "stock" (the release ignores the variable)."""
    version = _version("mamba-ssm") or _version("mamba_ssm")
    if version is None or "+starx.scan" not in version:
        return "stock"
    return os.environ.get(SCAN_CONFIG_ENV) or "stock"


def kernel_status() -> dict[str, Any]:
    """What loads here, for ``starx doctor``.

    Keys: torch, cuda_available, cuda_version, device (name or None), mamba_ssm and
    causal_conv1d (installed versions or None), mamba_ssm_error and causal_conv1d_error (import
    error text or None), kernels_ok (bool), error (combined error text or None), scan_config
    (the scan chunking in use: MAMBA_SCAN_CONFIG on starx's build, else "stock"), torch_twin
    (always True: the pure-PyTorch ops need nothing else), triton (version or None) and
    triton_error (why starx's Triton scan can't run, or None), triton_scan_backward (the kernel
    of its backward on this GPU, or None), auto_backend (the scan ``auto``
    picks for CUDA tensors here), install_hint (None when the kernels load).
    """
    cuda = torch.cuda.is_available()
    kernels, err = _load()
    errors = _import_errors()
    return {
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else None,
        "mamba_ssm": _version("mamba-ssm") or _version("mamba_ssm"),
        "causal_conv1d": _version("causal-conv1d") or _version("causal_conv1d"),
        "mamba_ssm_error": errors["mamba_ssm"],
        "causal_conv1d_error": errors["causal_conv1d"],
        "kernels_ok": kernels is not None,
        "error": err,
        "scan_config": scan_config_mode(),
        "torch_twin": True,
        "triton": _version("triton"),
        "triton_error": _triton_error(),
        "triton_scan_backward": _triton_backward() if cuda and _triton_error() is None else None,
        "auto_backend": scan_backend("auto", torch.empty(0, device="cuda")) if cuda else "torch",
        "install_hint": None if kernels is not None else INSTALL_HINT,
    }
