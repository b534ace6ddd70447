"""The run directory and the sweep directory: their layout, the result record, atomic JSON io.

The one module that spells the file names. Stdlib only: ``starx results`` / ``starx status`` read
runs through it without torch, optuna or omegaconf.

``<output_dir>/<experiment>/<run_id>/`` (:class:`RunDir`):

| file | written by | what |
|---|---|---|
| ``spec.yaml`` | ``starx.api.prepare`` | the resolved spec (never changed after) |
| ``derived.json`` | prepare, then the trainer (real world size) | ``starx.spec.derive`` |
| ``metrics.jsonl`` | the trainer (rank 0) | one line per ``log_every`` steps, eval lines |
| ``checkpoints/`` | the trainer | ``<stage>_last.pt``, ``<stage>.done.json`` |
| ``result.json`` | the trainer; the launcher on a crash | :class:`ResultRecord` |
| ``env.json`` | the trainer (rank 0) | code version, packages, machine (``starx.provenance``) |
| ``superseded/<time>/`` | ``starx run --force`` | a finished run's outputs, moved aside |
| ``export/<stage>/`` | ``starx export`` | ``model.safetensors``, ``config.json`` (``starx.train.export``) |
| ``train.log`` | the trainer | the run's log |
| ``launch.json``, ``launch/`` | ``starx.launch`` | the scheduler's records (``starx.launch.scheduler``) |
| ``run.lock`` | the trainer (rank 0), the local launcher | held for the whole job: one trainer per run (:func:`lock_run`) |

``<output_dir>/<sweep>/`` (:class:`SweepDir`): ``study.journal`` (Optuna), ``sweep.yaml``,
``trials.json`` (what ``starx results`` reads), ``driver.lock``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

SPEC = "spec.yaml"
DERIVED = "derived.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
RESULT = "result.json"
ENV = "env.json"
SUPERSEDED = "superseded"
EXPORT = "export"
TRAIN_LOG = "train.log"
LAUNCH_JSON = "launch.json"
LAUNCH_DIR = "launch"
EVENTS = "events.jsonl"
RUN_LOCK = "run.lock"

TRIALS = "trials.json"
STUDY = "study.journal"
SWEEP_YAML = "sweep.yaml"
DRIVER_LOCK = "driver.lock"

# result.json "status" values written by the trainer and the launcher
RUNNING, DONE, FAILED, PREEMPTED = "running", "done", "failed", "preempted"


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    spec = property(lambda self: self.path / SPEC)
    derived = property(lambda self: self.path / DERIVED)
    metrics = property(lambda self: self.path / METRICS)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    result = property(lambda self: self.path / RESULT)
    env = property(lambda self: self.path / ENV)
    superseded = property(lambda self: self.path / SUPERSEDED)
    export = property(lambda self: self.path / EXPORT)
    train_log = property(lambda self: self.path / TRAIN_LOG)
    launch_json = property(lambda self: self.path / LAUNCH_JSON)
    launch_dir = property(lambda self: self.path / LAUNCH_DIR)
    events = property(lambda self: self.path / LAUNCH_DIR / EVENTS)
    lock = property(lambda self: self.path / RUN_LOCK)

    def checkpoint(self, stage: str) -> Path:
        """The last-state checkpoint of a stage."""
        return self.checkpoints / f"{stage}_last.pt"

    def stage_done(self, stage: str) -> Path:
        """A finished stage's metrics (the stage is skipped on resume)."""
        return self.checkpoints / f"{stage}.done.json"

    def is_run(self) -> bool:
        return self.spec.is_file()


@dataclass(frozen=True)
class SweepDir:
    """Paths inside one sweep directory."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    trials = property(lambda self: self.path / TRIALS)
    study = property(lambda self: self.path / STUDY)
    sweep_yaml = property(lambda self: self.path / SWEEP_YAML)
    lock = property(lambda self: self.path / DRIVER_LOCK)

    def is_sweep(self) -> bool:
        return self.trials.is_file()


# ----------------------------------------------------------------------------- names
NAME_MAX = 100


def name_problem(name: object) -> Optional[str]:
    """Why ``name`` cannot be an experiment or sweep name (one folder under the results root), or None.

    ASCII letters, digits, '-', '_' and '.', not starting with '.' or '-', at most NAME_MAX
    characters: no path separators, no '..', no hidden folders that ``starx results`` skips."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty name"
    if len(name) > NAME_MAX:
        return f"must be at most {NAME_MAX} characters"
    if name[0] in ".-" or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name):
        return "must be letters, digits, '-', '_' or '.', not starting with '.' or '-' (output_dir chooses where)"
    return None


# ----------------------------------------------------------------------------- the result record
@dataclass
class ResultRecord:
    """result.json: one record, whoever writes it (the trainer, the launcher after a crash, test fakes)."""

    experiment: str
    run_id: str
    status: str  # running | done | failed | preempted
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_time_s: Optional[float] = None
    versions: dict[str, str] = field(default_factory=dict)
    device: Optional[str] = None
    # which devices the run used: {"CUDA_VISIBLE_DEVICES": the job's value (null: not set),
    # "ranks": [{"rank", "host", "device", "CUDA_VISIBLE_DEVICES", on CUDA "name", "uuid", "pci_bus_id",
    # under SLURM "slurm_node"}]}
    devices: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)  # run_dir, world_size, started, ...: written beside

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {**d.pop("extra"), **d}


def write_result(run_dir: Path | RunDir, record: ResultRecord) -> dict[str, Any]:
    data = record.to_dict()
    write_json_atomic(RunDir(_path(run_dir)).result, data)
    return data


def read_result(run_dir: Path | RunDir) -> Optional[dict[str, Any]]:
    return read_json(RunDir(_path(run_dir)).result)


def write_failure(run_dir: Path | RunDir, error: str, wall_time_s: float | None = None) -> None:
    """result.json with status failed, unless the trainer already wrote a final one (launchers call
    this when the job died before the trainer could record it)."""
    rd = RunDir(_path(run_dir))
    prev = read_result(rd)
    if prev and prev.get("status") in (DONE, FAILED):
        return
    derived = read_json(rd.derived) or {}
    write_result(rd, ResultRecord(
        experiment=derived.get("experiment", rd.path.parent.name), run_id=derived.get("run_id", rd.name),
        status=FAILED, metrics=(prev or {}).get("metrics", {}), wall_time_s=wall_time_s,
        versions=(prev or {}).get("versions", {}), device=(prev or {}).get("device"),
        devices=(prev or {}).get("devices") or {}, error=error))


def _path(p: Path | RunDir | str) -> Path:
    return p.path if isinstance(p, RunDir) else Path(p)


# ----------------------------------------------------------------------------- the run lock
class RunLocked(RuntimeError):
    """Another process holds a run directory's lock: it is training that run now."""


_held: dict[str, list[int]] = {}  # lock path -> [fd, depth]: the locks this process holds


@contextlib.contextmanager
def lock_run(run_dir: Path | RunDir | str):
    """Hold ``run.lock`` of a run directory for the body, or raise :class:`RunLocked` at once.

    A POSIX record lock (``fcntl.lockf``): the kernel drops it when the holder dies (kill -9
    included), and NFS carries it between hosts (NFSv4, or v3 with lockd; not with the
    ``nolock`` / ``local_lock`` mount options). Re-entrant within one process (the local launcher
    takes it, then the trainer). The file holds the holder's host and pid, for the message."""
    import fcntl

    path = RunDir(_path(run_dir)).lock
    key = os.path.abspath(path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield path
        finally:
            _held[key][1] -= 1
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        raise RunLocked(f"cannot open the run lock {path}: {e.strerror}") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EAGAIN):  # ENOLCK: a file system without locks (NFS nolock)
            logging.getLogger(__name__).warning(
                "%s: cannot lock (%s): nothing stops a second process training this run", path, e.strerror)
            os.close(fd)
            yield path
            return
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunLocked(f"run directory {Path(path).parent} is in use by {holder}: one process trains a run "
                        f"at a time; wait for it (starx status) or stop it, then run again") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  .encode(), 0)
        _held[key] = [fd, 1]
        yield path
    finally:
        _held.pop(key, None)
        os.close(fd)  # releases the lock; the file stays (removing it would race a waiting locker)


# ----------------------------------------------------------------------------- processes
def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host is running (a zombie has finished; a process of
    another user counts as alive; without /proc, kill(0) decides)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


# ----------------------------------------------------------------------------- atomic json io
def read_json(path: Path) -> Optional[dict]:
    """A JSON file's object, or None when it is missing, half-written or not a JSON object
    (:func:`record_problem` says which)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, RecursionError, ValueError):
        return None  # being written (writers are atomic, but be lenient)
    return data if isinstance(data, dict) else None


def record_problem(path: Path) -> Optional[str]:
    """Why a record file (result.json, launch.json, trials.json) cannot be read, or None when it is
    missing or a JSON object."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        return f"unreadable ({e.strerror})"
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        return f"not JSON ({type(e).__name__})"
    if not isinstance(data, dict):
        return f"holds a {type(data).__name__}, not a JSON object"
    return None


def write_json_atomic(path: Path, obj: Any, indent: int = 1) -> None:
    """Write through a temporary file in the same directory and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    with open(tmp, "x") as f:  # O_EXCL: never through a symlink planted at the temporary name
        json.dump(obj, f, indent=indent, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_if_changed(path: Path, text: str) -> None:
    """Atomically write ``text`` unless the file already holds exactly that."""
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    with open(tmp, "x") as f:
        f.write(text)
    os.replace(tmp, path)


def append_jsonl(path: Path, obj: dict) -> None:
    """Append one line; never through a symlink planted at ``path`` (OSError ELOOP)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(obj, default=str) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    continue  # a line being written
                if isinstance(record, dict):
                    out.append(record)
    except FileNotFoundError:
        pass
    return out


def tail(path: Path, n: int = 10) -> list[str]:
    """The last ``n`` lines of a (possibly large, growing) text file."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    return data.splitlines()[-n:]
