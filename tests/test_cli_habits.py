"""The CLI meets habits: bare `starx` prints help without importing torch; --debug / -q after the
sub-command; typer's shell completion; `starx logs RUN` follows a run's log; `starx cancel RUN|SWEEP`
stops a run (or a sweep and its trials) so that it stays resumable. Jobs are submitit subprocess
jobs of the stand-in engine (starx.launch.testing), as in test_launch.py and test_sweep.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from starx import rundir
from starx.cli._app import hoist_global_flags
from starx.launch import control, scheduler
from starx.launch.submit import launch
from starx.launch.testing import fake_prepare

ROOT = Path(__file__).resolve().parents[1]
FAKE = "starx.launch.testing:fake_run_job"


def _cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "STARX_RESULTS"}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "starx.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=full, timeout=timeout)


def _wait(cond, timeout: float = 60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _fake_spec(tmp_path: Path, **fake) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"experiment": "fake", "root": str(tmp_path / "results"), "x": 1.0,
                                "fake": {"steps": 3, "sleep_s": 0.0, **fake}}))
    return spec


# ----------------------------------------------------------------------------- help, flags, completion
def test_bare_starx_prints_help_without_importing_torch():
    code = ("import sys\nfrom starx.cli import main\nsys.argv = ['starx']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('EXIT', code, 'torch' in sys.modules, 'omegaconf' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "Usage: starx" in out.stdout and "Commands" in out.stdout and "cancel" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "EXIT 0 False False", out.stdout + out.stderr


def test_global_flags_are_hoisted_from_after_the_sub_command():
    assert hoist_global_flags(["run", "s.yaml", "k=v", "--debug"]) == ["--debug", "run", "s.yaml", "k=v"]
    assert hoist_global_flags(["-q", "status", "--quiet"]) == ["-q", "--quiet", "status"]
    assert hoist_global_flags(["data", "build", "a", "b", "-q"]) == ["-q", "data", "build", "a", "b"]
    assert hoist_global_flags(["run", "s.yaml", "--", "--debug"]) == ["run", "s.yaml", "--", "--debug"]


@pytest.mark.parametrize("flag, level", [("--debug", "DEBUG"), ("-q", "WARNING"), ("--quiet", "WARNING")])
def test_debug_and_quiet_work_after_the_sub_command(flag, level):
    code = ("import logging, sys\nfrom starx.cli import main\n"
            f"sys.argv = ['starx', 'validate', 'specs/quickstart.yaml', '{flag}']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('LEVEL', logging.getLevelName(logging.getLogger().level))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"LEVEL {level}"


def test_cancel_reports_a_refused_scancel_in_one_line(tmp_path):
    run_dir = tmp_path / "results" / "e" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.yaml").write_text("experiment: e\n")
    (run_dir / "launch.json").write_text('{"backend": "slurm", "job_id": "1"}')
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    for tool in ("squeue", "scancel"):  # a controller that says the job runs, then refuses to cancel it
        (tmp_path / tool).write_text("#!/bin/sh\n" + ("echo '1|RUNNING|None'\n" if tool == "squeue"
                                                       else "echo 'scancel: error: Access/permission denied' >&2\nexit 1\n"))
        (tmp_path / tool).chmod(0o755)
    plain = _cli("cancel", "e/r1", "--root", str(tmp_path / "results"), env=env)
    assert plain.returncode == 1 and "scancel 1: scancel: error: Access/permission denied" in plain.stderr


def test_shell_completion_is_enabled():
    words = _cli(env={"_STARX_COMPLETE": "complete_bash", "COMP_WORDS": "starx ca", "COMP_CWORD": "1"})
    assert words.returncode == 0 and words.stdout.split() == ["cancel"]
    script = _cli(env={"_STARX_COMPLETE": "source_bash"})
    assert "_starx_completion" in script.stdout and "complete " in script.stdout
    assert "--install-completion" in _cli("--help").stdout


# ----------------------------------------------------------------------------- logs
def test_slurm_run_logs_and_cancel_go_through_submitit_files_and_scancel(tmp_path):
    """Stand-ins for squeue/scancel on PATH (the real controller: tests/test_slurm.py's cluster)."""
    run_dir = tmp_path / "results" / "e" / "r1"
    (run_dir / "launch").mkdir(parents=True)
    (run_dir / "spec.yaml").write_text("experiment: e\n")
    (run_dir / "launch.json").write_text(json.dumps({"backend": "slurm", "job_id": "42",
                                                     "folder": str(run_dir / "launch")}))
    (run_dir / "launch" / "42_0_log.out").write_text("epoch 1\nepoch 2\n")
    (run_dir / "launch" / "42_0_log.err").write_text("")
    calls = tmp_path / "scancel.calls"
    (tmp_path / "squeue").write_text("#!/bin/sh\n[ -e %s ] || echo '42|RUNNING|None'\n" % calls)
    (tmp_path / "scancel").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    for tool in ("squeue", "scancel"):
        (tmp_path / tool).chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    root = str(tmp_path / "results")
    logs = _cli("logs", "e/r1", "--root", root, "--no-follow", env=env)
    assert logs.returncode == 0 and "42_0_log.out <==\nepoch 1\nepoch 2" in logs.stdout, logs.stdout + logs.stderr
    out = _cli("cancel", "e/r1", "--root", root, "--wait", "5", env=env)
    assert out.returncode == 0, out.stderr
    assert calls.read_text().split() == ["42"] and "scancel 42" in out.stdout
    assert [e["event"] for e in scheduler.read_events(run_dir)] == ["cancelled"]


def test_logs_follows_a_run_until_it_ends(tmp_path):
    prepared = fake_prepare(_fake_spec(tmp_path, steps=25, sleep_s=0.05), ["launch.kind=subprocess"])
    launch(prepared, entry=FAKE)
    root = str(tmp_path / "results")
    out = _cli("logs", f"fake/{prepared.run_id}", "--root", root)  # follows until the job ends
    assert out.returncode == 0, out.stderr
    assert "Starting with JobEnvironment" in out.stdout and "Job completed successfully" in out.stdout
    assert out.stdout.strip().splitlines()[-1].startswith(f"fake/{prepared.run_id}: done")
    # by run id prefix, by experiment (one run), without following
    for name in (prepared.run_id[:5], "fake", str(prepared.run_dir)):
        again = _cli("logs", name, "--root", root, "--no-follow", "-n", "1")
        assert again.returncode == 0 and "Exiting after successful completion" in again.stdout, (name, again.stderr)


def test_logs_of_a_local_run_is_its_train_log(tmp_path):
    run_dir = tmp_path / "results" / "exp" / "run-1"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.yaml").write_text("experiment: exp\n")
    (run_dir / "train.log").write_text("".join(f"line {i}\n" for i in range(30)))
    out = _cli("logs", "exp/run-1", "--root", str(tmp_path / "results"), "-n", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[:3] == ["line 27", "line 28", "line 29"]


def test_unknown_and_ambiguous_names_are_one_line_usage_errors(tmp_path):
    for run_id in ("aa-1", "aa-2"):
        d = tmp_path / "results" / "exp" / run_id
        d.mkdir(parents=True)
        (d / "spec.yaml").write_text("experiment: exp\n")
    root = str(tmp_path / "results")
    for args, fragment in ((("logs", "nope"), "no run named 'nope'"), (("cancel", "exp"), "matches 2 runs"),
                           (("logs", "aa"), "matches 2 runs"), (("cancel", "aa-3"), "did you mean")):
        out = _cli(*args, "--root", root)
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        assert out.returncode == 2 and len(lines) == 1 and fragment in lines[0], (args, out.stderr)


# ----------------------------------------------------------------------------- cancel
def test_cancel_a_subprocess_run_keeps_it_resumable(tmp_path):
    hold = tmp_path / "hold"  # the job waits before its step 3 until cancelled: no race with its end
    hold.touch()
    prepared = fake_prepare(_fake_spec(tmp_path, steps=20, sleep_s=0.05, hold_while=str(hold)),
                            ["launch.kind=subprocess"])
    launch(prepared, entry=FAKE)
    _wait(lambda: len(rundir.read_jsonl(prepared.run_dir / "metrics.jsonl")) >= 3)
    out = _cli("cancel", prepared.run_id, "--root", str(tmp_path / "results"))
    assert out.returncode == 0, out.stderr
    assert "SIGTERM to the submitit job" in out.stdout and "-> preempted" in out.stdout
    st = scheduler.run_state(prepared.run_dir)
    assert st.state == "preempted" and (prepared.run_dir / "checkpoints" / "last.json").exists()
    assert [e["event"] for e in scheduler.read_events(prepared.run_dir)] == ["start", "cancelled", "preempted"]
    # cancelling it again does nothing; running it again resumes
    again = _cli("cancel", prepared.run_id, "--root", str(tmp_path / "results"))
    assert again.returncode == 0 and "nothing to cancel" in again.stdout
    hold.unlink()
    done = launch(prepared, entry=FAKE, kind="local")
    assert done.result["status"] == "done" and done.result["metrics"]["resumed_from"] >= 3


def test_cancel_a_local_run_stops_the_starx_process(tmp_path):
    hold = tmp_path / "hold"  # the run waits before its step 3 until cancelled
    hold.touch()
    spec = _fake_spec(tmp_path, steps=20, sleep_s=0.05, hold_while=str(hold))
    code = ("import sys; from starx.launch.testing import fake_prepare; from starx.launch.submit import launch; "
            "h = launch(fake_prepare(sys.argv[1]), entry=sys.argv[2]); print('STATUS', h.result['status'])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(spec), FAKE], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        run_dir = _wait(lambda: next((tmp_path / "results" / "fake").glob("*/metrics.jsonl"), None)).parent
        cancelled = control.cancel_run(run_dir, wait_s=30)
        assert cancelled.signalled and cancelled.state == "preempted" and f"pid {proc.pid}" in cancelled.action
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "STATUS preempted" in stdout
    assert rundir.read_result(run_dir)["status"] == "preempted"


def test_cancel_a_sweep_stops_its_driver_and_trials_then_it_resumes(tmp_path):
    from starx.sweep.driver import run_sweep

    hold = tmp_path / "hold"  # the trials wait before their step 3 until cancelled
    hold.touch()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"experiment": "fake", "root": str(tmp_path / "results"), "x": 0.0,
                                    "fake": {"steps": 20, "sleep_s": 0.05, "hold_while": str(hold)}}))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "spec": str(spec), "sampler": "grid", "n_parallel": 2,
                                     "poll_s": 0.1, "params": {"x": [1.0, 2.0]}}))
    code = ("import sys; from starx.sweep import run_sweep; from starx.launch.testing import fake_prepare; "
            "run_sweep(sys.argv[1], root=sys.argv[2], prepare=fake_prepare, entry=sys.argv[3])")
    driver = subprocess.Popen([sys.executable, "-c", code, str(sweep), str(tmp_path / "results"), FAKE],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials_json = tmp_path / "results" / "s" / "trials.json"
    try:
        def two_running():
            ts = [t for t in (rundir.read_json(trials_json) or {}).get("trials", [])
                  if t["state"] == "RUNNING" and t["job_id"]]
            return ts if len(ts) == 2 and all(
                len(rundir.read_jsonl(Path(t["run_dir"]) / "metrics.jsonl")) >= 3 for t in ts) else None

        running = _wait(two_running)
        out = _cli("cancel", "s", "--root", str(tmp_path / "results"))
        assert out.returncode == 0, out.stderr
        assert f"stopped the driver (pid {driver.pid})" in out.stdout and "2 trial(s) cancelled" in out.stdout
        assert driver.wait(timeout=30) == -signal.SIGTERM
    finally:
        if driver.poll() is None:
            driver.kill()
    for t in running:
        assert scheduler.run_state(Path(t["run_dir"])).state == "preempted"
    hold.unlink()
    summary = run_sweep(sweep, root=tmp_path / "results", prepare=fake_prepare, entry=FAKE)
    assert summary.complete == 2 and summary.failed == 0
    for t in running:
        assert rundir.read_result(Path(t["run_dir"]))["metrics"]["resumed_from"] >= 3
