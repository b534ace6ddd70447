"""ImageNet-style folders: ROOT/[split/]CLASS/IMAGE, classes sorted by name."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import DataError

# As torchvision's ImageFolder; matched case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# A split folder may be named differently from the split asked for.
_SPLIT_DIRS = {"train": ("train",), "test": ("test", "val"), "val": ("val", "test")}


class ImageFolderSource:
    """Files listed once at scan time; images are decoded (with Pillow) when indexed."""

    def __init__(self, root: Path, files: list[str], labels: np.ndarray, classes: list[str]):
        self.root = root
        self.files = files
        self.labels = labels
        self.classes = classes

    @classmethod
    def scan(cls, path: Path, split: str) -> "ImageFolderSource":
        """List `path/<split>/` if it exists (ImageNet layout), else `path/` itself."""
        if not path.is_dir():
            raise DataError(f"{path}: imagefolder source must be a directory")
        root = next((path / d for d in _SPLIT_DIRS[split] if (path / d).is_dir()), path)
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise DataError(f"{root}: no class sub-folders found")
        files, labels = [], []
        for label, name in enumerate(classes):
            found = sorted(
                e.path for e in os.scandir(root / name)
                if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise DataError(f"{root / name}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} files)")
            files += found
            labels += [label] * len(found)
        return cls(root, files, np.asarray(labels, dtype=np.int64), classes)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        from PIL import Image

        path = self.files[i]
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
        except Exception as e:  # Pillow raises many types for bad files
            raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from e
        return rgb, int(self.labels[i])
