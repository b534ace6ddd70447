"""Spec loading: defaults, overrides, and every kind of bad input, each a one-line SpecError."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from starx.api import prepare, run_identity
from starx.spec import SpecError, derive, load_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


def test_defaults_follow_the_star_b_recipe():
    cfg = load_spec(None)
    assert cfg.model.separator == "cluster" and cfg.model.seq_multiplier == 4
    assert cfg.optim.betas == [0.9, 0.95] and cfg.optim.base_lr == 1.5e-4
    d = derive(load_spec(None, ["model.img_size=192", "model.patch_size=16", "data.batch_size=2048"]))
    # 4 x (16 separator tokens + 144 patches) = 640, the paper's STAR-B sequence; the encoder reads
    # all but its last cluster: 624.
    assert d["sequence_tokens"] == 640
    assert d["encoder_tokens"] == 624
    assert d["pretrain_lr"] == pytest.approx(1.5e-4 * 2048 / 256)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_every_shipped_spec_validates(spec):
    try:
        load_spec(spec)
    except SpecError as e:
        # Fine-tune-only recipes name their checkpoint on the command line by design.
        assert "finetune.init" in str(e), str(e)


def test_overrides_apply_and_are_typed():
    cfg = load_spec(ROOT / "specs/quickstart.yaml", ["model.seq_multiplier=2", "optim.base_lr=3e-4",
                                                     "finetune.ema_decay=null"])
    assert cfg.model.seq_multiplier == 2 and cfg.optim.base_lr == 3e-4 and cfg.finetune.ema_decay is None


def test_resolved_spec_is_read_only():
    cfg = load_spec(None)
    with pytest.raises(Exception):  # noqa: B017 - OmegaConf's ReadonlyConfigError
        cfg.model.depth = 3


@pytest.mark.parametrize("overrides, fragment", [
    (["model.seperator=none"], "unknown field 'model.seperator' (did you mean 'model.separator'?)"),
    (["modle.depth=2"], "unknown field 'modle' (did you mean 'model'?)"),
    (["model.img_size=big"], "field 'model.img_size'"),
    (["model.separator=clustr"], "(did you mean 'cluster'?)"),
    (["data.batch_size=255"], "field 'data.batch_size'"),
    (["model.img_size=30"], "field 'model.img_size'"),
    (["model.cluster_size=5"], "field 'model.cluster_size'"),
    (["model.in_chans=2"], "field 'model.in_chans'"),
    (["launch.kind=slrm"], "field 'launch.kind'"),
    (["compile_mode=reduce_overhead"], "field 'compile_mode': 'reduce_overhead' is not one of"),
    (["pretrain.enabled=false"], "field 'finetune.init'"),
    (["finetune.init=/no/such/ckpt.pt"], "checkpoint not found: /no/such/ckpt.pt"),
    (["optim.betas=[0.9]"], "field 'optim.betas'"),
    (["data.crop_scale=[0.5,0.2]"], "field 'data.crop_scale'"),
    (["model.separator=none", "model.separator_len=4"], "field 'model.separator_len'"),
    (["no_equals_sign"], "expected key=value"),
    (["data.dataset=imagenet"], "field 'data.dataset': unknown data source 'imagenet'"),
    (["data.eval_dataset=tfds:mnist"], "field 'data.eval_dataset': unknown data source 'tfds:mnist'"),
])
def test_bad_overrides_are_one_line_errors_naming_the_field(overrides, fragment):
    with pytest.raises(SpecError) as info:
        load_spec(None, overrides)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_bad_files(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  depth: [1,\n")
    with pytest.raises(SpecError, match=r"broken.yaml:\d+: invalid YAML"):
        load_spec(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(scalar)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_spec(unsafe)
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  sequence_multiplier: 2\n")
    with pytest.raises(SpecError, match=r"typo.yaml: unknown field 'model.sequence_multiplier'"):
        load_spec(typo)


def test_run_identity_is_stable_and_ignores_launch_and_output(tmp_path):
    a = load_spec(None, ["seed=1"])
    b = load_spec(None, ["seed=1", "launch.kind=subprocess", f"output_dir={tmp_path}", "data.num_workers=7"])
    c = load_spec(None, ["seed=2"])
    assert run_identity(a) == run_identity(b) != run_identity(c)
    assert run_identity(a).startswith("star_tiny-k4-cluster-s1-")


def test_prepare_writes_spec_and_derived_without_touching_existing_files(tmp_path):
    run = prepare(ROOT / "specs/quickstart.yaml", [f"output_dir={tmp_path}"])
    assert run.run_dir == tmp_path / "quickstart" / run.run_id
    derived = json.loads((run.run_dir / "derived.json").read_text())
    assert derived["sequence_tokens"] == 4 * (4 + 16)  # k x (separator cluster + 4x4 patches)
    (run.run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    again = prepare(ROOT / "specs/quickstart.yaml", [f"output_dir={tmp_path}"])
    assert again.run_dir == run.run_dir
    assert (run.run_dir / "metrics.jsonl").read_text() == '{"step": 1}\n'
    # The stored spec loads back to the same identity (run_job re-reads it).
    assert run_identity(load_spec(run.run_dir / "spec.yaml")) == run.run_id


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "starx.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_validate_exit_codes():
    ok = _cli("validate", "specs/quickstart.yaml")
    assert ok.returncode == 0, ok.stderr
    bad = _cli("validate", "specs/quickstart.yaml", "model.seperator=none")
    assert bad.returncode == 2
    lines = [line for line in bad.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "model.separator" in lines[0]
    missing = _cli("run", "specs/nope.yaml")
    assert missing.returncode == 2 and "spec file not found" in missing.stderr


def test_launch_section_is_validated_at_load_before_anything_is_written(tmp_path):
    with pytest.raises(SpecError, match="field 'launch.slurm.nodes'"):
        load_spec(None, ["launch.slurm.nodes=0"])
    bad = _cli("validate", "specs/quickstart.yaml", "launch.slurm.nodes=0")
    assert bad.returncode == 2 and "launch.slurm.nodes" in bad.stderr
    run = _cli("run", "specs/quickstart.yaml", f"output_dir={tmp_path}", "launch.slurm.nodes=0")
    assert run.returncode == 2 and "launch.slurm.nodes" in run.stderr
    assert not any(tmp_path.iterdir())  # no run directory was created


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_local_run_whose_backend_cannot_load_here_is_refused_before_it_starts(tmp_path):
    """model.backend=cuda on a machine without CUDA: exit 2 naming the field, the job never starts
    (no result.json, launch.json or train.log); a SLURM job would run on the cluster's nodes instead."""
    run = _cli("run", "specs/quickstart.yaml", f"output_dir={tmp_path}", "model.backend=cuda")
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "field 'model.backend'" in lines[0] and "launch.kind=local" in lines[0]
    (run_dir,) = (tmp_path / "quickstart").iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == ["derived.json", "spec.yaml"]


def test_spec_and_model_config_import_without_torch():
    code = ("import sys; from starx.spec import load_spec, derive; from starx.models.config import model_config; "
            "derive(load_spec(None)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_committed_spec_reference_is_current():
    # specs/REFERENCE.md is `starx reference` output: regenerate it after changing the schema
    from starx.spec.reference import spec_reference

    committed = (ROOT / "specs" / "REFERENCE.md").read_text()
    assert committed == spec_reference() + "\n", "specs/REFERENCE.md is stale: run `starx reference > specs/REFERENCE.md`"
    for key in ("model.seq_multiplier", "data.dataset", "finetune.layer_decay", "launch.slurm.partition"):
        assert f"| `{key}` |" in committed
    assert "|  |" not in committed  # every field says what it means
