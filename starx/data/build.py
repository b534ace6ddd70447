"""Write a source into an FFCV .beton (image + label), atomically, with a progress bar (the
guarded FFCV writer underneath: starx.data.ffcv_writer)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from starx.rundir import pid_alive

from .errors import DataError
from .source_ref import SourceRef, parse_source
from .sources import open_source

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


def _temp_prefix(out: Path) -> str:
    return f".{out.name}.{socket.gethostname()}."


def _remove_stale_temp_files(out: Path) -> None:
    """Temporary files that builds of ``out`` on this host left when they were killed (their pid is gone)."""
    prefix = _temp_prefix(out)
    for tmp in out.parent.glob(f"{glob_escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)) and tmp.is_file() and not tmp.is_symlink():
            log.info("removing %s, left by a build that was killed", tmp)
            tmp.unlink(missing_ok=True)


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


@contextlib.contextmanager
def _sigterm_unwinds():
    """While writing, SIGTERM only sets a flag (``stop()`` then raises SystemExit(143)); the writer
    polls it, so that its workers are stopped and the temporary file removed (``finally`` blocks
    run) instead of the process vanishing with both left behind. A flag, not an exception raised
    by the handler: that could land in a fork handler that swallows it."""
    received: list[int] = []

    def stop() -> None:
        if received:
            raise SystemExit(128 + received[0])

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):  # noqa: ARG001
        log.warning("received %s: stopping the build", signal.Signals(signum).name)
        received.append(signum)

    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


def _check_options(out: Path, ref: SourceRef, *, overwrite: bool, jpeg_quality: int, max_resolution: int | None,
                   compress_probability: float, num_workers: int | None, smart_threshold: int | None) -> None:
    """Everything about the output and the options that can be refused before a byte is written."""
    if not 1 <= jpeg_quality <= 100:
        raise DataError(f"jpeg_quality: must be in 1..100, got {jpeg_quality}")
    if max_resolution is not None and max_resolution < 1:
        raise DataError(f"max_resolution: must be >= 1, got {max_resolution}")
    if not 0 <= compress_probability <= 1:
        raise DataError(f"compress_probability: must be in [0, 1], got {compress_probability}")
    if num_workers is not None and num_workers < 1:
        raise DataError(f"workers: must be >= 1, got {num_workers}")
    if smart_threshold is not None and smart_threshold < 0:
        raise DataError(f"smart_threshold: must be >= 0, got {smart_threshold}")
    if ref.path is not None and (out == ref.path or (out.exists() and ref.path.exists() and out.samefile(ref.path))):
        raise DataError(f"{out}: is the source itself ({ref}); write the dataset to another file")
    if out.is_dir():
        raise DataError(f"{out}: is a folder; give the file to write, e.g. {out / 'train.beton'}")
    if out.exists() and not overwrite:
        raise DataError(f"{out}: exists; pass --overwrite to replace it (or choose another name)")


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
    overwrite: bool = False,
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
    an interrupted or failed build leaves no `out` (SIGTERM stops the writer processes and removes
    the temporary file; one left by a kill -9 is removed by the next build of `out`). An existing
    `out` is refused unless `overwrite`; the source itself always is. Grey images are stored as 3 channels.
    Raises DataError naming the file (and field) for missing paths, empty class folders,
    unreadable images and labels that do not match images.
    """
    ref = parse_source(source)
    mode = write_mode or default_write_mode(ref)
    if mode not in WRITE_MODES:
        raise DataError(f"{out}: write_mode must be one of {WRITE_MODES}, got {mode!r}")
    out = Path(out).expanduser().resolve()
    _check_options(out, ref, overwrite=overwrite, jpeg_quality=jpeg_quality, max_resolution=max_resolution,
                   compress_probability=compress_probability, num_workers=num_workers,
                   smart_threshold=smart_threshold)
    src = open_source(ref, split)
    if len(src) == 0:
        raise DataError(f"{ref}: no images in split {split!r}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out}: cannot create its folder: {e.strerror}") from None
    _remove_stale_temp_files(out)
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
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f"{_temp_prefix(out)}{os.getpid()}.", suffix=".tmp", dir=out.parent)
    except OSError as e:
        raise DataError(f"{out}: cannot write in {out.parent}: {e.strerror}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    started = time.perf_counter()
    with _sigterm_unwinds() as stop:
        try:
            from .ffcv_writer import GuardedWriter

            # Small pages waste less of the file on small sets (each worker leaves one page part-filled).
            page_size = SMALL_PAGE if ref.kind != "imagefolder" else LARGE_PAGE
            GuardedWriter(str(tmp), fields, page_size=page_size, num_workers=num_workers,
                          show_progress=progress, description=f"writing {out.name}", stop=stop,
                          ).from_indexed_dataset(src, chunksize=100)
            stop()  # a SIGTERM after the last poll: still no output
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
