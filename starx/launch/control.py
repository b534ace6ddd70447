"""``starx logs`` and ``starx cancel``: find a run (or a sweep) by name, follow its log, stop it.

Stdlib only, like :mod:`starx.launch.scheduler` (no torch, submitit or optuna): these commands
answer at once on a login node.

- A run is named by its directory, ``<experiment>/<run_id>`` under the results root, its run id
  (or a unique prefix of it), or an experiment that has one run.
- Its log: for a subprocess or SLURM job, submitit's stdout/stderr of task 0 (what ``starx run
  --follow`` tails: the trainer's log and any traceback); for a local run, ``train.log``.
- Cancelling sends what preemption sends, SIGTERM: ``scancel JOB`` for SLURM, the submitit
  controller's pid for a subprocess job (it forwards the signal), the ``starx run`` process for a
  local one. The trainer saves a checkpoint at the next step boundary and records status
  ``preempted``, so the run stays resumable: ``starx run`` on the same spec continues it (and
  ``starx sweep`` relaunches a sweep's cancelled trials, which resume).
- Cancelling a sweep first stops its driver (so it relaunches nothing), then every trial in flight.
"""

from __future__ import annotations

import difflib
import fcntl
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TextIO

from starx.rundir import RunDir, SweepDir, read_json, tail

from . import scheduler


class TargetError(ValueError):
    """No run or sweep of that name (or several): bad input, exit 2."""


class CancelError(RuntimeError):
    """The scheduler refused the cancel (scancel failed), or the job runs on another host."""


# ----------------------------------------------------------------------------- finding a run or a sweep
def _runs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    out = []
    for exp in sorted(p for p in root.iterdir() if p.is_dir()):
        out += sorted(p for p in exp.iterdir() if p.is_dir() and RunDir(p).is_run())
    return out


def find_target(root: Path, name: str, *, sweeps: bool = True) -> tuple[str, Path]:
    """("run", run_dir) or ("sweep", sweep_dir) for a name (see the module docstring)."""
    root = Path(root)
    direct = Path(name).expanduser()
    for cand in (direct, root / name):
        if cand.is_dir() and RunDir(cand).is_run():
            return "run", cand.resolve()
        if sweeps and cand.is_dir() and SweepDir(cand).is_sweep():
            return "sweep", cand.resolve()
    runs = _runs(root)
    exact = [r for r in runs if r.name == name]
    prefix = [r for r in runs if r.name.startswith(name)]
    in_exp = [r for r in runs if r.parent.name == name]
    for found in (exact, prefix, in_exp):
        if len(found) == 1:
            return "run", found[0].resolve()
        if len(found) > 1:
            names = ", ".join(f"{r.parent.name}/{r.name}" for r in found[:8])
            raise TargetError(f"'{name}' matches {len(found)} runs under {root}/: {names}; name one as EXPERIMENT/RUN_ID")
    known = [f"{r.parent.name}/{r.name}" for r in runs] + [r.name for r in runs] + sorted({r.parent.name for r in runs})
    hint = difflib.get_close_matches(name, known, n=1)
    where = f"under {root}/" if root.is_dir() else f"({root}/ does not exist; set --root or $STARX_RESULTS)"
    what = "run or sweep" if sweeps else "run"
    raise TargetError(f"no {what} named '{name}' {where}" + (f" (did you mean '{hint[0]}'?)" if hint else ""))


# ----------------------------------------------------------------------------- logs
def log_files(run_dir: Path) -> list[Path]:
    """The files ``starx logs`` follows: submitit's .err/.out of the current job, else train.log."""
    launch = scheduler.read_launch(run_dir)
    if launch and launch.get("backend") in ("subprocess", "slurm"):
        paths = scheduler.log_paths(run_dir, launch)
        if paths:
            return paths
    return [RunDir(run_dir).train_log]


def follow(run_dir: Path, out: TextIO, *, lines: int = 20, keep_following: bool = True, poll_s: float = 1.0,
           timeout_s: Optional[float] = None, sleep: Callable[[float], None] = time.sleep) -> scheduler.RunState:
    """Print the last ``lines`` lines of the run's log, then (while the run is queued or running)
    what it appends, like ``tail -f``; return the run's state once it is no longer active."""
    run_dir = Path(run_dir)
    paths = log_files(run_dir)
    pos: dict[Path, int] = {}
    many = len(paths) > 1

    def header(p: Path) -> None:
        if many:
            out.write(f"==> {p} <==\n")

    for p in paths:
        if p.exists():
            header(p)
            pos[p] = p.stat().st_size
            for ln in tail(p, lines) if lines > 0 else []:
                out.write(ln + "\n")
    out.flush()
    t0 = time.time()
    while True:
        st = scheduler.run_state(run_dir)
        if not keep_following:
            return st
        # a new job (requeue, resubmission) writes new submitit files
        for p in log_files(run_dir):
            if p not in paths:
                paths.append(p)
                many = len(paths) > 1
        for p in paths:
            try:
                with open(p, "rb") as f:
                    start = pos.get(p, 0)
                    f.seek(start)
                    data = f.read()
            except FileNotFoundError:
                continue
            cut = data.rfind(b"\n") + 1
            if cut:
                if p not in pos:
                    header(p)
                out.write(data[:cut].decode(errors="replace"))
                out.flush()
                pos[p] = start + cut
            else:
                pos.setdefault(p, start)
        if not st.active:
            return st
        if timeout_s is not None and time.time() - t0 > timeout_s:
            return st
        sleep(poll_s)


# ----------------------------------------------------------------------------- cancel
@dataclass
class Cancelled:
    run_dir: Path
    action: str  # what was done, in words
    state: str  # the run's state afterwards (or before, when nothing was done)
    signalled: bool


def _cmdline(pid: int) -> Optional[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ")
    except OSError:
        return None


def _ours(pid: int, marker: bytes) -> bool:
    """The pid is alive and (where /proc tells) runs ``marker`` (so a recycled pid is never signalled)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    cmd = _cmdline(pid)
    return cmd is None or marker in cmd  # no /proc (macOS): trust kill(0)


def cancel_run(run_dir: Path, *, wait_s: float = 0.0, poll_s: float = 0.5) -> Cancelled:
    """Send the run's job SIGTERM (see the module docstring); with ``wait_s``, wait up to that long
    for it to save and stop. A run that is not queued or running is left alone."""
    run_dir = Path(run_dir)
    st = scheduler.run_state(run_dir)
    if not st.active or st.job is None:
        return Cancelled(run_dir, f"nothing to cancel: the run is {st.state}", st.state, False)
    job, launch = st.job, st.launch or {}
    host = launch.get("host")
    if job.backend == "slurm":
        try:
            p = subprocess.run(["scancel", str(job.job_id)], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CancelError(f"scancel {job.job_id}: {e}") from None
        if p.returncode != 0:
            raise CancelError(f"scancel {job.job_id}: {(p.stderr or p.stdout).strip() or f'exit {p.returncode}'}")
        action = f"scancel {job.job_id}"
    else:
        if host not in (None, socket.gethostname()):
            raise CancelError(f"{run_dir.name} runs on {host} ({job.backend}, pid {launch.get('pid')}): "
                              f"run `starx cancel` there")
        if job.backend == "subprocess":
            pid, marker = int(job.job_id or 0), b"submitit"
        else:
            pid, marker = int(launch.get("pid") or 0), b"starx"
        if not _ours(pid, marker):
            return Cancelled(run_dir, f"nothing to cancel: process {pid} is gone", st.state, False)
        os.kill(pid, signal.SIGTERM)
        action = f"SIGTERM to {'the submitit job' if job.backend == 'subprocess' else 'the starx run'} (pid {pid})"
    scheduler.record_event(run_dir, "cancelled", backend=job.backend, job_id=job.job_id, detail=action)
    state = st.state
    deadline = time.time() + wait_s
    while wait_s > 0:
        now = scheduler.run_state(run_dir)
        state = now.state
        if not now.active or time.time() > deadline:
            break
        time.sleep(poll_s)
    return Cancelled(run_dir, action, state, True)


def _driver(sweep_dir: Path) -> Optional[tuple[int, str]]:
    """(pid, host) of the driver holding the sweep's lock, or None when no driver runs."""
    lock = SweepDir(sweep_dir).lock
    if not lock.exists():
        return None
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            words = f.read().split()  # "pid N on HOST"
            pid = int(words[1]) if len(words) >= 2 and words[1].isdigit() else 0
            return pid, words[3] if len(words) >= 4 else "?"
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None


def cancel_sweep(sweep_dir: Path, *, wait_s: float = 0.0) -> tuple[str, list[Cancelled]]:
    """Stop the sweep's driver (if one runs here), then cancel each trial in flight. Running the sweep
    again resumes it: cancelled trials are relaunched and resume from their checkpoints."""
    sweep_dir = Path(sweep_dir)
    driver = _driver(sweep_dir)
    if driver is None:
        driver_msg = "no driver running"
    else:
        pid, host = driver
        if host != socket.gethostname():
            raise CancelError(f"the sweep's driver runs on {host} (pid {pid}): stop it there first, "
                              f"or it relaunches the trials cancelled here")
        if not _ours(pid, b"starx"):
            raise CancelError(f"the sweep's lock is held by pid {pid}, which is not a starx process")
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 30
        while _driver(sweep_dir) is not None and time.time() < deadline:
            time.sleep(0.2)
        if _driver(sweep_dir) is not None:
            raise CancelError(f"the sweep's driver (pid {pid}) did not stop within 30 s")
        driver_msg = f"stopped the driver (pid {pid})"
    info = read_json(SweepDir(sweep_dir).trials) or {}
    done: list[Cancelled] = []
    for t in info.get("trials") or []:
        rd = t.get("run_dir")
        if t.get("state") == "RUNNING" and rd and RunDir(Path(rd)).is_run():
            done.append(cancel_run(Path(rd), wait_s=0))
    deadline = time.time() + wait_s
    while wait_s > 0 and time.time() < deadline and any(
            c.signalled and scheduler.run_state(c.run_dir).active for c in done):
        time.sleep(0.5)
    for c in done:
        if c.signalled:
            c.state = scheduler.run_state(c.run_dir).state
    return driver_msg, done
