"""The pixel baseline: a linear classifier on raw pixels, the floor a pretrained-then-fine-tuned model
must beat. Not a probe: it reads no learned feature (the linear probe of frozen pretraining
features is starx/eval/probe.py).

Multinomial logistic regression (softmax + L2), fitted full-batch with L-BFGS on the
training split at the fine-tuning resolution, scored on the same held-out split as the
classifier. Meant for small datasets (it holds all pixels in memory).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def _pixels(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for images, labels in loader:
        xs.append(images.flatten(1).float().cpu())
        ys.append(labels.cpu())
    return torch.cat(xs), torch.cat(ys)


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, l2: float = 1e-3,
               iterations: int = 300) -> torch.nn.Linear:
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=iterations, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y) + l2 * model.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def pixel_baseline(ctx) -> dict[str, Any]:
    from starx.data import make_loader
    from starx.eval.accuracy import percentages, topk_correct

    cfg = ctx.cfg
    img_size = cfg.finetune.img_size or cfg.model.img_size
    common = dict(stage="eval", batch_size=cfg.eval.batch_size, img_size=img_size, in_chans=cfg.model.in_chans,
                  num_workers=cfg.data.num_workers, seed=cfg.seed, device="cpu")
    x_train, y_train = _pixels(make_loader(ctx.train_data, **common))
    x_test, y_test = _pixels(make_loader(ctx.eval_data, **common))
    model = fit_linear(x_train, y_train, ctx.num_classes)
    with torch.no_grad():
        train = percentages(topk_correct(model(x_train), y_train), len(y_train), prefix="pixel_train_")
        test = percentages(topk_correct(model(x_test), y_test), len(y_test), prefix="pixel_")
    log.info("pixel baseline (linear classifier on raw pixels): top1 %.2f, top5 %.2f (train top1 %.2f) on %d/%d "
             "images", test["pixel_top1"], test["pixel_top5"], train["pixel_train_top1"], len(y_train), len(y_test))
    ctx.metrics.write({"stage": "pixel_baseline", "kind": "eval", "step": 0, **test,
                       "pixel_train_top1": train["pixel_train_top1"]})
    return test
