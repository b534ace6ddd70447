"""Per-rank randomness: drop path and mixup / cutmix draw differently on each DDP rank (as timm's
seed + rank), the data order stays one global permutation, and kill -9 + resume stays exact with
that randomness in every step."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch
from timm.data import Mixup
from timm.layers import DropPath

from starx.api import prepare
from starx.data.order import epoch_indices
from starx.train.job import run_job
from starx.train.loop import seed_step
from tests.test_ddp import _run_ranks
from tests.test_engine import QUICKSTART, _start, _wait_for_step, losses, tiny


def _draws(rank: int, step: int) -> tuple:
    seed_step(7, rank, "finetune", step)
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=10)
    lam, use_cutmix = mixup._params_per_batch()
    mask = DropPath(0.5).train()(torch.ones(8, 1, 1))
    return float(lam), bool(use_cutmix), mask.flatten().tolist()


def test_each_rank_draws_its_own_augmentation_and_a_step_draws_the_same_again():
    ranks = [[_draws(rank, step) for step in range(6)] for rank in range(2)]
    assert all(a != b for a, b in zip(ranks[0], ranks[1]))  # rank 0 and rank 1 differ at every step
    assert ranks[0] == [_draws(0, step) for step in range(6)]  # a resumed step draws what it drew
    assert _draws(0, 1) != _draws(0, 2)


def test_data_order_is_one_global_permutation():
    """Both ranks read disjoint shares of one permutation that does not depend on the rank."""
    shares = [epoch_indices(1000, batch_size=8, seed=3, epoch=2, rank=r, world_size=2) for r in range(2)]
    assert not set(shares[0].tolist()) & set(shares[1].tolist())
    both = np.concatenate(shares)
    assert len(set(both.tolist())) == len(both)


# the engine in 2 gloo processes, recording each fine-tuning step's mixup / cutmix draw per rank
RECORD = """
import json, os, sys
from timm.data import Mixup
from starx.train.job import run_job

params = Mixup._params_per_batch
out = open(sys.argv[2] + f".rank{os.environ['RANK']}", "w")

def recorded(self):
    lam, cutmix = params(self)
    out.write(json.dumps([float(lam), bool(cutmix)]) + "\\n"); out.flush()
    return lam, cutmix

Mixup._params_per_batch = recorded
run_job(sys.argv[1])
"""

FINETUNE_ONLY = ("pretrain.enabled=false", "finetune.init=none", "finetune.mixup=0.8", "finetune.cutmix=1.0",
                 "finetune.drop_path=0.1", "cpu_threads=1")


def test_two_ranks_draw_different_mixup_in_a_ddp_run(tmp_path):
    run = prepare(QUICKSTART, tiny(tmp_path, *FINETUNE_ONLY, "finetune.epochs=0.03"))  # 5 steps
    record = tmp_path / "draws"
    _run_ranks(run.run_dir, 2, str(record), code=RECORD)
    draws = [[json.loads(line) for line in open(f"{record}.rank{r}")] for r in range(2)]
    assert len(draws[0]) == len(draws[1]) == 5
    assert all(a != b for a, b in zip(*draws)), draws
    assert json.loads((run.run_dir / "result.json").read_text())["status"] == "done"


def test_kill_minus_9_resume_is_exact_with_mixup_and_drop_path(tmp_path):
    common = (*FINETUNE_ONLY, "finetune.epochs=0.09", "checkpoint.every_steps=5", "finetune.eval_every_epochs=1")
    reference = prepare(QUICKSTART, tiny(tmp_path / "a", *common))
    run_job(reference.run_dir)
    expected = losses(reference.run_dir, "finetune")
    assert len(expected) == 15  # ceil(0.09 * 156)

    killed = prepare(QUICKSTART, tiny(tmp_path / "b", *common))
    proc = _start(killed.run_dir)
    _wait_for_step(proc, killed.run_dir, 7)  # past the checkpoint at step 5
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(losses(killed.run_dir, "finetune")) < len(expected), "killed too late to test resume"
    assert run_job(killed.run_dir)["status"] == "done"
    resumed = losses(killed.run_dir, "finetune")
    assert sorted(resumed) == sorted(expected)
    for step, loss in expected.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-6, abs=1e-7), (step, resumed, expected)
