"""The spec reference: every field of an experiment spec with its type, default and meaning,
generated from the schema's dataclasses and the comments beside (or just above) each field, so
it cannot drift from what a run reads. ``starx reference`` prints it; specs/REFERENCE.md is its
committed copy (a test keeps the two equal)."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
from typing import Any

from starx.spec.schema import ExperimentSpec

_FIELD = re.compile(r"^\s+(\w+)\s*:[^#]*?(?:#\s*(.*))?$")
_COMMENT = re.compile(r"^\s+#\s?(.*)$")


def _field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment on its line, after any comment lines just above it."""
    comments: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        if m := _COMMENT.match(line):
            above.append(m.group(1).strip())
        elif (m := _FIELD.match(line)) and not line.lstrip().startswith(("def ", '"')):
            comments[m.group(1)] = " ".join([*above, m.group(2) or ""]).strip()
            above = []
        else:
            above = []
    return comments


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, str):
        return f'"{value}"' if value == "" else value
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


def _type(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return re.sub(r"Optional\[(.*)\]", r"\1 | null", text)


def _sections(cls: type, prefix: str = "") -> list[tuple[str, str, list[tuple[str, str, str, str]]]]:
    """(section key, section doc, rows of (key, type, default, meaning)), nested dataclasses after."""
    comments = _field_comments(cls)
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        value = _default(f)
        if dataclasses.is_dataclass(value):
            nested.append((f"{prefix}{f.name}", type(value)))
        else:
            rows.append((f"{prefix}{f.name}", _type(f.type), _yaml(value), comments.get(f.name, "")))
    doc = inspect.getdoc(cls) or ""
    out = [(prefix.rstrip(".") or "(top level)", doc if "\n" not in doc else doc.split("\n\n")[0], rows)]
    for key, sub in nested:
        out += _sections(sub, f"{key}.")
    return out


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell (| splits cells; <name> would read as an HTML tag)."""
    return text.replace("|", "&#124;").replace("<", "&lt;").replace(">", "&gt;")


def spec_reference() -> str:
    """The reference as Markdown: one table per section of the spec."""
    lines = ["# Spec reference", "",
             "Every field a spec may set, generated from `starx/spec/schema.py` by `starx reference`.",
             "Set fields in the YAML file or as dotted `key=value` overrides on the command line",
             "(`starx run spec.yaml model.seq_multiplier=2`); an unknown key or a wrong type stops",
             "with a one-line error naming the field.", ""]
    for key, doc, rows in _sections(ExperimentSpec):
        if not rows:
            continue
        lines += [f"## `{key}`" if key != "(top level)" else "## Top level", ""]
        if doc:
            lines += [doc.replace("\n", " "), ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{k}` | {_cell(t)} | `{d}` | {_cell(m)} |" for k, t, d, m in rows]
        lines.append("")
    return "\n".join(lines)
