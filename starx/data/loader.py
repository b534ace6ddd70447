"""The training/eval loader: FFCV decoding + batch-level torch augmentation, reproducibly."""

from __future__ import annotations

import functools
import logging
import os
import queue
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .augment import BatchTransform, default_norm
from .decode import CenterCrop, SeededRandomResizedCrop, epoch_key, splitmix64
from .errors import DataError
from .info import dataset_info, max_image_side
from .order import epoch_indices, num_batches
from .randaug import BatchRandAugment

log = logging.getLogger(__name__)

STAGES = ("pretrain", "finetune", "eval")
EVAL_CROP_RATIO = 224 / 256  # the usual ImageNet resize-then-centre-crop ratio


def _leave_torch_threads_alone() -> None:
    """FFCV sets torch's global thread count to its decode-thread count at every epoch
    (from its loading thread), overriding the trainer's choice; on a busy 2-core machine
    that made batch post-processing ~10x slower. Keep only its numba half."""
    import numba
    from ffcv.pipeline.compiler import Compiler

    def set_num_threads(cls, n: int) -> None:
        cls.num_threads = n if n >= 1 else (os.cpu_count() or 1)
        numba.set_num_threads(min(cls.num_threads, numba.config.NUMBA_NUM_THREADS))

    Compiler.set_num_threads = classmethod(set_num_threads)


class _FixedOrder:
    """Stands in for FFCV's traversal order: we decide the indices ourselves."""

    def __init__(self, indices: np.ndarray):
        self.indices = indices

    def sample_order(self, epoch: int) -> np.ndarray:
        return self.indices


class StarLoader:
    """Batches `(images float32 (N,C,H,W) normalised, labels int64 (N,))` on `device`.

    - Order: train stages shuffle with (seed, epoch); eval reads the file in order.
    - Sharding: each rank reads a disjoint share; train stages give every rank the same
      number of full batches (drop_last).
    - Reproducible: crops and flips depend on (seed, epoch, image index), the batch-level
      RandAugment / erasing on (seed, epoch, rank, batch index); two loaders with the same
      arguments yield bit-identical batches on CPU, and resuming with `start_batch=n`
      (or `skip(n)`) yields exactly batches n, n+1, ... of the uninterrupted epoch.
    - `len(loader)` is the number of batches in a full epoch for this rank. Iterating runs
      the current epoch from its start batch; when an epoch is exhausted the loader moves
      to the next epoch (calling `set_epoch` each epoch, as with DistributedSampler, is
      also fine).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        stage: str,
        batch_size: int,
        img_size: int,
        in_chans: int = 3,
        seq_multiplier: int = 1,
        num_workers: int | None = None,
        seed: int = 0,
        epoch: int = 0,
        start_batch: int = 0,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool | None = None,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
        randaug: str | None = "rand-m9-mstd0.5",
        reprob: float = 0.25,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        crop_ratio: float | None = None,
        batches_ahead: int = 3,
    ):
        path = Path(path)
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if seq_multiplier < 1 or batch_size < 1 or batch_size % seq_multiplier:
            raise ValueError(
                f"batch_size ({batch_size}) must be a positive multiple of seq_multiplier ({seq_multiplier})"
            )
        self.num_images_total, self.num_classes = dataset_info(path)  # raises DataError if bad
        self.path, self.stage, self.batch_size = path, stage, batch_size
        self.seq_multiplier, self.seed, self.rank, self.world_size = seq_multiplier, seed, rank, world_size
        self.device = torch.device(device)
        self.train = stage != "eval"
        self.drop_last = self.train if drop_last is None else drop_last
        self.epoch, self.start_batch = epoch, start_batch
        self._epoch_iterator = None  # FFCV's thread of the latest epoch

        default_mean, default_std = default_norm(in_chans)
        mean, std = tuple(mean or default_mean), tuple(std or default_std)
        finetune = stage == "finetune"
        # RandAugment runs on the 3-channel image and, like timm, fills with the mean colour.
        fill = tuple(round(255 * m) for m in (mean if len(mean) == 3 else mean * 3))
        self.transform = BatchTransform(
            in_chans=in_chans, mean=mean, std=std,
            randaug=BatchRandAugment(randaug, fill) if finetune and randaug else None,
            reprob=reprob if finetune else 0.0,
        )
        self._num_batches = num_batches(len(self._indices(0)), batch_size, self.drop_last)
        if self._num_batches == 0:
            raise DataError(
                f"{path}: {self.num_images_total} images give no batch of {batch_size} "
                f"on each of {world_size} rank(s)"
            )
        self._decoder = self._make_decoder(img_size, scale, ratio, hflip, crop_ratio)
        self._ffcv = self._make_ffcv_loader(num_workers or os.cpu_count() or 1, batches_ahead)
        log.debug("%s loader over %s: %d batches of %d (rank %d/%d), %d px, %d channel(s), device %s",
                  stage, path, self._num_batches, batch_size, rank, world_size, img_size, in_chans, self.device)

    # -- construction -------------------------------------------------------------------
    def _make_decoder(self, img_size, scale, ratio, hflip, crop_ratio):
        if self.train:
            return SeededRandomResizedCrop((img_size, img_size), scale=scale, ratio=ratio, hflip=hflip)
        if crop_ratio is None:  # centre-cropping images no bigger than the output only loses pixels
            crop_ratio = 1.0 if max_image_side(self.path) <= img_size else EVAL_CROP_RATIO
        return CenterCrop((img_size, img_size), ratio=crop_ratio)

    def _make_ffcv_loader(self, num_workers: int, batches_ahead: int):
        _leave_torch_threads_alone()
        from ffcv.fields.basics import IntDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import ToDevice, ToTensor

        # Numba steps must come before ToTensor, or FFCV's CPU pipeline hangs (ffcv#396).
        image = [self._decoder, ToTensor()]
        label = [IntDecoder(), ToTensor()]
        if self.device.type == "cuda":  # copy in FFCV's thread, on its own CUDA streams
            image.append(ToDevice(self.device, non_blocking=True))
            label.append(ToDevice(self.device, non_blocking=True))
        loader = Loader(
            str(self.path), batch_size=self.batch_size, num_workers=num_workers,
            order=OrderOption.SEQUENTIAL, drop_last=False, batches_ahead=batches_ahead,
            pipelines={"image": image, "label": label},
        )
        loader.graph.allocate_memory = self._reusing_allocations(loader.graph.allocate_memory)
        return loader

    def _reusing_allocations(self, allocate):
        """FFCV allocates (and pins) its batch buffers anew every epoch: hundreds of MB for
        JPEG decoding at 192 px. Reuse them, unless an abandoned epoch's thread still runs."""
        cached = functools.cache(allocate)

        def allocate_memory(batch_size, batches_ahead):
            previous = self._epoch_iterator
            if previous is not None and previous.is_alive():
                return allocate(batch_size, batches_ahead)
            return cached(batch_size, batches_ahead)

        return allocate_memory

    # -- epochs -------------------------------------------------------------------------
    def _indices(self, epoch: int) -> np.ndarray:
        return epoch_indices(
            self.num_images_total, batch_size=self.batch_size, seed=self.seed, epoch=epoch,
            rank=self.rank, world_size=self.world_size, shuffle=self.train,
            drop_last=self.drop_last, multiple_of=self.seq_multiplier,
        )

    def __len__(self) -> int:
        return self._num_batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration run `epoch`, starting at batch `start_batch`."""
        self.epoch, self.start_batch = epoch, start_batch

    def skip(self, n: int) -> None:
        """Make the next iteration of the current epoch start at batch `n` (mid-epoch resume)."""
        self.start_batch = n

    def _batch_seed(self, batch: int) -> int:
        key = splitmix64(epoch_key(self.seed, self.epoch) ^ (self.rank << 32) ^ batch)
        return key >> 1  # torch seeds must fit in int64

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self.epoch, self.start_batch
        indices = self._indices(epoch)[start * self.batch_size:]
        if self.train:
            self._decoder.set_epoch(self.seed, epoch)
        self._ffcv.traversal_order = _FixedOrder(indices)
        epoch_iterator = self._epoch_iterator = iter(self._ffcv)
        finished = False
        try:
            for b, (images, labels) in enumerate(_guarded(epoch_iterator), start):
                if self.stage == "finetune":
                    cpu_gen = torch.Generator().manual_seed(self._batch_seed(b))
                    dev_gen = torch.Generator(self.device).manual_seed(self._batch_seed(b))
                else:
                    cpu_gen = dev_gen = None
                images = images.to(self.device, non_blocking=True)
                # FFCV reuses its batch buffers, on the GPU too (ToDevice copies into a ring of
                # slots): hand out labels the caller owns, or a caller that keeps batches (the
                # read-outs' memory bank) sees later labels overwrite earlier ones. Images are
                # valid until the next batch: callers use them at once.
                labels = labels.to(self.device).view(-1).clone()
                yield self.transform(images, cpu_gen, dev_gen), labels
            finished = True
        finally:
            if not finished:  # stop FFCV's prefetch thread; it ends after its current batch
                epoch_iterator.close()
                epoch_iterator.join(timeout=2.0)
        self.epoch, self.start_batch = epoch + 1, 0


def _guarded(epoch_iterator) -> Iterator[tuple]:
    """FFCV's EpochIterator.__next__, but raising if its thread dies: upstream waits forever
    on the queue when a pipeline step (e.g. a numba compile) fails in that thread."""
    from ffcv.loader.epoch_iterator import IS_CUDA

    while True:
        try:
            item = epoch_iterator.output_queue.get(timeout=1.0)
        except queue.Empty:
            if not epoch_iterator.is_alive():
                raise RuntimeError("FFCV's loading thread died; its traceback is printed above") from None
            continue
        if item is None:  # end of epoch
            epoch_iterator.close()
            return
        slot, result = item
        if IS_CUDA:  # wait for the copy made on FFCV's stream
            epoch_iterator.current_stream.wait_stream(epoch_iterator.cuda_streams[slot])
        yield result


def make_loader(path: str | Path, **options) -> StarLoader:
    """Build the loader of one stage over a starx .beton.

    Required: stage ('pretrain' | 'finetune' | 'eval'), batch_size (images per batch, a
    multiple of seq_multiplier: k consecutive images form one STAR sequence), img_size.
    Options (defaults): in_chans=3 (1: RGB -> luma; grey sources are stored as R=G=B),
    seq_multiplier=1, num_workers=CPU count (FFCV's numba decode threads; torch's own thread
    count is left as the caller set it), seed=0, epoch=0, start_batch=0, device='cpu', rank=0,
    world_size=1, drop_last=True for train stages / False for eval (a partial last eval
    batch is trimmed to a multiple of seq_multiplier), batches_ahead=3.
    Augmentation: pretrain = random resized crop (scale=(0.2, 1.0), ratio=(3/4, 4/3)) +
    hflip=True; finetune = the same + randaug='rand-m9-mstd0.5' (timm syntax, None to
    disable) + random erasing reprob=0.25; eval = centre crop of crop_ratio (default
    224/256, or 1.0 when stored images are no larger than img_size). mean/std default to
    ImageNet's (their channel average for in_chans=1). Mixup/cutmix are the engine's.
    """
    return StarLoader(path, **options)
