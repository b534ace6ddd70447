"""``starx export``: a run's weights as safetensors plus the config.json that builds their model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from starx.cli._app import command, console


@command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory, e.g. results/quickstart/<run_id>"),
    stage: Optional[str] = typer.Option(None, "--stage", help="pretrain (encoder + decoder) or finetune "
                                        "(the classifier); default: finetune when the run has one."),
    fmt: str = typer.Option("safetensors", "--format", help="Weights format: safetensors."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: RUN_DIR/export/STAGE)."),
    ema: bool = typer.Option(False, "--ema", help="The fine-tuning EMA weights instead of the model's."),
):
    """Write a run's weights as model.safetensors plus a config.json that create_model / create_classifier
    read back (starx.train.export.load_exported(folder) builds the model and loads them)."""
    from starx import api

    folder = api.export(run_dir, stage=stage, fmt=fmt, out=out, ema=ema)
    console.print(f"wrote {folder / 'model.safetensors'} and {folder / 'config.json'}", highlight=False,
                  markup=False)
