"""The ``starx`` command line: one Typer app (:mod:`starx.cli._app`, with the one error path and
the exit codes), commands that parse, call :mod:`starx.api` and print:

- :mod:`starx.cli.commands`: run, show, validate, reference, models, doctor;
- :mod:`starx.cli.jobs`: sweep, status, results;
- :mod:`starx.cli.data`: data build, data info;
- :mod:`starx.cli.runs`: logs, cancel.

Heavy imports (torch, ffcv, optuna, submitit) happen inside commands, so ``starx --help``
answers at once.
"""

from __future__ import annotations

from starx.cli import commands, data, export, jobs, runs  # noqa: F401  (each registers its commands)
from starx.cli._app import EXIT_FAILED, EXIT_USAGE, UsageError, app, guarded

app.add_typer(data.app, name="data", help="Build and inspect FFCV datasets.")

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "UsageError", "app", "guarded", "main"]


def main() -> None:
    app(prog_name="starx")  # also under `python -m starx.cli`: completion reads $_STARX_COMPLETE
