"""The catalog of runs and sweeps under a results root, read back from disk: only the run
directories and a sweep's trials.json (layout: starx.rundir; job states: starx.launch.scheduler).

Stdlib + PyYAML only (no torch, no optuna, no omegaconf), so ``starx results`` and
``starx status`` answer fast.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from starx.launch import scheduler
from starx.launch.scheduler import RunState
from starx.rundir import RunDir, SweepDir, name_problem, read_json, record_problem

# Metrics shown by default, in this order, when present.
KEY_METRICS = ("top1", "top5", "top1_ema", "best_top1", "knn_top1", "knn_top5", "probe_top1", "probe_top5",
               "pixel_top1", "linear_top1", "pretrain_loss", "pretrain_loss_tail", "finetune_loss")
# metrics.jsonl larger than this is not read for the throughput (a long run's log; result.json still is)
THROUGHPUT_MAX_BYTES = 64 << 20
# Spec keys that never distinguish runs (where they run, how often they log).
_SPEC_NOISE = ("launch.", "output_dir", "data.cache_dir", "data.num_workers", "log_every", "checkpoint.",
               "root", "experiment", "tracking.")


class ResultsError(ValueError):
    """A name that is neither an experiment nor a sweep under the results root."""


@dataclass
class RunRecord:
    experiment: str
    run_id: str
    run_dir: Path
    spec: dict = field(default_factory=dict)  # flattened: dotted key -> value
    state: Optional[RunState] = None

    @property
    def result(self) -> dict:
        return (self.state.result if self.state else None) or {}

    @functools.cached_property
    def metrics(self) -> dict:
        """result.json's numeric metrics, plus each stage's training throughput from metrics.jsonl
        (``<stage>_images_per_s``, :func:`throughput`) where result.json does not give it."""
        metrics = self.result.get("metrics")
        out = {k: v for k, v in (metrics if isinstance(metrics, dict) else {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return {**throughput(self.run_dir), **out} if out else out

    @property
    def wall_time_s(self) -> Optional[float]:
        return _number(self.result.get("wall_time_s"))

    @property
    def status(self) -> str:
        return self.state.state if self.state else "?"

    def events(self) -> list[dict]:
        return scheduler.read_events(self.run_dir)

    @property
    def code(self) -> Optional[str]:
        """The code version that computed the run (env.json), e.g. ``3db56c5d1a2b+dirty.1f2e3d4c``."""
        from starx.provenance import code_id

        return code_id(self.run_dir)


@dataclass
class TrialRecord:
    number: int
    optuna_state: str  # RUNNING / COMPLETE / FAIL / WAITING
    params: dict
    value: Optional[float]
    fail_reason: Optional[str]
    run: Optional[RunRecord]
    raw: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.optuna_state == "COMPLETE":
            return "done"
        if self.optuna_state == "FAIL":
            return "failed"
        if self.run is not None and self.run.state is not None:
            return self.run.status
        return self.optuna_state.lower()

    def objective(self, metric: str) -> Optional[float]:
        """The sweep's objective for this trial: the value the study recorded, else the run's own
        ``metric`` (a run that finished after its sweep driver stopped has no recorded value)."""
        return self.value if self.value is not None else _number(self.metrics.get(metric))

    @property
    def metrics(self) -> dict:
        if self.run is not None and self.run.metrics:
            return self.run.metrics
        metrics = self.raw.get("metrics")
        return dict(metrics) if isinstance(metrics, dict) else {}

    @property
    def wall_time_s(self) -> Optional[float]:
        if self.run is not None and self.run.wall_time_s is not None:
            return self.run.wall_time_s
        return _number(self.raw.get("wall_time_s"))


@dataclass
class SweepRecord:
    name: str
    dir: Path
    info: dict
    trials: list[TrialRecord]

    @property
    def metric(self) -> str:
        return self.info.get("objective", {}).get("metric", "value")

    @property
    def maximize(self) -> bool:
        return self.info.get("objective", {}).get("direction", "maximize") == "maximize"

    @property
    def param_names(self) -> list[str]:
        return list(self.info.get("params") or [])


# ----------------------------------------------------------------------------- helpers
def _number(v: Any) -> Optional[float]:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def throughput(run_dir: Path) -> dict[str, float]:
    """``{"<stage>_images_per_s": median}`` over a run's metrics.jsonl training lines (the images/s
    of each logged interval; the first interval of a stage, with its warm-up and kernel compiles,
    left out when there are others). Training time only: evaluations are not counted. With several
    runs sharing one GPU it is this run's share, not the arm's speed alone."""
    path = RunDir(run_dir).metrics
    try:
        if path.stat().st_size > THROUGHPUT_MAX_BYTES:
            return {}
        raw = path.read_bytes()
    except OSError:
        return {}
    per_stage: dict[str, list[float]] = {}
    for line in raw.splitlines():
        if b'"images_per_s"' not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:  # a torn last line, or not JSON: skipped
            continue
        if not isinstance(rec, dict) or rec.get("kind") is not None or not isinstance(rec.get("stage"), str):
            continue
        v = _number(rec.get("images_per_s"))
        if v is not None and math.isfinite(v):
            per_stage.setdefault(rec["stage"], []).append(float(v))
    out = {}
    for stage, values in per_stage.items():
        values = sorted(values[1:] if len(values) > 1 else values)
        mid = len(values) // 2
        out[f"{stage}_images_per_s"] = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    return out


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                out.update(flatten(v, key + "."))
            else:
                out[key] = v
    return out


def read_spec(run_dir: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(RunDir(run_dir).spec.read_text())
    except (OSError, ValueError, RecursionError, yaml.YAMLError):  # ValueError: not UTF-8
        return {}
    return flatten(data or {})


def varying_keys(specs: Iterable[dict]) -> list[str]:
    """Spec keys whose values differ between the given (flattened) specs, noise excluded."""
    specs = list(specs)
    if len(specs) < 2:
        return []
    keys = sorted({k for s in specs for k in s})
    out = []
    for k in keys:
        if any(k == n or k.startswith(n) for n in _SPEC_NOISE):
            continue
        vals = {repr(s.get(k)) for s in specs}
        if len(vals) > 1:
            out.append(k)
    return out


def is_run_dir(p: Path) -> bool:
    return RunDir(p).is_run()


def _states(run_dirs: list[Path]) -> dict[Path, RunState]:
    """Run states for many run dirs with one squeue call."""
    launches = {d: scheduler.read_launch(d) for d in run_dirs}
    ids = [rec["job_id"] for rec in launches.values()
           if rec and rec.get("backend") == "slurm" and rec.get("job_id")]
    slurm = scheduler.query_slurm(ids) if ids else {}
    return {d: scheduler.run_state(d, slurm) for d in run_dirs}


def load_runs(run_dirs: Iterable[Path], with_spec: bool = True) -> list[RunRecord]:
    run_dirs = [Path(d) for d in run_dirs]
    states = _states(run_dirs)
    return [RunRecord(d.parent.name, d.name, d, read_spec(d) if with_spec else {}, states[d]) for d in run_dirs]


def experiment_run_dirs(root: Path, experiment: Optional[str] = None) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    exps = [root / experiment] if experiment else sorted(p for p in root.iterdir() if p.is_dir())
    out = []
    for e in exps:
        if e.is_dir():
            out += sorted(p for p in e.iterdir() if p.is_dir() and is_run_dir(p))
    return out


def list_sweeps(root: Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if SweepDir(p).is_sweep())


def list_experiments(root: Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(is_run_dir(c) for c in p.iterdir()
                                                                     if c.is_dir()))


def load_sweep_record(root: Path, name: str) -> SweepRecord:
    d = Path(root) / name
    path = SweepDir(d).trials
    info = read_json(path)
    if info is None:
        raise ResultsError(f"{path} is missing or unreadable: {record_problem(path) or 'missing'}")
    raw_trials = info.get("trials") or []
    if not isinstance(raw_trials, list):
        raise ResultsError(f"{path}: 'trials' holds a {type(raw_trials).__name__}, not a list")
    for key in ("objective", "best"):
        if not isinstance(info.get(key), (dict, type(None))):
            info.pop(key)  # shown as unknown rather than crash the table
    if not isinstance(info.get("params"), (dict, list, type(None))):
        info.pop("params")
    ok = [t for t in raw_trials if _trial_problem(t) is None]
    run_dirs = [rd for rd in (_trial_run_dir(Path(root), t) for t in ok) if rd is not None and rd.is_dir()]
    runs = {r.run_dir: r for r in load_runs(run_dirs, with_spec=False)}
    trials = []
    for i, t in enumerate(raw_trials):
        why = _trial_problem(t)
        if why:  # one malformed entry: one row marked unreadable, naming the file
            trials.append(TrialRecord(-1, "UNREADABLE", {}, None, f"{path}: trials[{i}] {why}", None, {}))
            continue
        rd = _trial_run_dir(Path(root), t)
        params = t.get("params")
        trials.append(TrialRecord(int(t["number"]), str(t.get("state", "?")), dict(params) if isinstance(params, dict)
                                  else {}, _number(t.get("value")), t.get("fail_reason"), runs.get(rd) if rd else None,
                                  t))
    return SweepRecord(name, d, info, trials)


def _trial_run_dir(root: Path, t: dict) -> Optional[Path]:
    """A trial's run directory: the recorded path, else ``<root>/<experiment>/<run_id>`` when that is a
    run (a sweep's results copied from another machine, where the absolute path recorded there does
    not exist here)."""
    recorded = Path(t["run_dir"]) if t.get("run_dir") else None
    if recorded is not None and recorded.is_dir():
        return recorded
    exp, run_id = t.get("experiment"), t.get("run_id")
    if name_problem(exp) is None and name_problem(run_id) is None:
        here = root / exp / run_id
        if is_run_dir(here):
            return here
    return recorded


def _trial_problem(t: Any) -> Optional[str]:
    if not isinstance(t, dict):
        return f"is a {type(t).__name__}, not an object"
    if not isinstance(t.get("number"), int) or isinstance(t.get("number"), bool):
        return "has no trial number"
    if not isinstance(t.get("run_dir"), (str, type(None))):
        return "has a run_dir that is not a path"
    return None


def resolve(root: Path, name: Optional[str]) -> tuple[str, Any]:
    """("sweep", SweepRecord) | ("experiment", [RunRecord]) | ("all", [RunRecord])."""
    root = Path(root)
    if name is None:
        return "all", load_runs(experiment_run_dirs(root))
    if SweepDir(root / name).is_sweep():
        return "sweep", load_sweep_record(root, name)
    # a path to a sweep or experiment directory works too
    p = Path(name)
    if p.is_dir() and SweepDir(p).is_sweep():
        return "sweep", load_sweep_record(p.parent, p.name)
    if p.is_dir() and is_run_dir(p):
        return "experiment", load_runs([p])
    dirs = experiment_run_dirs(root, name)
    if not dirs and p.is_dir():
        dirs = experiment_run_dirs(p.parent, p.name)
    if dirs:
        return "experiment", load_runs(dirs)
    known = list_experiments(root) + list_sweeps(root)
    hint = difflib.get_close_matches(name, known, n=1)
    where = f"under {root}/" if root.is_dir() else f"({root}/ does not exist)"
    msg = f"no experiment or sweep named '{name}' {where}"
    if hint:
        msg += f" (did you mean '{hint[0]}'?)"
    elif known:
        msg += f"; have: {', '.join(known[:12])}"
    raise ResultsError(msg)
