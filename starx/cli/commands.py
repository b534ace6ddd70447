"""``starx run | show | validate | reference | models | doctor`` (and the app's global options)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional

import typer
from rich.text import Text

from starx import __version__
from starx.cli._app import EXIT_FAILED, EXIT_INTERRUPTED, OverridesArg, app, command, console, err_console


@app.callback()
def main_callback(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Verbose logs and full tracebacks."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
):
    if version:
        console.print(f"starx {__version__}")
        raise typer.Exit()
    from rich.logging import RichHandler

    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=debug)])
    for noisy in ("numba", "matplotlib", "PIL", "optuna", "submitit", "filelock"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if ctx.invoked_subcommand is None:  # bare `starx`: the help (no torch import; `starx models` lists sizes)
        console.print(ctx.get_help(), highlight=False, markup=False)


@command()
def run(
    spec: Path = typer.Argument(..., help="YAML spec, e.g. specs/quickstart.yaml"),
    overrides: Optional[List[str]] = OverridesArg,
    follow: bool = typer.Option(False, "--follow", "-f", help="For subprocess/slurm launches: wait and tail the log."),
    force: bool = typer.Option(False, "--force", help="Run a finished run again (e.g. after a code change); its "
                               "previous outputs are moved into superseded/ in the run directory."),
):
    """Run one experiment: pretrain, fine-tune, evaluate. Running the same spec again resumes it
    (a finished run returns its result, with a warning when another code version computed it)."""
    from starx import api

    prepared, outcome = api.run(spec, overrides or [], follow=follow, force=force)
    if prepared.stale:
        from rich.text import Text

        err_console.print(Text.assemble(("warning: reused a finished run. ", "bold yellow"), prepared.stale),
                          soft_wrap=True)
    result = outcome if isinstance(outcome, dict) else getattr(outcome, "result", None)
    if isinstance(result, dict):
        _print_result(result)
        if result.get("status") == "preempted" and "SIGINT" in str(result.get("error")):
            console.print(f"interrupted: {result.get('error')}; run it again to resume", markup=False)
            raise typer.Exit(EXIT_INTERRUPTED)
        if result.get("status") != "done":
            raise typer.Exit(EXIT_FAILED)
    else:
        console.print(str(outcome), markup=False)
    console.print(f"run directory: {prepared.run_dir}", markup=False)


def _print_result(result: dict) -> None:
    from rich.table import Table

    table = Table(title=Text(f"{result['experiment']} / {result['run_id']}  [{result['status']}]"), show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.get("metrics", {}).items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    table.add_row("wall time (s)", f"{result.get('wall_time_s', 0):.1f}")
    table.add_row("device", str(result.get("device")))
    console.print(table)


@command()
def show(spec: Path = typer.Argument(..., help="YAML spec"), overrides: Optional[List[str]] = OverridesArg,
         as_json: bool = typer.Option(False, "--json", help="Derived numbers as JSON only.")):
    """Print the resolved spec, its derived numbers (absolute lr, sequence and encoder tokens, ...) and run id."""
    from starx import api

    text, derived, run_id = api.show(spec, overrides or [])
    if as_json:
        console.print_json(json.dumps({"run_id": run_id, "derived": derived}))
        return
    console.print(text, highlight=False, markup=False)
    console.print("# derived", style="bold")
    for key, value in derived.items():
        console.print(f"#   {key}: {value}", highlight=False)
    console.print(f"# run_id: {run_id}", style="bold")


@command()
def validate(spec: Path = typer.Argument(..., help="YAML spec"), overrides: Optional[List[str]] = OverridesArg):
    """Check a spec (fields, types, combinations) without running anything. Exit 2 if it is wrong."""
    from starx import api

    api.validate(spec, overrides or [])
    console.print(Text.assemble(("ok", "green"), f" {spec}"))


@command()
def reference():
    """Print the spec reference (Markdown): every field, its type, default and meaning."""
    from starx import api

    print(api.reference())


@command()
def models():
    """List the registered model sizes."""
    from rich.table import Table

    from starx import api

    table = Table(title="starx models (create_model names)")
    for col in ("name", "width", "depth", "encoder params (M)"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for row in api.models():
        table.add_row(row["name"], str(row["embed_dim"]), str(row["depth"]), f"{row['encoder_params_m']:.1f}")
    console.print(table)
    console.print("Run the quick start:  starx run specs/quickstart.yaml   (help: starx --help)")


@command()
def doctor():
    """What loads here (CUDA, mamba-ssm kernels, FFCV, submitit, SLURM) and how to fix what is missing."""
    from rich.table import Table

    from starx import api

    table = Table(title=f"starx {__version__} doctor")
    for col in ("component", "status", "details / fix"):
        table.add_column(col)
    worst = 0
    for name, ok, details in api.doctor():
        status = "[green]ok[/]" if ok is True else "[yellow]missing[/]" if ok is None else "[red]broken[/]"
        worst = max(worst, 0 if ok in (True, None) else 1)
        table.add_row(name, status, details)
    console.print(table)
    raise typer.Exit(worst)
