"""Specs that compose: ``base:`` (relative to the file, merged before the file and the overrides,
cycles and missing bases one-line errors), ``${oc.env:...}`` interpolation, and ``$STARX_RESULTS``
as the default results root of ``run`` and ``sweep``. The run id depends only on the resolved spec."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from starx.api import prepare, run_identity, show
from starx.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_results_env(monkeypatch):
    monkeypatch.delenv("STARX_RESULTS", raising=False)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {k: v for k, v in os.environ.items() if k != "STARX_RESULTS"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "starx.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=full_env)


def test_base_is_relative_to_the_file_and_merged_before_the_file_and_overrides(tmp_path):
    _write(tmp_path / "recipes/parent.yaml", "experiment: parent\nseed: 3\nmodel:\n  depth: 2\n  embed_dim: 64\n"
           "optim:\n  base_lr: 1.0e-3\n")
    child = _write(tmp_path / "runs/child.yaml", "base: ../recipes/parent.yaml\nexperiment: child\n"
                   "model:\n  depth: 4\n")
    cfg = load_spec(child, ["seed=5"])
    assert cfg.experiment == "child"          # the file wins over its base
    assert cfg.model.depth == 4
    assert cfg.model.embed_dim == 64          # the base's value, merged key by key
    assert cfg.optim.base_lr == 1.0e-3
    assert cfg.seed == 5                      # overrides win over both
    assert "base" not in cfg                  # not part of the resolved spec


def test_a_list_of_bases_merges_in_order_and_bases_extend_bases(tmp_path):
    _write(tmp_path / "a.yaml", "seed: 1\nmodel:\n  depth: 2\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\nseed: 2\n")
    _write(tmp_path / "c.yaml", "model:\n  depth: 6\n")
    spec = _write(tmp_path / "d.yaml", "base: [b.yaml, c.yaml]\n")
    cfg = load_spec(spec)
    assert cfg.seed == 2 and cfg.model.depth == 6


@pytest.mark.parametrize("files, start, fragment", [
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "a.yaml", "'base' cycle: a.yaml -> b.yaml -> a.yaml"),
    ({"a.yaml": "base: a.yaml\n"}, "a.yaml", "'base' cycle: a.yaml -> a.yaml"),
    ({"a.yaml": "base: missing.yaml\n"}, "a.yaml", "base spec not found"),
    ({"a.yaml": "base: 3\n"}, "a.yaml", "field 'base': expected a spec file name"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "model:\n  dept: 2\n"}, "a.yaml", "b.yaml: unknown field 'model.dept'"),
])
def test_bad_bases_are_one_line_errors(tmp_path, files, start, fragment):
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / start)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_base_exits_2_with_one_line(tmp_path):
    _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\n")
    for command in ("validate", "show", "run"):
        out = _cli(command, str(tmp_path / "a.yaml"))
        assert out.returncode == 2, (command, out.stderr)
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "cycle" in lines[0], out.stderr


def test_run_id_depends_only_on_the_resolved_spec(tmp_path):
    """A composed spec and the flat file `starx show` prints for it are the same run."""
    composed = ROOT / "specs/arm_base_in1k.yaml"
    text, _, run_id = show(composed)
    assert "base:" not in text
    flat = _write(tmp_path / "flat.yaml", text)
    assert run_identity(load_spec(flat)) == run_id
    # ARM differs from STAR only where the file says so
    arm = OmegaConf.to_container(load_spec(composed))
    star = OmegaConf.to_container(load_spec(ROOT / "specs/star_base_in1k.yaml"))
    assert arm.pop("experiment") == "arm_base_in1k" and star.pop("experiment") == "star_base_in1k"
    assert (arm["model"].pop("separator"), arm["model"].pop("seq_multiplier")) == ("none", 1)
    assert (star["model"].pop("separator"), star["model"].pop("seq_multiplier")) == ("cluster", 4)
    assert arm == star


def test_shipped_fine_tune_spec_extends_the_pretraining_recipe():
    ft = load_spec(ROOT / "specs/star_base_in1k_ft.yaml", ["finetune.init=none"])
    star = load_spec(ROOT / "specs/star_base_in1k.yaml")
    assert not ft.pretrain.enabled and ft.experiment == "star_base_in1k_ft"
    assert OmegaConf.to_container(ft.finetune) == {**OmegaConf.to_container(star.finetune), "init": "none"}
    assert ft.launch.slurm.nodes == 2 and ft.launch.slurm.timeout_min == 1440
    assert ft.launch.slurm.gpus_per_node == star.launch.slurm.gpus_per_node == 8


def test_cli_show_prints_the_fully_resolved_spec(tmp_path):
    _write(tmp_path / "parent.yaml", "model:\n  depth: 2\n  embed_dim: 64\n")
    child = _write(tmp_path / "child.yaml", "base: parent.yaml\nexperiment: composed\n")
    out = _cli("show", str(child), "seed=9")
    assert out.returncode == 0, out.stderr
    assert "base:" not in out.stdout
    body = yaml.safe_load("\n".join(ln for ln in out.stdout.splitlines() if not ln.startswith("#")))
    assert body["model"]["depth"] == 2 and body["model"]["embed_dim"] == 64
    assert body["experiment"] == "composed" and body["seed"] == 9
    assert "# run_id: " in out.stdout


def test_env_interpolation_resolves_and_enters_the_run_id(tmp_path, monkeypatch):
    """The README's example: dataset paths per cluster through ${oc.env:VAR,default}."""
    spec = _write(tmp_path / "s.yaml", "data:\n  dataset: ${oc.env:IMAGENET_DIR,/data/imagenet}/train.beton\n")
    monkeypatch.delenv("IMAGENET_DIR", raising=False)
    default = load_spec(spec)
    assert default.data.dataset == "/data/imagenet/train.beton"
    monkeypatch.setenv("IMAGENET_DIR", "/scratch/me/imagenet")
    mine = load_spec(spec)
    assert mine.data.dataset == "/scratch/me/imagenet/train.beton"
    assert "${" not in OmegaConf.to_yaml(mine)        # spec.yaml stores the value, not the expression
    assert run_identity(default) != run_identity(mine)
    unset = _write(tmp_path / "u.yaml", "data:\n  dataset: ${oc.env:STARX_TEST_UNSET_VAR}\n")
    monkeypatch.delenv("STARX_TEST_UNSET_VAR", raising=False)
    with pytest.raises(SpecError, match="interpolation: .*STARX_TEST_UNSET_VAR"):
        load_spec(unset)


def test_starx_results_sets_where_runs_and_sweeps_write(tmp_path, monkeypatch):
    monkeypatch.setenv("STARX_RESULTS", str(tmp_path / "env_root"))
    assert load_spec(None).output_dir == str(tmp_path / "env_root")
    # a spec's own output_dir and an override still win
    spec = _write(tmp_path / "s.yaml", f"output_dir: {tmp_path / 'spec_root'}\n")
    assert load_spec(spec).output_dir == str(tmp_path / "spec_root")
    assert load_spec(spec, [f"output_dir={tmp_path / 'cli_root'}"]).output_dir == str(tmp_path / "cli_root")
    # where the run directory goes; the run id does not depend on it
    run = prepare(ROOT / "specs/quickstart.yaml")
    assert run.run_dir == tmp_path / "env_root" / "quickstart" / run.run_id
    monkeypatch.delenv("STARX_RESULTS")
    assert run_identity(load_spec(ROOT / "specs/quickstart.yaml")) == run.run_id
    # a sweep's root is its base spec's output_dir
    from starx.sweep.config import load_sweep
    from starx.sweep.driver import sweep_root

    monkeypatch.setenv("STARX_RESULTS", str(tmp_path / "env_root"))
    assert sweep_root(load_sweep(ROOT / "sweeps/quickstart.yaml")) == tmp_path / "env_root"
