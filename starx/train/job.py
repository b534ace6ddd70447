"""The job entry point: ``run_job(run_dir)`` trains everything a run directory's spec asks for.

It is what every launcher calls (in this process, a submitit local job or a SLURM task),
so it takes only a path and reads the rest from ``run_dir/spec.yaml``. Calling it again
on the same directory resumes: finished stages are skipped, a stage in progress continues
from its last checkpoint, and a finished run returns its recorded result.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import random
import time
from pathlib import Path
from typing import Any, Callable

from starx import rundir
from starx.rundir import ResultRecord, RunDir, read_json, read_result, write_json_atomic
from starx.spec import derive, load_spec
from starx.train import signals

log = logging.getLogger(__name__)

__all__ = ["read_result", "run_job"]


def _versions() -> dict[str, str]:
    import torch

    import starx
    from starx.ops import kernel_status

    versions = {"starx": starx.__version__, "torch": torch.__version__, "python": platform.python_version()}
    kernels = kernel_status()
    for name in ("mamba_ssm", "causal_conv1d", "triton"):
        if kernels.get(name):
            versions[name] = str(kernels[name])
    return versions


def _scan_backend(backend: str, device) -> str:
    """The selective scan this run's model uses on its device (triton, cuda or torch)."""
    import torch

    from starx.ops import scan_backend

    return scan_backend(backend, torch.empty(0, device=device))


def _scan_kernels(backend: str, device) -> dict[str, str]:
    """{"scan_backend": the scan this run uses, and where it is triton "scan_backward": the kernel
    of its backward}."""
    scan = _scan_backend(backend, device)
    if scan != "triton":
        return {"scan_backend": scan}
    from starx.ops.triton_scan import backward_name

    return {"scan_backend": scan, "scan_backward": backward_name()}


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {platform.machine()})"


def _seed_everything(seed: int, deterministic: bool) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _stage_done(rd: RunDir, stage: str) -> dict | None:
    return read_json(rd.stage_done(stage))


def _mark_stage_done(rd: RunDir, stage: str, metrics: dict, is_main: bool) -> None:
    if is_main:
        write_json_atomic(rd.stage_done(stage), metrics)


class _NoFollowFileHandler(logging.FileHandler):
    """A FileHandler that appends without following a symlink planted at its path."""

    def _open(self):
        from starx.train.metrics import open_append

        return open_append(Path(self.baseFilename))


def _setup_run_logging(run_dir: Path, is_main: bool) -> Callable[[], None]:
    """train.log gets INFO and up; handlers already there (the terminal's, at WARNING under
    ``starx -q``) keep the level they had. Returns the undo."""
    if not is_main:
        return lambda: None
    handler = _NoFollowFileHandler(RunDir(run_dir).train_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    before = root.level
    quieter = [(h, h.level) for h in root.handlers if h.level < root.getEffectiveLevel()]
    for h, _ in quieter:
        h.setLevel(root.getEffectiveLevel())
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)

    def undo() -> None:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(before)
        for h, level in quieter:
            h.setLevel(level)

    return undo


def run_job(run_dir: str | Path) -> dict[str, Any]:
    """Train the run in ``run_dir`` to completion (or until preempted) and return result.json's content.

    Raises ``starx.rundir.RunLocked`` (touching nothing) when another process is training the same run."""
    from starx.train import dist as dist_mod

    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    cfg = load_spec(rd.spec)
    previous = read_result(rd)
    if previous and previous.get("status") == rundir.DONE:
        log.info("run %s is already done", run_dir)
        return previous

    dist = dist_mod.init(cfg.device)
    try:
        with _run_lock(rd, dist):
            return _train(run_dir, cfg, dist)
    finally:
        dist_mod.shutdown()


@contextlib.contextmanager
def _run_lock(rd: RunDir, dist):
    """Rank 0 holds the run directory's lock for the whole job; every rank refuses together
    when another process holds it (a second ``starx run`` of the same spec, a duplicate job)."""
    from starx.train import dist as dist_mod

    with contextlib.ExitStack() as stack:
        refused: rundir.RunLocked | None = None
        if dist.is_main:
            try:
                stack.enter_context(rundir.lock_run(rd))
            except rundir.RunLocked as e:
                refused = e
        if dist_mod.any_rank(refused is not None, dist.device):
            raise refused or rundir.RunLocked(f"run directory {rd.path} is in use by another process")
        yield


def _remove_stale_temp_files(rd: RunDir) -> None:
    """Temporary files of atomic writes that a killed trainer left (``.<name>.<pid>.tmp``): checkpoints
    and the trainer's own records (not launch.json, which a launcher elsewhere may be writing). Only
    called under the run lock, so no trainer is alive to own them."""
    ours = (rundir.RESULT, rundir.DERIVED, rundir.METRICS)
    for folder in (rd.path, rd.checkpoints):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
            if folder == rd.path and not tmp.name.startswith(tuple(f".{name}." for name in ours)):
                continue
            if tmp.is_file() and not tmp.is_symlink():
                log.info("removing %s, left by an interrupted write", tmp)
                tmp.unlink(missing_ok=True)


def _train(run_dir: Path, cfg, dist) -> dict[str, Any]:
    import torch

    from starx.train import dist as dist_mod

    rd = RunDir(run_dir)
    previous = read_result(rd)  # again, under the lock: another process may have finished it meanwhile
    if previous and previous.get("status") == rundir.DONE:
        log.info("run %s is already done", run_dir)
        return previous
    if dist.is_main:
        _remove_stale_temp_files(rd)
    undo_logging = _setup_run_logging(run_dir, dist.is_main)
    _seed_everything(cfg.seed, cfg.deterministic)
    signals.reset()
    undo_signals = signals.install()
    started = time.time()
    prior = (previous or {}).get("wall_time_s")
    prior_wall = float(prior) if isinstance(prior, (int, float)) and math.isfinite(prior) else 0.0
    # derived.json again, from the numbers this trainer uses (the real world size among them)
    derived = derive(cfg, world_size=dist.world_size)
    if dist.is_main:
        write_json_atomic(rd.derived, derived, indent=2)
    record_ = ResultRecord(experiment=cfg.experiment, run_id=run_dir.name, status=rundir.RUNNING,
                           wall_time_s=prior_wall, versions=_versions(), device=_device_name(dist.device),
                           devices=dist_mod.describe_devices(dist),
                           extra={"run_dir": str(run_dir), "world_size": dist.world_size, "started": started,
                                  **_scan_kernels(cfg.model.backend, dist.device)})
    result = record_.to_dict()

    def record(status: str, error: str | None = None) -> None:
        record_.status, record_.error = status, error
        record_.wall_time_s = round(prior_wall + time.time() - started, 2)
        result.update(record_.to_dict())
        if dist.is_main:
            rundir.write_result(rd, record_)

    record(rundir.RUNNING)
    if dist.is_main:  # env.json: the code version, packages and machine behind this result
        from starx import provenance

        try:
            provenance.write_env(run_dir, provenance.environment(dist.device, result.get("scan_backend")))
        except Exception as e:  # noqa: BLE001 - a record of the machine must not stop the training
            log.warning("env.json not written: %s: %s", type(e).__name__, e)
    metrics = None
    try:
        from starx.data import dataset_info, ensure_dataset
        from starx.tracking import tracked_metrics
        from starx.train.baseline import pixel_baseline
        from starx.train.progress import StageProgress
        from starx.train.stages import RunContext, preflight, run_finetune, run_pretrain

        precision = cfg.precision
        if precision == "auto":
            precision = "bf16" if dist.device.type == "cuda" else "fp32"
        cache = Path(cfg.data.cache_dir).expanduser()
        train_data = ensure_dataset(cfg.data.dataset, cache, cfg.data.train_split)
        eval_data = ensure_dataset(cfg.data.eval_dataset or cfg.data.dataset, cache, cfg.data.eval_split)
        num_train, num_classes = dataset_info(train_data)
        metrics = tracked_metrics(cfg, run_dir, dist.is_main)  # metrics.jsonl, and TensorBoard / W&B if asked for
        ctx = RunContext(cfg=cfg, run_dir=run_dir, dist=dist, metrics=metrics,
                         train_data=train_data, eval_data=eval_data, num_train=num_train, num_classes=num_classes,
                         autocast_dtype=torch.bfloat16 if precision == "bf16" else None, derived=derived)
        rd.checkpoints.mkdir(exist_ok=True)
        preflight(ctx)  # init files (pretrain.init, finetune.init) read and fitted before anything trains
        progress = StageProgress(enabled=dist.is_main)
        stages = [("pretrain", cfg.pretrain.enabled, run_pretrain), ("finetune", cfg.finetune.enabled, run_finetune),
                  ("pixel_baseline", cfg.eval.pixel_baseline, lambda c, p: pixel_baseline(c))]
        for name, enabled, fn in stages:
            if not enabled:
                continue
            done = _stage_done(rd, name)
            if done is None:
                log.info("stage %s: starting", name)
                done = fn(ctx, progress)
                _mark_stage_done(rd, name, done, dist.is_main)
                # Rank 0 alone writes the stage's last checkpoint, which the next stage reads
                # (finetune.init=pretrain): no rank goes on before it is there.
                dist_mod.barrier(dist.device)
            record_.metrics.update(done)
            record(rundir.RUNNING)
        record(rundir.DONE)
        log.info("run done in %.0f s: %s", result["wall_time_s"],
                 ", ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items() if isinstance(v, float)))
        return result
    except signals.Preempted as e:
        record(rundir.PREEMPTED, str(e))
        raise
    except KeyboardInterrupt:
        # a second Ctrl-C: stop now; the run resumes from its last checkpoint (if any) when run again
        record(rundir.PREEMPTED, "interrupted by a second Ctrl-C: stopped without saving; the work since the "
                                 "last checkpoint (if any) is lost")
        raise
    except BaseException as e:
        record(rundir.FAILED, f"{type(e).__name__}: {e}".strip()[:2000])
        raise
    finally:
        undo_signals()
        if metrics is not None:
            metrics.close()
        undo_logging()
