"""The callable that submitit runs: the engine's ``run_job(run_dir)`` plus requeue on preemption.

Signal flow inside a submitit job (SLURM or local):

1. submitit's ``process_job`` installs its handlers: USR2 -> checkpoint-and-requeue,
   SIGTERM -> ignored (logged).
2. ``run_job`` (the engine) calls ``starx.train.signals.install()``, which routes USR1, USR2
   and SIGTERM to a flag; at the next step boundary the engine saves its checkpoint and
   raises ``Preempted(signame, step)``.
3. :class:`StarxJob` catches ``Preempted``:

   - USR1/USR2 (``sbatch --signal`` before the time limit, or ``scancel --signal=USR2``):
     the job requeues *itself* (``scontrol requeue``; locally exit code 144, which
     submitit's local controller restarts), through submitit's own checkpoint machinery,
     so the timeout countdown (``max_requeues``) is honoured;
   - SIGTERM (SLURM preemption with PreemptMode=REQUEUE, ``scontrol requeue``, or
     ``scancel``): SLURM already decided what happens next (requeue or cancel), so the
     job only exits; a requeued job starts again and ``run_job`` resumes from the checkpoint.

A signal that arrives before the engine installs its handlers (while torch imports) reaches
submitit's handlers: USR2 then also checkpoints (= resubmits this same callable) and requeues.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Protocol

from starx import _compat
from starx.rundir import RunLocked, write_failure

from . import scheduler

log = logging.getLogger(__name__)

DEFAULT_ENTRY = "starx.train.job:run_job"
SELF_REQUEUE_SIGNALS = ("SIGUSR1", "SIGUSR2")

__all__ = ["DEFAULT_ENTRY", "JobEnv", "StarxJob", "resolve_entry", "write_failure"]


class JobEnv(Protocol):
    """What StarxJob reads of ``submitit.JobEnvironment`` (tests pass a stand-in)."""

    job_id: str
    global_rank: int
    num_tasks: int
    cluster: str
    paths: Any


def resolve_entry(entry: str) -> Callable[[str], Any]:
    """'module:function' -> the function (the engine's run_job, or a test stand-in)."""
    module, _, name = entry.partition(":")
    fn = importlib.import_module(module)
    for part in name.split("."):
        fn = getattr(fn, part)
    return fn  # type: ignore[return-value]


def _preempted_cls():
    try:
        from starx.train.signals import Preempted
    except ImportError:  # pragma: no cover - the engine package is part of starx
        return ()
    return Preempted


class StarxJob:
    """Picklable job: ``StarxJob(run_dir)()`` runs the engine on that run directory.

    Implements submitit's Checkpointable protocol (``checkpoint`` returns a resubmission of
    the same call): the engine keeps its own state in ``run_dir/checkpoints``, so a requeued
    job simply calls ``run_job(run_dir)`` again and resumes.
    """

    def __init__(self, run_dir: str | Path, entry: str = DEFAULT_ENTRY):
        self.run_dir = str(run_dir)
        self.entry = entry
        self._start = time.time()

    def __repr__(self) -> str:
        return f"StarxJob({self.run_dir!r}, entry={self.entry!r})"

    # submitit Checkpointable protocol
    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(StarxJob(self.run_dir, self.entry))

    def __call__(self) -> Any:
        import submitit

        self._start = time.time()
        env = submitit.JobEnvironment()
        rank = env.global_rank
        if env.num_tasks > 1:
            # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE for env:// init.
            # CUDA_VISIBLE_DEVICES is left alone: the engine picks cuda:LOCAL_RANK.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        backend = "slurm" if env.cluster == "slurm" else "subprocess"
        job_id = str(env.job_id)
        if rank == 0:
            scheduler.record_event(self.run_dir, "start", job_id=job_id, backend=backend,
                                 restart=os.environ.get("SLURM_RESTART_COUNT"), pid=os.getpid(),
                                 tasks=env.num_tasks)
        fn = resolve_entry(self.entry)
        Preempted = _preempted_cls()
        try:
            result = fn(self.run_dir)
        except Preempted as e:  # type: ignore[misc]
            signame = getattr(e, "signame", "signal")
            if rank == 0:
                scheduler.record_event(self.run_dir, "preempted", job_id=job_id, backend=backend,
                                     detail=str(e), step=getattr(e, "step", None))
            if signame in SELF_REQUEUE_SIGNALS:
                self._requeue(env, signame, rank, backend)
            log.warning("%s: exiting so that the scheduler can requeue or cancel the job", e)
            raise SystemExit(128 + int(getattr(signal, str(signame), signal.SIGTERM))) from e
        except RunLocked as e:  # a duplicate job: the run is being trained by another process; touch nothing
            if rank == 0:
                scheduler.record_event(self.run_dir, "refused", job_id=job_id, backend=backend, detail=str(e)[:500])
            raise
        except Exception as e:
            if rank == 0:
                tb = traceback.format_exc()
                write_failure(Path(self.run_dir), tb, time.time() - self._start)
                scheduler.record_event(self.run_dir, "failed", job_id=job_id, backend=backend,
                                     detail=f"{type(e).__name__}: {e}"[:500])
            raise
        if rank == 0:
            scheduler.record_event(self.run_dir, "finished", job_id=job_id, backend=backend,
                                 status=(result or {}).get("status") if isinstance(result, dict) else None)
        return result

    def _requeue(self, env: JobEnv, signame: str, rank: int, backend: str) -> None:
        """Requeue through submitit (checkpoint pickle + countdown), then exit."""
        if rank != 0:
            return  # only rank 0 requeues; the others exit when the job is killed
        decision, token = _compat.submitit_prepare_requeue(env, self._start)
        if not decision.requeue:
            msg = f"not requeued: {decision.reason}"
            if decision.countdown < 0:
                scheduler.record_event(self.run_dir, "not_requeued", job_id=str(env.job_id),
                                       backend=backend, detail=msg)
            raise _compat.uncompleted_job_error()(msg)
        scheduler.record_event(self.run_dir, "requeued", job_id=str(env.job_id), backend=backend,
                               detail=f"{signame}, timed_out={decision.timed_out}, "
                                      f"{decision.countdown} timeouts left")
        try:
            _compat.submitit_requeue(env, token)  # SLURM: scontrol requeue; local: sys.exit(144)
        except subprocess.CalledProcessError as e:
            # e.g. SLURM is already requeuing or cancelling the job
            log.warning("scontrol requeue failed (%s); leaving it to the scheduler", e)
        sys.exit(-1)
