"""Checkpoints: written atomically (temp file + rename), read back with ``weights_only=True``.

A crash or ``kill -9`` at any moment leaves either the previous checkpoint or the new
one, never a torn file; a file that is torn anyway (disk full, copied half-way) is
reported by name and left untouched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read: the message names the file."""


def save_atomic(state: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for torn or foreign files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"corrupt or unreadable checkpoint {path}: {first[:200]}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


def model_state(state: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights inside a starx checkpoint, or the whole dict if it is a bare state_dict."""
    if "model" in state and isinstance(state["model"], dict):
        return state["model"]
    if all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    raise CheckpointError(f"checkpoint {path} has no 'model' weights")
