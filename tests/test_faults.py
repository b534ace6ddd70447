"""Hostile input and faults (issue 20): a second process on one run, Ctrl-C, torn and duplicated
metrics, symlinks planted in a run directory, bad specs, sweep files, record files and data builds.
Each test names the fault and checks that nothing already written is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from starx.api import prepare
from starx.rundir import RunLocked, lock_run
from starx.train.job import run_job
from tests.test_engine import QUICKSTART, ROOT, _start, _wait_for_step, losses, metrics, tiny


def _cli(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "starx.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kw)


# ----------------------------------------------------------------------------- 1. one trainer per run
def test_a_second_run_of_a_training_spec_is_refused_and_touches_nothing(tmp_path):
    overrides = tiny(tmp_path, "pretrain.epochs=0.2", "finetune.enabled=false", "checkpoint.every_steps=1000")
    run = prepare(QUICKSTART, overrides)
    proc = _start(run.run_dir)
    try:
        _wait_for_step(proc, run.run_dir, 2)
        # frozen, the trainer keeps its lock and cannot finish first: the refusals below are tested
        # against a run in progress, not raced against its last steps (seen: "already done", exit 0)
        proc.send_signal(signal.SIGSTOP)
        result_before = (run.run_dir / "result.json").read_text()
        with pytest.raises(RunLocked, match=rf"{run.run_dir.name} is in use by pid {proc.pid}"):
            run_job(run.run_dir)
        out = _cli("run", str(QUICKSTART), *overrides)
        assert out.returncode == 2 and "is in use by pid" in out.stderr, out.stderr[-2000:]
        assert (run.run_dir / "result.json").read_text() == result_before
        assert not (run.run_dir / "launch.json").exists()  # the refused CLI run wrote no launch record
    finally:
        proc.send_signal(signal.SIGKILL)  # a dead holder releases the lock
        proc.wait()
    result = run_job(run.run_dir)
    assert result["status"] == "done"
    steps = [r["step"] for r in metrics(run.run_dir) if r["stage"] == "pretrain" and "loss" in r]
    assert steps == sorted(set(steps)) == list(range(1, result["metrics"]["pretrain_steps"] + 1))


def test_the_run_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with lock_run(tmp_path):
        with lock_run(tmp_path):  # the local launcher holds it, then the trainer takes it again
            pass
        held = subprocess.run([sys.executable, "-c", "import sys; from starx.rundir import lock_run\n"
                               "with lock_run(sys.argv[1]): pass", str(tmp_path)], capture_output=True, text=True)
        assert held.returncode != 0 and "RunLocked" in held.stderr and f"pid {os.getpid()}" in held.stderr
    free = subprocess.run([sys.executable, "-c", "import sys; from starx.rundir import lock_run\n"
                           "with lock_run(sys.argv[1]): pass", str(tmp_path)], capture_output=True, text=True)
    assert free.returncode == 0, free.stderr


# ----------------------------------------------------------------------------- 2. Ctrl-C
def test_ctrl_c_saves_like_sigterm_and_the_run_resumes(tmp_path):
    overrides = tiny(tmp_path, "pretrain.epochs=0.2", "finetune.enabled=false", "checkpoint.every_steps=1000")
    run = prepare(QUICKSTART, overrides)
    proc = subprocess.Popen([sys.executable, "-m", "starx.cli", "run", str(QUICKSTART), *overrides], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_step(proc, run.run_dir, 3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    result = json.loads((run.run_dir / "result.json").read_text())
    assert result["status"] == "preempted" and "SIGINT" in result["error"]
    saved = max(losses(run.run_dir))
    assert (run.run_dir / "checkpoints/pretrain_last.pt").exists() and f"step {saved}" in result["error"]
    final = run_job(run.run_dir)
    assert final["status"] == "done"
    steps = [r["step"] for r in metrics(run.run_dir) if r["stage"] == "pretrain" and "loss" in r]
    assert steps == list(range(1, final["metrics"]["pretrain_steps"] + 1))  # nothing lost, nothing twice


def test_a_second_ctrl_c_aborts_at_once(tmp_path):
    from starx.train import signals

    before = signal.getsignal(signal.SIGINT)
    signals.reset()
    undo = signals.install()
    try:
        signal.raise_signal(signal.SIGINT)
        assert signals.preempt_requested() and signals.last_signal() == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        undo()
        signals.reset()
    assert signal.getsignal(signal.SIGINT) == before  # the terminal's Ctrl-C is back


# ----------------------------------------------------------------------------- 3. metrics.jsonl
def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once(tmp_path):
    run = prepare(QUICKSTART, tiny(tmp_path, "pretrain.epochs=0.13", "finetune.enabled=false",
                                   "checkpoint.every_steps=1000", "checkpoint.every_minutes=0"))
    proc = _start(run.run_dir)
    _wait_for_step(proc, run.run_dir, 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run.run_dir / "checkpoints/pretrain_last.pt").exists(), "killed too late to test this"
    result = run_job(run.run_dir)
    steps = [r["step"] for r in metrics(run.run_dir) if r["stage"] == "pretrain" and "loss" in r]
    assert steps == list(range(1, result["metrics"]["pretrain_steps"] + 1))


def test_a_torn_last_metrics_line_does_not_stop_the_resume(tmp_path):
    """Also: the temporary file of a checkpoint write that was killed is removed on resume (point 9)."""
    common = ["pretrain.epochs=0.13", "finetune.enabled=false", "checkpoint.every_steps=5"]
    run = prepare(QUICKSTART, tiny(tmp_path, *common))
    proc = _start(run.run_dir)
    _wait_for_step(proc, run.run_dir, 7)  # past the checkpoint at step 5
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open(run.run_dir / "metrics.jsonl", "a") as f:
        f.write('{"time": 1, "stage": "pretrain", "st')  # power lost half-way through a line
    torn_save = run.run_dir / "checkpoints" / ".pretrain_last.pt.4194999.tmp"  # a save killed half-way
    torn_save.write_bytes(b"half a checkpoint")
    result = run_job(run.run_dir)
    assert result["status"] == "done" and not torn_save.exists()
    steps = [r["step"] for r in metrics(run.run_dir) if r["stage"] == "pretrain" and "loss" in r]
    assert steps == list(range(1, result["metrics"]["pretrain_steps"] + 1))


# ----------------------------------------------------------------------------- 11. symlinks in a run directory
def test_appends_do_not_follow_symlinks_planted_in_a_run_directory(tmp_path):
    run = prepare(QUICKSTART, tiny(tmp_path, "finetune.enabled=false"))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run.run_dir / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(OSError):
        run_job(run.run_dir)
    assert victim.read_text() == "precious\n"
    (run.run_dir / "metrics.jsonl").unlink()
    (run.run_dir / "train.log").unlink(missing_ok=True)
    (run.run_dir / "train.log").symlink_to(victim)
    with pytest.raises(OSError):
        run_job(run.run_dir)
    assert victim.read_text() == "precious\n"


# ----------------------------------------------------------------------------- 4, 5, 7. specs refused at load
def _invoke(*args: str):
    from typer.testing import CliRunner

    from starx.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})  # wide tables: no cell cut short


@pytest.mark.parametrize("override,field", [
    ("optim.base_lr=.nan", "optim.base_lr"), ("finetune.base_lr=.inf", "finetune.base_lr"),
    ("pretrain.epochs=.nan", "pretrain.epochs"), ("finetune.epochs=-.inf", "finetune.epochs"),
    ("seed=-1", "seed"), ("seed=4294967296", "seed"), ("cpu_threads=-2", "cpu_threads"),
    ("cpu_threads=0", "cpu_threads"), ("model.depth=100000000", "model.depth"),
    ("model.embed_dim=10000000", "model.embed_dim"), ("finetune.label_smoothing=1.5", "finetune.label_smoothing"),
    ("finetune.drop_path=1.0", "finetune.drop_path"), ("finetune.drop_path=-0.1", "finetune.drop_path"),
    ("finetune.randaug=rand-m9-bogus", "finetune.randaug"), ("finetune.randaug=rand-m9-inc1", "finetune.randaug"),
    ("finetune.randaug=hello", "finetune.randaug"), ("finetune.mixup=-0.5", "finetune.mixup"),
    ("finetune.cutmix=-1", "finetune.cutmix"), ("finetune.reprob=1.5", "finetune.reprob"),
    ("optim.clip_grad=0", "optim.clip_grad"), ("optim.min_lr=-1", "optim.min_lr"),
    ("model.decoder_heads=3", "decoder_heads"), ("model.name=star_nope", "star_nope"),
    ("experiment=../../x", "experiment"), ("experiment=/tmp/x", "experiment"), ("experiment=.", "experiment"),
    ("experiment=..", "experiment"), ("experiment=a/b", "experiment"), ("experiment=${oc.env:HOME}", "experiment"),
    ("experiment=.hidden", "experiment"),
])
def test_validate_refuses_out_of_range_fields_with_exit_2_and_the_field(tmp_path, override, field):
    out = _invoke("validate", str(QUICKSTART), override, f"output_dir={tmp_path / 'results'}")
    assert out.exit_code == 2, out.output
    assert field in out.output and len(out.output.strip().splitlines()) == 1, out.output
    assert not (tmp_path / "results").exists()


def test_experiment_names_in_range_still_load():
    from starx.spec import load_spec

    for name in ("quickstart", "sep_k4-v1.2", "A_b"):
        assert load_spec(QUICKSTART, [f"experiment={name}"]).experiment == name


@pytest.mark.parametrize("text,needle", [
    (b"model:\n  depth: 2\nseed: 1\nmodel:\n  embed_dim: 64\n", "duplicate key 'model'"),
    (b"seed: 1\nseed: 2\n", "duplicate key 'seed'"),
    (b"", "empty spec file"), (b"# nothing here\n", "empty spec file"),
    (b"experiment: caf\xe9\n", "not UTF-8"),
    (("a0: &a0 [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))).encode(), "alias bomb"),
    (b"- 1\n- 2\n", "must be a mapping"),
])
def test_spec_files_that_read_wrong_are_refused_naming_the_file(tmp_path, text, needle):
    spec = tmp_path / "bad[1].yaml"  # brackets in the name: the message must keep them (point 10)
    spec.write_bytes(text)
    out = _invoke("validate", str(spec))
    assert out.exit_code == 2, out.output
    assert needle in out.output and str(spec) in out.output.replace("\n", ""), out.output


@pytest.mark.parametrize("override", ["model.depth=[1", "experiment={a", "seed=: x", "seed=!!python/object:os.system x",
                                      "optim.betas=[&a [1], *a, *a"])
def test_override_values_that_are_not_yaml_name_the_override(override):
    out = _invoke("validate", str(QUICKSTART), override)
    assert out.exit_code == 2, out.output
    assert f"override '{override}'" in out.output.replace("\n", ""), out.output


def test_yaml_anchors_and_merge_keys_still_work(tmp_path):
    from starx.spec import load_spec

    spec = tmp_path / "anchors.yaml"
    spec.write_text("experiment: anchors\ndata: {crop_scale: &crop [0.5, 1.0]}\nfinetune: {crop_scale: *crop}\n")
    cfg = load_spec(spec)
    assert list(cfg.finetune.crop_scale) == [0.5, 1.0]


# ----------------------------------------------------------------------------- 10. error text is not markup
def test_error_text_keeps_its_brackets():
    out = _invoke("validate", str(QUICKSTART), "data.crop_scale=[0.9,0.1]")
    assert out.exit_code == 2 and "[low, high]" in out.output, out.output


# ----------------------------------------------------------------------------- 6. malformed record files
def _records(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "results"
    runs = {name: prepare(QUICKSTART, [f"output_dir={root}", "experiment=rec", f"seed={i}"]).run_dir
            for i, name in enumerate(("good", "list_result", "bad_pid", "bad_types"))}
    good = {"experiment": "rec", "run_id": runs["good"].name, "status": "done", "metrics": {"top1": 80.0},
            "wall_time_s": 12.0}
    (runs["good"] / "result.json").write_text(json.dumps(good))
    (runs["good"] / "launch.json").write_text(json.dumps({"backend": "local", "pid": 1, "submitted": 1.0}))
    (runs["list_result"] / "result.json").write_text("[1, 2, 3]")
    (runs["list_result"] / "launch.json").write_text(json.dumps({"backend": "local", "pid": 1, "submitted": 2.0}))
    (runs["bad_pid"] / "launch.json").write_text(json.dumps({"backend": "local", "pid": "abc", "submitted": "x"}))
    (runs["bad_types"] / "result.json").write_text(json.dumps({"status": "done", "metrics": "oops",
                                                              "wall_time_s": "long"}))
    return root, runs


def test_one_malformed_record_is_one_unreadable_row_naming_the_file(tmp_path):
    root, runs = _records(tmp_path)
    for command in ("results", "status"):
        out = _invoke(command, "--root", str(root))
        assert out.exit_code == 0, out.output
        text = " ".join(out.output.split())
        assert runs["good"].name in text and "unreadable" in text, text
        assert "result.json: holds a list" in text.replace(f"{runs['list_result']}/", ""), text
        assert "launch.json" in text, text
    out = _invoke("results", "rec", "--root", str(root))
    assert out.exit_code == 0 and "80" in out.output, out.output


def test_a_malformed_record_does_not_block_rerunning_its_run(tmp_path):
    from starx.launch.scheduler import run_state

    root, runs = _records(tmp_path)
    assert run_state(runs["list_result"]).state == "unreadable"
    assert run_state(runs["bad_pid"]).state == "unreadable"
    from starx.rundir import write_failure

    write_failure(runs["list_result"], "boom")  # the launcher's crash path reads the old record first
    assert json.loads((runs["list_result"] / "result.json").read_text())["status"] == "failed"


def test_a_malformed_trials_entry_is_one_unreadable_row(tmp_path):
    sweep = tmp_path / "results" / "sw"
    sweep.mkdir(parents=True)
    (sweep / "trials.json").write_text(json.dumps({
        "objective": {"metric": "top1", "direction": "maximize"}, "params": ["seed"], "sampler": "grid",
        "trials": [{"number": 0, "state": "COMPLETE", "value": 81.0, "params": {"seed": 0}},
                   {"state": "COMPLETE", "value": 82.0}, ["not", "a", "trial"]]}))
    out = _invoke("results", "sw", "--root", str(tmp_path / "results"))
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "81" in text and text.count("unreadable") >= 2 and "trials.json: trials[1] has no trial number" in text


# ----------------------------------------------------------------------------- 8. sweep files
@pytest.mark.parametrize("extra,needle", [
    ({"poll_s": float("nan")}, "poll_s"), ({"poll_s": "abc"}, "poll_s"),
    ({"params": {"seed": {"type": "int", "low": 0, "high": 10**11}}}, "more than 100,000 points"),
    ({"params": {"model.nope": [1, 2]}}, "unknown field 'model.nope'"),
    ({"params": {"finetune.label_smoothing": [0.1, 1.5]}}, "finetune.label_smoothing"),
    ({"params": {"optim.base_lr": {"type": "float", "low": 0.1, "high": float("inf")}}}, "params.optim.base_lr"),
    ({"name": "../escape"}, "name"), ({"overrides": ["model.nope=1"]}, "model.nope"),
])
def test_sweep_files_are_checked_when_they_load(tmp_path, extra, needle):
    import yaml

    data = {"name": "sw", "spec": str(QUICKSTART), "params": {"seed": [0, 1]}, **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    out = _invoke("sweep", str(path), "--dry-run")
    assert out.exit_code == 2 and needle in out.output, out.output
    assert not (tmp_path / "results").exists()


def test_a_sweep_whose_trials_all_fail_at_launch_or_never_complete_is_not_ok(tmp_path):
    from tests.test_sweep import drive, setup_sweep

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # every trial fails at launch (a spec error the stand-in engine finds): past max_failures
    path = setup_sweep(tmp_path / "a", params={"fake.invalid": [True], "x": [1.0, 2.0, 3.0]}, max_failures=1)
    summary = drive(path, tmp_path / "a")
    assert summary.stopped == "too many failures" and not summary.ok and summary.complete == 0
    # within max_failures, but none completed
    path = setup_sweep(tmp_path / "b", params={"fake.invalid": [True], "x": [1.0, 2.0]}, max_failures=5)
    summary = drive(path, tmp_path / "b")
    assert summary.stopped == "no trial completed" and not summary.ok


# ----------------------------------------------------------------------------- 9. starx data build
def _npz(path: Path, n: int = 40, side: int = 16) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8), y=np.arange(n) % 4)
    return path


def test_data_build_refuses_to_overwrite_and_never_writes_over_its_source(tmp_path):
    src = _npz(tmp_path / "x.npz")
    before = src.read_bytes()
    out = _invoke("data", "build", f"npz:{src}", str(src), "--overwrite", "--no-progress")
    assert out.exit_code == 2 and "is the source itself" in out.output, out.output
    assert src.read_bytes() == before
    beton = tmp_path / "x.beton"
    assert _invoke("data", "build", f"npz:{src}", str(beton), "--no-progress").exit_code == 0
    first = beton.read_bytes()
    out = _invoke("data", "build", f"npz:{src}", str(beton), "--no-progress")
    assert out.exit_code == 2 and "exists; pass --overwrite" in out.output, out.output
    assert beton.read_bytes() == first
    assert _invoke("data", "build", f"npz:{src}", str(beton), "--no-progress", "--overwrite").exit_code == 0


@pytest.mark.parametrize("target,option,needle", [
    ("folder", [], "is a folder"), ("under_a_file/x.beton", [], "x.beton"),
    ("o.beton", ["--jpeg-quality", "-5"], "jpeg_quality"), ("o.beton", ["--max-resolution", "0"], "max_resolution"),
    ("o.beton", ["--workers", "0"], "workers"),
])
def test_data_build_refuses_bad_outputs_and_options_in_one_line(tmp_path, target, option, needle):
    src = _npz(tmp_path / "x.npz")
    (tmp_path / "folder").mkdir()
    (tmp_path / "under_a_file").write_text("a file, not a folder")
    out = _invoke("data", "build", f"npz:{src}", str(tmp_path / target), "--no-progress", *option)
    assert out.exit_code == 2 and needle in out.output and "Traceback" not in out.output, out.output
    assert len(out.output.strip().splitlines()) == 1, out.output
    assert not (tmp_path / "o.beton").exists()


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_sigterm_during_a_build_stops_its_workers_and_leaves_no_temp_file(tmp_path):
    src = _npz(tmp_path / "big.npz", n=6000, side=64)
    out = tmp_path / "big.beton"
    code = ("import sys; from starx.data import build_dataset\n"
            "build_dataset(sys.argv[1], sys.argv[2], write_mode='jpg', num_workers=2, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, f"npz:{src}", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        workers: list[str] = []
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            workers = [pid for pid in (children.read_text().split() if children.exists() else [])
                       if b"resource_tracker" not in _cmdline(pid)]  # the writer processes, forked
            if len(workers) >= 2 and list(tmp_path.glob(".big.beton.*.tmp")):
                break
            time.sleep(0.05)
        assert proc.poll() is None and len(workers) >= 2, "the build ended before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        assert rc != 0, (rc, workers, proc.stderr.read().decode()[-3000:])
        assert not out.exists() and not list(tmp_path.glob(".big.beton.*")), list(tmp_path.iterdir())
        for pid in workers:  # the writer processes went with it
            state = Path(f"/proc/{pid}/stat")
            assert not state.exists() or state.read_text().split(")")[-1].split()[0] == "Z", pid
    finally:
        if proc.poll() is None:  # a failed assertion leaves no build running
            proc.kill()
            proc.wait()


def test_temp_files_of_killed_writes_are_removed_by_the_next_writer(tmp_path):
    import socket

    from starx.data import build_dataset

    src = _npz(tmp_path / "x.npz")
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = tmp_path / f".x.beton.{socket.gethostname()}.{dead}.abcd.tmp"
    stale.write_bytes(b"half a dataset")
    build_dataset(f"npz:{src}", tmp_path / "x.beton", progress=False)
    assert not stale.exists() and (tmp_path / "x.beton").exists()


# ----------------------------------------------------------------------------- 11. an untrusted checkpoint
def test_a_checkpoint_that_would_run_code_is_refused_without_advice_to_trust_it(tmp_path):
    import pickle

    from starx.train.checkpoint import CheckpointError, load

    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = tmp_path / "pretrain_last.pt"
    ckpt.write_bytes(pickle.dumps({"model": Payload()}))
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointError) as e:
        load(ckpt)
    message = str(e.value)
    assert str(ckpt) in message and "weights_only" not in message and "refused" in message, message
    assert not marker.exists() and ckpt.read_bytes() == before
