"""Sweep files (``sweeps/*.yaml``): a base spec, fixed overrides, a search space, an objective.

```yaml
name: seq_multiplier            # results/<name>/ holds the study; default: the file's stem
spec: specs/fmnist_gpu.yaml     # base spec (relative to the cwd, else to the repo holding sweeps/)
overrides:                      # fixed dotted overrides for every trial (a list, or a mapping)
  - pretrain.epochs=20
params:                         # search space over dotted spec keys
  model.seq_multiplier: [1, 2, 4, 8]                         # a list is a choice
  model.separator: {type: choice, values: [none, token, cluster]}
  optim.base_lr: {type: logfloat, low: 1.0e-4, high: 1.0e-3}   # or {type: float, log: true, ...}
  data.batch_size: {type: int, low: 128, high: 512, step: 128}
  recipe:                       # a choice whose values bundle several overrides (label -> overrides)
    type: choice
    values:
      short: {pretrain.epochs: 10, optim.base_lr: 3.0e-4}
      long: {pretrain.epochs: 40, optim.base_lr: 1.5e-4}
objective: {metric: top1, direction: maximize}   # a key of result.json "metrics"
sampler: grid                   # grid (every cell once) | tpe | random
seed: 0                         # sampler seed
n_trials: null                  # grid: the grid size (default and maximum); tpe/random: required
n_parallel: 2                   # trials in flight at once; a new one starts as soon as one ends
max_failures: 3                 # stop starting trials after more failures than this
poll_s: 5                       # how often the driver looks at running trials
```

Trials go where the spec's ``launch`` section says (add ``launch.kind=slurm`` to
``overrides``); ``launch.kind=local`` becomes ``subprocess`` for sweeps, so trials run in
parallel and survive the driver. Which fields may change between a run and its resume:
``n_trials`` (tpe/random), ``n_parallel``, ``max_failures``, ``poll_s`` and ``launch.*``
overrides; the others define the study and must stay as they were.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Optional

from starx.rundir import name_problem
from starx.spec import SpecError
from starx.spec.load import load_typed, read_yaml_mapping


class ParamType(StrEnum):
    choice = "choice"  # a list of values (or of labelled override bundles)
    int = "int"  # integers from low to high (step; log)
    float = "float"  # floats from low to high (step; log)
    logfloat = "logfloat"  # floats on a log scale


class Sampler(StrEnum):
    grid = "grid"  # every cell once, in the declared order
    tpe = "tpe"
    random = "random"


class Direction(StrEnum):
    maximize = "maximize"
    minimize = "minimize"


MAX_GRID_CELLS = 100_000  # points of a grid sweep (each one a trial)

# Fields that may change when a sweep is resumed (the rest define the study).
RESUMABLE_CHANGES = ("n_trials", "n_parallel", "max_failures", "poll_s")


class SweepError(SpecError):
    """A sweep file that cannot be used; the message names the file and the field."""


@dataclass
class Param:
    name: str
    type: str = "choice"
    values: Optional[list[Any]] = None  # choice: the values (or labels of bundles)
    bundles: Optional[dict[str, dict[str, Any]]] = None  # choice of override bundles: label -> {key: value}
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    log: bool = False

    def distribution(self):
        import optuna.distributions as d

        if self.type == "choice":
            return d.CategoricalDistribution(list(self.values or []))
        if self.type == "int":
            return d.IntDistribution(int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return d.FloatDistribution(float(self.low), float(self.high), step=self.step,
                                   log=self.log or self.type == "logfloat")

    def grid_size(self) -> int:
        """How many values :meth:`grid_values` gives, without listing them (a huge range is refused first)."""
        if self.type == "choice":
            return len(self.values or [])
        if self.type == "int" and not self.log:
            return max(0, (int(self.high) - int(self.low)) // int(self.step or 1) + 1)
        if self.step is None or self.log or self.type == "logfloat":
            raise ValueError("needs a step and a linear scale (or a list of values)")
        return int(math.floor((float(self.high) - float(self.low)) / float(self.step) + 1e-9)) + 1

    def grid_values(self) -> list[Any]:
        """Every value of this parameter, for the grid sampler."""
        if self.type == "choice":
            return list(self.values or [])
        if self.type == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None or self.log or self.type == "logfloat":
            raise ValueError("needs a step and a linear scale (or a list of values)")
        n = int(math.floor((float(self.high) - float(self.low)) / float(self.step) + 1e-9)) + 1
        return [round(float(self.low) + i * float(self.step), 12) for i in range(n)]

    def overrides(self, value: Any) -> list[str]:
        """Dotted overrides for one value of this parameter."""
        if self.bundles is not None:
            return [f"{k}={format_value(v)}" for k, v in self.bundles[str(value)].items()]
        return [f"{self.name}={format_value(value)}"]


@dataclass
class Objective:
    metric: str = "top1"
    direction: str = "maximize"


@dataclass
class SweepConfig:
    name: str
    spec: str
    overrides: list[str] = field(default_factory=list)
    params: dict[str, Param] = field(default_factory=dict)
    objective: Objective = field(default_factory=Objective)
    sampler: str = "grid"
    seed: int = 0
    n_trials: Optional[int] = None
    n_parallel: int = 1
    max_failures: int = 3
    poll_s: float = 5.0
    source: Optional[str] = None  # the file it was read from

    # ------------------------------------------------------------------ derived
    def grid(self) -> dict[str, list[Any]]:
        return {name: p.grid_values() for name, p in self.params.items()}

    def grid_cells(self) -> list[dict[str, Any]]:
        """Every cell, in the declared order (the first parameter varies slowest)."""
        grid = self.grid()
        names = list(grid)
        return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]

    def total_trials(self) -> int:
        if self.sampler == "grid":
            size = len(self.grid_cells())
            return min(self.n_trials, size) if self.n_trials else size
        assert self.n_trials is not None
        return self.n_trials

    def trial_overrides(self, params: dict[str, Any]) -> list[str]:
        out = list(self.overrides)
        for name, p in self.params.items():
            if name in params:
                out += p.overrides(params[name])
        return out

    def identity(self) -> dict[str, Any]:
        """What defines the study (compared on resume)."""
        d = self.to_dict()
        for key in (*RESUMABLE_CHANGES, "source"):
            d.pop(key, None)
        # where trials run does not change what they compute
        d["overrides"] = [o for o in d["overrides"] if not o.startswith("launch.")]
        if self.sampler == "grid":
            d.pop("n_trials", None)
        return d

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["params"] = {n: {k: v for k, v in asdict(p).items() if v not in (None, False) and k != "name"}
                       for n, p in self.params.items()}
        return d


def format_value(v: Any) -> str:
    """A value as the right-hand side of a dotted override (YAML scalar syntax)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    return str(v)


# ---------------------------------------------------------------------- parsing
# The typed schema of a sweep file, loaded like a spec (starx.spec.load.load_typed): unknown keys
# with a suggestion, wrong types and values outside a choice as one-line errors naming the field.
@dataclass
class ParamFile:
    type: ParamType = ParamType.choice
    values: Any = None  # choice: a list of scalars, or a mapping label -> {dotted key: value}
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    log: bool = False


@dataclass
class ObjectiveFile:
    metric: str = "top1"
    direction: Direction = Direction.maximize


@dataclass
class SweepFile:
    name: Optional[str] = None
    spec: Optional[str] = None  # the base experiment spec (a path)
    overrides: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    objective: ObjectiveFile = field(default_factory=ObjectiveFile)
    sampler: Sampler = Sampler.grid
    seed: Any = 0
    n_trials: Any = None
    n_parallel: Any = 1
    max_failures: Any = 3
    poll_s: float = 5.0


def _scalar_ok(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _parse_param(where: str, name: str, raw: Any) -> Param:
    w = f"{where}: params.{name}"
    if isinstance(raw, list):
        raw = {"type": "choice", "values": raw}
    if not isinstance(raw, dict):
        raise SweepError(f"{w}: expected a list of values or a mapping with 'type', got {raw!r}")
    if raw.get("type") == "log-float":
        raw = {**raw, "type": "logfloat"}
    # values stay as written (a mapping of dotted keys must not be read as nested fields)
    values = raw.get("values")
    typed = load_typed(ParamFile, [({k: v for k, v in raw.items() if k != "values"}, w)], SweepError)
    ptype = ParamType(typed.type)
    p = Param(name=name, type=ptype.value, log=bool(typed.log))
    if ptype is ParamType.choice:
        if isinstance(values, dict):
            if not values:
                raise SweepError(f"{w}.values: empty")
            bundles = {}
            for label, ov in values.items():
                if not isinstance(ov, dict) or not ov:
                    raise SweepError(f"{w}.values.{label}: a bundle maps dotted keys to values")
                bundles[str(label)] = dict(ov)
            p.values, p.bundles = list(bundles), bundles
        elif isinstance(values, list) and values:
            bad = [v for v in values if not _scalar_ok(v)]
            if bad:
                raise SweepError(f"{w}.values: only scalars (str, int, float, bool, null), got {bad[0]!r}")
            if len(set(map(repr, values))) != len(values):
                raise SweepError(f"{w}.values: duplicates in {values}")
            p.values = list(values)
        else:
            raise SweepError(f"{w}.values: a non-empty list (or a mapping label -> overrides) is required")
        for key in ("low", "high", "step"):
            if typed[key] is not None:
                raise SweepError(f"{w}.{key}: not used by a choice")
        return p
    if values is not None:
        raise SweepError(f"{w}.values: not used by type {ptype.value}")
    for key in ("low", "high"):
        if typed[key] is None:
            raise SweepError(f"{w}.{key}: required for type {ptype.value}")
    if ptype is ParamType.int:
        if any(typed[k] is not None and not float(typed[k]).is_integer() for k in ("low", "high", "step")):
            raise SweepError(f"{w}: an int parameter takes integer low/high/step")
        p.low, p.high = int(typed.low), int(typed.high)
        p.step = None if typed.step is None else int(typed.step)
    else:
        p.low, p.high = float(typed.low), float(typed.high)
        p.step = None if typed.step is None else float(typed.step)
    if not p.low < p.high:
        raise SweepError(f"{w}: low ({p.low}) must be below high ({p.high})")
    if (p.log or ptype is ParamType.logfloat) and p.low <= 0:
        raise SweepError(f"{w}.low: a log scale needs low > 0")
    if (p.log or ptype is ParamType.logfloat) and p.step is not None:
        raise SweepError(f"{w}.step: a log-scale parameter takes no step")
    if p.step is not None and p.step <= 0:
        raise SweepError(f"{w}.step: must be > 0")
    return p


def _normalise_overrides(where: str, raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        return [f"{k}={format_value(v)}" for k, v in raw.items()]
    if isinstance(raw, list):
        out = []
        for item in raw:
            if not isinstance(item, str) or "=" not in item:
                raise SweepError(f"{where}: overrides: expected 'dotted.key=value', got {item!r}")
            out.append(item)
        return out
    raise SweepError(f"{where}: overrides: a list of 'key=value' strings or a mapping")


def parse_sweep(data: dict, *, source: str = "<sweep>", default_name: str = "sweep") -> SweepConfig:
    """A sweep file's content as a SweepConfig (typed loading, then the checks across fields)."""
    where = source
    if not isinstance(data, dict):
        raise SweepError(f"{where}: expected a mapping at the top level")
    data = dict(data)
    # shorthands, then the typed schema
    if isinstance(data.get("objective"), str):
        data["objective"] = {"metric": data["objective"]}
    raw_params = data.pop("params", None)
    data["overrides"] = _normalise_overrides(where, data.get("overrides"))
    typed = load_typed(SweepFile, [(data, where)], SweepError)
    if not typed.spec:
        raise SweepError(f"{where}: spec: the base spec path is required")
    if not isinstance(raw_params, dict) or not raw_params:
        raise SweepError(f"{where}: params: at least one parameter is required")
    params = {str(n): _parse_param(where, str(n), v) for n, v in raw_params.items()}

    def _int(key: str, minimum: int) -> Any:
        v = typed[key]
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise SweepError(f"{where}: {key}: expected an integer >= {minimum}, got {v!r}")
        return v

    seed, n_trials, n_parallel, max_failures = (_int("seed", 0), _int("n_trials", 1), _int("n_parallel", 1),
                                                _int("max_failures", 0))
    for key, value in (("seed", seed), ("n_parallel", n_parallel), ("max_failures", max_failures)):
        if value is None:
            raise SweepError(f"{where}: {key}: expected an integer, got null")
    sampler = Sampler(typed.sampler)
    cfg = SweepConfig(
        name=str(typed.name or default_name),
        spec=str(typed.spec),
        overrides=list(typed.overrides),
        params=params,
        objective=Objective(metric=str(typed.objective.metric), direction=Direction(typed.objective.direction).value),
        sampler=sampler.value,
        seed=seed,
        n_trials=n_trials,
        n_parallel=n_parallel,
        max_failures=max_failures,
        poll_s=float(typed.poll_s),
        source=source,
    )
    problem = name_problem(cfg.name)
    if problem:
        raise SweepError(f"{where}: name: '{cfg.name}' {problem}")
    if not math.isfinite(cfg.poll_s) or cfg.poll_s <= 0:
        raise SweepError(f"{where}: poll_s: must be a finite number > 0, got {cfg.poll_s}")
    for p in params.values():
        for key in ("low", "high", "step"):
            value = getattr(p, key)
            if isinstance(value, float) and not math.isfinite(value):
                raise SweepError(f"{where}: params.{p.name}.{key}: must be a finite number, got {value}")
    if sampler is Sampler.grid:
        cells = 1
        for p in params.values():
            try:
                cells *= p.grid_size()
            except ValueError as e:
                raise SweepError(f"{where}: params.{p.name}: the grid sampler {e}") from None
            if cells > MAX_GRID_CELLS:
                raise SweepError(f"{where}: params.{p.name}: the grid has more than {MAX_GRID_CELLS:,} points "
                                 f"(use a step, fewer values, or the tpe / random sampler with n_trials)")
    elif cfg.n_trials is None:
        raise SweepError(f"{where}: n_trials: required for the {sampler.value} sampler")
    keys = [k for p in params.values() for k in ([k for b in p.bundles.values() for k in b] if p.bundles else [p.name])]
    fixed = [o.split("=", 1)[0] for o in cfg.overrides]
    clash = sorted(set(keys) & set(fixed))
    if clash:
        raise SweepError(f"{where}: {clash[0]} is both a fixed override and a swept parameter")
    return cfg


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and check a sweep file (the same typed loading, errors and suggestions as a spec)."""
    path = Path(path)
    data = read_yaml_mapping(path, SweepError, what="sweep")
    return parse_sweep(data, source=str(path), default_name=path.stem)


def check_against_spec(cfg: SweepConfig, max_values: int = 64) -> None:
    """The base spec loads with the fixed overrides, and with each parameter's values (a choice's
    first ``max_values``, a range's low and high): a key that is not a spec field, or a value out of
    its field's range, is a SweepError now rather than failed trials later."""
    from starx.spec import load_spec

    spec = resolve_spec_path(cfg)
    where = cfg.source or "<sweep>"
    try:
        load_spec(spec, cfg.overrides)
    except SpecError as e:
        raise SweepError(f"{where}: spec {cfg.spec} with the sweep's overrides: {e}") from None
    for p in cfg.params.values():
        values = (p.values or [])[:max_values] if p.type == "choice" else [p.low, p.high]
        for value in values:
            try:
                load_spec(spec, cfg.trial_overrides({p.name: value}))
            except SpecError as e:
                raise SweepError(f"{where}: params.{p.name} = {value!r}: {e}") from None


def resolve_spec_path(cfg: SweepConfig) -> Path:
    """The base spec: as given (absolute or from the cwd), else next to the sweep file's repo."""
    p = Path(cfg.spec).expanduser()
    if p.is_absolute() or p.exists() or cfg.source is None:
        return p
    src = Path(cfg.source).resolve().parent
    for base in (src, src.parent):
        if (base / p).exists():
            return base / p
    return p
