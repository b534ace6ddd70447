"""The engine end to end on CPU at tiny sizes: run directory, resume after kill -9, preemption,
non-finite loss, corrupt checkpoints, and a golden loss curve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from starx.api import prepare
from starx.train.job import run_job

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "specs" / "quickstart.yaml"
GOLDEN = ROOT / "tests" / "golden" / "pretrain_loss_tiny.json"


def tiny(tmp_path: Path, *extra: str) -> list[str]:
    """Overrides that shrink the quickstart to seconds on one core: same code paths, tiny widths."""
    return [f"output_dir={tmp_path / 'results'}", f"data.cache_dir={tmp_path / 'cache'}", "data.num_workers=1",
            "model.img_size=32", "model.patch_size=8", "model.cluster_size=2", "optim.base_lr=1e-3",
            "data.crop_scale=[0.5,1.0]", "model.depth=2", "model.embed_dim=32", "model.decoder_dim=32", "model.decoder_depth=1",
            "model.decoder_heads=2", "data.batch_size=64", "pretrain.epochs=0.07", "pretrain.warmup_epochs=0.02",
            "finetune.batch_size=64", "finetune.epochs=0.07", "finetune.warmup_epochs=0.02", "eval.batch_size=500",
            "eval.pixel_baseline=false", "eval.knn.enabled=false", "eval.linear_probe.enabled=false", "log_every=1",
            "deterministic=true", *extra]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path, stage: str = "pretrain") -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics(run_dir) if r["stage"] == stage and "loss" in r}


def test_tiny_run_writes_the_full_run_directory(tmp_path):
    run = prepare(QUICKSTART, tiny(tmp_path, "finetune.ema_decay=0.99", "finetune.mixup=0.8", "finetune.cutmix=1.0"))
    result = run_job(run.run_dir)
    assert result["status"] == "done"
    for name in ("spec.yaml", "derived.json", "metrics.jsonl", "result.json", "train.log",
                 "checkpoints/pretrain_last.pt", "checkpoints/finetune_last.pt"):
        assert (run.run_dir / name).exists(), name
    m = result["metrics"]
    assert m["pretrain_steps"] == 11 and m["finetune_steps"] == 11  # ceil(0.07 * 10000 // 64)
    assert 0 <= m["top1"] <= 100 and 0 <= m["top1_ema"] <= 100
    records = metrics(run.run_dir)
    steps = [r["step"] for r in records if r["stage"] == "pretrain"]
    assert steps == list(range(1, 12))
    first = records[0]
    assert {"loss", "lr", "grad_norm", "images_per_s", "tokens_per_s", "epoch"} <= set(first)
    assert any(r.get("kind") == "eval" and "top1_ema" in r for r in records)
    on_disk = json.loads((run.run_dir / "result.json").read_text())
    assert on_disk["metrics"] == m and on_disk["versions"]["torch"]
    assert on_disk["scan_backend"] == "torch"  # which selective scan ran (CPU: the twin)
    (rank0,) = on_disk["devices"]["ranks"]  # which devices ran it (CUDA_VISIBLE_DEVICES, name, uuid on GPUs)
    assert rank0["device"] == "cpu" and rank0["rank"] == 0 and "CUDA_VISIBLE_DEVICES" in on_disk["devices"]
    # Running it again returns the recorded result without training.
    before = (run.run_dir / "metrics.jsonl").read_text()
    assert run_job(run.run_dir)["metrics"] == m
    assert (run.run_dir / "metrics.jsonl").read_text() == before


def _start(run_dir: Path) -> subprocess.Popen:
    code = "import sys; from starx.train.job import run_job; run_job(sys.argv[1])"
    return subprocess.Popen([sys.executable, "-c", code, str(run_dir)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _wait_for_step(proc: subprocess.Popen, run_dir: Path, step: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"job ended early: {proc.stderr.read().decode()[-2000:]}")
        path = run_dir / "metrics.jsonl"
        if path.exists() and any(r.get("step", 0) >= step for r in metrics(run_dir)):
            return
        time.sleep(0.05)
    raise AssertionError("job did not reach the step in time")


def test_kill_minus_9_resumes_with_the_same_losses(tmp_path):
    common = ["pretrain.epochs=0.13", "finetune.enabled=false", "checkpoint.every_steps=5"]
    reference = prepare(QUICKSTART, tiny(tmp_path / "a", *common))
    run_job(reference.run_dir)
    expected = losses(reference.run_dir)

    killed = prepare(QUICKSTART, tiny(tmp_path / "b", *common))
    proc = _start(killed.run_dir)
    _wait_for_step(proc, killed.run_dir, 7)  # past the checkpoint at step 5
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(losses(killed.run_dir)) < len(expected), "killed too late to test resume"
    result = run_job(killed.run_dir)
    assert result["status"] == "done"
    resumed = losses(killed.run_dir)
    assert sorted(resumed) == sorted(expected)  # each step logged once
    for step, loss in expected.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-6, abs=1e-7), (step, resumed, expected)


def test_preemption_signal_saves_and_resumes(tmp_path):
    run = prepare(QUICKSTART, tiny(tmp_path, "pretrain.epochs=0.2", "finetune.enabled=false",
                                   "checkpoint.every_steps=1000"))
    proc = _start(run.run_dir)
    _wait_for_step(proc, run.run_dir, 3)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=60) != 0
    result = json.loads((run.run_dir / "result.json").read_text())
    assert result["status"] == "preempted" and "SIGUSR1" in result["error"]
    assert (run.run_dir / "checkpoints/pretrain_last.pt").exists()
    saved_step = max(losses(run.run_dir))
    final = run_job(run.run_dir)
    assert final["status"] == "done" and final["metrics"]["pretrain_steps"] == max(losses(run.run_dir)) > saved_step


def test_non_finite_loss_aborts_and_keeps_the_last_checkpoint(tmp_path):
    run = prepare(QUICKSTART, tiny(tmp_path, "optim.base_lr=1e30", "optim.clip_grad=null", "finetune.enabled=false",
                                   "checkpoint.every_steps=1"))
    with pytest.raises(Exception, match="non-finite loss"):
        run_job(run.run_dir)
    result = json.loads((run.run_dir / "result.json").read_text())
    assert result["status"] == "failed" and "non-finite loss" in result["error"]


def test_corrupt_checkpoint_is_named_and_left_in_place(tmp_path):
    run = prepare(QUICKSTART, tiny(tmp_path, "finetune.enabled=false"))
    ckpt = run.run_dir / "checkpoints" / "pretrain_last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match=r"corrupt or unreadable checkpoint .*pretrain_last.pt"):
        run_job(run.run_dir)
    assert ckpt.read_bytes() == b"not a checkpoint"


def test_golden_loss_curve(tmp_path):
    """The first steps of a fixed-seed tiny run match tests/golden (regenerate only with a stated reason:
    STARX_UPDATE_GOLDEN=1 pytest tests/test_engine.py -k golden)."""
    run = prepare(QUICKSTART, tiny(tmp_path, "finetune.enabled=false"))
    run_job(run.run_dir)
    curve = [losses(run.run_dir)[s] for s in sorted(losses(run.run_dir))]
    if os.environ.get("STARX_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"spec": "specs/quickstart.yaml + tests/test_engine.py:tiny()",
                                      "pretrain_loss": curve}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())["pretrain_loss"]
    assert curve == pytest.approx(golden, rel=2e-3)


def test_run_fixed_steps_is_the_engine_loop_for_benchmarks():
    # what bench/pretrain_step.py, backend_parity.py and ddp_step.py time: the loop on given batches
    import torch

    from starx.models import create_model
    from starx.train.dist import DistInfo
    from starx.train.loop import run_fixed_steps
    from starx.train.optim import adamw_pretrain

    tiny = dict(embed_dim=16, depth=2, img_size=8, patch_size=2, cluster_size=2, in_chans=1, decoder_dim=16,
                decoder_depth=2, decoder_heads=2, backend="torch", seq_multiplier=2)
    batches = [torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(6)]

    def curve(**kw):
        torch.manual_seed(0)
        model = create_model("star_tiny", **tiny)
        opt = adamw_pretrain(model, weight_decay=0.05, betas=(0.9, 0.95))
        records = run_fixed_steps(model, opt, lambda first: ((b, None) for b in batches[first:]), steps=6,
                                  images_per_step=4, tokens_per_image=model.num_tokens // 2,
                                  dist=DistInfo(0, 1, 0, torch.device("cpu")), autocast_dtype=None, **kw)
        return records

    every = curve(log_every=1, peak_lr=1e-2)
    assert [r["step"] for r in every] == [1, 2, 3, 4, 5, 6]
    assert all(r["images_per_s"] > 0 and r["loss"] > 0 for r in every)
    assert every[-1]["loss"] < every[0]["loss"]  # a lr of 1e-2 on 6 fixed batches: it learns
    halves = curve(log_every=3, peak_lr=1e-2)  # the loss of a step does not depend on when it is read
    assert [r["step"] for r in halves] == [3, 6]
    assert halves[1]["loss"] == pytest.approx(every[5]["loss"], rel=1e-6)
    assert halves[1]["loss_mean"] == pytest.approx(sum(r["loss"] for r in every[3:]) / 3, rel=1e-5)


def test_stage_resumed_at_its_end_keeps_its_last_loss(tmp_path):
    # e.g. preempted at its last step: the checkpoint is at total_steps and the resumed stage runs
    # no step, so its last loss (pretrain_loss, finetune_loss in result.json) comes from the checkpoint
    import torch

    from starx.train.dist import DistInfo
    from starx.train.loop import StageLoop, StagePlan
    from starx.train.metrics import MetricsLog

    def stage():
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        spec = StagePlan(name="s", total_steps=3, steps_per_epoch=3, warmup_steps=0, peak_lr=0.1, min_lr=0.1,
                         clip_grad=None, accum_steps=1, images_per_step=1, tokens_per_image=1, log_every=10,
                         checkpoint_every_steps=0, checkpoint_every_minutes=0)
        return StageLoop(spec, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                         loader_fn=lambda epoch, first: iter(range(first, 3)),
                         step_fn=lambda i: (model(torch.full((1, 2), float(i))).sum() ** 2, 1),
                         dist=DistInfo(0, 1, 0, torch.device("cpu")), ckpt_dir=tmp_path,
                         metrics=MetricsLog(tmp_path / "metrics.jsonl", enabled=True), autocast_dtype=None)

    first = stage().run()
    assert first.step == 3 and first.last_loss > 0  # set by the stage's only log line (total < log_every)
    resumed = stage().run()
    assert resumed.step == 3 and resumed.last_loss == first.last_loss


def test_quiet_cli_run_prints_no_info_lines_but_train_log_has_them(tmp_path):
    out = subprocess.run([sys.executable, "-m", "starx.cli", "-q", "run", str(QUICKSTART),
                          *tiny(tmp_path, "finetune.enabled=false")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "INFO" not in out.stderr and "checkpoint at step" not in out.stderr, out.stderr[-2000:]
    (log_file,) = (tmp_path / "results").glob("quickstart/*/train.log")
    assert "checkpoint at step" in log_file.read_text()


def test_cuda_graphs_under_ddp_compile_without_a_warning(caplog):
    """compile_mode=reduce-overhead with several DDP processes was measured on 2 GPUs to give default
    mode's losses (bench/results/multi_gpu_h200x2.md): it loads and compiles without a warning
    (torch.compile is lazy, so no GPU is needed to check it)."""
    import logging

    import torch
    from omegaconf import OmegaConf

    from starx.spec.load import load_spec
    from starx.train.stages import _maybe_compile

    cfg = OmegaConf.create({"compile": True, "compile_mode": "reduce-overhead"})
    with caplog.at_level(logging.WARNING, logger="starx.train.stages"):
        compiled = _maybe_compile(torch.nn.Linear(2, 2), cfg)
    assert hasattr(compiled, "_orig_mod") and not caplog.records
    ddp = ["device=cuda", "compile=true", "compile_mode=reduce-overhead", "launch.kind=subprocess",
           "launch.subprocess.tasks_per_node=2"]
    assert load_spec(QUICKSTART, ddp).compile_mode == "reduce-overhead"
