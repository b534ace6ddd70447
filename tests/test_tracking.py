"""Live tracking: TensorBoard event files (read back with TensorBoard's own reader) and an offline
W&B run folder carry the scalars of metrics.jsonl; a missing extra is a one-line error naming it."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from starx.api import prepare, run_identity
from starx.spec import SpecError, load_spec
from tests.test_engine import QUICKSTART, metrics, tiny

TRACKED = ["finetune.enabled=false", "pretrain.epochs=0.03", "eval.knn.enabled=true", "tracking.tensorboard=true",
           "tracking.wandb.enabled=true", "tracking.wandb.tags=[test]"]


def _expected(run_dir: Path) -> dict[tuple[str, int], float]:
    """(tag, step) -> value of every numeric scalar in metrics.jsonl."""
    out = {}
    for r in metrics(run_dir):
        for k, v in r.items():
            if k not in ("stage", "step", "time", "kind") and isinstance(v, (int, float)) and not isinstance(v, bool):
                out[(f"{r['stage']}/{k}", r["step"])] = v
    return out


def _wandb_records(path: Path):
    """The records of an offline W&B run file: W&B's transaction log is LevelDB's log format (a 7-byte
    ':W&B' header, then 32 KiB blocks of chunks with a 7-byte header crc32/length/type) around
    protobuf Records (wandb.proto)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    pos, block, chunk = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little left in the block for a chunk header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)


def test_tensorboard_and_offline_wandb_get_the_scalars_of_metrics_jsonl(tmp_path, wandb_env):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from starx.train.job import run_job

    run = prepare(QUICKSTART, tiny(tmp_path, *TRACKED))
    assert run_job(run.run_dir)["status"] == "done"
    expected = _expected(run.run_dir)
    assert ("pretrain/loss", 1) in expected and ("pretrain/knn_top1", 5) in expected

    # TensorBoard: event files in the run directory itself
    assert list(run.run_dir.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(run.run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    got = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key  # event files hold float32

    # W&B, offline: a run folder under the run directory, id = run id, group = experiment, spec as config
    (run_file,) = run.run_dir.glob("wandb/offline-run-*/run-*.wandb")
    rows, run_record = [], None
    for record in _wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
        elif kind == "run":
            run_record = record.run
    assert run_record is not None and run_record.run_id == run.run_dir.name
    assert run_record.run_group == "quickstart" and list(run_record.tags) == ["test"]
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["model"]["seq_multiplier"] == 4 and config["eval"]["knn"]["enabled"] is True
    logged = {}
    for row in rows:
        stages = {k.split("/")[0] for k in row if "/" in k}
        for stage in stages:
            step = row[f"{stage}/step"]
            logged.update({(k, step): v for k, v in row.items() if k.startswith(f"{stage}/") and k != f"{stage}/step"})
    assert set(logged) == set(expected)
    for key, value in expected.items():
        assert math.isclose(logged[key], value, rel_tol=1e-6, abs_tol=1e-6), (key, logged[key], value)


@pytest.mark.parametrize("override,extra", [("tracking.tensorboard=true", "tensorboard"),
                                            ("tracking.wandb.enabled=true", "wandb")])
def test_a_missing_extra_is_a_one_line_error_naming_it(monkeypatch, override, extra):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == extra else find_spec(name, *a))
    with pytest.raises(SpecError) as err:
        load_spec(QUICKSTART, [override])
    message = str(err.value)
    assert "\n" not in message and f"pip install 'starx[{extra}]'" in message and "field 'tracking." in message


def test_the_extra_is_named_when_the_import_fails_at_run_time(monkeypatch):
    import sys

    from starx.tracking import MissingExtra, _require

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    with pytest.raises(MissingExtra, match=r"^field 'tracking.tensorboard': .*pip install 'starx\[tensorboard\]'$"):
        _require("tensorboard", "tracking.tensorboard", "tensorboard")


def test_tracking_is_not_part_of_the_run_id():
    plain = load_spec(QUICKSTART)
    tracked = load_spec(QUICKSTART, ["tracking.tensorboard=true", "tracking.wandb.enabled=true"])
    assert run_identity(plain) == run_identity(tracked)
