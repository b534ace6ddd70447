"""Live tracking: TensorBoard event files and Weights & Biases runs, fed every record that
goes to ``metrics.jsonl`` (rank 0 only), so the dashboards show exactly the logged scalars.

A record ``{"stage": "pretrain", "step": 40, "loss": 0.61, "lr": 1e-3, ...}`` becomes the scalars
``pretrain/loss``, ``pretrain/lr``, ... at step 40 of that stage (eval lines give
``pretrain/knn_top1``, ``finetune/top1``, ...); ``time`` is the scalar's wall time, strings and
booleans are skipped. TensorBoard writes its event files into the run directory itself, so
``tensorboard --logdir results`` lists every run as ``<experiment>/<run_id>``. W&B gets the run
id as its id and name, the experiment as its group and the resolved spec as its config; its
default mode is offline (compute nodes often have no network): ``wandb sync <run_dir>/wandb/offline-run-*``
uploads later. Both are optional dependencies: ``pip install 'starx[tensorboard]'`` / ``'starx[wandb]'``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

SKIP = ("stage", "step", "time", "kind")


class MissingExtra(ImportError):
    """An optional dependency that a spec field asks for is not installed."""


def _require(module: str, field: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"field '{field}': needs the '{extra}' extra, which is not installed here: "
                           f"pip install 'starx[{extra}]'") from None


def scalars(record: dict[str, Any]) -> tuple[str, int, Optional[float], dict[str, float]]:
    """(stage, step, wall time, {tag: value}) of one metrics record."""
    stage = str(record.get("stage", "run"))
    values = {f"{stage}/{k}": float(v) for k, v in record.items()
              if k not in SKIP and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    return stage, int(record.get("step", 0)), record.get("time"), values


class TensorBoardSink:
    def __init__(self, run_dir: Path):
        _require("tensorboard", "tracking.tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir))

    def log(self, record: dict[str, Any]) -> None:
        _, step, walltime, values = scalars(record)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step, walltime=walltime)
        self.writer.flush()  # a few lines a minute: keep the dashboard current

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, cfg, run_id: str):
        wandb = _require("wandb", "tracking.wandb", "wandb")
        from omegaconf import OmegaConf

        w = cfg.tracking.wandb
        self.wandb = wandb
        self.run = wandb.init(project=w.project, entity=w.entity, group=cfg.experiment, name=run_id, id=run_id,
                              resume="allow", dir=str(run_dir), mode=w.mode, tags=list(w.tags) or None,
                              config=OmegaConf.to_container(cfg, resolve=True))
        self._stages: set[str] = set()

    def log(self, record: dict[str, Any]) -> None:
        stage, step, _, values = scalars(record)
        if stage not in self._stages:  # each stage counts its own steps
            self._stages.add(stage)
            self.run.define_metric(f"{stage}/step")
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
        self.run.log({f"{stage}/step": step, **values})

    def close(self) -> None:
        self.run.finish()


def open_sinks(cfg, run_dir: Path, is_main: bool) -> list:
    """The sinks the spec's ``tracking`` section asks for (none on ranks other than 0)."""
    if not is_main:
        return []
    sinks: list = []
    if cfg.tracking.tensorboard:
        sinks.append(TensorBoardSink(run_dir))
    if cfg.tracking.wandb.enabled:
        sinks.append(WandbSink(run_dir, cfg, Path(run_dir).name))
    return sinks


class TrackedMetricsLog:
    """metrics.jsonl's writer (``starx.train.metrics.MetricsLog``) that hands each record to the sinks too."""

    def __init__(self, metrics, sinks: list):
        self._metrics, self.sinks = metrics, sinks

    def __getattr__(self, name: str):  # read, truncate, path, enabled: metrics.jsonl's own
        return getattr(self._metrics, name)

    def write(self, record: dict[str, Any]) -> None:
        import time

        self._metrics.write(record)
        if not (self._metrics.enabled and self.sinks):
            return
        record = {"time": round(time.time(), 3), **record}
        for sink in self.sinks:
            try:
                sink.log(record)
            except Exception as e:  # a dashboard must never stop training
                log.warning("tracking: %s could not log %s step %s: %s", type(sink).__name__, record.get("stage"),
                            record.get("step"), e)

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:
                log.warning("tracking: %s did not close cleanly: %s", type(sink).__name__, e)
        self.sinks = []


def tracked_metrics(cfg, run_dir: Path, is_main: bool) -> TrackedMetricsLog:
    """The run's metrics.jsonl writer, also feeding the sinks of the spec's ``tracking`` section;
    ``close()`` it when the run stops."""
    from starx.rundir import RunDir
    from starx.train.metrics import MetricsLog

    return TrackedMetricsLog(MetricsLog(RunDir(run_dir).metrics, is_main), open_sinks(cfg, run_dir, is_main))
