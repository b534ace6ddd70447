"""Every closed set of names in starx is a ``StrEnum`` (one way to declare a choice).

A StrEnum member *is* its string (``Backend.cuda == "cuda"``, ``f"{m}"`` gives ``cuda``), and
OmegaConf checks a spec value against it at load, looking the member up by name; so every
member's name equals its value (names that are not identifiers are declared with
:func:`choice`). Each set lives with the code that owns it (precisions in the spec schema,
samplers in the sweep file, launch kinds in the launch section); the two below are shared by
the kernel ops, the models and the spec, so they live here, in a module that imports nothing.

To add a kernel backend (say ``triton``) or a separator kind, add a member here: the spec,
the model config, ``starx.ops.BACKENDS``, the reference and the error messages follow.
"""

from __future__ import annotations

import difflib
from enum import StrEnum
from typing import Iterable


def choice(name: str, values: Iterable[str], doc: str = "") -> type[StrEnum]:
    """A StrEnum whose members are named by their values (which may hold '-')."""
    enum = StrEnum(name, [(v, v) for v in values], module=__name__)  # type: ignore[misc]
    enum.__doc__ = doc or f"One of: {', '.join(values)}."
    return enum


def describe(enum: type[StrEnum]) -> str:
    """'a, b or c': the members for an error message."""
    names = [m.value for m in enum]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def not_one_of(enum: type[StrEnum], value: object) -> str:
    """"'x' is not one of a, b or c (did you mean 'b'?)": the message for a value outside a choice."""
    close = difflib.get_close_matches(str(value), [m.value for m in enum], n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"'{value}' is not one of {describe(enum)}{hint}"


class Backend(StrEnum):
    """Which implementation of the kernel ops runs (starx.ops)."""

    auto = "auto"  # on CUDA tensors the fastest backend that loads (triton, then cuda), else the torch twin
    cuda = "cuda"  # mamba-ssm / causal-conv1d kernels; fails with the install hint where they can't load
    triton = "triton"  # starx's Triton selective scan (CUDA; needs only torch's Triton), channel-last mixer
    torch = "torch"  # the pure-PyTorch twin (any device)


class SeparatorKind(StrEnum):
    """What precedes each image of a STAR sequence (starx.models.separators)."""

    none = "none"  # plain concatenation
    token = "token"  # one learned embedding repeated over the separator's tokens
    cluster = "cluster"  # S learned embeddings shared by all images (STAR)
    fixed = "fixed"  # S constant embeddings (never trained)
    distinct = "distinct"  # a different learned separator per image slot (control)
