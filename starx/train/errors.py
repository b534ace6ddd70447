"""Checkpoint errors, torch-free so that the CLI's error path can name them without importing torch."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read: the message names the file."""


class CheckpointInputError(CheckpointError, ValueError):
    """A checkpoint the user named (``finetune.init``, ``pretrain.init``, ``starx export``) that cannot be
    used: unreadable, torn, needing a foreign pickle global, or of another model size. Bad input:
    the CLI exits 2. The message is one line naming the file."""
