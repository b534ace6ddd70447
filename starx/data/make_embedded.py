"""Rebuild the embedded Fashion-MNIST slice: `python -m starx.data.make_embedded IDX_FOLDER`.

Deterministic: for each class, `numpy.random.default_rng(SEED)` picks PER_CLASS
images without replacement; the kept images stay in their original order.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from .embedded import FILE_NAME, PER_CLASS
from .idx import find_idx_pair, read_idx

SEED = 0
log = logging.getLogger(__name__)


def stratified_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices holding exactly `per_class` items of every class in `labels`."""
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for c in np.unique(labels)
    ]
    return np.sort(np.concatenate(chosen))


def make_embedded(idx_folder: Path, out: Path) -> None:
    rng = np.random.default_rng(SEED)
    arrays = {}
    for split in ("train", "test"):
        images_path, labels_path = find_idx_pair(idx_folder, split)
        x, y = read_idx(images_path), read_idx(labels_path)
        keep = stratified_indices(y, PER_CLASS[split], rng)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x[keep], y[keep].astype(np.uint8)
    np.savez_compressed(out, **arrays)
    log.info("wrote %s (%d bytes)", out, out.stat().st_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("idx_folder", type=Path, help="folder with Fashion-MNIST idx .gz files")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "embedded" / FILE_NAME)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_embedded(args.idx_folder, args.out)


if __name__ == "__main__":
    main()
