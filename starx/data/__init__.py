"""starx data layer: FFCV datasets (write, cache, inspect) and reproducible loaders.

Public API (heavy modules - ffcv, numba, torch - load on first use, so importing
`starx.data` or its CLI stays fast):

- build_dataset(source, out, *, split, ...) -> DatasetSummary
- ensure_dataset(source, cache_dir, split, ...) -> Path
- make_loader(path, *, stage, batch_size, img_size, ...) -> StarLoader
- dataset_info(path) -> (num_images, num_classes)
- DataError, DatasetSummary
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import DataError

__all__ = ["DataError", "DatasetSummary", "build_dataset", "ensure_dataset", "make_loader",
           "dataset_info", "StarLoader"]

_LAZY = {
    "DatasetSummary": "write",
    "build_dataset": "write",
    "ensure_dataset": "cache",
    "make_loader": "loader",
    "StarLoader": "loader",
    "dataset_info": "info",
}

if TYPE_CHECKING:
    from .cache import ensure_dataset
    from .info import dataset_info
    from .loader import StarLoader, make_loader
    from .write import DatasetSummary, build_dataset


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
