"""Sweeps: file parsing, grid completeness, N trials in flight, failures, resume after kill -9.

Trials run as real submitit subprocess jobs of a stand-in engine (starx.launch.testing), so the
driver, the launcher and the Optuna journal are the real ones while each trial takes < 2 s."""

from __future__ import annotations

import fcntl
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
from starx.launch import scheduler
from starx.launch.testing import fake_prepare
from starx.sweep.config import SweepError, load_sweep, parse_sweep, resolve_spec_path
from starx.sweep.driver import run_sweep

ROOT = Path(__file__).resolve().parents[1]
FAKE = "starx.launch.testing:fake_run_job"


def setup_sweep(tmp_path: Path, fake: dict | None = None, **sweep) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"experiment": "fake", "root": str(tmp_path / "results"), "x": 0.0, "y": 0.0,
                                    "fake": {"steps": 3, "sleep_s": 0.0, **(fake or {})}}))
    data = {"name": "s", "spec": str(spec), "sampler": "grid", "n_parallel": 2, "poll_s": 0.1, **sweep}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def drive(path: Path, tmp_path: Path, **kw):
    return run_sweep(path, root=tmp_path / "results", prepare=fake_prepare, entry=FAKE, **kw)


def trials(tmp_path: Path, name: str = "s") -> list[dict]:
    return json.loads((tmp_path / "results" / name / "trials.json").read_text())["trials"]


# ----------------------------------------------------------------------------- parsing
def test_sweep_file_format():
    cfg = parse_sweep({
        "spec": "specs/x.yaml",
        "overrides": {"pretrain.epochs": 2},
        "params": {
            "model.seq_multiplier": [1, 2, 4, 8],
            "model.separator": {"type": "choice", "values": ["none", "cluster"]},
            "recipe": {"type": "choice", "values": {"short": {"pretrain.warmup_epochs": 1, "optim.base_lr": 3e-4},
                                                     "long": {"pretrain.warmup_epochs": 5}}},
            "data.batch_size": {"type": "int", "low": 128, "high": 512, "step": 128},
        },
        "objective": {"metric": "top1_ema"},
    }, source="t.yaml", default_name="t")
    assert cfg.name == "t" and cfg.overrides == ["pretrain.epochs=2"] and cfg.objective.direction == "maximize"
    cells = cfg.grid_cells()
    assert len(cells) == 4 * 2 * 2 * 4 == cfg.total_trials()
    assert len({json.dumps(c, sort_keys=True) for c in cells}) == len(cells)
    ov = cfg.trial_overrides({"model.seq_multiplier": 4, "model.separator": "none", "recipe": "short",
                              "data.batch_size": 256})
    assert ov == ["pretrain.epochs=2", "model.seq_multiplier=4", "model.separator=none",
                  "pretrain.warmup_epochs=1", "optim.base_lr=0.0003", "data.batch_size=256"]
    tpe = parse_sweep({"spec": "x", "sampler": "tpe", "n_trials": 20,
                       "params": {"optim.base_lr": {"type": "logfloat", "low": 1e-5, "high": 1e-3},
                                  "optim.weight_decay": {"type": "float", "low": 0.0, "high": 0.1}}})
    d = tpe.params["optim.base_lr"].distribution()
    assert d.log and d.low == 1e-5 and tpe.total_trials() == 20


@pytest.mark.parametrize("data, message", [
    ({"spec": "x", "params": {"a": [1]}, "smapler": "grid"}, "did you mean 'sampler'"),
    ({"spec": "x", "params": {"a": {"type": "choice", "vals": [1]}}}, "did you mean 'values'"),
    ({"spec": "x", "params": {"a": {"type": "float", "low": 0, "high": 1}}}, "grid sampler needs a step"),
    ({"spec": "x", "params": {"a": {"type": "float", "low": 0, "high": 1}}, "sampler": "tpe"}, "n_trials: required"),
    ({"spec": "x", "params": {"a": {"type": "logfloat", "low": 0, "high": 1}}, "sampler": "random", "n_trials": 2},
     "log scale needs low > 0"),
    ({"spec": "x", "params": {"a": {"type": "int", "low": 5, "high": 1}}}, "must be below high"),
    ({"spec": "x", "params": {"a": [1, 1]}}, "duplicates"),
    ({"spec": "x", "params": {"a": [1]}, "overrides": ["a=2"]}, "both a fixed override and a swept"),
    ({"spec": "x", "params": {"a": [1]}, "objective": {"metric": "top1", "direction": "up"}}, "maximize or minimize"),
    ({"spec": "x", "params": {"a": [1]}, "sampler": "grdi"}, "did you mean 'grid'"),
    ({"params": {"a": [1]}}, "spec: the base spec path is required"),
    ({"spec": "x", "params": {"a": [1]}, "n_parallel": 0}, "n_parallel: expected an integer >= 1"),
])
def test_sweep_file_errors_name_the_field(data, message):
    with pytest.raises(SweepError, match=message):
        parse_sweep(data, source="bad.yaml")


@pytest.mark.parametrize("name, cells", [("seq_multiplier", 4), ("separator", 5), ("quickstart", 3)])
def test_provided_sweeps_are_valid_specs_in_every_cell(name, cells):
    from starx.api import show

    cfg = load_sweep(ROOT / "sweeps" / f"{name}.yaml")
    assert len(cfg.grid_cells()) == cells
    ids = set()
    for cell in cfg.grid_cells():
        _, _, run_id = show(resolve_spec_path(cfg), cfg.trial_overrides(cell))
        ids.add(run_id)
    assert len(ids) == cells  # every cell is a different run


def test_ablation_sweeps_share_their_common_cell():
    """k=4 with cluster separators is in both ablations: one run, reused by the second sweep."""
    from starx.api import show

    ids = []
    for name, cell in (("seq_multiplier", {"model.seq_multiplier": 4}), ("separator", {"model.separator": "cluster"})):
        cfg = load_sweep(ROOT / "sweeps" / f"{name}.yaml")
        ids.append(show(resolve_spec_path(cfg), cfg.trial_overrides(cell))[2])
    assert ids[0] == ids[1]


# ----------------------------------------------------------------------------- driving
def test_grid_runs_every_cell_once_with_n_in_flight(tmp_path):
    # distinct durations (steps x 0.05 s): when the shorter of two running trials ends, the
    # next one starts while the longer one is still running (no waiting for the batch)
    path = setup_sweep(tmp_path, fake={"sleep_s": 0.05}, params={"fake.steps": [1, 10, 20, 30]})
    summary = drive(path, tmp_path)
    assert summary.complete == 4 and summary.failed == 0 and summary.stopped == "finished"
    ts = trials(tmp_path)
    assert sorted(t["params"]["fake.steps"] for t in ts) == [1, 10, 20, 30]  # each cell exactly once
    for t in ts:
        assert scheduler.read_launch(Path(t["run_dir"]))["submissions"] == 1
    ts.sort(key=lambda t: t["started"])
    for i, t in enumerate(ts):
        running = [o for o in ts[:i] if o["finished"] > t["started"]]
        assert len(running) <= 1, "more than n_parallel trials in flight"
    assert any(o["finished"] > ts[2]["started"] for o in ts[:2]), "third trial waited for the whole batch"
    # running the sweep again starts nothing
    again = drive(path, tmp_path)
    assert again.complete == 4 and len(trials(tmp_path)) == 4
    assert [t["params"]["fake.steps"] for t in sorted(ts, key=lambda t: t["number"])] == [1, 10, 20, 30]
    assert all(scheduler.read_launch(Path(t["run_dir"]))["submissions"] == 1 for t in ts)


def test_failed_trials_are_recorded_and_do_not_stop_the_sweep(tmp_path):
    path = setup_sweep(tmp_path, params={"fake.fail_at_step": [-1, 1], "fake.invalid": [False, True]},
                       max_failures=5)
    summary = drive(path, tmp_path)
    assert summary.complete == 1 and summary.failed == 3 and summary.stopped == "finished"
    reasons = {(t["params"]["fake.fail_at_step"], t["params"]["fake.invalid"]): t["fail_reason"] for t in trials(tmp_path)}
    assert reasons[(-1, False)] is None
    assert "fake failure at step 1" in reasons[(1, False)]
    assert reasons[(1, True)].startswith("spec: field 'fake.invalid'")


def test_failure_limit_stops_starting_trials(tmp_path):
    path = setup_sweep(tmp_path, params={"fake.fail_at_step": [0, 1, 2]}, max_failures=0, n_parallel=1)
    summary = drive(path, tmp_path)
    assert summary.stopped == "too many failures" and not summary.ok
    ts = trials(tmp_path)
    assert summary.failed == 1 and [t["state"] for t in ts] == ["FAIL", "WAITING", "WAITING"]
    assert [t["params"]["fake.fail_at_step"] for t in ts] == [0, 1, 2]  # the declared order


def test_retry_failed_queues_each_failed_point_once_more(tmp_path):
    blocker = tmp_path / "dataset-missing"
    blocker.touch()  # trials with fake.fail_while fail while this file exists (a missing dataset, say)
    path = setup_sweep(tmp_path, params={"fake.fail_while": [None, str(blocker)], "fake.steps": [2, 3]},
                       max_failures=5)
    first = drive(path, tmp_path)
    assert first.complete == 2 and first.failed == 2
    assert drive(path, tmp_path).failed == 2 and len(trials(tmp_path)) == 4  # a plain resume retries nothing
    blocker.unlink()
    summary = drive(path, tmp_path, retry_failed=True)
    assert summary.ok and summary.complete == 4 and summary.n_trials == 6
    ts = trials(tmp_path)
    retried = [t for t in ts if t["state"] == "FAIL"]
    assert len(ts) == 6 and len(retried) == 2
    done = {(t["params"]["fake.fail_while"], t["params"]["fake.steps"]) for t in ts if t["state"] == "COMPLETE"}
    assert done == {(None, 2), (None, 3), (str(blocker), 2), (str(blocker), 3)}  # every point once
    assert drive(path, tmp_path, retry_failed=True).complete == 4 and len(trials(tmp_path)) == 6  # not again


def test_random_sampler_and_resume_with_more_trials(tmp_path):
    params = {"x": {"type": "float", "low": 0.0, "high": 4.0}, "y": {"type": "logfloat", "low": 0.1, "high": 10.0}}
    path = setup_sweep(tmp_path, params=params, sampler="random", n_trials=3, n_parallel=3,
                       objective={"metric": "top1", "direction": "maximize"})
    assert drive(path, tmp_path).complete == 3
    data = yaml.safe_load(path.read_text())
    data["n_trials"] = 5  # allowed to change on resume
    path.write_text(yaml.safe_dump(data))
    summary = drive(path, tmp_path)
    assert summary.complete == 5
    ts = trials(tmp_path)
    assert len({(t["params"]["x"], t["params"]["y"]) for t in ts}) == 5  # no replay of the first draws
    for t in ts:
        assert 0 <= t["params"]["x"] <= 4 and 0.1 <= t["params"]["y"] <= 10
        assert t["value"] == pytest.approx(80 - (t["params"]["x"] - 2) ** 2 - 0.5 * (t["params"]["y"] - 1) ** 2)
    best = json.loads((tmp_path / "results" / "s" / "trials.json").read_text())["best"]
    assert best["value"] == max(t["value"] for t in ts)


def test_changed_search_space_and_second_driver_are_refused(tmp_path):
    path = setup_sweep(tmp_path, params={"x": [1.0]})
    drive(path, tmp_path)
    data = yaml.safe_load(path.read_text())
    data["params"] = {"x": [1.0, 2.0]}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SweepError, match="params changed"):
        drive(path, tmp_path)
    data["params"] = {"x": [1.0]}
    path.write_text(yaml.safe_dump(data))
    with open(tmp_path / "results" / "s" / "driver.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(SweepError, match="another driver"):
            drive(path, tmp_path)


def _wait(cond, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = cond()
        except (OSError, ValueError, KeyError):
            v = None
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_resume_after_kill_9_reattaches_relaunches_and_never_reruns(tmp_path):
    """kill -9 the driver with 2 trials in flight; kill one trial's job too. The resumed driver
    re-attaches to the live trial, relaunches the dead one (it resumes from its checkpoint),
    runs the rest, and runs no cell twice."""
    path = setup_sweep(tmp_path, fake={"steps": 20, "sleep_s": 0.08}, params={"x": [1.0, 2.0, 3.0, 4.0]})
    code = ("import sys; from starx.sweep import run_sweep; from starx.launch.testing import fake_prepare; "
            "run_sweep(sys.argv[1], root=sys.argv[2], prepare=fake_prepare, entry=sys.argv[3])")
    driver = subprocess.Popen([sys.executable, "-c", code, str(path), str(tmp_path / "results"), FAKE],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def two_running():
            ts = [t for t in trials(tmp_path) if t["state"] == "RUNNING" and t["job_id"]]
            if len(ts) == 2 and all(len(rundir.read_jsonl(Path(t["run_dir"]) / "metrics.jsonl")) >= 3 for t in ts):
                return ts
            return None

        running = _wait(two_running)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    survivor, victim = running
    start = next(e for e in scheduler.read_events(Path(victim["run_dir"])) if e["event"] == "start")
    for pid in (int(victim["job_id"]), start["pid"]):  # the job's controller and its task
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    summary = drive(path, tmp_path)
    assert summary.complete == 4 and summary.failed == 0
    ts = {t["number"]: t for t in trials(tmp_path)}
    assert sorted(t["params"]["x"] for t in ts.values()) == [1.0, 2.0, 3.0, 4.0]
    s_launch = scheduler.read_launch(Path(survivor["run_dir"]))
    assert s_launch["submissions"] == 1 and s_launch["job_id"] == survivor["job_id"]  # re-attached
    v_launch = scheduler.read_launch(Path(victim["run_dir"]))
    assert v_launch["submissions"] == 2 and ts[victim["number"]]["relaunches"] == 1
    v_result = rundir.read_json(Path(victim["run_dir"]) / "result.json")
    assert v_result["status"] == "done" and v_result["metrics"]["resumed_from"] >= 3
    others = [t for n, t in ts.items() if n not in (survivor["number"], victim["number"])]
    assert all(scheduler.read_launch(Path(t["run_dir"]))["submissions"] == 1 for t in others)


def test_sweep_cli_dry_run_lists_the_grid():
    import typer
    from typer.testing import CliRunner

    from starx.cli import jobs as jobs_cli

    app = typer.Typer()
    app.command("sweep")(jobs_cli.sweep)
    app.command("status")(jobs_cli.status)
    res = CliRunner().invoke(app, ["sweep", str(ROOT / "sweeps" / "separator.yaml"), "--dry-run"])
    assert res.exit_code == 0, res.output
    for sep in ("none", "token", "cluster", "fixed", "distinct"):
        assert f"model.separator={sep}" in res.output
