"""Write a source into an FFCV .beton (image + label), atomically, with a progress bar (the
guarded FFCV writer underneath: starx.data.ffcv_writer)."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .sources import SourceRef, open_source, parse_source

log = logging.getLogger(__name__)

WRITE_MODES = ("raw", "jpg", "smart", "proportion")
# 'smart' stores an image as JPEG when its raw pixels exceed this many bytes (about 256x256 RGB).
DEFAULT_SMART_THRESHOLD = 256 * 256 * 3
SMALL_PAGE, LARGE_PAGE = 1 << 21, 1 << 23  # FFCV's minimum and default page sizes


@dataclass(frozen=True)
class DatasetSummary:
    """What `build_dataset` wrote: image count, class count, file size in bytes, path."""

    images: int
    classes: int
    bytes: int
    path: Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_write_mode(ref: SourceRef) -> str:
    """'jpg' for image folders (raw ImageNet would be ~10x its JPEG size), else 'raw'."""
    return "jpg" if ref.kind == "imagefolder" else "raw"


def build_dataset(
    source: str,
    out: str | Path,
    *,
    split: str = "train",
    max_resolution: int | None = None,
    jpeg_quality: int = 90,
    write_mode: str | None = None,
    smart_threshold: int | None = None,
    compress_probability: float = 0.5,
    num_workers: int | None = None,
    progress: bool = True,
) -> DatasetSummary:
    """Write `source` (split `split`) to the FFCV file `out` with fields `image` and `label`.

    source: `embedded`, `imagefolder:PATH` (PATH/[split/]CLASS/*.jpg|png...), `idx:PATH`
        (folder of MNIST-format `train-*`/`t10k-*` idx[.gz] files) or `npz:PATH` (arrays
        `x` uint8 (N,H,W[,C]) and `y` int (N,); split is ignored).
    split: 'train' or 'test' ('val' is the same as 'test' for idx/embedded; for image
        folders it picks PATH/val or PATH/test when present).
    max_resolution: resize so the longer side is at most this (None keeps sizes).
    write_mode: 'raw' (uint8 pixels: fastest to read), 'jpg', 'smart' (JPEG only for images
        larger than `smart_threshold` raw bytes) or 'proportion' (JPEG for a random
        `compress_probability` share). None: 'jpg' for image folders, 'raw' otherwise.
    num_workers: writer processes (default: CPU count, at most 16; 1 for small array sources).

    The file is written to a temporary name in the same folder and renamed at the end, so
    an interrupted or failed build leaves no `out`. Grey images are stored as 3 channels.
    Raises DataError naming the file (and field) for missing paths, empty class folders,
    unreadable images and labels that do not match images.
    """
    ref = parse_source(source)
    mode = write_mode or default_write_mode(ref)
    if mode not in WRITE_MODES:
        raise DataError(f"{out}: write_mode must be one of {WRITE_MODES}, got {mode!r}")
    src = open_source(ref, split)
    if len(src) == 0:
        raise DataError(f"{ref}: no images in split {split!r}")
    out = Path(out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if num_workers is None:
        # Array sources are cheap to encode raw: worker start-up would cost more than it saves.
        small = ref.kind != "imagefolder" and mode == "raw"
        num_workers = 1 if small else min(os.cpu_count() or 1, 16)

    from ffcv.fields import IntField, RGBImageField

    fields = {
        "image": RGBImageField(
            write_mode=mode,
            max_resolution=max_resolution,
            smart_threshold=smart_threshold or DEFAULT_SMART_THRESHOLD,
            jpeg_quality=jpeg_quality,
            compress_probability=compress_probability,
        ),
        "label": IntField(),
    }
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    started = time.perf_counter()
    try:
        from .ffcv_writer import GuardedWriter

        # Small pages waste less of the file on small sets (each worker leaves one page part-filled).
        page_size = SMALL_PAGE if ref.kind != "imagefolder" else LARGE_PAGE
        GuardedWriter(str(tmp), fields, page_size=page_size, num_workers=num_workers,
                      show_progress=progress, description=f"writing {out.name}",
                      ).from_indexed_dataset(src, chunksize=100)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it normal permissions
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    summary = DatasetSummary(len(src), src.num_classes, out.stat().st_size, out)
    log.info(
        "wrote %s: %d images, %d classes, %.1f MB (%s, %.1fs)",
        out, summary.images, summary.classes, summary.bytes / 1e6, mode, time.perf_counter() - started,
    )
    return summary
