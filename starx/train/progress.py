"""A rich progress bar per stage, on rank 0 and only when stderr is a terminal.

Without a terminal (CI, SLURM logs) the metrics lines logged every ``log_every`` steps
tell the progress instead, so logs are not flooded with redraws.
"""

from __future__ import annotations

import sys
from typing import Optional

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class StageProgress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Optional[Progress] = None
        self._task = None

    def start(self, name: str, total: int, completed: int) -> None:
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(name, total=total, completed=completed, loss="-")

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1)

    def show_loss(self, loss: float) -> None:
        """The mean loss of the last logged interval (losses are read from the GPU only then)."""
        if self._progress is not None:
            self._progress.update(self._task, loss=f"{loss:.4f}")

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
