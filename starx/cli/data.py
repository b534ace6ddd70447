"""``starx data build | info``: build and inspect FFCV datasets.

Heavy imports (ffcv, numba, torch) happen inside the commands so `starx --help` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from starx.cli._app import command, console

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@command(app)
def build(
    source: str = typer.Argument(..., help="embedded | imagefolder:PATH | idx:PATH | npz:PATH"),
    out: Path = typer.Argument(..., help="the .beton file to write"),
    split: str = typer.Option("train", help="train | test (val = test for idx/embedded)"),
    write_mode: Optional[str] = typer.Option(
        None, help="raw | jpg | smart | proportion (default: jpg for image folders, raw otherwise)"),
    max_resolution: Optional[int] = typer.Option(None, help="resize so the longer side is at most this"),
    jpeg_quality: int = typer.Option(90, help="JPEG quality for jpg/smart/proportion"),
    workers: Optional[int] = typer.Option(None, help="writer processes"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace OUT if it exists (never the source itself)"),
) -> None:
    """Write SOURCE as an FFCV dataset (fields: image, label) to OUT, atomically."""
    from starx import api

    logging.getLogger("starx.data").setLevel(logging.WARNING)  # the summary below says it all
    s = api.build_dataset(source, out, split=split, write_mode=write_mode, max_resolution=max_resolution,
                          jpeg_quality=jpeg_quality, num_workers=workers, progress=progress, overwrite=overwrite)
    console.print(f"wrote {s.path}: {s.images:,} images, {s.classes} classes, {s.bytes / 1e6:,.1f} MB",
                  highlight=False, markup=False)


@command(app)
def info(path: Path = typer.Argument(..., help="a .beton file")) -> None:
    """Print the number of images and classes of a dataset file, and its image sizes."""
    from starx import api

    images, classes, meta = api.dataset_details(path)
    jpeg = int((meta["mode"] == 0).sum())
    sizes = f"{meta['width'].min()}-{meta['width'].max()} x {meta['height'].min()}-{meta['height'].max()}"
    console.print(f"{path}: {images:,} images, {classes} classes, {path.stat().st_size / 1e6:,.1f} MB; "
                  f"width x height {sizes}; {jpeg:,} JPEG / {images - jpeg:,} raw", highlight=False, markup=False)
