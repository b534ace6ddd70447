"""Against a real SLURM controller (scripts/slurm/start_local_cluster.sh): the real engine
(starx.train.job.run_job) on a tiny quick-start spec, submitted with submitit.

- a run: `launch.kind=slurm` returns at once with a job id, the job finishes, status says done;
- a sweep with 2 trials in flight;
- preemption: `scontrol requeue` (SIGTERM: save, exit, SLURM requeues) and `scancel --signal=USR2`
  (the time-limit signal: save, the job requeues itself); both resume from the saved checkpoint.

Skipped when no controller answers. The requeue delay is AuthInfo=cred_expire (5 s in the
test cluster, 120 s by default)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from starx import rundir
from starx.launch import scheduler

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "specs" / "quickstart.yaml"
LOCAL_CONF = Path(os.environ.get("STARX_SLURM_DIR", "/tmp/starx-slurm")) / "slurm.conf"


def _controller_up() -> bool:
    if "SLURM_CONF" not in os.environ and LOCAL_CONF.exists() and not Path("/etc/slurm/slurm.conf").exists():
        os.environ["SLURM_CONF"] = str(LOCAL_CONF)
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "UP" in out.stdout


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    if not _controller_up():
        pytest.skip("no SLURM controller answers (start one with scripts/slurm/start_local_cluster.sh)")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One dataset cache for the module: the embedded split is written once (about 7 s)."""
    return tmp_path_factory.mktemp("cache")


def tiny(tmp_path: Path, cache: Path, *extra: str) -> list[str]:
    """The quick-start spec shrunk to seconds on one core, pretraining only (the engine's tests
    cover fine-tuning), sent to SLURM."""
    return [f"output_dir={tmp_path / 'results'}", f"data.cache_dir={cache}", "data.num_workers=0",
            "model.depth=2", "model.embed_dim=32", "model.decoder_dim=32", "model.decoder_depth=1",
            "model.decoder_heads=2", "data.batch_size=64", "pretrain.epochs=0.07", "pretrain.warmup_epochs=0.02",
            "finetune.batch_size=64", "finetune.epochs=0.07", "finetune.warmup_epochs=0.02", "eval.batch_size=500",
            "eval.pixel_baseline=false", "eval.knn.enabled=false", "eval.linear_probe.enabled=false", "log_every=1",
            "finetune.enabled=false",
            "launch.kind=slurm", "launch.slurm.cpus_per_task=1", "launch.slurm.timeout_min=15",
            "launch.slurm.signal_delay_s=60", *extra]


def wait_for(cond, timeout: float, what: str, run_dir: Path | None = None, poll: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        if run_dir is not None and scheduler.run_state(run_dir).state in ("failed", "lost"):
            raise AssertionError(f"run ended while waiting for {what}: {explain(run_dir)}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}" + (f": {explain(run_dir)}" if run_dir else ""))


def pretrain_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in rundir.read_jsonl(run_dir / "metrics.jsonl")
            if r.get("stage") == "pretrain" and "loss" in r]


def explain(run_dir: Path) -> str:
    st = scheduler.run_state(run_dir)
    logs = "\n".join(ln for p in scheduler.log_paths(run_dir) for ln in rundir.tail(p, 15))
    return f"{st.state}: {st.detail}\nevents: {scheduler.read_events(run_dir)}\n{logs}"


def test_slurm_run_returns_at_once_and_finishes(tmp_path, cache_dir):
    from starx.api import prepare
    from starx.launch import launch
    from starx.results.status import job_rows

    prepared = prepare(QUICKSTART, tiny(tmp_path, cache_dir))
    t0 = time.time()
    handle = launch(prepared)
    assert time.time() - t0 < 10 and handle.kind == "slurm" and handle.job_id.isdigit()
    assert scheduler.read_launch(prepared.run_dir)["job_id"] == handle.job_id
    assert handle.state().state in ("queued", "running")
    st = handle.wait(poll_s=0.5, timeout_s=300)
    assert st.state == "done", explain(prepared.run_dir)
    m = st.result["metrics"]
    assert m["pretrain_steps"] == 11 and m["pretrain_loss"] > 0
    rows = job_rows(tmp_path / "results", "quickstart")
    assert [(r.backend, r.job_id, r.run.status) for r in rows] == [("slurm", handle.job_id, "done")]


def test_slurm_sweep_keeps_two_trials_in_flight(tmp_path, cache_dir):
    from starx.sweep.driver import run_sweep

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "slurm_sweep", "spec": str(QUICKSTART), "overrides": tiny(tmp_path, cache_dir),
        "params": {"model.separator": ["cluster", "token"]}, "objective": {"metric": "pretrain_loss",
                                                                          "direction": "minimize"},
        "sampler": "grid", "n_parallel": 2, "poll_s": 0.5, "max_failures": 0}))
    summary = run_sweep(sweep)
    trials = json.loads((tmp_path / "results" / "slurm_sweep" / "trials.json").read_text())["trials"]
    assert summary.complete == 2, [t.get("fail_reason") for t in trials]
    assert {t["backend"] for t in trials} == {"slurm"} and len({t["job_id"] for t in trials}) == 2
    spans = []
    for t in trials:
        ev = scheduler.read_events(Path(t["run_dir"]))
        spans.append((next(e["time"] for e in ev if e["event"] == "start"),
                      next(e["time"] for e in ev if e["event"] == "finished")))
    (s1, e1), (s2, e2) = spans
    assert s1 < e2 and s2 < e1, f"the two SLURM jobs did not overlap: {spans}"


@pytest.mark.parametrize("how", ["scontrol_requeue", "usr2"])
def test_slurm_preemption_requeues_and_resumes_from_the_checkpoint(tmp_path, cache_dir, how):
    """scontrol requeue: SLURM sends SIGTERM, the engine saves and exits, SLURM requeues.
    scancel --signal=USR2 (what --signal sends before the time limit): the engine saves and
    the job requeues itself. Either way the next start resumes: every step is logged once."""
    from starx.api import prepare
    from starx.launch import launch

    prepared = prepare(QUICKSTART, tiny(tmp_path, cache_dir, "pretrain.epochs=0.15", "checkpoint.every_steps=1000"))
    run_dir = prepared.run_dir
    handle = launch(prepared)
    wait_for(lambda: len(pretrain_steps(run_dir)) >= 3, 180, "3 pretraining steps", run_dir)
    if how == "scontrol_requeue":
        subprocess.check_call(["scontrol", "requeue", handle.job_id])
    else:
        subprocess.check_call(["scancel", "--signal=USR2", handle.job_id])
    t0 = time.time()
    wait_for(lambda: sum(e["event"] == "start" for e in scheduler.read_events(run_dir)) >= 2, 180, "the restart",
             run_dir)
    restart_wait = time.time() - t0
    st = handle.wait(poll_s=0.5, timeout_s=300)
    assert st.state == "done", explain(run_dir)
    events = scheduler.read_events(run_dir)
    names = [e["event"] for e in events]
    expected = ["start", "preempted", "start", "finished"]
    if how == "usr2":
        expected.insert(2, "requeued")
    assert names == expected, names
    assert events[-2]["restart"] == "1" and events[0]["job_id"] == events[-1]["job_id"] == handle.job_id
    saved = next(e for e in events if e["event"] == "preempted")["step"]
    steps = pretrain_steps(run_dir)
    total = st.result["metrics"]["pretrain_steps"]
    assert 3 <= saved < total
    assert sorted(steps) == list(range(1, total + 1)), "steps repeated or missing: not resumed from the checkpoint"
    restarted_at = events[names.index("start", 1)]["time"]
    after = [r["step"] for r in rundir.read_jsonl(run_dir / "metrics.jsonl")
             if r.get("stage") == "pretrain" and "loss" in r and r.get("time", 0) > restarted_at]
    assert after and min(after) == saved + 1
    print(f"{how}: preempted at step {saved}/{total}; restarted {restart_wait:.1f} s after the signal")
