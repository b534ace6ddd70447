"""One trial per GPU: the sweep driver's device pool (starx.launch.gpus), with a fake device list.

Trials are real submitit subprocess jobs of the stand-in engine (starx.launch.testing), the
driver and the Optuna journal are the real ones; ``STARX_GPUS`` names devices that need not
exist (the stand-in never touches CUDA, it records the CUDA_VISIBLE_DEVICES its job got)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from starx import rundir
from starx.launch import gpus, scheduler
from starx.launch.submit import LaunchError, launch
from starx.launch.testing import fake_prepare
from starx.sweep.driver import run_sweep

FAKE = "starx.launch.testing:fake_run_job"


# ----------------------------------------------------------------------------- the pool itself
def test_pool_source_order_and_parsing():
    assert gpus.parse_ids(" 0, 1,1,GPU-ab ") == ("0", "1", "GPU-ab")
    assert gpus.parse_ids("") == gpus.parse_ids("none") == gpus.parse_ids(None) == ()
    assert gpus.declared_pool({"STARX_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "5"}) == gpus.PoolSource(("2", "3"), "STARX_GPUS")
    assert gpus.declared_pool({"CUDA_VISIBLE_DEVICES": "5,7"}).ids == ("5", "7")
    assert gpus.declared_pool({}) is None
    assert gpus.machine_pool({"CUDA_VISIBLE_DEVICES": ""}).ids == ()  # hidden: no placement


def test_pool_acquire_release_claim():
    pool = gpus.GpuPool(gpus.PoolSource(("0", "1", "2"), "STARX_GPUS"))
    assert pool.acquire(2, "a") == ("0", "1")
    assert pool.acquire(2, "b") is None  # one free: wait
    assert pool.acquire(1, "b") == ("2",)
    pool.release(("0", "1"), "a")
    assert pool.acquire(2, "c") == ("0", "1")  # given back, handed out again
    pool.release(("0",), "nobody")  # only the holder gives devices back
    assert pool.free() == []
    assert pool.claim(("2",), "d") == ["2"]  # already b's: reported as a double booking
    with pytest.raises(gpus.NotEnoughGpus, match="asks for 4 GPUs .* pool has 3: 0,1,2 \\(from STARX_GPUS\\)"):
        pool.acquire(4, "e")


def test_executor_parameters_for_indices_and_uuids():
    assert gpus.executor_gpu_parameters(["3", "5"]) == ({"gpus_per_node": 2, "visible_gpus": (3, 5)}, [])
    params, setup = gpus.executor_gpu_parameters(["GPU-1a2b", "MIG-x"])
    assert params == {"gpus_per_node": 2} and setup == ["export CUDA_VISIBLE_DEVICES=GPU-1a2b,MIG-x"]


# ----------------------------------------------------------------------------- a single run
def write_spec(tmp_path: Path, **fake) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"experiment": "fake", "root": str(tmp_path / "results"), "x": 0.0, "y": 0.0,
                                    "fake": {"steps": 3, "sleep_s": 0.0, **fake}}))
    return spec


@pytest.mark.parametrize("pool, seen", [("4,6", "4"), ("GPU-aa,GPU-bb", "GPU-aa")])
def test_single_subprocess_run_takes_the_first_gpus_of_the_declared_pool(tmp_path, monkeypatch, pool, seen):
    monkeypatch.setenv("STARX_GPUS", pool)
    prepared = fake_prepare(write_spec(tmp_path), ["launch.kind=subprocess", "launch.subprocess.gpus_per_node=1"])
    st = launch(prepared, entry=FAKE).wait(poll_s=0.1, timeout_s=300)
    assert st.state == "done"
    assert st.result["devices"] == {"CUDA_VISIBLE_DEVICES": seen}
    assert scheduler.read_launch(prepared.run_dir)["gpus"] == [seen]
    too_many = fake_prepare(write_spec(tmp_path, steps=2), ["launch.kind=subprocess", "launch.subprocess.gpus_per_node=3"])
    with pytest.raises(LaunchError, match="asks for 3 GPUs .* pool has 2"):
        launch(too_many, entry=FAKE)


def test_cpu_run_sees_no_gpus_and_records_none(tmp_path, monkeypatch):
    monkeypatch.setenv("STARX_GPUS", "0,1")  # a pool, but the run asks for no GPU
    prepared = fake_prepare(write_spec(tmp_path), ["launch.kind=subprocess"])
    st = launch(prepared, entry=FAKE).wait(poll_s=0.1, timeout_s=300)
    assert st.state == "done" and st.result["devices"] == {"CUDA_VISIBLE_DEVICES": ""}
    assert "gpus" not in scheduler.read_launch(prepared.run_dir)


# ----------------------------------------------------------------------------- sweeps
def setup_sweep(tmp_path: Path, fake: dict, gpus_per_node: int, **sweep) -> Path:
    spec = write_spec(tmp_path, **fake)
    data = {"name": "s", "spec": str(spec), "sampler": "grid", "poll_s": 0.1,
            "overrides": ["launch.kind=subprocess", f"launch.subprocess.gpus_per_node={gpus_per_node}"], **sweep}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_trials(tmp_path: Path) -> list[dict]:
    return (rundir.read_json(tmp_path / "results" / "s" / "trials.json") or {}).get("trials", [])


def job_spans(tmp_path: Path) -> list[tuple[float, float, tuple[str, ...], int]]:
    """(start, end, devices, trial) of every job the trials ran, from the jobs' own events: a relaunched
    trial has several."""
    spans = []
    for t in read_trials(tmp_path):
        events = scheduler.read_events(Path(t["run_dir"]))
        starts = [e["time"] for e in events if e["event"] == "start"]
        ends = [e["time"] for e in events if e["event"] in ("finished", "failed", "preempted")]
        devices = tuple((rundir.read_json(Path(t["run_dir"]) / "result.json") or {})
                        .get("devices", {}).get("CUDA_VISIBLE_DEVICES", "").split(","))
        assert len(starts) == len(ends) == 1, events
        spans.append((starts[0], ends[0], devices, t["number"]))
    return spans


def assert_no_double_booking(spans) -> None:
    for (s1, e1, d1, n1), (s2, e2, d2, n2) in itertools.combinations(spans, 2):
        if s1 < e2 and s2 < e1:  # both jobs ran at the same time
            assert not set(d1) & set(d2), f"trials {n1} and {n2} ran at once on {d1} and {d2}"


def _wait(cond, timeout=300.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = cond()
        except (OSError, ValueError, KeyError, TypeError):
            v = None
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _driver(path: Path, tmp_path: Path, pool: str, log: Path) -> subprocess.Popen:
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO); from starx.sweep import run_sweep; "
            "from starx.launch.testing import fake_prepare; "
            "run_sweep(sys.argv[1], root=sys.argv[2], prepare=fake_prepare, entry=sys.argv[3])")
    return subprocess.Popen([sys.executable, "-c", code, str(path), str(tmp_path / "results"), FAKE],
                            env={**os.environ, "STARX_GPUS": pool}, stdout=subprocess.DEVNULL,
                            stderr=open(log, "ab"))


def test_trials_in_flight_get_disjoint_gpus_wait_for_free_ones_and_survive_a_driver_restart(tmp_path):
    """Pool of 2 fake GPUs, -j 3, one GPU per trial. Two trials hold (their jobs wait at step 3 while a
    file exists) on GPUs 3 and 5; the third waits for a GPU instead of sharing one. The driver is
    killed (-9) and started again: it takes 3 and 5 back for the jobs still running and still launches
    nothing until one of them ends. Then every trial finishes, each job's devices are the ones the
    trial record names, and no two jobs that ran at once shared a device."""
    hold = tmp_path / "hold"
    hold.touch()
    path = setup_sweep(tmp_path, {"steps": 6, "sleep_s": 0.02, "hold_while": str(hold), "hold_at_step": 3},
                       gpus_per_node=1, params={"x": [1.0, 2.0, 3.0, 4.0]}, n_parallel=3)
    log = tmp_path / "driver.log"

    def held():
        ts = [t for t in read_trials(tmp_path) if t["state"] == "RUNNING"]
        launched = [t for t in ts if t["job_id"]]
        if len(ts) == 3 and len(launched) == 2 and all(
                len(rundir.read_jsonl(Path(t["run_dir"]) / "metrics.jsonl")) >= 3 for t in launched):
            return launched
        return None

    first = _driver(path, tmp_path, "3,5", log)
    try:
        launched = _wait(held, what="two trials holding at step 3")
        time.sleep(0.5)  # a few polls more: the third trial still waits
        assert sum(bool(t["job_id"]) for t in read_trials(tmp_path)) == 2
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert sorted(d for t in launched for d in t["gpus"]) == ["3", "5"]
    for t in launched:  # inside each job: CUDA_VISIBLE_DEVICES is its own device
        assert rundir.read_json(Path(t["run_dir"]) / "result.json")["devices"] == {"CUDA_VISIBLE_DEVICES": t["gpus"][0]}
        assert scheduler.read_launch(Path(t["run_dir"]))["gpus"] == t["gpus"]
    assert "waits for 1 free GPU (pool 3,5 (from STARX_GPUS)" in log.read_text()

    mark = log.stat().st_size
    second = _driver(path, tmp_path, "3,5", log)
    try:
        _wait(lambda: log.read_text()[mark:].count("re-attached") == 2, what="the restarted driver to re-attach")
        time.sleep(1.0)  # ten polls: nothing launched while both devices are held
        assert sum(bool(t["job_id"]) for t in read_trials(tmp_path)) == 2, log.read_text()[mark:]
        hold.unlink()
        assert second.wait(timeout=300) == 0, log.read_text()[mark:]
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    ts = read_trials(tmp_path)
    assert [t["state"] for t in ts] == ["COMPLETE"] * 4, log.read_text()[mark:]
    spans = job_spans(tmp_path)
    assert_no_double_booking(spans)
    by_trial = {t["number"]: t for t in ts}
    for _, _, devices, number in spans:
        assert list(devices) == by_trial[number]["gpus"]  # recorded by the driver = seen by the job
    assert {d for *_, devices, _ in spans for d in devices} == {"3", "5"}  # released and handed out again
    assert all(scheduler.read_launch(Path(t["run_dir"]))["submissions"] == 1 for t in ts)


def test_trials_needing_several_gpus_get_several_and_too_many_fail(tmp_path, monkeypatch):
    monkeypatch.setenv("STARX_GPUS", "0,1,2")
    path = setup_sweep(tmp_path, {"steps": 4, "sleep_s": 0.1}, gpus_per_node=2, params={"x": [1.0, 2.0]},
                       n_parallel=2)
    summary = run_sweep(path, root=tmp_path / "results", prepare=fake_prepare, entry=FAKE)
    assert summary.complete == 2 and summary.stopped == "finished"
    spans = job_spans(tmp_path)
    assert [d for *_, d, _ in spans] == [("0", "1"), ("0", "1")]  # one at a time: 2 + 2 > 3
    assert_no_double_booking(spans)

    (tmp_path / "big").mkdir()
    path = setup_sweep(tmp_path / "big", {"steps": 2}, gpus_per_node=4, params={"x": [1.0]}, n_parallel=1)
    summary = run_sweep(path, root=tmp_path / "big" / "results", prepare=fake_prepare, entry=FAKE)
    (t,) = (rundir.read_json(tmp_path / "big" / "results" / "s" / "trials.json") or {})["trials"]
    assert summary.failed == 1 and t["job_id"] is None
    assert "asks for 4 GPUs (launch.subprocess.gpus_per_node) but the pool has 3" in t["fail_reason"]


def test_pool_slots_let_trials_share_a_gpu_never_twice_in_one_trial():
    """STARX_TRIALS_PER_GPU=2 over GPUs 0 and 1: four slots, handed out over the devices first; a
    trial needing 2 GPUs gets two distinct devices; the job sees device ids, not slots."""
    pool = gpus.GpuPool(gpus.PoolSource(("0", "1"), "STARX_GPUS"), per_device=2)
    assert pool.ids == ("0#1", "1#1", "0#2", "1#2")
    assert pool.acquire(1, "a") == ("0#1",) and pool.acquire(1, "b") == ("1#1",)
    assert pool.acquire(2, "c") == ("0#2", "1#2")  # distinct devices
    assert pool.acquire(1, "d") is None
    pool.release(("0#1",), "a")
    assert pool.acquire(2, "e") is None  # one free slot: one device, not two
    assert pool.acquire(1, "e") == ("0#1",)
    with pytest.raises(gpus.NotEnoughGpus, match="asks for 3 GPUs .* pool has 2"):
        pool.acquire(3, "f")  # more devices than the machine has, however many slots
    assert gpus.executor_gpu_parameters(["1#2"]) == ({"gpus_per_node": 1, "visible_gpus": (1,)}, [])
    assert gpus.trials_per_gpu({}) == 1 and gpus.trials_per_gpu({"STARX_TRIALS_PER_GPU": "3"}) == 3
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="STARX_TRIALS_PER_GPU"):
            gpus.trials_per_gpu({"STARX_TRIALS_PER_GPU": bad})


def test_two_trials_share_one_gpu_with_trials_per_gpu(tmp_path, monkeypatch):
    """One fake GPU, STARX_TRIALS_PER_GPU=2, -j 2: both trials' jobs hold at step 2 at the same time
    (so they share the device), each seeing device 7, their records naming slots 7#1 and 7#2. A bad
    value is refused before anything runs."""
    monkeypatch.setenv("STARX_TRIALS_PER_GPU", "2")
    hold = tmp_path / "hold"
    hold.touch()
    path = setup_sweep(tmp_path, {"steps": 4, "sleep_s": 0.02, "hold_while": str(hold), "hold_at_step": 2},
                       gpus_per_node=1, params={"x": [1.0, 2.0]}, n_parallel=2)
    log = tmp_path / "driver.log"

    def both_held():
        ts = [t for t in read_trials(tmp_path) if t["state"] == "RUNNING" and t["job_id"]]
        return len(ts) == 2 and all(len(rundir.read_jsonl(Path(t["run_dir"]) / "metrics.jsonl")) >= 2 for t in ts)

    driver = _driver(path, tmp_path, "7", log)
    try:
        _wait(both_held, what="two trials holding on one GPU at once")
        hold.unlink()
        assert driver.wait(timeout=300) == 0, log.read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    ts = read_trials(tmp_path)
    assert [t["state"] for t in ts] == ["COMPLETE"] * 2
    assert sorted(t["gpus"][0] for t in ts) == ["7#1", "7#2"]
    assert [d for *_, d, _ in job_spans(tmp_path)] == [("7",), ("7",)]  # the job sees the device
    assert "up to 2 trials in flight share each (STARX_TRIALS_PER_GPU)" in log.read_text()

    monkeypatch.setenv("STARX_TRIALS_PER_GPU", "0")
    from starx.sweep.config import SweepError

    with pytest.raises(SweepError, match="STARX_TRIALS_PER_GPU='0'"):
        run_sweep(path, root=tmp_path / "other", prepare=fake_prepare, entry=FAKE)
