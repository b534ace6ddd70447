"""torch.distributed from the environment (torchrun or submitit set RANK, WORLD_SIZE, ...).

One process per GPU; on CPU the gloo backend lets the same code run with several processes.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        # Launchers may leave every GPU visible to every task: pick this task's by local rank.
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if preference == "cuda":
        raise RuntimeError("field 'device': cuda was asked for but torch sees no CUDA device here")
    return torch.device("cpu")


def init(preference: str) -> DistInfo:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(preference, local_rank)
    if world_size > 1 and not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch_dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        log.info("distributed: rank %d of %d on %s (%s)", rank, world_size, device, backend)
    return DistInfo(rank, world_size, local_rank, device)


def describe_devices(info: DistInfo) -> dict:
    """Which devices this job uses, for result.json's ``devices``: the job's CUDA_VISIBLE_DEVICES
    and, per rank (gathered when several), its host (and SLURM node), device and on CUDA the GPU's
    name and uuid (``GPU-...``, as ``nvidia-smi -L`` prints it). Call on every rank."""
    import socket

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    me: dict = {"rank": info.rank, "host": socket.gethostname(), "device": str(info.device),
                "CUDA_VISIBLE_DEVICES": visible}
    if os.environ.get("SLURMD_NODENAME"):  # a SLURM node's name (several slurmd may share one host)
        me["slurm_node"] = os.environ["SLURMD_NODENAME"]
    if info.device.type == "cuda":
        props = torch.cuda.get_device_properties(info.device)
        me["name"] = props.name
        uuid = getattr(props, "uuid", None)
        if uuid is not None:
            me["uuid"] = f"GPU-{uuid}"
        if getattr(props, "pci_bus_id", None) is not None:
            me["pci_bus_id"] = int(props.pci_bus_id)
    ranks = [me]
    if torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
        ranks = [None] * torch_dist.get_world_size()
        torch_dist.all_gather_object(ranks, me)
    return {"CUDA_VISIBLE_DEVICES": visible, "ranks": ranks}


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
        value = value.clone()
        torch_dist.all_reduce(value)
        value /= torch_dist.get_world_size()
    return value


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on one (so all ranks stop at the same step)."""
    if not (torch_dist.is_initialized() and torch_dist.get_world_size() > 1):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(device: torch.device) -> None:
    """Wait until every rank gets here (e.g. until rank 0 has written a file the others read next)."""
    if torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
        torch_dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)


# A gloo worker thread frees a collective's work object (and the tensors it holds, which takes the
# GIL) just after the collective completes, so possibly after the caller has moved on. Should the
# interpreter be finalizing by then, CPython 3.11 ends that thread inside the destructor and
# std::terminate aborts the process ("terminate called without an active exception", rc -6) after a
# run that had finished. destroy_process_group does not join those threads while anything (DDP,
# torch's own caches) still holds the group, so shutdown gives them this long, GIL released.
_RETIRE_WORK_S = 0.2


def shutdown() -> None:
    """Leave the process group; call on every rank before the process exits."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()
        time.sleep(_RETIRE_WORK_S)
