"""Reader for MNIST-format idx files (plain or gzipped), e.g. Fashion-MNIST."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .errors import DataError

# Standard file stems; each may carry a .gz suffix.
IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UBYTE = 0x08


def find_idx_pair(folder: Path, split: str) -> tuple[Path, Path]:
    """Return the (images, labels) files of `split` in `folder`, preferring .gz."""
    if split not in IDX_STEMS:
        raise DataError(f"{folder}: idx split must be one of {sorted(IDX_STEMS)}, got {split!r}")
    found = []
    for stem in IDX_STEMS[split]:
        candidates = [folder / f"{stem}.gz", folder / stem]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DataError(f"{candidates[0]}: missing idx file (nor {candidates[1].name} found)")
        found.append(path)
    return found[0], found[1]


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file into a uint8 array of the shape its header declares."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip raises OSError/EOFError on corrupt data
        raise DataError(f"{path}: cannot read idx file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE:
        raise DataError(f"{path}: not an unsigned-byte idx file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated idx header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise DataError(
            f"{path}: header declares shape {shape} ({count} bytes) "
            f"but the file holds {len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file (gzipped if the name ends in .gz); used by tests."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _UBYTE, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
