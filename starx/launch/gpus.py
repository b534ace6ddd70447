"""Which GPUs of this machine a local (submitit subprocess) job may use.

A sweep runs several trials at once on one machine; each trial in flight gets its own GPUs from
a pool, and ``CUDA_VISIBLE_DEVICES`` of its job names them (:class:`GpuPool`, used by
``starx.sweep.driver``). A single ``starx run launch.kind=subprocess`` takes the first
``launch.subprocess.gpus_per_node`` of the pool.

The pool, first match wins:

1. ``STARX_GPUS``: device ids separated by commas (``0,1,2,3``; ``GPU-<uuid>`` or ``MIG-...``
   ids too); empty or ``none`` for no GPUs. What a test or a user sharing the machine sets;
2. ``CUDA_VISIBLE_DEVICES`` of the process that launches (the driver's own restriction);
3. every GPU torch counts here (``torch.cuda.device_count()``, read only when a job asks for
   GPUs, so CPU sweeps never import torch); no torch: ``nvidia-smi -L``.

An empty pool (a machine without GPUs) places nothing: jobs are launched as before, seeing
the first ``gpus_per_node`` device indices.

``STARX_TRIALS_PER_GPU=N`` (default 1) lets N jobs share each GPU (small trials that leave a GPU
mostly idle): the pool hands out N slots a device, ``"<id>#<k>"``, spread over the devices first,
and a job's slots are always on distinct devices; ``CUDA_VISIBLE_DEVICES`` names the devices.
Stdlib only.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

log = logging.getLogger(__name__)

ENV_POOL = "STARX_GPUS"
ENV_PER_GPU = "STARX_TRIALS_PER_GPU"
CUDA_ENV = "CUDA_VISIBLE_DEVICES"
SLOT_SEP = "#"  # "<device id>#<k>": the k-th share of a device when several jobs share it


@dataclass(frozen=True)
class PoolSource:
    """The device ids of a pool and where they came from (for messages)."""

    ids: tuple[str, ...]
    source: str  # "STARX_GPUS" | "CUDA_VISIBLE_DEVICES" | "torch" | "nvidia-smi" | "none"

    def describe(self) -> str:
        ids = ",".join(self.ids) or "none"
        return f"{ids} (from {self.source})"


def parse_ids(text: Optional[str]) -> tuple[str, ...]:
    """'0, 1,GPU-ab' -> ('0', '1', 'GPU-ab'); '' / 'none' / None -> (). Duplicates are dropped."""
    if text is None:
        return ()
    text = text.strip()
    if text.lower() in ("", "none", "-1"):
        return ()
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return tuple(out)


def declared_pool(environ: Optional[dict] = None) -> Optional[PoolSource]:
    """The pool named by the environment (``STARX_GPUS``, else ``CUDA_VISIBLE_DEVICES``), or None
    when neither is set."""
    env = os.environ if environ is None else environ
    for name in (ENV_POOL, CUDA_ENV):
        if name in env:
            return PoolSource(parse_ids(env[name]), name)
    return None


def _count_gpus() -> tuple[int, str]:
    try:
        import torch

        return int(torch.cuda.device_count()), "torch"
    except Exception:  # noqa: BLE001 - no torch, or a broken CUDA install: ask the driver's tool
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return 0, "nvidia-smi"
        if out.returncode == 0:
            return sum(line.startswith("GPU ") for line in out.stdout.splitlines()), "nvidia-smi"
    return 0, "none"


def machine_pool(environ: Optional[dict] = None) -> PoolSource:
    """The declared pool, else every GPU this machine has (indices 0..n-1)."""
    declared = declared_pool(environ)
    if declared is not None:
        return declared
    n, source = _count_gpus()
    return PoolSource(tuple(str(i) for i in range(n)), source)


def device_of(slot: str) -> str:
    """The device id of a pool entry ("1#2" -> "1"; "1" -> "1")."""
    return str(slot).split(SLOT_SEP, 1)[0]


def trials_per_gpu(environ: Optional[dict] = None) -> int:
    """``STARX_TRIALS_PER_GPU`` (default 1): how many jobs may share one GPU of the pool."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_PER_GPU, "").strip()
    if not text:
        return 1
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{ENV_PER_GPU}={text!r}: expected a whole number >= 1 (jobs sharing one GPU)")
    return int(text)


class NotEnoughGpus(ValueError):
    """A job asks for more GPUs than the pool has at all (it could never start)."""


@dataclass
class GpuPool:
    """Pool entries handed out to jobs in flight: ``acquire(n)`` gives ``n`` free entries on
    distinct devices in pool order (or None while fewer are free), ``release`` gives them back,
    ``claim`` marks entries a job that was already running holds (a sweep driver re-attaching
    after a restart). An entry is a device id, or with ``per_device`` > 1 a slot "<id>#<k>"."""

    source: PoolSource
    in_use: dict[str, str] = field(default_factory=dict)  # entry -> holder (a trial's name)
    per_device: int = 1  # jobs that may share one device (STARX_TRIALS_PER_GPU)

    @property
    def ids(self) -> tuple[str, ...]:
        """The entries: each device once, or per_device slots a device, the devices' first slots first."""
        if self.per_device == 1:
            return self.source.ids
        return tuple(f"{d}{SLOT_SEP}{k}" for k in range(1, self.per_device + 1) for d in self.source.ids)

    def free(self) -> list[str]:
        return [d for d in self.ids if d not in self.in_use]

    def check(self, n: int) -> None:
        if n > len(self.source.ids):
            raise NotEnoughGpus(f"asks for {n} GPU{'s' if n != 1 else ''} (launch.subprocess.gpus_per_node) but the "
                                f"pool has {len(self.source.ids)}: {self.source.describe()}; set {ENV_POOL} to "
                                f"the GPUs starx may use, or ask for fewer")

    def acquire(self, n: int, holder: str) -> Optional[tuple[str, ...]]:
        self.check(n)
        picked: list[str] = []
        for entry in self.free():  # n entries on n distinct devices
            if device_of(entry) not in {device_of(e) for e in picked}:
                picked.append(entry)
            if len(picked) == n:
                break
        if len(picked) < n:
            return None
        got = tuple(picked)
        for d in got:
            self.in_use[d] = holder
        return got

    def claim(self, ids: Iterable[str], holder: str) -> list[str]:
        """Mark ``ids`` as held by ``holder``; returns the ids that another holder had already
        (a double booking the caller should report) ."""
        clash = []
        for d in ids:
            d = str(d)
            if self.in_use.get(d, holder) != holder:
                clash.append(d)
            self.in_use[d] = holder
        return clash

    def release(self, ids: Iterable[str], holder: str) -> None:
        for d in ids:
            if self.in_use.get(str(d)) == holder:
                del self.in_use[str(d)]

    def describe_use(self) -> str:
        return ", ".join(f"{d}: {self.in_use[d]}" for d in self.ids if d in self.in_use) or "none in use"


def single_job_gpus(n: int, environ: Optional[dict] = None) -> Optional[tuple[str, ...]]:
    """The GPUs of a job launched on its own (``starx run launch.kind=subprocess``): the first ``n``
    of the declared pool, or None (submitit's default, indices 0..n-1) when nothing is declared
    or the declared pool is empty. Raises NotEnoughGpus when the declared pool is too small."""
    if n <= 0:
        return None
    declared = declared_pool(environ)
    if declared is None or not declared.ids:
        return None
    GpuPool(declared).check(n)
    return declared.ids[:n]


def executor_gpu_parameters(gpus: Sequence[str]) -> tuple[dict, list[str]]:
    """submitit LocalExecutor parameters that make a job see exactly ``gpus``:
    ``({"gpus_per_node": n, "visible_gpus": (...)}, [])`` for integer indices; for other ids
    (GPU-<uuid>, MIG-...), which submitit's ``visible_gpus`` does not take, a setup line that
    exports CUDA_VISIBLE_DEVICES before the job's controller starts. Pool slots ("1#2") name
    their device ("1")."""
    gpus = [device_of(g) for g in gpus]
    if all(g.isdigit() for g in gpus):
        return {"gpus_per_node": len(gpus), "visible_gpus": tuple(int(g) for g in gpus)}, []
    return {"gpus_per_node": len(gpus)}, [f"export {CUDA_ENV}={shlex.quote(','.join(gpus))}"]
