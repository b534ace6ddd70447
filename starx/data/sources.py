"""Data sources: parse `kind:PATH` strings and expose images + labels by index.

Every source yields `(HxWx3 uint8 array, int label)`; grey sources are
replicated to three channels here because FFCV's image field stores RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError
from .source_ref import SourceRef, parse_source

SPLITS = ("train", "test", "val")


def check_split(split: str) -> str:
    """Validate a split name; 'val' and 'test' are the same split for idx/embedded sources."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    return split


class ArraySource:
    """Images held in memory as a uint8 array (N,H,W) or (N,H,W,1|3) with int labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, origin: str):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype != np.uint8:
            raise DataError(f"{origin}: images must be uint8, got {images.dtype}")
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
            raise DataError(
                f"{origin}: images must have shape (N,H,W) or (N,H,W,3), got {images.shape}"
            )
        self.labels = _check_labels(labels, len(images), origin)
        self.images = images
        self.origin = origin

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        img = self.images[i]
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        return np.ascontiguousarray(img), int(self.labels[i])


def _check_labels(labels: np.ndarray, n: int, origin: str) -> np.ndarray:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{origin}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}"
        )
    if len(labels) != n:
        raise DataError(f"{origin}: {len(labels)} labels do not match {n} images")
    if n and labels.min() < 0:
        raise DataError(f"{origin}: labels must be >= 0, found {int(labels.min())}")
    return labels.astype(np.int64)


def open_source(source: str | SourceRef, split: str = "train"):
    """Open a source for `split`; raises DataError for missing or inconsistent inputs.

    Returns an indexable object with `len()`, `num_classes` and
    `source[i] -> (HxWx3 uint8, label)` that can be pickled to writer processes.
    """
    ref = source if isinstance(source, SourceRef) else parse_source(source)
    split = check_split(split)
    if ref.kind == "embedded":
        from .embedded import load_embedded

        x, y = load_embedded(split)
        return ArraySource(x, y, origin=f"embedded[{split}]")
    assert ref.path is not None
    if not ref.path.exists():
        raise DataError(f"{ref.path}: no such file or directory (source {ref})")
    if ref.kind == "idx":
        return _open_idx(ref.path, split)
    if ref.kind == "npz":
        return _open_npz(ref.path)
    from .imagefolder import ImageFolderSource

    return ImageFolderSource.scan(ref.path, split)


def _open_idx(folder: Path, split: str) -> ArraySource:
    from .idx import find_idx_pair, read_idx

    if not folder.is_dir():
        raise DataError(f"{folder}: idx source must be a folder of idx[.gz] files")
    images_path, labels_path = find_idx_pair(folder, "train" if split == "train" else "test")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected a 3-D image array, got shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_path}: {labels.shape[0] if labels.ndim else 0} labels do not match "
            f"{len(images)} images in {images_path.name}"
        )
    return ArraySource(images, labels, origin=str(images_path))


def _open_npz(path: Path) -> ArraySource:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("x", "y") if k not in data.files]
            if missing:
                raise DataError(
                    f"{path}: missing array field {missing[0]!r} (npz sources need 'x' and 'y', "
                    f"found {data.files})"
                )
            x, y = data["x"], data["y"]
    except DataError:
        raise
    except Exception as e:  # zipfile/pickle/ValueError for corrupt files
        raise DataError(f"{path}: cannot read npz file ({e})") from e
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: field 'y' ({y.shape}) does not match field 'x' ({x.shape})")
    return ArraySource(x, y, origin=f"{path} field 'x'")
