"""What the CLI and the tests call: prepare a run directory, run it, show a spec.

A run is identified by its resolved spec: ``run_id`` hashes every field that changes what
is computed (not ``launch``, ``output_dir``, logging or checkpoint cadence), so running the same
spec again lands in the same ``results/<experiment>/<run_id>/`` and resumes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from starx.rundir import RunDir, write_text_if_changed
from starx.spec import SpecError, derive, load_spec

log = logging.getLogger(__name__)

# Fields that do not change what a run computes, so they stay out of its identity.
_IDENTITY_EXCLUDED = ("launch", "output_dir", "log_every", "checkpoint", "data.num_workers", "data.cache_dir")


@dataclass
class PreparedRun:
    experiment: str
    run_id: str
    run_dir: Path
    cfg: DictConfig
    derived: dict = field(default_factory=dict)


def run_identity(cfg: DictConfig) -> str:
    """A readable, stable id: size, k, separator, seed and a hash of the whole spec."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    for dotted in _IDENTITY_EXCLUDED:
        node: Any = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]
    m = cfg.model
    return f"{m.name}-k{m.seq_multiplier}-{m.separator}-s{cfg.seed}-{digest}"


def prepare(spec: str | Path | None, overrides: Iterable[str] = ()) -> PreparedRun:
    """Load and validate a spec, create its run directory with spec.yaml and derived.json."""
    cfg = load_spec(spec, overrides)
    run_id = run_identity(cfg)
    run_dir = Path(cfg.output_dir).expanduser() / cfg.experiment / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpecError(f"field 'output_dir': cannot create {run_dir}: {e.strerror}") from None
    derived = derive(cfg)
    rd = RunDir(run_dir)
    write_text_if_changed(rd.spec, OmegaConf.to_yaml(cfg))
    if not rd.derived.exists():  # the trainer rewrites it with the world size it runs with
        write_text_if_changed(rd.derived, json.dumps(derived, indent=2) + "\n")
    return PreparedRun(cfg.experiment, run_id, run_dir, cfg, derived)


def show(spec: str | Path | None, overrides: Iterable[str] = ()) -> tuple[str, dict, str]:
    """The resolved spec as YAML, its derived numbers and its run id, without writing anything."""
    cfg = load_spec(spec, overrides)
    return OmegaConf.to_yaml(cfg), derive(cfg), run_identity(cfg)


def run(spec: str | Path | None, overrides: Iterable[str] = (), *, follow: bool = False):
    """Prepare the run and hand it to the launcher its spec names (local: runs here and returns the result)."""
    from starx.launch import launch

    prepared = prepare(spec, overrides)
    return prepared, launch(prepared, follow=follow)
