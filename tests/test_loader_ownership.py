"""Batches a caller keeps stay intact: FFCV reuses its buffers (on the GPU too), the loader must
not hand them out. (On the GPU it once did: the read-outs' kNN and probe then scored near chance.)"""

from __future__ import annotations

import pytest
import torch

from starx.data import ensure_dataset, make_loader

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])]


@pytest.mark.parametrize("device", DEVICES)
def test_kept_eval_batches_keep_their_labels(tmp_path, device):
    path = ensure_dataset("embedded", tmp_path, "test")
    loader = make_loader(path, stage="eval", batch_size=128, img_size=28, in_chans=1, num_workers=1, seed=0,
                         device=torch.device(device))
    kept, copies = [], []
    for _, y in loader:
        kept.append(y)
        copies.append(y.cpu().clone())
    assert torch.equal(torch.cat(kept).cpu(), torch.cat(copies))
    # The embedded test split is stratified: 200 images of each class.
    assert torch.bincount(torch.cat(kept).cpu(), minlength=10).tolist() == [200] * 10
