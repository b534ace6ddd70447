"""The read-outs of a pretraining run's frozen features: weighted kNN and a linear probe.

``Readouts(ctx)(model)`` extracts the features of the training split (the kNN memory bank and the
probe's training set) and of the held-out split (the queries / test set) with the pretraining
model as it is, then returns ``knn_top1``, ``knn_top5``, ``probe_top1``, ``probe_top5`` (percent)
and ``readout_s`` (seconds it took). Both splits are read at the pretraining resolution with the
evaluation transform (centre crop, no augmentation).

Data-parallel runs: each rank extracts the features of its share of both splits (the evaluation
loader deals images round-robin). The training features are gathered on every rank and put back
in file order, so every rank holds the same memory bank and fits the same probe as one process
would; each rank then classifies its own share of the held-out images and the top-1 / top-5
counts are summed over ranks. The gathered bank costs n_train x F x 4 bytes on every rank
(ImageNet-1k, F = 768: 3.9 GB).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import Tensor

from starx.eval.accuracy import all_reduce_sum, percentages, topk_correct
from starx.eval.features import extract, resolve_blocks
from starx.eval.knn import knn_correct
from starx.eval.probe import ProbeSettings, fit_probe

log = logging.getLogger(__name__)


def enabled(cfg) -> bool:
    return bool(cfg.eval.knn.enabled or cfg.eval.linear_probe.enabled)


def gather_in_file_order(x: Tensor, y: Tensor, num_images: int, rank: int, world_size: int) -> tuple[Tensor, Tensor]:
    """Every rank's (features, labels) of the evaluation loader's round-robin share -> the whole
    split in file order, on every rank (the tensors themselves with one process)."""
    if world_size == 1:
        return x, y
    from starx.data.order import epoch_indices

    shares = [torch.as_tensor(epoch_indices(num_images, batch_size=1, seed=0, epoch=0, rank=r, world_size=world_size,
                                            shuffle=False, drop_last=False).astype("int64")) for r in range(world_size)]
    if len(shares[rank]) != x.shape[0]:
        raise RuntimeError(f"rank {rank} extracted {x.shape[0]} features for a share of {len(shares[rank])} images")
    longest = max(len(s) for s in shares)
    pad_x = x.new_zeros(longest, x.shape[1])
    pad_x[: x.shape[0]] = x
    pad_y = y.new_zeros(longest)
    pad_y[: y.shape[0]] = y
    xs = [torch.empty_like(pad_x) for _ in range(world_size)]
    ys = [torch.empty_like(pad_y) for _ in range(world_size)]
    torch_dist.all_gather(xs, pad_x)
    torch_dist.all_gather(ys, pad_y)
    full_x, full_y = x.new_empty(num_images, x.shape[1]), y.new_empty(num_images)
    for share, gx, gy in zip(shares, xs, ys):
        idx = share.to(x.device)
        full_x[idx] = gx[: len(share)]
        full_y[idx] = gy[: len(share)]
    return full_x, full_y


class Readouts:
    """kNN and linear-probe read-outs of a run's pretraining model (built once, called per evaluation)."""

    def __init__(self, ctx, cpu_threads: int = 0):
        cfg = ctx.cfg
        self.ctx, self.cfg, self.cpu_threads = ctx, cfg, cpu_threads
        self.blocks = list(cfg.eval.feature_blocks)
        p = cfg.eval.linear_probe
        self.probe = ProbeSettings(epochs=p.epochs, batch_size=p.batch_size, base_lr=p.base_lr,
                                   weight_decay=p.weight_decay, seed=cfg.seed)
        self._loaders = None

    def _make_loaders(self):
        from starx.data import make_loader

        cfg, ctx = self.cfg, self.ctx
        common = dict(stage="eval", batch_size=cfg.eval.batch_size, img_size=cfg.model.img_size,
                      in_chans=cfg.model.in_chans, num_workers=cfg.data.num_workers, seed=cfg.seed,
                      device=ctx.dist.device, rank=ctx.dist.rank, world_size=ctx.dist.world_size)
        return make_loader(ctx.train_data, **common), make_loader(ctx.eval_data, **common)

    def __call__(self, model: torch.nn.Module) -> dict[str, Any]:
        cfg, dist = self.cfg, self.ctx.dist
        started = time.perf_counter()
        model = getattr(model, "module", model)
        model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
        if self._loaders is None:
            self._loaders = self._make_loaders()
        train_loader, test_loader = self._loaders
        args = (resolve_blocks(self.blocks, model.cfg.depth), dist.device, self.ctx.autocast_dtype, self.cpu_threads)
        x_train, y_train = extract(model, train_loader, *args)
        x_test, y_test = extract(model, test_loader, *args)
        x_train, y_train = gather_in_file_order(x_train, y_train, train_loader.num_images_total, dist.rank,
                                                dist.world_size)
        n_test = int(all_reduce_sum(torch.tensor(y_test.numel(), device=dist.device)))
        extracted = time.perf_counter()
        out: dict[str, Any] = {}
        num_classes = self.ctx.num_classes
        if cfg.eval.knn.enabled:
            counts = knn_correct(x_train, y_train, x_test, y_test, num_classes, k=cfg.eval.knn.k,
                                 temperature=cfg.eval.knn.temperature)
            out.update(percentages(all_reduce_sum(counts).cpu(), n_test, prefix="knn_"))
        if cfg.eval.linear_probe.enabled:
            with torch.enable_grad():
                probe = fit_probe(x_train, y_train, num_classes, self.probe)
            with torch.no_grad():
                counts = topk_correct(probe(x_test), y_test)
            out.update(percentages(all_reduce_sum(counts.to(dist.device)).cpu(), n_test, prefix="probe_"))
        done = time.perf_counter()
        out["readout_s"] = round(done - started, 2)
        log.info("read-outs of %d-dim features (blocks %s) of %d train / %d held-out images (%d scored on rank %d "
                 "of %d): %s (features %.1f s, read-outs %.1f s)", x_train.shape[1], args[0], x_train.shape[0], n_test,
                 y_test.numel(), dist.rank, dist.world_size,
                 ", ".join(f"{k}={v:.2f}" for k, v in out.items() if "top" in k), extracted - started,
                 done - extracted)
        return out
