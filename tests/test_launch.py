"""Launchers: the typed launch section, sbatch flags, local and submitit-subprocess runs with a
stand-in engine (same run-dir files, no torch), preemption + requeue, failure records, run states."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from starx import rundir
from starx.launch import scheduler
from starx.launch.config import LaunchConfig, LaunchConfigError, LaunchKind, SlurmConfig, tasks_per_node, validate
from starx.launch.submit import launch, launch_config, slurm_parameters
from starx.launch.testing import fake_prepare

FAKE = "starx.launch.testing:fake_run_job"


def write_spec(tmp_path: Path, **fake) -> Path:
    spec = tmp_path / "spec.yaml"
    cfg = {"experiment": "fake", "root": str(tmp_path / "results"), "x": 1.0,
           "fake": {"steps": 3, "sleep_s": 0.0, **fake}}
    spec.write_text(json.dumps(cfg))
    return spec


def wait_for(cond, timeout=30.0, poll=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError("condition not met in time")


# ----------------------------------------------------------------------------- config
def test_launch_section_defaults_and_overrides():
    base = OmegaConf.structured(LaunchConfig)
    assert base.kind == "local" and base.slurm.max_requeues == 3 and base.slurm.setup == []
    cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(
        ["kind=slurm", "slurm.gpus_per_node=4", "slurm.nodes=2", "slurm.additional_parameters.exclusive=''"]))
    assert cfg.kind is LaunchKind.slurm and cfg.kind == "slurm"
    assert tasks_per_node(cfg.slurm) == 4  # one task per GPU
    validate(cfg)
    with pytest.raises(Exception, match="slurmm"):
        OmegaConf.merge(base, OmegaConf.from_dotlist(["kind=slurmm"]))


@pytest.mark.parametrize("dotted, message", [
    ("slurm.nodes=0", "launch.slurm.nodes"),
    ("slurm.timeout_min=1", "signal_delay_s must be shorter"),
    ("slurm.tasks_per_node=3", "tasks_per_node must be 1 or equal"),
    ("slurm.max_requeues=-1", "max_requeues"),
])
def test_launch_section_validation(dotted, message):
    cfg = OmegaConf.merge(OmegaConf.structured(LaunchConfig),
                          OmegaConf.from_dotlist(["kind=slurm", "slurm.gpus_per_node=4", dotted]))
    with pytest.raises(LaunchConfigError, match=message):
        validate(cfg)


def test_slurm_parameters_map_to_sbatch_flags(tmp_path):
    s = SlurmConfig(partition="gpu", account="proj", qos="high", nodes=2, gpus_per_node=8, cpus_per_task=10,
                    mem_gb=400, timeout_min=600, constraint="h100", signal_delay_s=180, max_requeues=5,
                    setup=["module load cuda"], additional_parameters={"exclusive": "", "mail-type": "END"})
    p = slurm_parameters(s, "starx-x")
    assert p["ntasks_per_node"] == 8 and p["gpus_per_node"] == 8 and p["mem"] == "400GB"
    assert p["additional_parameters"] == {"exclusive": True, "mail-type": "END"}
    assert p["srun_args"] == ["--open-mode=append"]
    if shutil.which("srun") is None:
        pytest.skip("srun not installed: sbatch text not rendered")
    from submitit.slurm.slurm import _make_sbatch_string

    params = dict(p)
    params["additional_parameters"] = p["additional_parameters"]
    text = _make_sbatch_string(command="python -m x", folder=tmp_path, **params)
    for flag in ("--partition=gpu", "--account=proj", "--qos=high", "--nodes=2", "--ntasks-per-node=8",
                 "--gpus-per-node=8", "--cpus-per-task=10", "--mem=400GB", "--time=600", "--constraint=h100",
                 "--signal=USR2@180", "--exclusive\n", "--mail-type=END", "module load cuda",
                 "--open-mode=append"):
        assert flag in text, flag


def test_launch_config_from_a_spec_without_launch_section():
    lc = launch_config(OmegaConf.create({"experiment": "x"}))
    assert lc.kind is LaunchKind.local and lc.slurm.timeout_min == 60


# ----------------------------------------------------------------------------- local
def test_local_launch_runs_here_and_is_not_run_twice(tmp_path):
    prepared = fake_prepare(write_spec(tmp_path))
    h = launch(prepared, entry=FAKE)
    assert h.kind == "local" and h.result["status"] == "done" and h.result["pid"] == os.getpid()
    assert scheduler.read_launch(prepared.run_dir)["backend"] == "local"
    assert scheduler.run_state(prepared.run_dir).state == "done"
    again = launch(prepared, entry=FAKE)
    assert again.attached and again.result["metrics"] == h.result["metrics"]
    assert scheduler.read_launch(prepared.run_dir)["submissions"] == 1
    assert "done" in str(again)


def test_local_failure_is_recorded_with_its_traceback(tmp_path):
    prepared = fake_prepare(write_spec(tmp_path, fail=True))
    with pytest.raises(RuntimeError, match="fake failure"):
        launch(prepared, entry=FAKE)
    st = scheduler.run_state(prepared.run_dir)
    assert st.state == "failed" and "fake failure at step 0" in st.detail
    assert any("RuntimeError" in ln for ln in st.error_tail)


# ----------------------------------------------------------------------------- subprocess
def test_subprocess_launch_returns_at_once_and_follow_tails_the_log(tmp_path):
    prepared = fake_prepare(write_spec(tmp_path, steps=6, sleep_s=0.1), ["launch.kind=subprocess"])
    h = launch(prepared, entry=FAKE)
    assert h.kind == "subprocess" and h.job_id and h.result is None
    assert h.state().state in ("running", "done")
    # a second launch of the same run attaches instead of submitting twice
    again = launch(prepared, entry=FAKE)
    assert again.attached and again.job_id == h.job_id
    out = io.StringIO()
    st = h.wait(poll_s=0.1, timeout_s=60, follow=out)
    assert st.state == "done" and st.result["metrics"]["top1"] == pytest.approx(78.5)
    assert "Starting with JobEnvironment" in out.getvalue() or "Job completed" in out.getvalue()
    events = [e["event"] for e in scheduler.read_events(prepared.run_dir)]
    assert events == ["start", "finished"]


def test_subprocess_failure_gives_failed_state_with_error_lines(tmp_path):
    prepared = fake_prepare(write_spec(tmp_path, fail_at_step=1), ["launch.kind=subprocess"])
    h = launch(prepared, entry=FAKE)
    st = h.wait(poll_s=0.1, timeout_s=60)
    assert st.state == "failed"
    assert "fake failure at step 1" in "\n".join(st.error_tail)


def test_subprocess_preemption_requeues_and_resumes_from_the_checkpoint(tmp_path):
    """USR2 (what SLURM sends before the time limit): checkpoint, requeue (exit 144), resume."""
    prepared = fake_prepare(write_spec(tmp_path, steps=40, sleep_s=0.05), ["launch.kind=subprocess"])
    h = launch(prepared, entry=FAKE)
    start = wait_for(lambda: next((e for e in scheduler.read_events(prepared.run_dir) if e["event"] == "start"), None))
    wait_for(lambda: len(rundir.read_jsonl(prepared.run_dir / "metrics.jsonl")) >= 3)
    os.kill(start["pid"], signal.SIGUSR2)  # the task process, as SLURM's --signal does
    st = h.wait(poll_s=0.1, timeout_s=60)
    assert st.state == "done", st
    events = [e["event"] for e in scheduler.read_events(prepared.run_dir)]
    assert events == ["start", "preempted", "requeued", "start", "finished"], events
    resumed_from = st.result["metrics"]["resumed_from"]
    assert 3 <= resumed_from < 40
    steps = [r["step"] for r in rundir.read_jsonl(prepared.run_dir / "metrics.jsonl") if "step" in r]
    assert steps == list(range(40))  # every step once: resumed, not restarted


def test_sigterm_saves_and_exits_without_requeue(tmp_path):
    """SIGTERM is SLURM's call (preemption requeue or scancel): save, exit, never requeue ourselves."""
    prepared = fake_prepare(write_spec(tmp_path, steps=200, sleep_s=0.05), ["launch.kind=subprocess"])
    h = launch(prepared, entry=FAKE)
    start = wait_for(lambda: next((e for e in scheduler.read_events(prepared.run_dir) if e["event"] == "start"), None))
    wait_for(lambda: len(rundir.read_jsonl(prepared.run_dir / "metrics.jsonl")) >= 2)
    os.kill(start["pid"], signal.SIGTERM)
    st = h.wait(poll_s=0.1, timeout_s=60)
    assert st.state == "preempted" and "run again" in st.detail
    assert [e["event"] for e in scheduler.read_events(prepared.run_dir)] == ["start", "preempted"]
    assert (prepared.run_dir / "checkpoints" / "last.json").exists()


# ----------------------------------------------------------------------------- states
def test_run_states_lost_unknown_and_prepared(tmp_path, monkeypatch):
    prepared = fake_prepare(write_spec(tmp_path))
    assert scheduler.run_state(prepared.run_dir).state == "prepared"
    # a subprocess job whose process is gone, without a result: lost
    scheduler.write_launch(prepared.run_dir, "subprocess", "999999999", prepared.run_dir / "launch", FAKE)
    assert scheduler.run_state(prepared.run_dir).state == "lost"
    # a SLURM job while the controller does not answer: unknown (never submitted twice)
    scheduler.write_launch(prepared.run_dir, "slurm", "12345", prepared.run_dir / "launch", FAKE)
    monkeypatch.setattr(scheduler, "query_slurm", lambda ids: None)
    st = scheduler.run_state(prepared.run_dir)
    assert st.state == "unknown" and st.active
    # the controller answers and the job is pending after a preemption
    monkeypatch.setattr(scheduler, "query_slurm", lambda ids: {"12345": ("PENDING", "BeginTime")})
    rundir.write_json_atomic(prepared.run_dir / "result.json", {"status": "preempted", "metrics": {}})
    st = scheduler.run_state(prepared.run_dir)
    assert st.state == "queued" and "requeued after preemption" in st.detail
    # the controller forgot the job; the result says preempted
    monkeypatch.setattr(scheduler, "query_slurm", lambda ids: {})
    assert scheduler.run_state(prepared.run_dir).state == "preempted"
    # ended by the scheduler without a result (TIMEOUT while still visible)
    (prepared.run_dir / "result.json").unlink()
    monkeypatch.setattr(scheduler, "query_slurm", lambda ids: {"12345": ("TIMEOUT", "None")})
    st = scheduler.run_state(prepared.run_dir)
    assert st.state == "failed" and "TIMEOUT" in st.detail


def test_multi_task_jobs_get_torch_distributed_env(tmp_path):
    """tasks_per_node=2: each task gets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* and gloo all-reduces."""
    pytest.importorskip("torch")
    prepared = fake_prepare(write_spec(tmp_path), ["launch.kind=subprocess", "launch.subprocess.tasks_per_node=2"])
    h = launch(prepared, entry="starx.launch.testing:fake_dist_job")
    st = h.wait(poll_s=0.2, timeout_s=120)
    assert st.state == "done", (st, rundir.tail(h.log_paths()[0], 20))
    assert st.result["metrics"] == {"sum": 3.0, "world_size": 2}
    env = st.result["env"]
    assert env["RANK"] == "0" and env["WORLD_SIZE"] == "2" and env["LOCAL_RANK"] == "0" and env["MASTER_PORT"]


def test_private_third_party_internals_stay_in_the_compat_module():
    """submitit's requeue internals and optuna's storage ids are used in starx/_compat.py only (pinned from
    above in pyproject.toml); the requeue path itself runs in the subprocess preemption test above."""
    import re
    from pathlib import Path

    import starx

    pattern = re.compile(r"\._storage\b|\._trial_id\b|_timeout_countdown|je\._checkpoint|env\._requeue\(|SignalHandler\(")
    root = Path(starx.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "_compat.py" and pattern.search(p.read_text())]
    assert offenders == []
