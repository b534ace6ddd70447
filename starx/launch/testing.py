"""A stand-in engine for fast launcher/sweep tests: same run-dir files, no torch.

``fake_prepare(spec, overrides)`` mimics ``starx.api.prepare`` for a small YAML spec with a
``fake:`` section; ``fake_run_job(run_dir)`` mimics ``starx.train.job.run_job``: it honours the
preemption flag of ``starx.train.signals`` (checkpoint at a step boundary, raise ``Preempted``),
resumes from ``checkpoints/last.json``, writes metrics.jsonl and result.json.

Spec keys used::

    experiment: fake
    root: /tmp/results           # results root
    seed: 0
    x: 1.0                       # any numbers: the objective is a function of them
    fake: {steps: 5, sleep_s: 0.0, fail: false, fail_at_step: -1, fail_while: null, invalid: false,
           hold_while: null, hold_at_step: 3}
                                 # fail_while: a path; the run fails while that file exists
                                 # hold_while: a path; before step hold_at_step the run waits (still
                                 # answering preemption) while that file exists: tests that stop a
                                 # running job do so without racing its end
    launch: {...}                # starx.launch.config.LaunchConfig
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from starx import rundir
from starx.rundir import ResultRecord, RunDir, append_jsonl, write_json_atomic


@dataclass
class FakePrepared:
    experiment: str
    run_id: str
    run_dir: Path
    cfg: Any
    derived: dict = field(default_factory=dict)


def fake_prepare(spec: str | Path, overrides: Sequence[str] = ()) -> FakePrepared:
    from omegaconf import OmegaConf

    from .config import LaunchConfig

    base = OmegaConf.load(str(spec))
    schema = OmegaConf.create({"launch": OmegaConf.structured(LaunchConfig)})
    cfg = OmegaConf.merge(schema, base, OmegaConf.from_dotlist(list(overrides)))
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    # like the engine: the launch section does not change the run identity
    if (resolved.get("fake") or {}).get("invalid"):
        raise ValueError("field 'fake.invalid': this point is not a valid spec")
    ident = {k: v for k, v in resolved.items() if k not in ("launch", "root")}
    run_id = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    run_dir = Path(resolved.get("root", "results")) / str(resolved["experiment"]) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    rd = RunDir(run_dir)
    rd.spec.write_text(OmegaConf.to_yaml(cfg))
    derived = {"experiment": resolved["experiment"], "run_id": run_id}
    write_json_atomic(rd.derived, derived)
    OmegaConf.set_readonly(cfg, True)
    return FakePrepared(str(resolved["experiment"]), run_id, run_dir, cfg, derived)


def objective_of(cfg: dict) -> float:
    """A smooth function of the numeric top-level keys and ``params``: the 'top1' metric."""
    x = float(cfg.get("x", 0.0))
    y = float(cfg.get("y", 0.0))
    k = float(cfg.get("k", 1.0))
    return 80.0 - (x - 2.0) ** 2 - 0.5 * (y - 1.0) ** 2 + math.log2(max(k, 1e-9))


def fake_run_job(run_dir: str) -> dict:
    import yaml

    from starx.train import signals

    t0 = time.time()
    run_dir_p = Path(run_dir)
    rd = RunDir(run_dir_p)
    cfg = yaml.safe_load(rd.spec.read_text())
    fake = {"steps": 5, "sleep_s": 0.0, "fail": False, "fail_at_step": -1, "fail_while": None,
            "hold_while": None, "hold_at_step": 3, **(cfg.get("fake") or {})}
    signals.reset()
    signals.install()
    ckpt = run_dir_p / "checkpoints" / "last.json"
    start = 0
    resumed_from = None
    if ckpt.exists():
        start = json.loads(ckpt.read_text())["step"]
        resumed_from = start
    def record(status: str, **fields: Any) -> dict:
        return rundir.write_result(rd, ResultRecord(cfg["experiment"], run_dir_p.name, status,
                                                    versions={"fake": "1"}, device="cpu",
                                                    devices={"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")},
                                                    **fields))

    record(rundir.RUNNING)
    top1 = objective_of(cfg)
    metrics_f = rd.metrics
    for step in range(start, int(fake["steps"])):
        while (step == int(fake["hold_at_step"]) and fake["hold_while"] and Path(fake["hold_while"]).exists()
               and not signals.preempt_requested()):
            time.sleep(0.02)
        if signals.preempt_requested():
            ckpt.parent.mkdir(exist_ok=True)
            write_json_atomic(ckpt, {"step": step})
            record(rundir.PREEMPTED, wall_time_s=time.time() - t0)
            raise signals.Preempted(signals.last_signal(), step)
        if fake["fail_while"] and Path(fake["fail_while"]).exists():
            raise RuntimeError(f"fake failure: {fake['fail_while']} exists")
        if step == int(fake["fail_at_step"]) or (fake["fail"] and step == start):
            raise RuntimeError(f"fake failure at step {step}")
        time.sleep(float(fake["sleep_s"]))
        loss = 1.0 / (1 + step) + 0.01 * (80.0 - top1)
        append_jsonl(metrics_f, {"stage": "pretrain", "step": step, "epoch": step / 10,
                                         "loss": loss, "lr": 1e-3, "time": time.time(),
                                         "resumed_from": resumed_from})
        ckpt.parent.mkdir(exist_ok=True)
        write_json_atomic(ckpt, {"step": step + 1})
    append_jsonl(metrics_f, {"stage": "finetune", "kind": "eval", "epoch": 1,
                                     "top1": top1, "top1_ema": top1 - 0.1, "time": time.time()})
    return record(rundir.DONE, metrics={"pretrain_loss": 1.0 / max(1, int(fake["steps"])), "top1": top1,
                                        "top1_ema": top1 - 0.1, "resumed_from": resumed_from},
                  wall_time_s=time.time() - t0, extra={"pid": os.getpid()})


def fake_dist_job(run_dir: str) -> dict:
    """Joins a gloo process group from the env vars the launcher exported and all-reduces rank+1;
    result.json holds rank 0's variables (``env``) and every rank's (``envs``)."""
    import torch
    import torch.distributed as dist

    from starx.train.dist import shutdown

    env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    dist.init_process_group("gloo", init_method="env://")
    try:
        t = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(t)
        envs: list = [None] * dist.get_world_size()
        dist.all_gather_object(envs, env)
        record = ResultRecord("fake", Path(run_dir).name, rundir.DONE,
                              metrics={"sum": float(t.item()), "world_size": dist.get_world_size()},
                              extra={"env": env, "envs": envs})
        if dist.get_rank() == 0:
            rundir.write_result(Path(run_dir), record)
        return record.to_dict()
    finally:
        shutdown()  # as run_job leaves
