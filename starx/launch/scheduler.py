"""The scheduler's view of a run: what the launcher writes into a run directory, and how a run's
state is worked out from that and from the scheduler (squeue, process ids).

Light on purpose (stdlib only): ``starx status`` and ``starx results`` import this. File names
and JSON io come from :mod:`starx.rundir`.

Files (all inside ``results/<experiment>/<run_id>/``):

- ``launch.json``  written at each submission: ``{"backend": "local"|"subprocess"|"slurm",
  "job_id": str|null, "folder": submitit folder, "submitted": unix time, "host", "pid",
  "entry", "submissions": n}``, and for a subprocess job placed on GPUs ``"gpus": [device ids]``
  (its CUDA_VISIBLE_DEVICES, ``starx.launch.gpus``);
- ``launch/events.jsonl``  one line per job event, written by the job itself (rank 0):
  ``{"time", "event": "start"|"preempted"|"requeued"|"failed"|"finished", "job_id",
  "backend", "host", "detail"}``;
- ``launch/<job_id>_0_log.{out,err}``  submitit's logs of task 0.

The engine writes ``result.json`` (and ``metrics.jsonl``, ``checkpoints/``); the state of a run
combines that file with the scheduler's view of its job (:func:`run_state`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from starx.rundir import (
    LAUNCH_DIR,
    RunDir,
    append_jsonl,
    pid_alive,
    read_json,
    read_jsonl,
    read_result,
    record_problem,
    tail,
    write_json_atomic,
)

__all__ = ["LAUNCH_DIR", "JobInfo", "RunState", "job_info", "log_paths", "query_slurm", "read_events",
           "read_launch", "record_event", "run_state", "write_launch"]

# Our state vocabulary (what ``starx status`` prints).
QUEUED, RUNNING, DONE, FAILED, PREEMPTED, LOST, PREPARED, UNKNOWN, UNREADABLE = (
    "queued", "running", "done", "failed", "preempted", "lost", "prepared", "unknown", "unreadable",
)
# unreadable: a record file (result.json, launch.json) is not what starx writes; the detail names it.
# Not active: running the spec again trains the run and rewrites the record.
# unknown: the scheduler could not be asked; treated as active (never submit twice).
ACTIVE_STATES = (QUEUED, RUNNING, UNKNOWN)
FINAL_STATES = (DONE, FAILED)

# SLURM job states -> ours. Anything not listed counts as finished-without-result.
_SLURM_ACTIVE = {
    "PENDING": QUEUED, "CONFIGURING": QUEUED, "REQUEUED": QUEUED, "REQUEUE_HOLD": QUEUED,
    "REQUEUE_FED": QUEUED, "RESV_DEL_HOLD": QUEUED, "SUSPENDED": QUEUED, "STOPPED": QUEUED,
    "RESIZING": RUNNING, "RUNNING": RUNNING, "COMPLETING": RUNNING, "SIGNALING": RUNNING,
    "STAGE_OUT": RUNNING,
}


# ----------------------------------------------------------------------------- records
def read_launch(run_dir: Path) -> Optional[dict]:
    return read_json(RunDir(run_dir).launch_json)


def write_launch(run_dir: Path, backend: str, job_id: Optional[str], folder: Optional[Path],
                 entry: str, **extra: Any) -> dict:
    run_dir = Path(run_dir)
    prev = read_launch(run_dir) or {}
    submissions = prev.get("submissions")
    previous_ids = prev.get("previous_job_ids")
    previous_ids = [str(j) for j in previous_ids] if isinstance(previous_ids, list) else []
    rec = {
        "backend": backend,
        "job_id": None if job_id is None else str(job_id),
        "folder": None if folder is None else str(folder),
        "submitted": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "entry": entry,
        "submissions": (submissions if isinstance(submissions, int) else 0) + 1,
        "previous_job_ids": [*previous_ids, *([str(prev["job_id"])] if prev.get("job_id") else [])],
        **extra,
    }
    write_json_atomic(RunDir(run_dir).launch_json, rec)
    return rec


def record_event(run_dir: Path, event: str, **fields: Any) -> None:
    append_jsonl(RunDir(run_dir).events,
                 {"time": time.time(), "event": event, "host": socket.gethostname(), **fields})


def read_events(run_dir: Path) -> list[dict]:
    return read_jsonl(RunDir(run_dir).events)


def log_paths(run_dir: Path, launch: Optional[dict] = None) -> list[Path]:
    """submitit's stdout/stderr of task 0 for the current job (may not exist yet)."""
    launch = launch if launch is not None else read_launch(run_dir)
    if not launch or not launch.get("job_id") or not launch.get("folder"):
        return []
    folder = Path(launch["folder"])
    jid = launch["job_id"]
    return [folder / f"{jid}_0_log.err", folder / f"{jid}_0_log.out"]


# ----------------------------------------------------------------------------- scheduler view
@dataclass
class JobInfo:
    backend: str
    job_id: Optional[str]
    state: Optional[str]  # ours: queued/running, or None when the job is gone / unknown
    raw: Optional[str] = None  # the scheduler's word (PENDING, RUNNING, TIMEOUT, ...)
    reason: Optional[str] = None


def _slurm_available() -> bool:
    return shutil.which("squeue") is not None


def query_slurm(job_ids: Iterable[str]) -> Optional[dict[str, tuple[str, str]]]:
    """{job_id: (STATE, reason)} for the given SLURM jobs still known to the controller.

    One ``squeue`` call for all; jobs the controller has forgotten are simply absent
    (finished jobs stay visible for MinJobAge seconds thanks to ``--states=all``).
    None when the controller could not be asked (not an answer: decide nothing from it).
    """
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    if not _slurm_available():
        return None

    def run(sel: list[str]) -> tuple[Optional[str], bool]:
        """(stdout or None, whether the failure was only an unknown job id)"""
        try:
            p = subprocess.run(
                ["squeue", "-h", "--states=all", "-o", "%i|%T|%r", "-j", ",".join(sel)],
                capture_output=True, text=True, timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None, False
        if p.returncode == 0:
            return p.stdout, False
        return None, "invalid job id" in (p.stderr or "").lower()

    text, unknown_id = run(ids)
    if text is None:
        if not unknown_id:
            return None
        # one forgotten id fails the whole call: ask one by one
        parts = []
        for i in ids:
            t, unknown_id = run([i])
            if t is None and not unknown_id:
                return None
            parts.append(t or "")
        text = "".join(parts)
    out: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2:
            out[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return out


def _pid_is_submitit_controller(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ")
        # a zombie has an empty cmdline: it has finished
        return b"submitit" in cmd
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc (macOS): trust kill(0)


def job_info(launch: Optional[dict], slurm_states: Optional[dict] = None) -> Optional[JobInfo]:
    """The scheduler's view of the job in a launch record (None without a record)."""
    if not launch:
        return None
    backend = launch.get("backend")
    jid = launch.get("job_id")
    if backend == "slurm":
        states = slurm_states if slurm_states is not None else query_slurm([jid])
        if states is None:
            return JobInfo(backend, jid, UNKNOWN, "UNKNOWN", "the SLURM controller did not answer")
        if jid in states:
            raw, reason = states[jid]
            return JobInfo(backend, jid, _SLURM_ACTIVE.get(raw.upper()), raw, reason)
        return JobInfo(backend, jid, None)
    if backend == "subprocess":
        if launch.get("host") not in (None, socket.gethostname()):
            return JobInfo(backend, jid, None, "ELSEWHERE")
        alive = bool(jid) and _pid_is_submitit_controller(int(jid))
        return JobInfo(backend, jid, RUNNING if alive else None, "RUNNING" if alive else "EXITED")
    if backend == "local":
        if launch.get("host") not in (None, socket.gethostname()):
            return JobInfo(backend, jid, None, "ELSEWHERE")
        pid = int(launch.get("pid") or 0)
        # our own pid: the run was launched from this process and has returned (or this
        # process is the run itself, where the state is never asked)
        alive = pid > 0 and pid != os.getpid() and pid_alive(pid)
        return JobInfo(backend, jid, RUNNING if alive else None, "RUNNING" if alive else "EXITED")
    return JobInfo(str(backend), jid, None)


@dataclass
class RunState:
    state: str  # queued / running / done / failed / preempted / lost / prepared
    detail: str = ""  # scheduler word, reason, or the error's first line
    error_tail: list[str] = field(default_factory=list)
    job: Optional[JobInfo] = None
    result: Optional[dict] = None
    launch: Optional[dict] = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def _error_lines(result: Optional[dict], run_dir: Path, launch: Optional[dict], n: int) -> list[str]:
    err = (result or {}).get("error")
    if err:
        return [ln for ln in str(err).rstrip().splitlines() if ln.strip()][-n:]
    for p in log_paths(run_dir, launch):
        if p.suffix == ".err":
            lines = [ln for ln in tail(p, 200) if ln.strip()]
            # submitit logs its own lines with a prefix; prefer the traceback end
            return lines[-n:]
    return []


def run_state(run_dir: Path, slurm_states: Optional[dict] = None, n_error_lines: int = 5) -> RunState:
    """Combine result.json with the job's scheduler state.

    A live job wins over an old result (a requeued run that was preempted before is
    queued/running again); without a live job, result.json decides; without either
    the run is ``lost`` (launched, but the job vanished without a result) or ``prepared``.
    """
    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    for record in (rd.result, rd.launch_json):
        why = record_problem(record)
        if why:
            return RunState(UNREADABLE, f"{record}: {why}", [f"{record}: {why}"])
    result = read_result(run_dir)
    launch = read_launch(run_dir)
    try:
        job = job_info(launch, slurm_states)
    except (TypeError, ValueError, AttributeError) as e:  # a field of another type than starx writes
        why = f"{rd.launch_json}: {type(e).__name__}: {e}"[:300]
        return RunState(UNREADABLE, why, [why], None, result, None)
    rstatus = (result or {}).get("status")

    if rstatus == DONE:
        return RunState(DONE, "", [], job, result, launch)
    if job is not None and job.state in ACTIVE_STATES:
        detail = job.raw or ""
        if job.reason and job.reason not in ("None", "(null)"):
            detail = f"{detail} ({job.reason})"
        if rstatus == PREEMPTED:
            detail = f"{detail}, requeued after preemption"
        return RunState(job.state, detail, [], job, result, launch)
    if rstatus == FAILED:
        lines = _error_lines(result, run_dir, launch, n_error_lines)
        return RunState(FAILED, lines[-1] if lines else "", lines, job, result, launch)
    if rstatus == PREEMPTED:
        return RunState(PREEMPTED, "checkpoint saved; run again to resume", [], job, result, launch)
    if launch is None:
        return RunState(PREPARED, "", [], job, result, launch)
    # launched, no live job, no final result
    lines = _error_lines(None, run_dir, launch, n_error_lines)
    raw = job.raw if job else None
    if raw == "ELSEWHERE":
        return RunState(RUNNING, f"on {launch.get('host')} (not checked from here)", [], job, result, launch)
    if raw and raw not in ("EXITED",):
        return RunState(FAILED, f"job {raw}", lines, job, result, launch)
    return RunState(LOST, "job ended without a result", lines, job, result, launch)
