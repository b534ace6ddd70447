"""starx export: a run's weights as safetensors + config.json, read back by create_model /
create_classifier (round trip), from plain PyTorch too; bad inputs are one line, exit 2."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import starx.models
from starx.api import prepare
from starx.cli import app
from starx.train.export import load_exported
from starx.train.job import run_job
from tests.test_engine import QUICKSTART, tiny


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    run = prepare(QUICKSTART, tiny(tmp, "finetune.ema_decay=0.9", "pretrain.epochs=0.02", "finetune.epochs=0.02"))
    assert run_job(run.run_dir)["status"] == "done"
    return run.run_dir


@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
def test_export_round_trip(finished_run, tmp_path, stage):
    out = tmp_path / stage
    result = CliRunner().invoke(app, ["export", str(finished_run), "--stage", stage, "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["factory"] == ("create_classifier" if stage == "finetune" else "create_model")
    saved = torch.load(finished_run / "checkpoints" / f"{stage}_last.pt", weights_only=True)["model"]
    # plain PyTorch: the tensors by name, no pickle
    plain = load_file(str(out / "model.safetensors"))
    assert set(plain) == set(saved) and all(torch.equal(plain[k], saved[k]) for k in saved)
    # create_model / create_classifier read config.json back
    model = getattr(starx.models, config["factory"])(**config["kwargs"])
    model.load_state_dict(plain)
    again = load_exported(out)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    if stage == "finetune":
        assert config["kwargs"]["num_classes"] == 10
        images = torch.randn(2, 1, 32, 32)
        model.eval(), again.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(images), again(images))


def test_export_defaults_to_the_finetune_stage_and_can_take_the_ema(finished_run, tmp_path):
    result = CliRunner().invoke(app, ["export", str(finished_run), "--ema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["stage"] == "finetune" and config["weights"] == "ema"
    ema = torch.load(finished_run / "checkpoints" / "finetune_last.pt", weights_only=True)["ema"]
    plain = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(plain[k.removeprefix("module.")], v) for k, v in ema.items())


def test_export_bad_inputs_are_one_line_exit_2(finished_run, tmp_path):
    runner = CliRunner()
    cases = [([str(tmp_path)], "is not a run directory"),
             ([str(finished_run), "--stage", "probe"], "--stage probe: not one of pretrain, finetune"),
             ([str(finished_run), "--format", "onnx"], "--format onnx: not one of safetensors")]
    for args, expect in cases:
        result = runner.invoke(app, ["export", *args, "--out", str(tmp_path / "x")])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and expect in lines[0], result.output
    # a torn checkpoint: named, left as it is
    torn_run = tmp_path / "torn"
    (torn_run / "checkpoints").mkdir(parents=True)
    (torn_run / "spec.yaml").write_text((finished_run / "spec.yaml").read_text())
    ckpt = torn_run / "checkpoints" / "pretrain_last.pt"
    ckpt.write_bytes((finished_run / "checkpoints" / "pretrain_last.pt").read_bytes()[:4000])
    before = ckpt.read_bytes()
    result = runner.invoke(app, ["export", str(torn_run), "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "corrupt or unreadable checkpoint" in result.output and str(ckpt) in result.output
    assert ckpt.read_bytes() == before and not (tmp_path / "y" / "model.safetensors").exists()
