"""Run records on disk, tables (rich / CSV / Markdown) and plots.

Reads only run directories (spec.yaml, result.json, metrics.jsonl, launch.json) and a
sweep's trials.json: no torch, no optuna. Lazy: importing the package imports nothing.
"""

from __future__ import annotations

from starx._lazy import lazy_getattr

_LAZY = {
    "resolve": "starx.results.catalog",
    "load_runs": "starx.results.catalog",
    "load_sweep_record": "starx.results.catalog",
    "ResultsError": "starx.results.catalog",
    "sweep_table": "starx.results.table",
    "runs_table": "starx.results.table",
    "to_csv": "starx.results.table",
    "to_markdown": "starx.results.table",
    "plot_sweep": "starx.results.plot",
    "plot_runs": "starx.results.plot",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
