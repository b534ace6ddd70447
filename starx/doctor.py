"""``starx doctor``: versions and what loads here, each with the fix for what is missing.

Each check returns (component, ok, details): ok is True (works), None (optional and absent)
or False (present but broken, or required and absent).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import shutil
import subprocess
from typing import Iterator, Optional

Check = tuple[str, Optional[bool], str]

CUDA_FIX = ("MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE pip install --no-build-isolation "
            "mamba-ssm==2.3.2.post1 causal-conv1d==1.7.0   (on a GPU node with nvcc; see README 'GPU clusters')")


def _version(module: str) -> tuple[bool, str]:
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure is what we report
        return False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    try:  # the installed distribution's version: ffcv 1.0.2's own __version__ still says 0.0.3rc1
        return True, importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return True, str(getattr(mod, "__version__", "installed"))


def checks() -> Iterator[Check]:
    yield "python", True, platform.python_version()
    ok, torch_version = _version("torch")
    yield "torch", ok, torch_version if ok else f"{torch_version}; fix: bash scripts/install.sh"
    if ok:
        import torch

        if torch.cuda.is_available():
            yield "cuda", True, f"{torch.version.cuda}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
        else:
            yield "cuda", None, "no CUDA device: training runs on CPU with the torch twin ops"
        from starx.ops import kernel_status

        status = kernel_status()
        for name in ("mamba_ssm", "causal_conv1d"):
            version = status.get(name)
            if version:
                scan = f", scan chunks: {status['scan_config']}" if name == "mamba_ssm" else ""
                yield f"kernels: {name}", True, f"{version}{scan}"
            else:
                err = status.get(f"{name}_error") or "not installed"
                yield f"kernels: {name}", None, f"{err}; fused CUDA path off; fix: {CUDA_FIX}"
        if status.get("triton_error") is None:
            yield ("kernels: triton scan + conv", True,
                   f"Triton {status.get('triton')}: starx's selective scan and causal conv (backend triton)"
                   + (f"; scan backward: {status['triton_scan_backward']}" if status.get("triton_scan_backward") else ""))
        else:
            yield "kernels: triton scan + conv", None, f"{status['triton_error']}; backend triton off"
        yield "ops: torch twin", True, "selective_scan and causal_conv1d in pure PyTorch (always available)"
        yield "backend auto", True, f"the scan 'auto' runs on CUDA tensors here: {status['auto_backend']}"
    for module, fix in (("ffcv", "apt-get install libturbojpeg0-dev libopencv-dev pkg-config; pip install ffcv==1.0.2"),
                        ("submitit", "pip install submitit"), ("optuna", "pip install optuna"),
                        ("timm", "pip install timm"), ("omegaconf", "pip install omegaconf")):
        ok, details = _version(module)
        yield module, ok, details if ok else f"{details}; fix: {fix}"
    yield from _slurm()


def _slurm() -> Iterator[Check]:
    if shutil.which("sbatch") is None:
        yield "slurm", None, "no sbatch on PATH: launch.kind=slurm unavailable here (local and subprocess work)"
        return
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        yield "slurm", False, f"scontrol ping failed: {e}"
        return
    text = (out.stdout + out.stderr).strip().splitlines()
    up = out.returncode == 0 and any("UP" in line for line in text)
    fix = "" if up else "; fix: start slurmctld (tests: bash scripts/slurm/start_local_cluster.sh)"
    yield "slurm", True if up else False, (text[0] if text else "no answer") + fix
