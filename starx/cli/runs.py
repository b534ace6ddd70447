"""``starx logs RUN`` and ``starx cancel RUN|SWEEP`` (:mod:`starx.launch.control`: stdlib only, so
both answer at once on a login node)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from starx.cli._app import EXIT_FAILED, UsageError, command, console, fail
from starx.cli.jobs import RootOpt, _root


def _target(root: Optional[Path], name: str, sweeps: bool):
    from starx.launch.control import TargetError, find_target

    try:
        return find_target(_root(root), name, sweeps=sweeps)
    except TargetError as e:
        raise UsageError(str(e)) from None


@command()
def logs(
    run: str = typer.Argument(..., help="A run: EXPERIMENT/RUN_ID, a run id (or its prefix), an experiment with "
                              "one run, or the run directory."),
    lines: int = typer.Option(20, "--lines", "-n", help="Lines of the log's end shown first."),
    no_follow: bool = typer.Option(False, "--no-follow", help="Print the end of the log and return."),
    root: Optional[Path] = RootOpt,
):
    """Follow a run's log (local, subprocess or SLURM) until it stops; Ctrl-C leaves the run running."""
    from starx.launch.control import follow, log_files

    _, run_dir = _target(root, run, sweeps=False)
    if not any(p.exists() for p in log_files(run_dir)):
        console.print(f"(no log yet: {', '.join(str(p) for p in log_files(run_dir))})", highlight=False, markup=False)
    try:
        st = follow(run_dir, sys.stdout, lines=lines, keep_following=not no_follow)
    except KeyboardInterrupt:
        return  # stops following only; the run goes on
    if not no_follow:
        console.print(f"{run_dir.parent.name}/{run_dir.name}: {st.state} {st.detail}", highlight=False, markup=False)


@command()
def cancel(
    name: str = typer.Argument(..., help="A run (as for `starx logs`) or a sweep."),
    wait: float = typer.Option(120.0, "--wait", help="Seconds to wait for the job to save its checkpoint and "
                               "stop (0: return at once)."),
    root: Optional[Path] = RootOpt,
):
    """Stop a run or a sweep, keeping it resumable (scancel on SLURM, else SIGTERM).

    The trainer saves a checkpoint at the next step and stops; `starx run SPEC` (or `starx sweep
    SWEEP.yaml`) continues it later. A sweep's driver is stopped first, then its trials in flight."""
    from starx.launch.control import CancelError, cancel_run, cancel_sweep

    kind, path = _target(root, name, sweeps=True)
    try:
        if kind == "sweep":
            driver, runs = cancel_sweep(path, wait_s=wait)
            console.print(f"sweep {path.name}: {driver}; {sum(c.signalled for c in runs)} trial(s) cancelled",
                          highlight=False)
        else:
            runs = [cancel_run(path, wait_s=wait)]
    except CancelError as e:
        fail(str(e), EXIT_FAILED)
        return
    for c in runs:
        console.print(f"{c.run_dir.parent.name}/{c.run_dir.name}: {c.action} -> {c.state}", highlight=False)
    if any(c.signalled for c in runs):
        console.print("resumable: run the same spec (or sweep) again to continue from its checkpoint", highlight=False)
