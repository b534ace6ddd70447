"""Tables of runs and sweep trials: rich for the terminal, CSV and Markdown for papers and notes."""

from __future__ import annotations

import csv
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .catalog import KEY_METRICS, RunRecord, SweepRecord, varying_keys

MAX_PARAM_COLUMNS = 6


@dataclass
class Tabular:
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    objective: Optional[str] = None
    maximize: bool = True
    notes: list[str] = field(default_factory=list)
    csv_columns: Optional[list[str]] = None  # CSV gets every metric; the screen a selection
    params: list[str] = field(default_factory=list)  # the columns that say what differs between rows


def _metric_columns(metric_dicts: list[dict], first: Optional[str] = None, all_metrics: bool = False) -> list[str]:
    present = {k for m in metric_dicts for k in m}
    cols = [k for k in KEY_METRICS if k in present]
    if all_metrics:
        cols += sorted(present - set(cols))
    if first:
        cols = [first] + [c for c in cols if c != first]
    return cols


def fmt_duration(s: Optional[float]) -> str:
    if s is None or not isinstance(s, (int, float)) or math.isnan(s):
        return ""
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v)


# ----------------------------------------------------------------------------- builders
def sweep_table(sw: SweepRecord, all_metrics: bool = False, commit: bool = False) -> Tabular:
    metric = sw.metric
    mcols = _metric_columns([t.metrics for t in sw.trials], first=metric, all_metrics=all_metrics)
    if metric not in mcols:
        mcols = [metric] + mcols
    every = _metric_columns([t.metrics for t in sw.trials], first=metric, all_metrics=True)
    if metric not in every:
        every = [metric] + every
    head = ["trial", *sw.param_names]
    tail = ["state", "wall", "run_id"] + (["commit"] if commit else [])
    rows = []
    notes = []
    for t in sorted(sw.trials, key=lambda t: t.number):
        row: dict[str, Any] = {"trial": t.number, **{p: t.params.get(p) for p in sw.param_names}}
        m = t.metrics
        for c in every:
            row[c] = m.get(c)
        if t.value is not None:
            row[metric] = t.value
        row["state"] = t.status
        row["wall"] = t.wall_time_s
        row["run_id"] = t.run.run_id if t.run else (t.raw.get("run_id") or "")
        if commit:
            row["commit"] = t.run.code if t.run else None
        rows.append(row)
        if t.status == "failed":
            reason = (t.fail_reason or "").strip().splitlines()
            notes.append(f"trial {t.number} failed: {reason[-1] if reason else '(no reason recorded)'}")
        elif t.status == "unreadable":
            notes.append(f"unreadable: {t.fail_reason}")
    info = sw.info
    n_done = sum(t.status == "done" for t in sw.trials)
    title = (f"sweep {sw.name}: {n_done}/{info.get('n_trials', len(sw.trials))} done, "
             f"{info.get('sampler', '?')} sampler, objective {metric} "
             f"({'max' if sw.maximize else 'min'})")
    best = info.get("best")
    if best:
        notes.insert(0, f"best: trial {best.get('number')}  {metric}={fmt(best.get('value'))}  "
                        + " ".join(f"{k}={v}" for k, v in (best.get("params") if isinstance(best.get("params"), dict)
                                                              else {}).items()))
    return Tabular(title, head + mcols + tail, rows, objective=metric, maximize=sw.maximize, notes=notes,
                   csv_columns=head + every + tail, params=list(sw.param_names))


def runs_table(runs: list[RunRecord], all_metrics: bool = False, title: Optional[str] = None,
               commit: bool = False) -> Tabular:
    several_exps = len({r.experiment for r in runs}) > 1
    keys = varying_keys(r.spec for r in runs)
    shown_keys = keys[:MAX_PARAM_COLUMNS]
    mcols = _metric_columns([r.metrics for r in runs], all_metrics=all_metrics)
    every = _metric_columns([r.metrics for r in runs], all_metrics=True)
    head = (["experiment"] if several_exps else []) + ["run_id"]
    tail = ["state", "wall"] + (["commit"] if commit else [])
    rows, notes = [], []
    for r in sorted(runs, key=lambda r: (r.experiment, r.run_id)):
        row: dict[str, Any] = {"experiment": r.experiment, "run_id": r.run_id}
        for k in keys:
            row[k] = r.spec.get(k)
        m = r.metrics
        for c in every:
            row[c] = m.get(c)
        row["state"] = r.status
        row["wall"] = r.wall_time_s
        if commit:
            row["commit"] = r.code
        rows.append(row)
        if r.state is not None and r.state.state in ("failed", "unreadable"):
            notes.append(f"{r.experiment}/{r.run_id} {r.state.state}: {r.state.detail}")
    if title is None:
        exps = sorted({r.experiment for r in runs})
        title = f"{len(runs)} runs" + (f" of {exps[0]}" if len(exps) == 1 else f" in {len(exps)} experiments")
    if len(keys) > len(shown_keys):
        notes.append(f"{len(keys) - len(shown_keys)} more differing spec keys in the CSV export")
    return Tabular(title, head + shown_keys + mcols + tail, rows, notes=notes,
                   csv_columns=head + keys + every + tail, params=list(keys))


# ----------------------------------------------------------------------------- aggregation
def mean_over(t: Tabular, over: list[str]) -> Tabular:
    """One row per setting of the other parameters, over the finished rows: n, then the mean and
    the sample standard deviation ("<metric>_std") of every metric, e.g. over seeds."""
    unknown = [k for k in over if k not in t.params]
    if unknown:
        hint = difflib.get_close_matches(unknown[0], t.params, n=1)
        raise ValueError(f"cannot average over '{unknown[0]}': not a parameter"
                         + (f" (did you mean '{hint[0]}'?)" if hint else f" (parameters: {', '.join(t.params)})"))
    keep = [k for k in t.params if k not in over]
    skip = {"trial", "run_id", "experiment", "state", "commit", *t.params}
    metrics = [c for c in (t.csv_columns or t.columns) if c not in skip]
    groups: dict[tuple, list[dict]] = {}
    for row in t.rows:
        if row.get("state") == "done":
            groups.setdefault(tuple(repr(row.get(k)) for k in keep), []).append(row)
    rows = []
    for members in groups.values():
        row: dict[str, Any] = {k: members[0].get(k) for k in keep}
        row["n"] = len(members)
        for c in metrics:
            values = [r[c] for r in members if isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)]
            if values:
                mean = sum(values) / len(values)
                row[c] = mean
                if len(values) > 1:
                    row[f"{c}_std"] = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        rows.append(row)
    with_std = lambda cols: [x for c in cols for x in ((c, f"{c}_std") if c != "wall" else (c,))]  # noqa: E731
    # the screen: the objective's spread, other metrics' means; the CSV: every mean and spread
    shown = [x for c in t.columns if c in metrics for x in ((c, f"{c}_std") if c == t.objective else (c,))]
    done = sum(len(m) for m in groups.values())
    return Tabular(f"{t.title} | mean over {', '.join(over)} of {done} finished", keep + ["n"] + shown,
                   rows, objective=t.objective, maximize=t.maximize,
                   csv_columns=keep + ["n"] + with_std(metrics), params=keep)


# ----------------------------------------------------------------------------- sorting
def sort_rows(t: Tabular, key: str, reverse: Optional[bool] = None) -> None:
    """Sort by a column (numbers numerically, blanks last). Objective: best first unless reversed."""
    cols = t.csv_columns or t.columns
    if key not in cols:
        hint = difflib.get_close_matches(key, cols, n=1)
        raise ValueError(f"cannot sort by '{key}': not a column"
                         + (f" (did you mean '{hint[0]}'?)" if hint else f" (columns: {', '.join(cols)})"))
    if reverse is None:
        reverse = key == t.objective and t.maximize

    def blank(row: dict) -> bool:
        v = row.get(key)
        return v is None or (isinstance(v, float) and math.isnan(v))

    def k(row: dict) -> tuple:
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return (0, v, "")
        return (1, 0, str(v))

    filled = sorted((r for r in t.rows if not blank(r)), key=k, reverse=reverse)
    t.rows[:] = filled + [r for r in t.rows if blank(r)]


# ----------------------------------------------------------------------------- output
_STATE_STYLE = {"done": "green", "failed": "red", "unreadable": "red", "running": "cyan", "queued": "yellow",
                "preempted": "magenta", "lost": "red", "unknown": "yellow", "waiting": "dim"}


def _cell(col: str, v: Any) -> str:
    return fmt_duration(v) if col == "wall" else fmt(v)


def render_rich(t: Tabular, console) -> None:
    from rich.table import Table

    table = Table(title=t.title, title_justify="left", header_style="bold")
    for c in t.columns:
        numeric = any(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in t.rows)
        table.add_column(c + (" *" if c == t.objective else ""), justify="right" if numeric or c == "wall" else "left",
                         style="bold" if c == t.objective else None)
    from rich.text import Text

    for r in t.rows:
        cells = []
        for c in t.columns:
            s = _cell(c, r.get(c))
            # Text, not markup: names, errors and paths print as they are ("[low, high]" included)
            cells.append(Text(s, style=_STATE_STYLE[s]) if c == "state" and s in _STATE_STYLE else Text(s))
        table.add_row(*cells)
    console.print(table)
    for n in t.notes:
        console.print(f"  {n}", highlight=False, markup=False)


def to_csv(t: Tabular, path: str | Path) -> None:
    cols = t.csv_columns or t.columns
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in t.rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])


def to_markdown(t: Tabular) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    numeric = {c for c in t.columns
               if c == "wall" or any(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in t.rows)}
    lines = [f"**{esc(t.title)}**", "", "| " + " | ".join(esc(c) for c in t.columns) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in t.columns) + "|"]
    for r in t.rows:
        lines.append("| " + " | ".join(esc(_cell(c, r.get(c))) for c in t.columns) + " |")
    if t.notes:
        lines.append("")
        lines += [f"- {esc(n)}" for n in t.notes]
    return "\n".join(lines) + "\n"
