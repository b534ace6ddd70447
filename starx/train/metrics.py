"""metrics.jsonl: one JSON object per line, appended by rank 0 only.

Appends never follow a symlink planted in the run directory (``O_NOFOLLOW``). A torn last line
(disk full, power loss) is skipped with a warning naming the file, and dropped by the next
``truncate`` (which every stage start calls), so a resumed run has each step once.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def open_append(path: Path):
    """Open a file for appending, refusing to follow a symlink at ``path`` (OSError ELOOP)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    return os.fdopen(fd, "a")


class MetricsLog:
    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        clean = {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in record.items()}
        with open_append(self.path) as f:
            f.write(json.dumps(clean) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for n, line in enumerate(self.path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                out.append(record)
            else:
                log.warning("%s:%d: not a JSON record (a torn write?), skipped", self.path, n)
        return out

    def truncate(self, stage: str, step: int) -> None:
        """Drop this stage's lines past ``step`` (written by a process that died before its next
        checkpoint; ``step`` 0: every line of the stage) and any torn line."""
        if not self.enabled or not self.path.exists():
            return
        if self.path.is_symlink():
            raise OSError(errno.ELOOP, "a symlink where the run's metrics go; refusing to follow it", str(self.path))
        records = self.read()
        keep = [r for r in records if not (r.get("stage") == stage and _step(r) > step)]
        text = "".join(json.dumps(r) + "\n" for r in keep)
        if text == self.path.read_text(errors="replace"):
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        with open(tmp, "x") as f:  # O_EXCL: never through a planted symlink
            f.write(text)
        tmp.replace(self.path)


def _step(record: dict[str, Any]) -> float:
    step = record.get("step", 0)
    return step if isinstance(step, (int, float)) else 0
