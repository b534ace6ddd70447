"""Which code and which machine made a run: ``env.json`` beside ``result.json``, and the rule that
keeps results from going stale.

A run's id hashes its resolved spec, not the code, so the same spec run after a code change
lands in the same directory. Every run therefore records its code version (the git commit of
the starx checkout and whether ``starx/`` or ``pyproject.toml`` had uncommitted changes, with a
hash of them; the package version when starx is not a git checkout), the installed packages,
torch / CUDA / cuDNN / driver versions and the scan backend. When a finished run is reused
under another code version, :func:`stale_reason` says so and ``--force`` re-runs it:
:func:`supersede` moves the old outputs into ``superseded/<UTC time>/`` first, so nothing
written is lost.

Stdlib only at import (``starx results`` reads env.json through it without torch).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

from starx.rundir import CHECKPOINTS, ENV, METRICS, RESULT, RunDir, read_json, write_json_atomic

log = logging.getLogger(__name__)

# what a forced re-run moves aside (train.log and the launcher's records stay: they are a history)
_RUN_OUTPUTS = (RESULT, ENV, METRICS, CHECKPOINTS, "wandb")
_GIT_PATHS = ("starx", "pyproject.toml")  # the code that decides what a run computes


def env_path(run_dir: Path | RunDir | str) -> Path:
    return (run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))).env


def _git(root: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode(errors="replace")


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """This process's starx code: ``{"starx", "commit", "dirty", "diff", "id"}``.

    ``id`` is what runs are compared by: ``<commit[:12]>`` or ``<commit[:12]>+dirty.<diff[:8]>``
    (``diff`` hashes ``git diff HEAD`` and the untracked files under starx/), or ``starx <version>``
    outside a git checkout."""
    import starx

    version = starx.__version__
    root = Path(starx.__file__).resolve().parent.parent
    info: dict[str, Any] = {"starx": version, "commit": None, "dirty": None, "diff": None,
                            "id": f"starx {version}"}
    if not (root / ".git").exists():
        return info
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return info
    commit = commit.strip()
    status = _git(root, "status", "--porcelain", "--", *_GIT_PATHS) or ""
    dirty = bool(status.strip())
    info.update(commit=commit, dirty=dirty, id=commit[:12])
    if dirty:
        h = hashlib.sha256((_git(root, "diff", "HEAD", "--", *_GIT_PATHS) or "").encode())
        for line in sorted(status.splitlines()):
            if line.startswith("??"):
                path = root / line[3:].strip()
                h.update(line.encode())
                if path.is_file():
                    h.update(path.read_bytes())
        info["diff"] = h.hexdigest()
        info["id"] = f"{commit[:12]}+dirty.{info['diff'][:8]}"
    return info


def _driver_version() -> Optional[str]:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.decode(errors="replace").split()
    return lines[0] if lines else None


def environment(device: Any = None, scan_backend: Optional[str] = None) -> dict[str, Any]:
    """env.json's content for this process: code version, packages, torch / CUDA / cuDNN / driver."""
    import torch

    cuda = torch.version.cuda
    env: dict[str, Any] = {
        "code": code_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": platform.node(),
        "torch": torch.__version__,
        "cuda": cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "driver": _driver_version() if cuda and torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(device) if device is not None and getattr(device, "type", "") == "cuda"
        else None,
        "scan_backend": scan_backend,
        "packages": installed_packages(),
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return env


def installed_packages() -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name") if dist.metadata else None
        if name:
            out[name] = dist.version
    return dict(sorted(out.items(), key=lambda kv: kv[0].lower()))


def read_env(run_dir: Path | RunDir | str) -> Optional[dict[str, Any]]:
    return read_json(env_path(run_dir))


def write_env(run_dir: Path | RunDir | str, env: dict[str, Any]) -> dict[str, Any]:
    """Write env.json; a run resumed under another code version keeps the earlier ones in ``history``
    (and says so in the log)."""
    previous = read_env(run_dir) or {}
    history = list(previous.get("history") or [])
    before = (previous.get("code") or {}).get("id")
    if before and before != env["code"]["id"]:
        history.append({"code": previous["code"], "recorded": previous.get("recorded")})
        log.warning("this run was started by starx %s and now continues under %s: its result mixes both "
                    "(env.json keeps the history)", before, env["code"]["id"])
    env = {**env, "history": history} if history else env
    write_json_atomic(env_path(run_dir), env)
    return env


def code_id(run_dir: Path | RunDir | str) -> Optional[str]:
    """The code version (id) a run recorded, or None (a run made before env.json existed)."""
    return ((read_env(run_dir) or {}).get("code") or {}).get("id")


def stale_reason(run_dir: Path | RunDir | str) -> Optional[str]:
    """Why a finished run's result may not be what this code computes (None: same code version)."""
    recorded, now = code_id(run_dir), code_version()["id"]
    if recorded == now:
        return None
    if recorded is None:
        return (f"{run_dir} was computed by an unknown code version (no env.json); this is {now}. "
                "Run again with --force to recompute it")
    return (f"{run_dir} was computed by starx {recorded}; this is {now}: the result may be stale. "
            "Run again with --force to recompute it")


def supersede(run_dir: Path | RunDir | str) -> Optional[Path]:
    """Move a run's outputs (result.json, env.json, metrics.jsonl, checkpoints/, TensorBoard and W&B
    files) into ``superseded/<UTC time>/`` so that the run starts again; returns that folder (None:
    nothing to move). Renames only: nothing is deleted."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    names = [n for n in _RUN_OUTPUTS if (rd.path / n).exists()]
    names += sorted(p.name for p in rd.path.glob("events.out.tfevents.*"))
    if not names:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = rd.superseded / stamp
    n = 1
    while dest.exists():
        n += 1
        dest = rd.superseded / f"{stamp}.{n}"
    dest.mkdir(parents=True)
    for name in names:
        os.replace(rd.path / name, dest / name)
    log.warning("%s: the previous outputs are kept in %s", rd.path, dest)
    return dest
