"""Launchers: run a prepared run here, in a submitit subprocess, or on SLURM.

``from starx.launch import launch`` (lazy: importing the package costs nothing; the
submitit/omegaconf imports happen on first use). See :mod:`starx.launch.config` for the
spec's ``launch:`` section, :mod:`starx.launch.submit` for ``launch()``, and
:mod:`starx.launch.records` for the files a launch writes into the run directory.
"""

from __future__ import annotations

from starx._lazy import lazy_getattr

_LAZY = {
    "launch": "starx.launch.submit",
    "LaunchHandle": "starx.launch.submit",
    "LaunchError": "starx.launch.submit",
    "launch_config": "starx.launch.submit",
    "StarxJob": "starx.launch.job",
    "LaunchConfig": "starx.launch.config",
    "SlurmConfig": "starx.launch.config",
    "SubprocessConfig": "starx.launch.config",
    "LaunchKind": "starx.launch.config",
    "run_state": "starx.launch.records",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
