"""Data-parallel training on CPU: 2 gloo processes give the same losses as 1 process with the
same global batch (the loader deals whole sequences to ranks, DDP averages gradients), a run
preempted at one world size resumes at another with the same global batches, and no rank starts
a stage before rank 0 has written the checkpoint it reads."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from starx.api import prepare
from starx.train.loop import PREEMPT_CHECK_EVERY
from tests.test_engine import QUICKSTART, losses, metrics, tiny

ROOT = Path(__file__).resolve().parents[1]
RUN = "import sys; from starx.train.job import run_job; run_job(sys.argv[1])"
# k=4 sequences, global batch 64 images = 16 sequences (8 on each of 2 ranks); 13 steps of the
# 156 in an epoch, so that a run preempted at step 10 (several processes agree on preemption
# every PREEMPT_CHECK_EVERY steps) has steps left to resume.
COMMON = ["finetune.enabled=false", "pretrain.epochs=0.08", "cpu_threads=1"]
STEPS = 13

# run_job, preempted at the end of step argv[2]: every rank raises SIGUSR1 on itself while that
# step's metrics are logged (as SLURM signals every task), and the engine's own handler saves.
PREEMPTED = 75
RUN_UNTIL = f"""
import signal, sys
from starx.train.job import run_job
from starx.train.metrics import MetricsLog
from starx.train.signals import Preempted

stop, write = int(sys.argv[2]), MetricsLog.write

def write_then_preempt(self, record):  # called on every rank, written by rank 0 only
    write(self, record)
    if record.get("stage") == "pretrain" and record.get("step") == stop:
        signal.raise_signal(signal.SIGUSR1)

MetricsLog.write = write_then_preempt
try:
    run_job(sys.argv[1])
except Preempted:
    sys.exit({PREEMPTED})
"""

# run_job with rank 0's checkpoint writes slowed down, as on a slow shared disk.
RUN_SLOW_SAVE = """
import sys, time
from starx.train import checkpoint
from starx.train.job import run_job

save = checkpoint.save_atomic

def slow_save(state, path):
    time.sleep(3)
    return save(state, path)

checkpoint.save_atomic = slow_save
run_job(sys.argv[1])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(run_dir: Path, world_size: int, *args: str, code: str = RUN, expected_rc: int = 0) -> None:
    """`code` (run_job(run_dir) by default) in `world_size` gloo processes."""
    port = _free_port()
    procs = []
    for rank in range(world_size):
        env = {**os.environ, "WORLD_SIZE": str(world_size), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(run_dir), *args], cwd=ROOT, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == expected_rc, err.decode()[-3000:]


@pytest.fixture(scope="module")
def ddp_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ddp")


def _prepare(ddp_tmp: Path, name: str, *extra: str):
    # One dataset cache for the module: only the first run builds it.
    return prepare(QUICKSTART, tiny(ddp_tmp / name, *COMMON, f"data.cache_dir={ddp_tmp / 'cache'}", *extra))


@pytest.fixture(scope="module")
def one_process_losses(ddp_tmp) -> dict[int, float]:
    """The reference: the spec run to the end by 1 process."""
    one = _prepare(ddp_tmp, "one")
    _run_ranks(one.run_dir, 1)
    expected = losses(one.run_dir)
    assert sorted(expected) == list(range(1, STEPS + 1))
    return expected


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(ddp_tmp, one_process_losses):
    two = _prepare(ddp_tmp, "two")
    _run_ranks(two.run_dir, 2)
    expected, got = one_process_losses, losses(two.run_dir)
    assert sorted(got) == sorted(expected) and len(expected) >= 5
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-4), (step, got, expected)
    ranks = json.loads((two.run_dir / "result.json").read_text())["devices"]["ranks"]
    assert [(r["rank"], r["device"]) for r in ranks] == [(0, "cpu"), (1, "cpu")]  # gathered from every rank


@pytest.mark.slow
@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)], ids=["2to1", "1to2"])
def test_preempted_run_resumes_with_another_world_size(ddp_tmp, one_process_losses, before, after):
    """Steps count global batches and every rank's share is a function of (seed, epoch, rank,
    world_size), so a checkpoint taken with `before` processes continues with `after` processes
    on exactly the global batches of an uninterrupted run: same losses, each step logged once."""
    stop = PREEMPT_CHECK_EVERY  # where processes that train together can stop
    assert 0 < stop < STEPS, "make COMMON's pretrain.epochs cover more than PREEMPT_CHECK_EVERY steps"
    run = _prepare(ddp_tmp, f"resume{before}to{after}")
    _run_ranks(run.run_dir, before, str(stop), code=RUN_UNTIL, expected_rc=PREEMPTED)
    result = json.loads((run.run_dir / "result.json").read_text())
    assert result["status"] == "preempted" and "SIGUSR1" in result["error"], result
    assert result["world_size"] == before
    assert f"checkpoint saved at step {stop}" in result["error"]
    assert [r["step"] for r in metrics(run.run_dir)] == list(range(1, stop + 1))

    _run_ranks(run.run_dir, after)
    result = json.loads((run.run_dir / "result.json").read_text())
    assert result["status"] == "done" and result["world_size"] == after
    assert result["metrics"]["pretrain_steps"] == STEPS
    steps = [r["step"] for r in metrics(run.run_dir) if r["stage"] == "pretrain" and "loss" in r]
    assert steps == list(range(1, STEPS + 1))  # no gap, no step logged twice
    got = losses(run.run_dir)
    for step, loss in one_process_losses.items():
        assert got[step] == pytest.approx(loss, rel=1e-4), (step, got, one_process_losses)


@pytest.mark.slow
def test_fine_tuning_waits_for_rank_0s_pretraining_checkpoint(ddp_tmp):
    """Rank 0 alone writes pretrain_last.pt, which every rank reads to start fine-tuning: the other
    ranks wait for it (they used to read it at once: an older checkpoint, or none and a crash)."""
    run = _prepare(ddp_tmp, "stages", "pretrain.epochs=0.02", "finetune.enabled=true", "finetune.epochs=0.02")
    _run_ranks(run.run_dir, 2, code=RUN_SLOW_SAVE)
    result = json.loads((run.run_dir / "result.json").read_text())
    assert result["status"] == "done" and result["metrics"]["finetune_steps"] >= 1, result


# A StageLoop on a 2-weight model whose step 2 loss is NaN; the clock of rank argv[2] makes a
# checkpoint due at every step, the other's never (each rank times its own checkpoints). Exits 3
# if the loop raised NonFiniteLoss at the log line of step 5.
RUN_NAN_CLOCKS = """
import datetime, os, sys
from pathlib import Path
import torch, torch.distributed as td
from starx.train.dist import DistInfo, shutdown
from starx.train.loop import NonFiniteLoss, StageLoop, StagePlan
from starx.train.metrics import MetricsLog

rank, world, tmp = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), Path(sys.argv[1])
td.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
model = torch.nn.Linear(2, 1)
spec = StagePlan(name="s", total_steps=12, steps_per_epoch=12, warmup_steps=0, peak_lr=0.1, min_lr=0.1,
                 clip_grad=None, accum_steps=1, images_per_step=2, tokens_per_image=1, log_every=5,
                 checkpoint_every_steps=0, checkpoint_every_minutes=1e-9 if rank == int(sys.argv[2]) else 0)

def step(i):
    loss = model(torch.ones(1, 2)).sum() ** 2
    return loss * float("nan") if i == 1 else loss, 1

loop = StageLoop(spec, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                 loader_fn=lambda epoch, first: iter(range(first, 12)), step_fn=step,
                 dist=DistInfo(rank, world, rank, torch.device("cpu")), ckpt_dir=tmp / str(rank),
                 metrics=MetricsLog(tmp / "metrics.jsonl", enabled=rank == 0), autocast_dtype=None)
(tmp / str(rank)).mkdir()
try:
    loop.run_steps()
    rc = 0
except NonFiniteLoss:
    rc = 3 if loop.state.step == 5 else 5
shutdown()  # as run_job does: exiting while gloo frees its last work can abort the process
sys.exit(rc)
"""


@pytest.mark.parametrize("due_rank", [0, 1])
def test_non_finite_loss_stops_every_rank_at_the_same_step(tmp_path, due_rank):
    """A checkpoint falls due by each rank's own clock: the rank whose checkpoint comes first must
    not stop alone (the others would wait for it in the next all-reduce, and rank 0 would record a
    gloo / NCCL error instead of the non-finite loss). Every rank stops at the next log line."""
    from starx.train import checkpoint

    _run_ranks(tmp_path, 2, str(due_rank), code=RUN_NAN_CLOCKS, expected_rc=3)
    saved = [checkpoint.load(p)["step"] for p in tmp_path.glob("*/s_last.pt")]
    assert saved == ([1] if due_rank == 0 else [])  # rank 0 saves; not the weights NaN step 2 made
