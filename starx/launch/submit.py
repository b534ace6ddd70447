"""``launch(prepared)``: send a prepared run to where its spec's ``launch`` section says.

- ``local``: ``run_job(run_dir)`` in this process; returns when it finishes.
- ``subprocess``: a submitit ``LocalExecutor`` job (separate process; survives this one).
- ``slurm``: a submitit ``SlurmExecutor`` job; returns at once with the job id.

A run that is already done is not launched again, and a run whose job is still queued or
running is attached to rather than submitted twice (the same spec maps to the same run
directory, so ``starx run`` twice is safe).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence, TextIO

from omegaconf import OmegaConf

from starx.rundir import RunLocked, lock_run, read_result, write_failure

from . import gpus as gpus_mod
from . import scheduler
from .config import LaunchConfig, LaunchKind, SlurmConfig, tasks_per_node, validate
from .submitit_job import DEFAULT_ENTRY, StarxJob, resolve_entry

log = logging.getLogger(__name__)


class Prepared(Protocol):
    """A run ready to launch: ``starx.api.PreparedRun`` (and ``starx.launch.testing.FakePrepared``)."""

    experiment: str
    run_id: str
    run_dir: Path
    cfg: Any  # the resolved spec (DictConfig); launch() reads only its ``launch`` section


class PrepareFn(Protocol):
    """``starx.api.prepare``: (spec path, dotted overrides) -> a Prepared run directory."""

    def __call__(self, spec: Any, overrides: Sequence[str] = ..., /) -> Prepared: ...


class LaunchError(RuntimeError):
    """Submission failed (sbatch error, bad launch section, ...)."""


def launch_config(cfg: Any) -> LaunchConfig:
    """The launch section of a resolved spec as a LaunchConfig (defaults when absent)."""
    section = None
    if cfg is not None:
        section = cfg.get("launch") if hasattr(cfg, "get") else getattr(cfg, "launch", None)
    base = OmegaConf.structured(LaunchConfig)
    if section is not None:
        base = OmegaConf.merge(base, section)
    lc: LaunchConfig = OmegaConf.to_object(base)  # type: ignore[assignment]
    validate(lc)
    return lc


def submitit_folder(run_dir: Path, lc: LaunchConfig) -> Path:
    if lc.folder:
        return Path(lc.folder) / Path(run_dir).parent.name / Path(run_dir).name
    return Path(run_dir) / scheduler.LAUNCH_DIR


def slurm_parameters(s: SlurmConfig, job_name: str) -> dict[str, Any]:
    """SlurmExecutor.update_parameters kwargs for a SlurmConfig."""
    params: dict[str, Any] = {
        "job_name": s.job_name or job_name,
        "nodes": s.nodes,
        "ntasks_per_node": tasks_per_node(s),
        "cpus_per_task": s.cpus_per_task,
        "time": s.timeout_min,
        "signal_delay_s": s.signal_delay_s,
    }
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(s, key):
            params[key] = getattr(s, key)
    if s.mem_gb:
        params["mem"] = f"{int(s.mem_gb)}GB"
    if s.setup:
        params["setup"] = list(s.setup)
    # srun truncates its --output/--error files by default: a requeued job would erase the
    # log of its first attempt (sbatch's own --open-mode=append does not reach srun).
    params["srun_args"] = ["--open-mode=append"]
    extra = {str(k): (True if v in ("", None, True, "true") else v)
             for k, v in (s.additional_parameters or {}).items()}
    if extra:
        params["additional_parameters"] = extra
    return params


def make_executor(kind: LaunchKind, folder: Path, lc: LaunchConfig, job_name: str,
                  gpus: Optional[Sequence[str]] = None):
    """A submitit executor for ``kind``. ``gpus``: the device ids a subprocess job sees
    (CUDA_VISIBLE_DEVICES; ``starx.launch.gpus``); None: submitit's default, the first
    ``launch.subprocess.gpus_per_node`` indices."""
    import submitit

    if kind is LaunchKind.slurm:
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=lc.slurm.max_requeues)
        ex.update_parameters(**slurm_parameters(lc.slurm, job_name))
        return ex
    if kind is LaunchKind.subprocess:
        sp = lc.subprocess
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=sp.max_requeues)
        params: dict[str, Any] = {"gpus_per_node": sp.gpus_per_node}
        setup: list[str] = []
        if gpus is not None:
            params, setup = gpus_mod.executor_gpu_parameters(gpus)
        ex.update_parameters(timeout_min=sp.timeout_min, tasks_per_node=sp.tasks_per_node, **params)
        if setup:
            ex.update_parameters(setup=setup)
        return ex
    raise ValueError(f"no executor for launch kind {kind.value}")


@dataclass
class LaunchHandle:
    """A launched run: where it is, which job, and (for finished runs) its result."""

    kind: str
    experiment: str
    run_id: str
    run_dir: Path
    job_id: Optional[str] = None
    result: Optional[dict] = None
    attached: bool = False  # True: an existing job/result was reused, nothing submitted
    _job: Any = field(default=None, repr=False)  # the submitit Job when we submitted it

    def __str__(self) -> str:
        if self.kind == "local" or self.job_id is None:
            status = (self.result or {}).get("status", "not started")
            return f"{self.experiment}/{self.run_id}: {status} (run directory {self.run_dir})"
        verb = "attached to" if self.attached else "submitted"
        return (f"{verb} {self.kind} job {self.job_id}: {self.run_dir}\n"
                f"  state: starx status {self.experiment}    log: {self.log_paths()[0]}")

    def state(self, slurm_states: Optional[dict] = None) -> scheduler.RunState:
        return scheduler.run_state(self.run_dir, slurm_states)

    def done(self) -> bool:
        st = self.state()
        return not st.active

    def log_paths(self) -> list[Path]:
        return scheduler.log_paths(self.run_dir)

    def wait(self, poll_s: float = 2.0, timeout_s: Optional[float] = None,
             follow: Optional[TextIO] = None) -> scheduler.RunState:
        """Block until the run is no longer queued/running; with ``follow``, tail its log."""
        t0 = time.time()
        tailer = _Tailer(self.log_paths()) if follow is not None else None
        while True:
            if tailer is not None:
                tailer.pump(follow)  # type: ignore[arg-type]
            st = self.state()
            if not st.active:
                if st.state == scheduler.LOST and time.time() - t0 < 10 * poll_s:
                    # the job may have ended a moment before result.json became visible
                    time.sleep(poll_s)
                    st = self.state()
                # the job writes result.json before its last records (the "finished" event,
                # the log's end): give a job that is still alive up to 30 s to exit
                grace_end = time.time() + 30
                while _job_still_alive(st) and time.time() < grace_end:
                    time.sleep(min(poll_s, 0.5))
                    st = self.state()
                if tailer is not None:
                    tailer.pump(follow)  # type: ignore[arg-type]
                self.result = st.result
                return st
            if timeout_s is not None and time.time() - t0 > timeout_s:
                raise TimeoutError(f"{self.run_dir}: still {st.state} after {timeout_s:.0f} s")
            time.sleep(poll_s)


def _job_still_alive(st: scheduler.RunState) -> bool:
    job = st.job
    return job is not None and job.backend in ("subprocess", "slurm") and job.state in (scheduler.QUEUED, scheduler.RUNNING)


class _Tailer:
    """Follow several growing files (submitit's .err and .out), printing new lines."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.pos = {p: 0 for p in paths}

    def pump(self, out: TextIO) -> None:
        for p in self.paths:
            try:
                with open(p, "rb") as f:
                    f.seek(self.pos[p])
                    data = f.read()
            except FileNotFoundError:
                continue
            if data:
                # keep a partial last line for the next round
                cut = data.rfind(b"\n") + 1
                if cut:
                    out.write(data[:cut].decode(errors="replace"))
                    out.flush()
                    self.pos[p] += cut


def launch(prepared: Prepared, *, follow: bool = False, kind: Optional[str | LaunchKind] = None,
           entry: str = DEFAULT_ENTRY, force: bool = False,
           stream: Optional[TextIO] = None, gpus: Optional[Sequence[str]] = None) -> LaunchHandle:
    """Run or submit a prepared run (see the module docstring).

    prepared: ``starx.api.PreparedRun`` (experiment, run_id, run_dir, cfg).
    follow: for subprocess/slurm, tail the job's log to ``stream`` (stderr) and wait.
    kind: overrides ``cfg.launch.kind``.
    entry: "module:function" run in the job with the run directory (the engine's run_job).
    force: submit even if the run is already done or has a live job.
    gpus: for subprocess, the device ids the job sees (a sweep driver's assignment); None: the
        first ``launch.subprocess.gpus_per_node`` of ``STARX_GPUS`` / ``CUDA_VISIBLE_DEVICES``
        when set (``starx.launch.gpus``), else submitit's default (indices 0..n-1).
    """
    run_dir = Path(prepared.run_dir).resolve()
    lc = launch_config(prepared.cfg)
    k = LaunchKind(getattr(kind, "value", kind) if kind is not None else lc.kind.value)
    handle = LaunchHandle(k.value, str(prepared.experiment), str(prepared.run_id), run_dir)

    if not force:
        st = scheduler.run_state(run_dir)
        if st.state == scheduler.DONE:
            log.info("%s is already done; not launching it again", run_dir)
            handle.result, handle.attached = st.result, True
            return handle
        if st.active and st.job is not None and st.job.backend == "local":
            if k is not LaunchKind.local:  # a job would be refused by the run lock, after replacing launch.json
                rec = st.launch or {}
                raise RunLocked(f"run directory {run_dir} is being trained by pid {rec.get('pid')} on "
                                f"{rec.get('host')}; wait for it (starx status) or stop it, then run again")
            # local: the run lock decides (it refuses while the process that wrote launch.json trains)
        elif st.active and st.job is not None:
            log.info("%s already has a %s job %s (%s); attaching to it",
                     run_dir, st.job.backend, st.job.job_id, st.state)
            handle.kind, handle.job_id, handle.attached = st.job.backend, st.job.job_id, True
            if follow:
                handle.wait(follow=stream or sys.stderr)
            return handle

    if k in (LaunchKind.local, LaunchKind.subprocess):
        check_backend_runs_here(prepared.cfg, k)
    if k is LaunchKind.local:
        return _run_local(handle, entry)

    folder = submitit_folder(run_dir, lc)
    folder.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {}
    if k is LaunchKind.subprocess:
        if gpus is None:
            try:
                gpus = gpus_mod.single_job_gpus(lc.subprocess.gpus_per_node)
            except gpus_mod.NotEnoughGpus as e:
                raise LaunchError(f"subprocess job {e}") from None
        if gpus is not None:
            gpus = tuple(str(g) for g in gpus)
            extra["gpus"] = list(gpus)
    try:
        ex = make_executor(k, folder, lc, job_name=f"starx-{handle.experiment}", gpus=gpus)
        job = ex.submit(StarxJob(run_dir, entry))
    except Exception as e:  # sbatch errors come as FailedJobError / CalledProcessError
        raise LaunchError(f"{k.value} submission failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}") from e
    handle.job_id, handle._job = str(job.job_id), job
    scheduler.write_launch(run_dir, k.value, handle.job_id, folder, entry, **extra)
    log.info("submitted %s job %s for %s", k.value, handle.job_id, run_dir)
    if follow:
        handle.wait(follow=stream or sys.stderr)
    return handle


def check_backend_runs_here(cfg: Any, kind: LaunchKind) -> None:
    """A run on this machine (local, subprocess) whose ``model.backend`` cannot load here is bad
    input, refused before it starts (a SpecError naming the field), not a job that fails once
    started. A SLURM job is not checked: it runs on the cluster's nodes, not on the login node."""
    import torch

    from starx.ops import KernelUnavailableError, scan_backend
    from starx.spec import SpecError

    backend = str(OmegaConf.select(cfg, "model.backend", default="auto"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        scan_backend(backend, torch.empty(0, device=device))
    except KernelUnavailableError as e:
        raise SpecError(f"field 'model.backend': {e} (launch.kind={kind.value} runs on this machine)") from None


def _run_local(handle: LaunchHandle, entry: str) -> LaunchHandle:
    run_dir = handle.run_dir
    # The run lock before launch.json: a second `starx run` of a spec that is training here
    # is refused (RunLocked) without touching the first one's records. The trainer takes it again.
    with lock_run(run_dir):
        return _run_local_locked(handle, entry)


def _run_local_locked(handle: LaunchHandle, entry: str) -> LaunchHandle:
    from .submitit_job import _preempted_cls

    run_dir = handle.run_dir
    scheduler.write_launch(run_dir, "local", None, None, entry)
    scheduler.record_event(run_dir, "start", backend="local")
    fn: Callable[[str], Any] = resolve_entry(entry)
    t0 = time.time()
    Preempted = _preempted_cls()
    try:
        handle.result = fn(str(run_dir))
    except Preempted as e:  # type: ignore[misc]
        scheduler.record_event(run_dir, "preempted", backend="local", detail=str(e))
        log.warning("%s; run the same spec again to resume", e)
        handle.result = read_result(run_dir)
        return handle
    except KeyboardInterrupt:
        scheduler.record_event(run_dir, "interrupted", backend="local")
        raise
    except RunLocked:
        raise
    except BaseException as e:
        import traceback

        write_failure(run_dir, traceback.format_exc(), time.time() - t0)
        scheduler.record_event(run_dir, "failed", backend="local", detail=f"{type(e).__name__}: {e}"[:500])
        raise
    scheduler.record_event(run_dir, "finished", backend="local")
    return handle
