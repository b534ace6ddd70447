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

from typing import TYPE_CHECKING

from starx._lazy import lazy_getattr

from .errors import DataError

__all__ = ["DataError", "DatasetSummary", "build_dataset", "ensure_dataset", "make_loader",
           "dataset_info", "StarLoader"]

_LAZY = {
    "DatasetSummary": "starx.data.build",
    "build_dataset": "starx.data.build",
    "ensure_dataset": "starx.data.cache",
    "make_loader": "starx.data.loader",
    "StarLoader": "starx.data.loader",
    "dataset_info": "starx.data.info",
}

if TYPE_CHECKING:
    from .build import DatasetSummary, build_dataset
    from .cache import ensure_dataset
    from .info import dataset_info
    from .loader import StarLoader, make_loader

__getattr__ = lazy_getattr(__name__, _LAZY)
