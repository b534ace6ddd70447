"""The grammar of a data source string (`data.dataset`, `data.eval_dataset`), with no heavy
imports: the spec's validation checks it before anything loads, and the data layer parses it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

KINDS = ("imagefolder", "idx", "npz", "embedded")


@dataclass(frozen=True)
class SourceRef:
    """A parsed source string: `embedded`, `imagefolder:PATH`, `idx:PATH` or `npz:PATH`."""

    kind: str
    path: Path | None = None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def is_beton_file(source: str) -> bool:
    """Whether ``source`` names an already built .beton file (used as it is) rather than a source."""
    return str(source).endswith(".beton") and ":" not in str(source)


def parse_source(source: str) -> SourceRef:
    """Parse a source string; the path is resolved to an absolute path but not checked."""
    kind, sep, rest = str(source).partition(":")
    if kind == "embedded" and not rest:
        return SourceRef("embedded")
    if kind not in KINDS or not sep or not rest:
        raise DataError(
            f"unknown data source {source!r}: expected 'embedded', 'imagefolder:PATH', "
            "'idx:PATH', 'npz:PATH' or a path to a .beton file"
        )
    return SourceRef(kind, Path(rest).expanduser().resolve())
