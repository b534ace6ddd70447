"""The ``launch:`` section of a spec: where a run goes and, for SLURM, how it is submitted.

Typed once here (dataclasses usable with ``OmegaConf.structured``); the spec schema
embeds ``launch: LaunchConfig = field(default_factory=LaunchConfig)``.

```yaml
launch:
  kind: slurm            # local (this process) | subprocess (submitit local job) | slurm
  folder: ""             # submitit logs/pickles; "" -> <run_dir>/launch
  slurm:
    partition: gpu
    nodes: 1
    gpus_per_node: 4     # one task per GPU unless tasks_per_node is given
    cpus_per_task: 8
    mem_gb: 200
    timeout_min: 1440
    signal_delay_s: 120  # SIGUSR2 this long before the time limit -> checkpoint + requeue
    max_requeues: 5
    setup: ["module load cuda/12.4"]
    additional_parameters: {exclusive: "", mail-type: END}
```

Dotted overrides work as usual: ``launch=slurm`` is not a dotted key, so use
``launch.kind=slurm launch.slurm.gpus_per_node=8``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Optional


class LaunchKind(StrEnum):
    """Where a run executes. Member names equal their values, so YAML reads ``kind: slurm``."""

    local = "local"  # run_job in the calling process; blocks until done
    subprocess = "subprocess"  # a submitit LocalExecutor job (separate process, same machine)
    slurm = "slurm"  # a submitit AutoExecutor/SlurmExecutor job


@dataclass
class SlurmConfig:
    """sbatch settings of ``launch.kind: slurm`` (submitit)."""

    partition: Optional[str] = None  # sbatch --partition
    account: Optional[str] = None  # sbatch --account
    qos: Optional[str] = None  # sbatch --qos
    nodes: int = 1  # nodes per job (one task per GPU on each)
    gpus_per_node: int = 0  # GPUs per node (sbatch --gpus-per-node)
    # None -> one task per GPU (gpus_per_node), or 1 on CPU-only jobs.
    tasks_per_node: Optional[int] = None
    cpus_per_task: int = 4  # CPU cores per task (data loading threads come from here)
    mem_gb: Optional[int] = None  # None -> the partition's default
    timeout_min: int = 60  # time limit of one job; the run requeues itself past it
    constraint: Optional[str] = None  # sbatch --constraint
    # SLURM sends SIGUSR2 this many seconds before the time limit (sbatch --signal).
    signal_delay_s: int = 120
    # How many times a job may requeue itself after a timeout or preemption
    # (submitit's max_num_timeout).
    max_requeues: int = 3
    # Shell lines run in the sbatch script before the job starts (module load, source venv, ...).
    setup: list[str] = field(default_factory=list)
    # Escape hatch: extra sbatch flags without the leading dashes, e.g. {"mail-type": "END"};
    # an empty value gives a bare flag ({"exclusive": ""} -> --exclusive).
    additional_parameters: dict[str, str] = field(default_factory=dict)
    job_name: Optional[str] = None  # None -> "starx-<experiment>"


@dataclass
class SubprocessConfig:
    """A submitit local job: a separate process on this machine, logs in ``folder``."""

    tasks_per_node: int = 1  # >1 starts that many processes with torch.distributed env vars (DDP on one machine)
    # GPUs the job sees (CUDA_VISIBLE_DEVICES), its own in a sweep (starx.launch.gpus: a pool from STARX_GPUS,
    # else CUDA_VISIBLE_DEVICES, else every GPU); a single run takes the first of STARX_GPUS / CUDA_VISIBLE_DEVICES
    # when set. 0 = none
    gpus_per_node: int = 0
    timeout_min: int = 24 * 60  # the process is stopped after this long
    max_requeues: int = 3  # restarts after a timeout or preemption


@dataclass
class LaunchConfig:
    """Where a run executes."""

    kind: LaunchKind = LaunchKind.local  # local (this process) | subprocess (submitit, this machine) | slurm
    folder: str = ""  # submitit logs and job files; "" -> <run_dir>/launch
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    subprocess: SubprocessConfig = field(default_factory=SubprocessConfig)


class LaunchConfigError(ValueError):
    """An inconsistent launch section (the value types themselves are checked by OmegaConf)."""


def tasks_per_node(slurm: SlurmConfig) -> int:
    """The number of tasks per node actually requested."""
    if slurm.tasks_per_node is not None:
        return int(slurm.tasks_per_node)
    return max(1, int(slurm.gpus_per_node))


def validate(launch) -> None:
    """Cross-field checks on a (structured or plain) launch config; raises LaunchConfigError.

    Messages name the field path (``launch.slurm.nodes``) so the spec loader can pass them on.
    """
    kind = LaunchKind(getattr(launch.kind, "value", launch.kind))
    s = launch.slurm
    checks = [
        (s.nodes >= 1, "launch.slurm.nodes must be >= 1"),
        (s.gpus_per_node >= 0, "launch.slurm.gpus_per_node must be >= 0"),
        (s.tasks_per_node is None or s.tasks_per_node >= 1, "launch.slurm.tasks_per_node must be >= 1"),
        (s.cpus_per_task >= 1, "launch.slurm.cpus_per_task must be >= 1"),
        (s.mem_gb is None or s.mem_gb > 0, "launch.slurm.mem_gb must be > 0"),
        (s.timeout_min >= 1, "launch.slurm.timeout_min must be >= 1"),
        (s.signal_delay_s >= 0, "launch.slurm.signal_delay_s must be >= 0"),
        (
            s.signal_delay_s < s.timeout_min * 60 or kind is not LaunchKind.slurm,
            "launch.slurm.signal_delay_s must be shorter than launch.slurm.timeout_min",
        ),
        (s.max_requeues >= 0, "launch.slurm.max_requeues must be >= 0"),
        (launch.subprocess.tasks_per_node >= 1, "launch.subprocess.tasks_per_node must be >= 1"),
        (launch.subprocess.timeout_min >= 1, "launch.subprocess.timeout_min must be >= 1"),
        (launch.subprocess.max_requeues >= 0, "launch.subprocess.max_requeues must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise LaunchConfigError(msg)
    if (
        s.tasks_per_node is not None
        and s.gpus_per_node > 0
        and s.tasks_per_node not in (1, s.gpus_per_node)
    ):
        raise LaunchConfigError(
            "launch.slurm.tasks_per_node must be 1 or equal to launch.slurm.gpus_per_node "
            f"(got {s.tasks_per_node} tasks for {s.gpus_per_node} GPUs)"
        )
    for key in s.additional_parameters:
        if str(key).startswith("-"):
            raise LaunchConfigError(
                f"launch.slurm.additional_parameters: write {str(key).lstrip('-')!r} without dashes"
            )
