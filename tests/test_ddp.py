"""Data-parallel training on CPU: 2 gloo processes give the same losses as 1 process with the
same global batch (the loader deals whole sequences to ranks, DDP averages gradients)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from starx.api import prepare
from tests.test_engine import QUICKSTART, losses, tiny

ROOT = Path(__file__).resolve().parents[1]
RUN = "import sys; from starx.train.job import run_job; run_job(sys.argv[1])"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(run_dir: Path, world_size: int) -> None:
    port = _free_port()
    procs = []
    for rank in range(world_size):
        env = {**os.environ, "WORLD_SIZE": str(world_size), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", RUN, str(run_dir)], cwd=ROOT, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    # k=4 sequences, global batch 64 images = 16 sequences, 8 on each rank.
    common = ["finetune.enabled=false", "pretrain.epochs=0.04", "cpu_threads=1"]
    one = prepare(QUICKSTART, tiny(tmp_path / "one", *common))
    _run_ranks(one.run_dir, 1)
    two = prepare(QUICKSTART, tiny(tmp_path / "two", *common))
    _run_ranks(two.run_dir, 2)
    expected, got = losses(one.run_dir), losses(two.run_dir)
    assert sorted(got) == sorted(expected) and len(expected) >= 5
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-4), (step, got, expected)
