"""The embedded default dataset: a stratified slice of Fashion-MNIST shipped in the package.

10,000 train / 2,000 test images (1,000 / 200 per class), 28x28 grey, MIT licence
(see embedded/LICENSE). Made by `python -m starx.data.make_embedded`.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from .errors import DataError

FILE_NAME = "fashion_mnist_slice.npz"
COUNTS = {"train": 10_000, "test": 2_000}
PER_CLASS = {"train": 1_000, "test": 200}
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def embedded_file():
    """The packaged .npz (a Traversable; str() of it is a path for normal installs)."""
    return resources.files("starx.data") / "embedded" / FILE_NAME


def load_embedded(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (N,28,28), labels int64 (N,)) of the 'train' or 'test' ('val') split."""
    key = "train" if split == "train" else "test"
    f = embedded_file()
    try:
        with f.open("rb") as fh, np.load(fh) as data:
            return data[f"x_{key}"], data[f"y_{key}"].astype(np.int64)
    except (OSError, KeyError) as e:
        raise DataError(f"{f}: embedded dataset missing or damaged ({e})") from e
