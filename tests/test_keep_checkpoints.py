"""Kept checkpoints: milestones every checkpoint.keep_every_epochs, the newest checkpoint.keep_last of
them, the best fine-tuning state by checkpoint.best_metric; full states, atomic, resumable."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from starx.api import prepare
from starx.spec import SpecError, load_spec
from starx.train import checkpoint
from starx.train.job import run_job
from tests.test_engine import QUICKSTART, losses, tiny

# 10000 // 64 = 156 steps an epoch: 0.02 epochs = 3 steps; 0.07 epochs = 11 steps
KEEP = ("checkpoint.keep_every_epochs=0.02", "checkpoint.keep_last=2")


def test_milestones_keep_last_and_best(tmp_path):
    run = prepare(QUICKSTART, tiny(tmp_path, *KEEP, "finetune.eval_every_epochs=0.02"))
    assert run_job(run.run_dir)["status"] == "done"
    ckpts = run.run_dir / "checkpoints"
    for stage in ("pretrain", "finetune"):
        kept = checkpoint.milestones(ckpts, stage)
        assert [p.name for p in kept] == [f"{stage}_ep0.0385.pt", f"{stage}_ep0.0577.pt"]  # steps 6, 9; 3 pruned
        assert [torch.load(p, weights_only=True)["step"] for p in kept] == [6, 9]
    assert not (ckpts / "pretrain_best.pt").exists()  # best: fine-tuning only
    last = torch.load(ckpts / "finetune_last.pt", weights_only=True)
    best = torch.load(ckpts / "finetune_best.pt", weights_only=True)
    top1 = [e["top1"] for e in last["evals"]]
    assert [e["step"] for e in last["evals"]] == [3, 6, 9, 11]
    assert last["best"]["value"] == max(top1) and best["step"] == last["best"]["step"]
    assert best["evals"][-1]["top1"] == max(top1) and best["evals"][-1]["step"] == best["step"]
    assert {"model", "optimizer", "rng", "step"} <= set(best)  # a full state: resumable


def test_a_milestone_resumes_exactly(tmp_path):
    run = prepare(QUICKSTART, tiny(tmp_path, "checkpoint.keep_every_epochs=0.02", "finetune.enabled=false"))
    run_job(run.run_dir)
    expected = losses(run.run_dir)
    ckpts = run.run_dir / "checkpoints"
    # go back to the milestone at step 6 and train on from there
    shutil.copyfile(ckpts / "pretrain_ep0.0385.pt", ckpts / "pretrain_last.pt")
    (ckpts / "pretrain.done.json").unlink()
    (run.run_dir / "result.json").unlink()
    run_job(run.run_dir)
    again = losses(run.run_dir)
    assert sorted(again) == sorted(expected)
    for step in range(7, 12):
        assert again[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


def test_milestone_names_sort_by_epoch_and_prune_the_oldest(tmp_path):
    for step in (10, 95, 100, 1000):
        (tmp_path / checkpoint.milestone_path(tmp_path, "pretrain", step, 10).name).write_text(str(step))
    names = [p.name for p in checkpoint.milestones(tmp_path, "pretrain")]
    assert names == ["pretrain_ep1.pt", "pretrain_ep9.5.pt", "pretrain_ep10.pt", "pretrain_ep100.pt"]
    removed = checkpoint.prune_milestones(tmp_path, "pretrain", 2)
    assert [p.name for p in removed] == ["pretrain_ep1.pt", "pretrain_ep9.5.pt"]
    assert checkpoint.prune_milestones(tmp_path, "pretrain", 0) == []


def test_keep_copy_is_atomic_and_survives_the_source_being_replaced(tmp_path):
    src, dst = tmp_path / "last.pt", tmp_path / "kept.pt"
    checkpoint.save_atomic({"step": 1}, src)
    checkpoint.keep_copy(src, dst)
    checkpoint.save_atomic({"step": 2}, src)  # the next checkpoint replaces the file, not its bytes
    assert checkpoint.load(dst)["step"] == 1 and checkpoint.load(src)["step"] == 2
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("override,message", [("checkpoint.keep_last=-1", "must be >= 0"),
                                              ("checkpoint.best_metric=acc", "not a fine-tuning eval metric")])
def test_keep_fields_are_checked_at_load(override, message):
    with pytest.raises(SpecError, match=message):
        load_spec(QUICKSTART, [override])


def test_keep_fields_are_not_part_of_the_run_id(tmp_path):
    a = prepare(QUICKSTART, tiny(tmp_path))
    b = prepare(QUICKSTART, tiny(tmp_path, *KEEP, "checkpoint.best_metric=top1_ema"))
    assert a.run_id == b.run_id
    assert json.loads(json.dumps(a.derived)) == b.derived
