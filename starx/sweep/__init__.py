"""Sweeps: search spaces over spec keys, an Optuna study on disk, N trials in flight.

See :mod:`starx.sweep.config` for the sweep file format and :mod:`starx.sweep.driver` for
how trials are launched, polled and resumed. Lazy: importing the package imports nothing.
"""

from __future__ import annotations

from starx._lazy import lazy_getattr

_LAZY = {
    "load_sweep": "starx.sweep.config",
    "parse_sweep": "starx.sweep.config",
    "SweepConfig": "starx.sweep.config",
    "SweepError": "starx.sweep.config",
    "run_sweep": "starx.sweep.driver",
    "SweepDriver": "starx.sweep.driver",
    "SweepSummary": "starx.sweep.driver",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
