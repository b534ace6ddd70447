"""One training stage (pretrain or fine-tune): the step loop shared by both.

Steps count optimizer updates of the global batch, so a checkpoint's ``step`` means the
same thing whatever the number of processes. A stage resumes from
``checkpoints/<stage>_last.pt``: model, optimizer, EMA, step and RNG state; the data
loader is rebuilt for the saved epoch and skips the batches already seen, so an
interrupted run continues with the same next-step loss as one that never stopped.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch

from starx.train import checkpoint, signals
from starx.train.dist import DistInfo, all_reduce_mean, any_rank
from starx.train.metrics import MetricsLog
from starx.train.progress import StageProgress
from starx.train.schedule import lr_at

log = logging.getLogger(__name__)


PREEMPT_CHECK_EVERY = 10  # steps between preemption checks when several processes train together


class NonFiniteLoss(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


@dataclass
class StagePlan:
    """What a stage loop runs (steps, schedule, batch, cadence): the job computes it from the spec.
    A plan, not a spec: specs are the YAML files (starx.spec)."""

    name: str
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int
    peak_lr: float
    min_lr: float
    clip_grad: Optional[float]
    accum_steps: int
    images_per_step: int  # global
    tokens_per_image: int
    log_every: int
    checkpoint_every_steps: int
    checkpoint_every_minutes: float
    eval_every_steps: int = 0  # 0 = only at the end
    cpu_threads: int = 0  # >0: torch threads for the step on CPU (FFCV resets them to its worker count)
    keep_every_steps: int = 0  # >0: also keep <stage>_ep<E>.pt at every multiple of this step
    keep_last: int = 0  # >0: only the newest this many milestones are kept
    best_metric: str = ""  # an eval metric (maximised): keep <stage>_best.pt, the state where it was best
    seed: Optional[int] = None  # the spec's seed: each step's global RNGs come from (seed, rank, stage, step)


@dataclass
class StageState:
    step: int = 0
    last_loss: float = float("nan")
    losses: list[float] = field(default_factory=list)  # per logged interval, for the summary
    evals: list[dict[str, Any]] = field(default_factory=list)
    best: Optional[dict[str, Any]] = None  # {"metric", "value", "step"} of <stage>_best.pt


StepFn = Callable[[Any], tuple[torch.Tensor, int]]  # micro-batch -> (loss, images in it)
EvalFn = Callable[[], dict[str, float]]
LoaderFn = Callable[[int, int], Iterable[Any]]  # (epoch, first batch) -> micro-batches of that epoch


def ensure_cpu_threads(threads: int, device: torch.device) -> None:
    """FFCV sets torch's thread count to its worker count whenever an epoch starts; put ours back."""
    if threads and device.type == "cpu" and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def seed_step(seed: int, rank: int, stage: str, step: int) -> None:
    """Seed torch's (CPU and CUDA), numpy's and Python's global generators for one optimizer step of
    one rank, from (seed, rank, stage, step).

    What the step draws from them (drop path, timm's mixup / cutmix) then differs across DDP ranks,
    as timm's seed + rank makes it, while the data order stays one global permutation (the loader's
    own generators); and a resumed run draws exactly what an uninterrupted one draws, without a
    per-rank RNG state in the checkpoint (which rank 0 alone writes)."""
    import random

    state = np.random.SeedSequence([seed, rank, zlib.crc32(stage.encode()), step]).generate_state(2, dtype=np.uint64)
    torch.manual_seed(int(state[0]) >> 1)
    np.random.seed(int(state[1]) % 2**32)
    random.seed(int(state[1]))


def _rng_state() -> dict[str, torch.Tensor]:
    # numpy's global generator drives timm's Mixup; its state is kept as tensors so that
    # the checkpoint loads with weights_only=True.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"cpu": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
             "numpy_rest": torch.tensor([pos, has_gauss, gauss], dtype=torch.float64)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    pos, has_gauss, gauss = state["numpy_rest"].tolist()
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(pos), int(has_gauss), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class StageLoop:
    def __init__(self, spec: StagePlan, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 loader_fn: LoaderFn, step_fn: StepFn, dist: DistInfo, ckpt_dir: Path, metrics: MetricsLog,
                 autocast_dtype: Optional[torch.dtype], ema: Optional[torch.nn.Module] = None,
                 eval_fn: Optional[EvalFn] = None):
        self.spec = spec
        self.model = model
        self.optimizer = optimizer
        self.loader_fn = loader_fn
        self.step_fn = step_fn
        self.dist = dist
        self.ckpt_path = ckpt_dir / f"{spec.name}_last.pt"
        self.metrics = metrics
        self.autocast_dtype = autocast_dtype
        self.ema = ema
        self.eval_fn = eval_fn
        self.state = StageState()
        self._last_save = time.monotonic()
        self._pending: list[torch.Tensor] = []  # per-step losses not yet read from the device
        self._data_wait = 0.0  # seconds this process waited for the loader since the last log line

    # -- checkpoints -------------------------------------------------------------------------
    def _unwrapped(self) -> torch.nn.Module:
        return getattr(self.model, "module", self.model)

    def save(self) -> None:
        if self.dist.is_main:
            state = {
                "stage": self.spec.name,
                "step": self.state.step,
                "model": self._unwrapped().state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": _rng_state(),
                "evals": self.state.evals,
                "losses": self.state.losses,
                "last_loss": self.state.last_loss,
                "best": self.state.best,
            }
            if self.ema is not None:
                state["ema"] = self.ema.state_dict()
            checkpoint.save_atomic(state, self.ckpt_path)
            log.info("%s: checkpoint at step %d -> %s", self.spec.name, self.state.step, self.ckpt_path)
            self._keep_milestone()
        self._last_save = time.monotonic()

    def _milestone_due(self) -> bool:
        k = self.spec.keep_every_steps
        return k > 0 and self.state.step > 0 and self.state.step % k == 0

    def _keep_milestone(self) -> None:
        """At a milestone step, <stage>_ep<E>.pt becomes a copy of the checkpoint just written (a
        hard link: no bytes copied), then the oldest beyond checkpoint.keep_last are deleted."""
        if not self._milestone_due():
            return
        s = self.spec
        dst = checkpoint.milestone_path(self.ckpt_path.parent, s.name, self.state.step, s.steps_per_epoch)
        checkpoint.keep_copy(self.ckpt_path, dst)
        for old in checkpoint.prune_milestones(self.ckpt_path.parent, s.name, s.keep_last):
            log.info("%s: removed %s (checkpoint.keep_last=%d)", s.name, old.name, s.keep_last)

    def _keep_best(self, result: dict[str, Any]) -> None:
        """After an eval: when ``best_metric`` improved, save the state as <stage>_best.pt."""
        metric = self.spec.best_metric
        value = result.get(metric) if metric else None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        if self.state.best is not None and value <= self.state.best["value"]:
            return
        self.state.best = {"metric": metric, "value": float(value), "step": self.state.step}
        self.save()
        if self.dist.is_main:
            checkpoint.keep_copy(self.ckpt_path, checkpoint.best_path(self.ckpt_path.parent, self.spec.name))
            log.info("%s: best %s so far (%.4g at step %d) -> %s", self.spec.name, metric, value, self.state.step,
                     checkpoint.best_path(self.ckpt_path.parent, self.spec.name).name)

    def try_resume(self) -> bool:
        if not self.ckpt_path.exists():
            # A process killed before this stage's first checkpoint may have logged steps: they run again
            if self.dist.is_main:
                self.metrics.truncate(self.spec.name, 0)
            return False
        state = checkpoint.load(self.ckpt_path)
        self._unwrapped().load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        _set_rng_state(state["rng"])
        self.state.step = int(state["step"])
        self.state.evals = list(state.get("evals", []))
        self.state.losses = list(state.get("losses", []))
        self.state.last_loss = float(state.get("last_loss", float("nan")))  # a stage resumed at its end runs no step
        self.state.best = state.get("best")
        if self.dist.is_main:  # killed between the checkpoint and its milestone copy: make the copy now
            self._keep_milestone()
        # Lines written after this checkpoint by the interrupted process describe steps
        # that will be run again: drop them so metrics.jsonl has each step once.
        if self.dist.is_main:
            self.metrics.truncate(self.spec.name, self.state.step)
        log.info("%s: resumed from %s at step %d/%d", self.spec.name, self.ckpt_path, self.state.step,
                 self.spec.total_steps)
        return True

    def _due_for_checkpoint(self) -> bool:
        s = self.spec
        by_steps = s.checkpoint_every_steps > 0 and self.state.step % s.checkpoint_every_steps == 0
        by_time = (time.monotonic() - self._last_save) / 60.0 >= s.checkpoint_every_minutes > 0
        return by_steps or by_time

    # -- the loop ----------------------------------------------------------------------------
    def _set_lr(self) -> float:
        s = self.spec
        lr = lr_at(self.state.step, total_steps=s.total_steps, warmup_steps=s.warmup_steps, peak_lr=s.peak_lr,
                   min_lr=s.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.dist.device.type, dtype=self.autocast_dtype)

    def _optimizer_step(self, micro_batches: list[Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One update; returns (mean loss, grad norm) as device tensors, without waiting for the device."""
        ensure_cpu_threads(self.spec.cpu_threads, self.dist.device)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = torch.zeros((), device=self.dist.device)
        images = 0
        for i, micro in enumerate(micro_batches):
            # DDP: only the last micro-batch all-reduces gradients.
            sync = i == len(micro_batches) - 1 or not hasattr(self.model, "no_sync")
            ctx = nullcontext() if sync else self.model.no_sync()
            with ctx:
                with self._autocast():
                    loss, n = self.step_fn(micro)
                (loss / len(micro_batches)).backward()
            total_loss += loss.detach().float() / len(micro_batches)
            images += n
        clip = self.spec.clip_grad
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self._unwrapped(), step=self.state.step)
        return all_reduce_mean(total_loss), grad_norm.detach(), images

    def _read_losses(self) -> list[float]:
        """Move the losses of the steps run since the last read to the host (the loop's only
        wait for the device) and stop the run if one of them is not finite."""
        if not self._pending:
            return []
        first_step = self.state.step - len(self._pending) + 1
        values = torch.stack(self._pending).tolist()
        self._pending = []
        for i, value in enumerate(values):
            if not math.isfinite(value):
                raise NonFiniteLoss(
                    f"{self.spec.name}: non-finite loss ({value}) at step {first_step + i}; the last good "
                    f"checkpoint is kept at {self.ckpt_path if self.ckpt_path.exists() else 'none yet'}")
        self.state.last_loss = values[-1]
        return values

    def _micro_batches(self, epoch: int, first_step: int) -> Iterable[list[Any]]:
        """Group the loader's batches into the micro-batches of one optimizer step."""
        group: list[Any] = []
        batches = iter(self.loader_fn(epoch, first_step * self.spec.accum_steps))
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            finally:  # time blocked in the loader: the step had to wait for its data
                self._data_wait += time.perf_counter() - t0
            group.append(batch)
            if len(group) == self.spec.accum_steps:
                yield group
                group = []

    def run(self, progress: Optional[StageProgress] = None) -> StageState:
        s = self.spec
        self.try_resume()
        if progress is not None:
            progress.start(s.name, s.total_steps, self.state.step)
        try:
            self.run_steps(progress)
        finally:
            if progress is not None:
                progress.finish()
        if self.eval_fn is not None:
            self._evaluate()
        self.save()
        return self.state

    def run_steps(self, progress: Optional[StageProgress] = None) -> None:
        """The step loop alone, from ``state.step`` to ``plan.total_steps``: no resume and no final
        checkpoint (``run`` adds them). The public step API for benchmarks and parity checks."""
        # Losses stay on the device until a log line, a checkpoint or the end of the stage
        # needs them: a per-step .item() would stall the GPU while the host queues the next step.
        s = self.spec
        interval_losses: list[float] = []
        interval_images, interval_start = 0, time.perf_counter()
        self._pending = []
        self._data_wait = 0.0
        while self.state.step < s.total_steps:
            epoch, first = divmod(self.state.step, s.steps_per_epoch)
            for micro_batches in self._micro_batches(epoch, first):
                if s.seed is not None:
                    seed_step(s.seed, self.dist.rank, s.name, self.state.step)
                lr = self._set_lr()
                loss, grad_norm, images = self._optimizer_step(micro_batches)
                self.state.step += 1
                self._pending.append(loss)
                interval_images += images * self.dist.world_size
                if progress is not None:
                    progress.advance()
                if self.state.step % s.log_every == 0 or self.state.step == s.total_steps:
                    interval_losses += self._read_losses()  # waits for the device: the timing below is true
                    elapsed = time.perf_counter() - interval_start
                    mean_loss = sum(interval_losses) / len(interval_losses)
                    self.state.losses.append(mean_loss)
                    if progress is not None:
                        progress.show_loss(mean_loss)
                    record = {"stage": s.name, "step": self.state.step,
                              "epoch": round(self.state.step / s.steps_per_epoch, 4),
                              "loss": self.state.last_loss, "loss_mean": mean_loss, "lr": lr,
                              "grad_norm": float(grad_norm),
                              "images_per_s": interval_images / elapsed,
                              "tokens_per_s": interval_images * s.tokens_per_image / elapsed,
                              # rank 0's time blocked waiting for the loader in this interval: ~0 when
                              # the data keeps up (a GPU step that runs ahead of the host hides less)
                              "data_wait_s": self._data_wait, "data_wait_frac": self._data_wait / elapsed}
                    if self.dist.device.type == "cuda":
                        record["mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
                    self.metrics.write(record)
                    interval_losses, interval_images, interval_start = [], 0, time.perf_counter()
                    self._data_wait = 0.0
                if self.eval_fn is not None and s.eval_every_steps and self.state.step % s.eval_every_steps == 0 \
                        and self.state.step < s.total_steps:
                    interval_losses += self._read_losses()
                    eval_start = time.perf_counter()
                    self._evaluate()
                    interval_start += time.perf_counter() - eval_start  # images/s counts training time only
                if self._preempt_check_due() and any_rank(signals.preempt_requested(), self.dist.device):
                    self._read_losses()
                    self.save()
                    raise signals.Preempted(signals.last_signal(), self.state.step)
                if self.state.step >= s.total_steps:
                    break
                # a checkpoint (or a milestone copy of one), never of weights a bad step made
                if (self._due_for_checkpoint() or self._milestone_due()) and self._pending_finite():
                    interval_losses += self._read_losses()
                    self.save()
        self._read_losses()

    def _pending_finite(self) -> bool:
        # Not _read_losses: a checkpoint falls due by each rank's own clock, so raising here would stop
        # one rank while the others wait for it in the next step's all-reduce. The non-finite loss is
        # raised on every rank together at the next log line (or eval, preemption, stage end).
        return not self._pending or bool(torch.stack(self._pending).isfinite().all())

    def _preempt_check_due(self) -> bool:
        # One process reads its own flag for free; several must agree through an all-reduce,
        # which waits for the device, so they do it every PREEMPT_CHECK_EVERY steps.
        return self.dist.world_size == 1 or self.state.step % PREEMPT_CHECK_EVERY == 0

    def _evaluate(self) -> None:
        assert self.eval_fn is not None
        result = {"stage": self.spec.name, "kind": "eval", "step": self.state.step,
                  "epoch": round(self.state.step / self.spec.steps_per_epoch, 4), **self.eval_fn()}
        self.state.evals.append(result)
        self.metrics.write(result)
        log.info("%s eval at step %d: %s", self.spec.name, self.state.step,
                 ", ".join(f"{k}={v:.2f}" for k, v in result.items() if "top" in k))
        self._keep_best(result)


def run_fixed_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Callable[[int], Iterable[Any]],
                    *, steps: int, images_per_step: int, tokens_per_image: int, dist: DistInfo,
                    log_every: int, peak_lr: float = 1e-4, warmup_steps: int = 1, clip_grad: float = 3.0,
                    autocast_dtype: Optional[torch.dtype] = torch.bfloat16,
                    step_fn: Optional[StepFn] = None) -> list[dict[str, Any]]:
    """The engine's step loop for ``steps`` updates on given batches, with no checkpoint, resume or
    eval: what benchmarks and backend-parity checks time and compare. ``batches(first)`` yields
    the micro-batches from step ``first``; ``step_fn`` defaults to a pretraining model's loss on
    ``batch[0]``. Returns the metrics lines the loop logged (rank 0; empty elsewhere)."""
    import tempfile

    spec = StagePlan(name="steps", total_steps=steps, steps_per_epoch=steps, warmup_steps=warmup_steps,
                     peak_lr=peak_lr, min_lr=0.0, clip_grad=clip_grad, accum_steps=1,
                     images_per_step=images_per_step, tokens_per_image=tokens_per_image, log_every=log_every,
                     checkpoint_every_steps=0, checkpoint_every_minutes=0)
    if step_fn is None:
        step_fn = lambda batch: (model(batch[0]).loss, batch[0].shape[0])  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        metrics = MetricsLog(Path(tmp) / "metrics.jsonl", enabled=dist.is_main)
        loop = StageLoop(spec, model=model, optimizer=optimizer, loader_fn=lambda epoch, first: batches(first),
                         step_fn=step_fn, dist=dist, ckpt_dir=Path(tmp), metrics=metrics,
                         autocast_dtype=autocast_dtype)
        loop.run_steps()
        return metrics.read() if dist.is_main else []
