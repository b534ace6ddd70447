"""Sharded evaluation: with 2 gloo processes each rank scores its share of the held-out split and
the top-1 / top-5 counts are summed, so fine-tuning top-1/top-5 and the kNN and linear-probe
read-outs come out as with 1 process."""

from __future__ import annotations

import json

import pytest

from tests.test_ddp import _prepare, _run_ranks

# One step of each stage at a learning rate of ~1e-9 (the first step of a very long warm-up), so
# the weights the evaluations read are the seeded initial ones whatever the number of processes.
# The images a rank reads, its batches, and so the float rounding of its features, still differ.
EVAL = ["pretrain.epochs=0.01", "pretrain.warmup_epochs=1000", "finetune.enabled=true", "finetune.epochs=0.01",
        "finetune.warmup_epochs=1000", "eval.knn.enabled=true", "eval.linear_probe.enabled=true",
        "eval.linear_probe.epochs=20", "eval.batch_size=250"]
KEYS = ("top1", "top5", "knn_top1", "knn_top5", "probe_top1", "probe_top5")


def _metrics(run) -> dict:
    result = json.loads((run.run_dir / "result.json").read_text())
    assert result["status"] == "done", result
    return result["metrics"]


@pytest.mark.slow
def test_two_gloo_processes_evaluate_their_shares_and_match_one_process(tmp_path):
    one = _prepare(tmp_path, "eval_one", *EVAL)
    _run_ranks(one.run_dir, 1)
    two = _prepare(tmp_path, "eval_two", *EVAL)
    _run_ranks(two.run_dir, 2)
    expected, got = _metrics(one), _metrics(two)
    assert set(KEYS) <= set(expected) and set(KEYS) <= set(got)
    one_image = 100 / 2000  # of the 2000 held-out images: float rounding may move at most one
    for key in KEYS:
        assert got[key] == pytest.approx(expected[key], abs=one_image + 1e-9), (key, got, expected)
    # each rank scored its half (percentages alone would not tell: every rank scoring every image
    # doubles the counts and the total alike)
    log = (two.run_dir / "train.log").read_text()
    assert "2000 held-out images (1000 scored on rank 0 of 2)" in log, log[-2000:]
