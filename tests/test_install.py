"""The install (issue 17): LICENSE matches pyproject; `pip install -e .` cannot touch torch (no torch in
the core dependencies); scripts/install.sh and scripts/syslibs.sh: argument checks, the conda route and
the message that says exactly what is missing. The non-root apt-get download route runs in CI as an
unprivileged user (.ci/nonroot_install.sh), and .ci/pip_keeps_torch.sh resolves against PyPI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_file_matches_pyproject():
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text


def test_core_dependencies_leave_torch_alone():
    """`pip install -e .` into an environment with torch installs only these: none of them is torch."""
    names = {re.split(r"[<>=!\[; ]", d, maxsplit=1)[0].lower() for d in PYPROJECT["project"]["dependencies"]}
    assert names == {"omegaconf", "pyyaml", "typer", "rich"}


def test_install_script_rejects_an_unknown_torch_source():
    out = subprocess.run(["bash", "scripts/install.sh"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "STARX_TORCH": "cuda12", "STARX_VENV": "/nonexistent/venv"}, timeout=30)
    assert out.returncode == 2 and "STARX_TORCH=cuda12: expected auto, cpu or pypi" in out.stderr


def test_scripts_parse():
    for script in ("scripts/install.sh", "scripts/syslibs.sh", ".ci/run", ".ci/nonroot_install.sh",
                   ".ci/pip_keeps_torch.sh"):
        assert subprocess.run(["bash", "-n", script], cwd=ROOT).returncode == 0, script


def test_syslibs_says_exactly_what_is_missing_without_apt(tmp_path):
    """No pkg-config, no apt-get (a RHEL cluster, macOS): one message naming each missing piece and
    the ways to get it without root; exit 1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "STARX_SYSLIBS": str(tmp_path / "prefix")}
    out = subprocess.run([str(bin_dir / "bash"), "scripts/syslibs.sh"], cwd=ROOT, capture_output=True, text=True,
                         env=env, timeout=30)
    assert out.returncode == 1 and out.stdout == ""
    assert "pkg-config (the command)" in out.stderr
    assert "conda install -c conda-forge libjpeg-turbo opencv pkg-config" in out.stderr
    assert "module load" in out.stderr and "libturbojpeg0-dev libopencv-dev pkg-config" in out.stderr


@pytest.mark.skipif(shutil.which("pkg-config") is None, reason="needs pkg-config")
def test_syslibs_finds_the_libraries_in_a_conda_environment(tmp_path):
    conda = tmp_path / "conda"
    pc = conda / "lib" / "pkgconfig"
    pc.mkdir(parents=True)
    for name in ("opencv4", "libturbojpeg"):
        (pc / f"{name}.pc").write_text(f"prefix={conda}\nName: {name}\nDescription: x\nVersion: 4.9\n"
                                       f"Libs: -L${{prefix}}/lib -l{name}\nCflags: -I${{prefix}}/include\n")
    env = {**os.environ, "CONDA_PREFIX": str(conda), "PKG_CONFIG_LIBDIR": str(tmp_path / "none"),
           "PKG_CONFIG_PATH": "", "STARX_SYSLIBS": str(tmp_path / "prefix")}
    out = subprocess.run(["bash", "scripts/syslibs.sh"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert f"using the conda environment {conda}" in out.stderr
    assert f'export PKG_CONFIG_PATH="{pc}:' in out.stdout and f"-Wl,-rpath,{conda}/lib" in out.stdout
    assert not (tmp_path / "prefix").exists()  # nothing fetched


def _fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A venv whose python logs pip calls instead of running them (and is the base interpreter otherwise)."""
    import sys

    base = Path(sys.base_prefix) / "bin" / "python3"
    if subprocess.run([str(base), "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("the base interpreter has torch")
    log = tmp_path / "pip.log"
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = pip ]; then echo "$*" >> {log}; exit 0; fi\n'
                      f'exec {base} "$@"\n')
    python.chmod(0o755)
    return python.parent.parent, log


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/version").exists(),
                    reason="an NVIDIA GPU: the install keeps PyPI's torch")
@pytest.mark.skipif(subprocess.run(["sh", "-c", "pkg-config --exists libturbojpeg opencv4"]).returncode != 0,
                    reason="FFCV's libraries are not installed here (the install would fetch them)")
@pytest.mark.parametrize("source", ["auto", "cpu"])
def test_install_offers_cpu_torch_and_falls_back_when_its_index_does_not_answer(tmp_path, source):
    venv, log = _fake_venv(tmp_path)
    env = {**os.environ, "STARX_VENV": str(venv), "STARX_TORCH": source, "https_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9"}
    out = subprocess.run(["bash", "scripts/install.sh"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    calls = log.read_text().splitlines()
    if source == "auto":  # the index does not answer (as on CI machines): PyPI's torch, with a message
        assert "does not answer: torch from PyPI" in out.stdout
        assert not any("--index-url" in c for c in calls)
    else:  # asked for: the CPU index first, then the rest
        assert "CPU-only torch and torchvision from https://download.pytorch.org/whl/cpu" in out.stdout
        assert "--index-url https://download.pytorch.org/whl/cpu torch torchvision" in calls[0]
    assert calls[-1].endswith("-e .[all,test]") and " -c " in calls[-1]
