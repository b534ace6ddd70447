"""Results that cannot go stale: env.json beside result.json, the warning when a finished run is
reused under another code version, --force for run and per sweep trial, the commit column."""

from __future__ import annotations

import json

from omegaconf import OmegaConf
from typer.testing import CliRunner

from starx import api, provenance
from starx.cli import app
from starx.results.catalog import resolve
from starx.results.table import runs_table
from tests.test_engine import QUICKSTART, tiny

FAST = ("pretrain.epochs=0.02", "finetune.enabled=false")


def _other_code(monkeypatch, code_id: str = "0123456789ab") -> None:
    monkeypatch.setattr(provenance, "code_version",
                        lambda: {"starx": "0.1.0", "commit": code_id * 3, "dirty": False, "diff": None, "id": code_id})


def test_code_version_names_the_checkout():
    code = provenance.code_version()
    assert code["starx"]
    if code["commit"]:  # a git checkout (CI, this repo): commit, dirty flag, and the id runs compare by
        assert code["id"].startswith(code["commit"][:12])
        assert ("+dirty." in code["id"]) == code["dirty"]
    else:
        assert code["id"] == f"starx {code['starx']}"


def test_run_writes_env_json_and_reuse_under_other_code_warns_then_force_reruns(tmp_path, monkeypatch):
    overrides = tiny(tmp_path, *FAST)
    prepared, handle = api.run(QUICKSTART, overrides)
    run_dir = prepared.run_dir
    assert handle.result["status"] == "done" and prepared.stale is None
    env = json.loads((run_dir / "env.json").read_text())
    assert env["code"]["id"] == provenance.code_version()["id"]
    assert env["torch"] and env["scan_backend"] == "torch" and "torch" in env["packages"]
    assert {"cuda", "cudnn", "driver", "python"} <= set(env)

    # Same code: reused silently.
    again, handle = api.run(QUICKSTART, overrides)
    assert handle.attached and again.stale is None

    # Another code version: reused, but said loudly (on stderr, by the CLI).
    _other_code(monkeypatch)
    result = CliRunner().invoke(app, ["run", str(QUICKSTART), *overrides])
    assert result.exit_code == 0, result.output
    assert "warning: reused a finished run" in result.output and "0123456789ab" in result.output
    assert "--force" in result.output

    # --force: the run trains again; the old outputs are kept in superseded/<time>/.
    before = json.loads((run_dir / "result.json").read_text())
    result = CliRunner().invoke(app, ["run", str(QUICKSTART), *overrides, "--force"])
    assert result.exit_code == 0, result.output
    old = list((run_dir / "superseded").iterdir())
    assert len(old) == 1
    assert json.loads((old[0] / "result.json").read_text()) == before
    assert (old[0] / "checkpoints" / "pretrain_last.pt").exists() and (old[0] / "metrics.jsonl").exists()
    assert json.loads((run_dir / "env.json").read_text())["code"]["id"] == "0123456789ab"
    assert json.loads((run_dir / "result.json").read_text())["status"] == "done"
    assert api.reuse_notice(run_dir) is None  # recomputed by this code: no longer stale

    # starx results --commit shows who computed it.
    runs = resolve(tmp_path / "results", None)[1]
    table = runs_table(runs, commit=True)
    assert table.rows[0]["commit"] == "0123456789ab"
    out = CliRunner().invoke(app, ["results", "--root", str(tmp_path / "results"), "--commit"])
    assert out.exit_code == 0 and "commit" in out.output and "0123456789ab" in out.output


def test_a_run_without_env_json_is_flagged_as_unknown_code(tmp_path):
    prepared, handle = api.run(QUICKSTART, tiny(tmp_path, *FAST))
    (prepared.run_dir / "env.json").unlink()  # a run made before env.json existed
    assert "unknown code version" in api.reuse_notice(prepared.run_dir)


def test_resume_under_other_code_keeps_the_history(tmp_path, monkeypatch):
    env = {"code": {"id": "aaaa"}, "recorded": "then"}
    (tmp_path / "env.json").write_text(json.dumps(env))
    written = provenance.write_env(tmp_path, {"code": {"id": "bbbb"}, "recorded": "now"})
    assert written["history"] == [{"code": {"id": "aaaa"}, "recorded": "then"}]


def test_force_is_refused_while_a_job_runs(tmp_path, monkeypatch):
    import pytest

    from starx.launch import scheduler
    from starx.spec import SpecError

    class Active:
        active, state = True, "running"

    monkeypatch.setattr(scheduler, "run_state", lambda run_dir: Active())
    with pytest.raises(SpecError, match="--force: .* has a running job"):
        api.rerun(tmp_path)


def test_supersede_moves_outputs_and_deletes_nothing(tmp_path):
    for name in ("result.json", "env.json", "metrics.jsonl", "events.out.tfevents.1.host"):
        (tmp_path / name).write_text(name)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "pretrain_last.pt").write_text("w")
    (tmp_path / "spec.yaml").write_text("spec")
    first = provenance.supersede(tmp_path)
    second_files = (tmp_path / "result.json")
    second_files.write_text("second")
    second = provenance.supersede(tmp_path)
    assert first != second and (second / "result.json").read_text() == "second"
    assert (first / "checkpoints" / "pretrain_last.pt").read_text() == "w"
    assert (first / "events.out.tfevents.1.host").exists() and (tmp_path / "spec.yaml").exists()
    assert provenance.supersede(tmp_path) is None


def test_sweep_force_reruns_a_trial_whose_run_is_done(tmp_path, monkeypatch):
    """Per trial: --force makes a trial that would reuse a finished run train it again."""
    from starx.launch import scheduler
    from starx.sweep.driver import SweepDriver

    run_dir = tmp_path / "exp" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps({"status": "done", "metrics": {"top1": 1.0}}))
    calls = []

    class Prepared:
        experiment, run_id = "exp", "run"

    Prepared.run_dir = run_dir
    Prepared.cfg = OmegaConf.create({"launch": {"kind": "local"}})

    def fake_launch(prepared, kind=None, entry=None):
        calls.append(kind)
        raise RuntimeError("stop here")

    import starx.launch as launch_pkg

    monkeypatch.setattr(launch_pkg, "launch", fake_launch)
    for force, launched in ((False, 0), (True, 1)):
        driver = SweepDriver.__new__(SweepDriver)
        driver.force, driver.inflight, driver.spec_path, driver.entry = force, {}, None, "x:y"
        driver.prepare = lambda spec, overrides: Prepared
        driver._set_attrs = lambda *a, **k: None
        driver._fail = lambda study, t, reason: None

        class T:
            number, trial_id, params, run_dir = 0, 0, {}, None

        driver._launch(None, T(), [])
        assert len(calls) == launched
    assert list((run_dir / "superseded").iterdir())
    assert scheduler.run_state(run_dir).state != scheduler.DONE
