"""Launchers: run a prepared run here, in a submitit subprocess, or on SLURM.

``from starx.launch import launch`` (lazy: importing the package costs nothing; the
submitit/omegaconf imports happen on first use). See :mod:`starx.launch.config` for the
spec's ``launch:`` section, :mod:`starx.launch.submit` for ``launch()``, and
:mod:`starx.launch.scheduler` for what a launch writes into the run directory and the state of a
run's job, and :mod:`starx.launch.submitit_job` for the callable a submitit job runs.
"""

from __future__ import annotations

from starx._lazy import lazy_getattr

_LAZY = {
    "launch": "starx.launch.submit",
    "LaunchHandle": "starx.launch.submit",
    "LaunchError": "starx.launch.submit",
    "launch_config": "starx.launch.submit",
    "StarxJob": "starx.launch.submitit_job",
    "LaunchConfig": "starx.launch.config",
    "SlurmConfig": "starx.launch.config",
    "SubprocessConfig": "starx.launch.config",
    "LaunchKind": "starx.launch.config",
    "run_state": "starx.launch.scheduler",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
