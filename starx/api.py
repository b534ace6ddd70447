"""The facade: every ``starx`` command calls one function here, and so can a notebook or a test.

- runs: :func:`prepare`, :func:`run`, :func:`show`, :func:`validate`, :func:`reference`;
- models and the machine: :func:`models`, :func:`doctor`;
- sweeps: :func:`load_sweep`, :func:`sweep`;
- results: :func:`status`, :func:`results`;
- data: :func:`build_dataset`, :func:`dataset_details`;
- weights: :func:`export`.

Heavy imports happen inside the functions (``import starx.api`` loads no torch, optuna or ffcv).

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
from typing import Any, Iterable, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from starx.rundir import RunDir, write_text_if_changed
from starx.spec import SpecError, derive, load_spec

log = logging.getLogger(__name__)

# Fields that do not change what a run computes, so they stay out of its identity.
_IDENTITY_EXCLUDED = ("launch", "output_dir", "log_every", "checkpoint", "data.num_workers", "data.cache_dir",
                      "tracking")


@dataclass
class PreparedRun:
    experiment: str
    run_id: str
    run_dir: Path
    cfg: DictConfig
    derived: dict = field(default_factory=dict)
    stale: Optional[str] = None  # set by run(): a finished run computed by another code version


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


def run(spec: str | Path | None, overrides: Iterable[str] = (), *, follow: bool = False, force: bool = False):
    """Prepare the run and hand it to the launcher its spec names (local: runs here and returns the result).

    A run that is already done is not run again; when it was computed by another code version
    (``starx.provenance``), ``prepared.stale`` says so. ``force``: run it again, its previous outputs
    moved into ``superseded/`` first (refused while a job of the run is queued or running)."""
    from starx.launch import launch

    prepared = prepare(spec, overrides)
    if force:
        rerun(prepared.run_dir)
    else:
        prepared.stale = reuse_notice(prepared.run_dir)
    return prepared, launch(prepared, follow=follow)


def reuse_notice(run_dir: Path) -> Optional[str]:
    """For a finished run: why its result may not be what this code computes (None: same code)."""
    from starx.launch import scheduler
    from starx.provenance import stale_reason

    if scheduler.run_state(Path(run_dir)).state != scheduler.DONE:
        return None
    return stale_reason(run_dir)


def rerun(run_dir: Path) -> Optional[Path]:
    """Make a run start again (``--force``): its outputs go to ``superseded/<time>/``. Refused with a
    SpecError while a job of the run is queued or running."""
    from starx.launch import scheduler
    from starx.provenance import supersede

    st = scheduler.run_state(Path(run_dir))
    if st.active:
        raise SpecError(f"--force: {run_dir} has a {st.state} job; wait for it (or cancel it) first")
    return supersede(run_dir)


def validate(spec: str | Path | None, overrides: Iterable[str] = ()) -> DictConfig:
    """The resolved spec, or a SpecError naming the field (nothing is written)."""
    return load_spec(spec, overrides)


def reference() -> str:
    """The spec reference (Markdown): every field, its type, default and meaning."""
    from starx.spec.reference import spec_reference

    return spec_reference()


def models() -> list[dict[str, Any]]:
    """One row per registered model size (name, embed_dim, depth, encoder_params_m)."""
    from starx.models import describe_models

    return describe_models()


def doctor() -> list[tuple[str, Optional[bool], str]]:
    """(component, ok: True / None = missing / False = broken, details or fix) for what loads here."""
    from starx.doctor import checks

    return list(checks())


def load_sweep(sweep_file: str | Path, overrides: Sequence[str] = (), *, n_parallel: Optional[int] = None):
    """A sweep file as a SweepConfig, with extra fixed overrides and a trial count in flight."""
    import dataclasses

    from starx.sweep.config import check_against_spec
    from starx.sweep.config import load_sweep as _load

    cfg = _load(sweep_file)
    if overrides:
        cfg = dataclasses.replace(cfg, overrides=[*cfg.overrides, *overrides])
    if n_parallel is not None:
        cfg = dataclasses.replace(cfg, n_parallel=n_parallel)
    check_against_spec(cfg)  # every swept key is a spec field and its values load, before a trial starts
    return cfg


def sweep(cfg: Any, *, max_minutes: Optional[float] = None, detach: bool = False, retry_failed: bool = False,
          require_existing: bool = False, force: bool = False):
    """Drive (or resume) a sweep; returns (SweepSummary, SweepRecord as ``starx results`` reads it)."""
    from starx.results.catalog import load_sweep_record
    from starx.sweep.config import SweepError
    from starx.sweep.driver import SweepDriver

    driver = SweepDriver(cfg, max_wall_s=None if max_minutes is None else max_minutes * 60, detach=detach,
                         retry_failed=retry_failed, force=force)
    if require_existing and not driver.files.study.exists():
        raise SweepError(f"nothing to resume: no study in {driver.dir}")
    summary = driver.run()
    return summary, load_sweep_record(driver.root, cfg.name)


def status(root: Path, name: Optional[str] = None):
    """The launched runs (jobs) under a results root, or of one experiment or sweep."""
    from starx.results.status import job_rows

    return job_rows(Path(root), name)


def results(root: Path, name: Optional[str] = None):
    """("sweep", SweepRecord) | ("experiment", [RunRecord]) | ("all", [RunRecord])."""
    from starx.results.catalog import resolve

    return resolve(Path(root), name)


def export(run_dir: str | Path, *, stage: Optional[str] = None, fmt: str = "safetensors",
           out: Optional[str | Path] = None, ema: bool = False) -> Path:
    """A run's weights as ``model.safetensors`` + ``config.json`` (starx.train.export); returns the folder."""
    from starx.train.export import export_run

    return export_run(run_dir, stage=stage, fmt=fmt, out=out, ema=ema)


def build_dataset(source: str, out: str | Path, **kwargs: Any):
    """Write a source (embedded | imagefolder:PATH | idx:PATH | npz:PATH) as an FFCV .beton."""
    from starx.data import build_dataset as _build

    return _build(source, out, **kwargs)


def dataset_details(path: str | Path):
    """(images, classes, the image field's metadata) of a .beton, without importing FFCV."""
    from starx.data.info import dataset_info, read_metadata

    images, classes = dataset_info(path)
    return images, classes, read_metadata(path)["image"]
