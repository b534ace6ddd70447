"""``starx status``: the launched runs (jobs) and their state, failures with their last lines."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from starx.launch import scheduler

from .catalog import RunRecord, experiment_run_dirs, load_runs, resolve
from .table import Tabular, fmt_duration


@dataclass
class JobRow:
    run: RunRecord
    backend: str
    job_id: str
    submitted: Optional[float]
    requeues: int
    attempts: int


def job_rows(root: Path, name: Optional[str] = None) -> list[JobRow]:
    if name is None:
        runs = load_runs(experiment_run_dirs(root), with_spec=False)
    else:
        kind, obj = resolve(root, name)
        if kind == "sweep":
            runs = [t.run for t in obj.trials if t.run is not None]
        else:
            runs = obj
    out = []
    for r in runs:
        launch = r.state.launch if r.state else None
        if launch is None and r.status == "prepared":
            continue  # never launched: not a job
        events = r.events()
        out.append(JobRow(
            run=r,
            backend=(launch or {}).get("backend", "?"),
            job_id=str((launch or {}).get("job_id") or ""),
            submitted=_number((launch or {}).get("submitted")),
            requeues=sum(e.get("event") in ("preempted",) for e in events),
            attempts=sum(e.get("event") == "start" for e in events),
        ))
    out.sort(key=lambda j: (j.submitted or 0))
    return out


def _number(v) -> Optional[float]:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def status_table(rows: list[JobRow], n_lines: int = 5) -> Tabular:
    now = time.time()
    table_rows = []
    notes: list[str] = []
    for j in rows:
        st = j.run.state
        age = now - j.submitted if j.submitted else None
        detail = st.detail if st else ""
        table_rows.append({
            "experiment": j.run.experiment, "run_id": j.run.run_id, "backend": j.backend, "job": j.job_id,
            "state": j.run.status, "detail": detail[:60], "age": fmt_duration(age),
            "preemptions": j.requeues or "", "wall": j.run.wall_time_s,
        })
        if st is not None and st.state in (scheduler.FAILED, scheduler.LOST, scheduler.UNREADABLE) and st.error_tail:
            notes.append(f"{j.run.experiment}/{j.run.run_id} ({j.backend} {j.job_id}) {st.state}:")
            notes += [f"    {ln}" for ln in st.error_tail[-n_lines:]]
    counts: dict[str, int] = {}
    for j in rows:
        counts[j.run.status] = counts.get(j.run.status, 0) + 1
    title = f"{len(rows)} jobs: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) if rows else "no jobs"
    return Tabular(title, ["experiment", "run_id", "backend", "job", "state", "detail", "age", "preemptions", "wall"],
                   table_rows, notes=notes)
