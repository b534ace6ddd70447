"""Shared fixtures. Heavy or environment-bound tests carry markers (gpu, slurm, slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return ROOT
