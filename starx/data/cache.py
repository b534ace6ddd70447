"""Build each dataset once into a cache folder and reuse it (what the engine calls)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import re
from contextlib import contextmanager
from pathlib import Path

from .errors import DataError
from .source_ref import SourceRef, is_beton_file, parse_source
from .sources import check_split

log = logging.getLogger(__name__)

# Bump when the written format or the embedded slice changes, to invalidate old caches.
CACHE_VERSION = 1


def cache_name(ref: SourceRef, split: str, options: dict) -> str:
    """File name for (source, split, build options); the source's stat is part of the key
    so a replaced idx/npz file is rebuilt (a folder's contents are not hashed)."""
    stat = None
    if ref.path is not None and ref.path.exists():
        st = ref.path.stat()
        stat = [st.st_size, st.st_mtime_ns] if ref.path.is_file() else [st.st_mtime_ns]
    key = json.dumps([CACHE_VERSION, str(ref), split, stat, sorted(options.items())], default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    stem = "embedded" if ref.path is None else f"{ref.kind}-{ref.path.name}"
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stem)}-{split}-{digest}.beton"


@contextmanager
def _locked(lock_path: Path):
    """Serialise builders of one file across processes (e.g. DDP ranks on one host)."""
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_dataset(source: str, cache_dir: str | Path, split: str = "train", **options) -> Path:
    """Path of the .beton for (source, split, options) in `cache_dir`, building it if absent.

    `options` are build_dataset's keyword options (write_mode, max_resolution, jpeg_quality,
    ...), part of the cache key; `num_workers` and `progress` are not. Concurrent callers
    wait for one build. A ref can therefore just say `dataset: embedded`. A source that
    is a path to a `.beton` file is returned as it is (split and options do not apply).
    """
    from .build import build_dataset

    if is_beton_file(source):
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise DataError(f"{path}: no such dataset file")
        return path
    ref = parse_source(source)
    check_split(split)
    key_options = {k: v for k, v in options.items() if k not in ("num_workers", "progress")}
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = cache_dir / cache_name(ref, split, key_options)
    if out.exists():
        return out
    with _locked(out.with_suffix(".lock")):
        if not out.exists():  # another process may have built it while we waited
            log.info("building %s (split %s) into %s", ref, split, out)
            build_dataset(str(ref), out, split=split, **options)
    return out
