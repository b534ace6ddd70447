"""Checkpoints: written atomically (temp file + rename), read back with ``weights_only=True``.

A crash or ``kill -9`` at any moment leaves either the previous checkpoint or the new
one, never a torn file; a file that is torn anyway (disk full, copied half-way) is
reported by name and left untouched.

Files from elsewhere (``finetune.init`` / ``pretrain.init``): a starx checkpoint, a bare
state_dict, a ``.safetensors`` file (``starx export``), or an ARM checkpoint (OliverRensu/ARM's
``save_model``: ``{model, optimizer, epoch, scaler, args}`` with ``args`` an
``argparse.Namespace``). Unpickling allows exactly :data:`ALLOWED_GLOBALS` beyond torch's
weights-only set, so a file that needs any other global is refused, by name, without running it.
ARM's key names are mapped by :mod:`starx.models.arm` and the mapping is reported.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

import torch

from starx.train.errors import CheckpointError, CheckpointInputError

__all__ = ["ALLOWED_GLOBALS", "CheckpointError", "CheckpointInputError", "load", "load_weights",
           "model_state", "save_atomic"]

# The only pickle globals allowed beyond torch's weights-only set: ARM's save_model stores its
# argparse arguments (strings, numbers, booleans, lists) as an argparse.Namespace.
ALLOWED_GLOBALS = (argparse.Namespace,)


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


def load(path: str | Path, map_location: str | torch.device = "cpu",
         error: type[CheckpointError] = CheckpointError) -> dict[str, Any]:
    """A checkpoint's content (weights-only unpickling plus :data:`ALLOWED_GLOBALS`). ``error``: the
    exception class to raise (:class:`CheckpointInputError` for a file the user named)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, error)
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for torn or foreign files
        text = str(e)
        foreign = re.search(r"Unsupported global: GLOBAL ([\w.<>]+)", text)
        if foreign:
            raise error(f"checkpoint {path} needs the pickle global {foreign[1]}, which starx does not load "
                        "(it could run code): save the weights alone, e.g. torch.save(ckpt['model'], "
                        "'weights.pt')") from None
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        first = lines[0] if lines else type(e).__name__
        if first.startswith("Weights only load failed"):
            # not torch's advice (retry with weights_only=False): for a file from elsewhere that runs its code
            after = text.split("WeightsUnpickler error:", 1)
            detail = [line.strip() for line in after[1].splitlines() if line.strip()] if len(after) > 1 else []
            first = (f"{detail[0] if detail else 'not a plain weights file'} (refused: starx unpickles tensors and "
                     f"plain containers only, never code)")
        raise error(f"corrupt or unreadable checkpoint {path}: {first[:200]}") from None
    if not isinstance(state, dict):
        raise error(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


def _load_safetensors(path: Path, error: type[CheckpointError]) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own types for torn files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise error(f"corrupt or unreadable safetensors file {path}: {first[:200]}") from None


def model_state(state: dict[str, Any], path: str | Path,
                error: type[CheckpointError] = CheckpointError) -> dict[str, torch.Tensor]:
    """The model weights inside a starx or ARM checkpoint, or the whole dict if it is a bare state_dict."""
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    elif not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise error(f"checkpoint {path} has no 'model' weights")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise error(f"checkpoint {path}: its 'model' entry is not a state_dict of tensors")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The model weights of a file the user named (starx checkpoint, bare state_dict, safetensors or
    ARM checkpoint) in starx's names, and notes on what was mapped. Bad files raise
    :class:`CheckpointInputError` naming the file."""
    from starx.models.arm import from_arm, is_arm_state

    path = Path(path).expanduser()
    raw = load(path, error=CheckpointInputError)
    weights = model_state(raw, path, error=CheckpointInputError)
    notes: list[str] = []
    if is_arm_state(weights):
        epoch = raw.get("epoch")
        notes.append(f"ARM checkpoint{'' if epoch is None else f' (epoch {epoch})'}: model weights only "
                     "(its optimizer, scaler and args are not used)")
        weights, mapped = from_arm(weights)
        notes += mapped
    return weights, notes


def load_into_pretrain(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> str:
    """Load weights into a pretraining model (same names, same shapes), in place; returns the
    report. A tensor of another shape (another model size) raises CheckpointInputError; a
    tensor the model lacks is ignored and one the file lacks keeps its initialisation (both reported)."""
    own = model.state_dict()
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in weights.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        raise CheckpointInputError(f"checkpoint {path} does not fit this model (another size?): "
                                   + "; ".join(mismatched[:3]) + (" ..." if len(mismatched) > 3 else ""))
    usable = {k: v for k, v in weights.items() if k in own}
    if not any(k.startswith("layers.") for k in usable):
        raise CheckpointInputError(f"checkpoint {path} has no encoder weights for this model "
                                   f"(keys such as {', '.join(list(weights)[:3]) or 'none'})")
    model.load_state_dict(usable, strict=False)
    fresh = sorted(set(own) - set(usable))
    ignored = sorted(set(weights) - set(own))
    return (f"{len(usable)} tensors loaded; {len(fresh)} initialised fresh ({_roots(fresh)}); "
            f"{len(ignored)} file keys ignored ({_roots(ignored)})")


def _roots(names: list[str], n: int = 4) -> str:
    roots = sorted({k.split(".")[0] for k in names})
    return (", ".join(roots[:n]) + (", ..." if len(roots) > n else "")) if roots else "none"


# ----------------------------------------------------------------------------- kept checkpoints
def milestone_path(ckpt_dir: Path, stage: str, step: int, steps_per_epoch: int) -> Path:
    """``<stage>_ep<epoch>.pt``: the stage's full state at a milestone (epoch as a number: 10, 2.5)."""
    return Path(ckpt_dir) / f"{stage}_ep{round(step / steps_per_epoch, 4):g}.pt"


def best_path(ckpt_dir: Path, stage: str) -> Path:
    return Path(ckpt_dir) / f"{stage}_best.pt"


def keep_copy(src: Path, dst: Path) -> Path:
    """``dst`` becomes a copy of ``src``, atomically: a hard link where the file system has them
    (no bytes copied; later atomic replacements of ``src`` leave it alone), else a copy."""
    import shutil

    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def milestones(ckpt_dir: Path, stage: str) -> list[Path]:
    """The stage's milestone checkpoints, oldest first."""
    found = []
    for p in Path(ckpt_dir).glob(f"{stage}_ep*.pt"):
        try:
            found.append((float(p.stem[len(stage) + 3:]), p))
        except ValueError:
            continue
    return [p for _, p in sorted(found)]


def prune_milestones(ckpt_dir: Path, stage: str, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` milestones (0: keep all); returns what was deleted."""
    if keep_last <= 0:
        return []
    old = milestones(ckpt_dir, stage)[:-keep_last]
    for p in old:
        p.unlink(missing_ok=True)
    return old
