"""Which images each rank reads in an epoch: a pure function of (seed, epoch, rank).

Train stages: one permutation of the whole set per (seed, epoch), cut to a multiple of
world_size * batch_size (drop_last) and dealt to ranks round-robin by whole sequences, so every rank
gets the same number of full batches and no image is seen twice in an epoch.
Eval: the set in file order, dealt round-robin without padding (ranks may differ
by one image; sum metrics across ranks at the end).
"""

from __future__ import annotations

import numpy as np


def epoch_indices(
    num_images: int,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    drop_last: bool = True,
    multiple_of: int = 1,
) -> np.ndarray:
    """Image indices (uint64) that `rank` reads this epoch, in batch order.

    `multiple_of` (the sequence multiplier k) trims a partial last batch to whole sequences.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(num_images)
    else:
        order = np.arange(num_images)
    if drop_last:
        per_rank = num_images // world_size // batch_size * batch_size
        order = order[: per_rank * world_size]
    # Deal whole sequences (k consecutive images), so the ranks' shares of a global batch
    # are exactly the sequences a single process would see in that batch.
    usable = len(order) // multiple_of * multiple_of
    mine = order[:usable].reshape(-1, multiple_of)[rank::world_size].reshape(-1)
    return mine.astype(np.uint64)


def num_batches(num_indices: int, batch_size: int, drop_last: bool) -> int:
    return num_indices // batch_size if drop_last else -(-num_indices // batch_size)
