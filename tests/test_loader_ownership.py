"""Batches a caller keeps stay intact: FFCV reuses its buffers, the loader must not hand them out."""

from __future__ import annotations

import torch

from starx.data import ensure_dataset, make_loader


def test_kept_eval_batches_keep_their_labels(tmp_path):
    path = ensure_dataset("embedded", tmp_path, "test")
    loader = make_loader(path, stage="eval", batch_size=128, img_size=28, in_chans=1, num_workers=1, seed=0)
    labels = torch.cat([y for _, y in loader])
    # The embedded test split is stratified: 200 images of each class.
    assert torch.bincount(labels, minlength=10).tolist() == [200] * 10
