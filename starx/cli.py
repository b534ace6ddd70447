"""The ``starx`` command line: parse, call starx.api, print. Library errors become one-line messages.

Heavy imports (torch, ffcv, optuna, submitit) happen inside commands, so ``starx --help``
answers at once.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from starx import __version__

app = typer.Typer(
    name="starx",
    help="STAR: separator-packed autoregressive pretraining of Vision Mamba, as declarative experiments.\n\n"
    "Quick start: starx run specs/quickstart.yaml",
    no_args_is_help=False,
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_FAILED = 1  # the job itself failed (non-finite loss, corrupt checkpoint, ...)
EXIT_USAGE = 2  # bad input: spec, override, data path; nothing was started

OverridesArg = typer.Argument(None, help="Dotted overrides, e.g. model.seq_multiplier=2 optim.base_lr=3e-4")


def _fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'your input is wrong' (exit 2) rather than 'the job broke' (exit 1)."""
    from starx.data import DataError
    from starx.spec import SpecError

    return (SpecError, DataError)


def guarded(fn):
    """Run a command body, turning known errors into one-line messages and exit codes."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except _usage_errors() as e:
            _fail(str(e), EXIT_USAGE)
        except KeyboardInterrupt:
            _fail("interrupted; the run resumes from its last checkpoint when started again", 130)
        except Exception as e:  # noqa: BLE001 - the CLI's last line of defence
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            _fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (run with --debug for the traceback)",
                  EXIT_FAILED)

    return wrapper


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
    if ctx.invoked_subcommand is None:
        models()


@app.command()
@guarded
def run(
    spec: Path = typer.Argument(..., help="YAML spec, e.g. specs/quickstart.yaml"),
    overrides: Optional[List[str]] = OverridesArg,
    follow: bool = typer.Option(False, "--follow", "-f", help="For subprocess/slurm launches: wait and tail the log."),
):
    """Run one experiment: pretrain, fine-tune, evaluate. Running the same spec again resumes it."""
    from starx.api import run as api_run

    prepared, outcome = api_run(spec, overrides or [], follow=follow)
    result = outcome if isinstance(outcome, dict) else getattr(outcome, "result", None)
    if isinstance(result, dict):
        _print_result(result)
        if result.get("status") != "done":
            raise typer.Exit(EXIT_FAILED)
    else:
        console.print(str(outcome))
    console.print(f"run directory: {prepared.run_dir}")


def _print_result(result: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{result['experiment']} / {result['run_id']}  [{result['status']}]", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.get("metrics", {}).items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    table.add_row("wall time (s)", f"{result.get('wall_time_s', 0):.1f}")
    table.add_row("device", str(result.get("device")))
    console.print(table)


@app.command()
@guarded
def show(spec: Path = typer.Argument(..., help="YAML spec"), overrides: Optional[List[str]] = OverridesArg,
         as_json: bool = typer.Option(False, "--json", help="Derived numbers as JSON only.")):
    """Print the resolved spec, its derived numbers (absolute lr, tokens per sequence, ...) and run id."""
    from starx.api import show as api_show

    text, derived, run_id = api_show(spec, overrides or [])
    if as_json:
        console.print_json(json.dumps({"run_id": run_id, "derived": derived}))
        return
    console.print(text, highlight=False, markup=False)
    console.print("# derived", style="bold")
    for key, value in derived.items():
        console.print(f"#   {key}: {value}", highlight=False)
    console.print(f"# run_id: {run_id}", style="bold")


@app.command()
@guarded
def validate(spec: Path = typer.Argument(..., help="YAML spec"), overrides: Optional[List[str]] = OverridesArg):
    """Check a spec (fields, types, combinations) without running anything. Exit 2 if it is wrong."""
    from starx.spec import load_spec

    load_spec(spec, overrides or [])
    console.print(f"[green]ok[/] {spec}")


@app.command()
@guarded
def reference():
    """Print the spec reference (Markdown): every field, its type, default and meaning."""
    from starx.spec.reference import spec_reference

    print(spec_reference())


@app.command()
@guarded
def models():
    """List the registered model sizes."""
    from rich.table import Table

    from starx.models import describe_models

    table = Table(title="starx models (create_model names)")
    for col in ("name", "width", "depth", "encoder params (M)"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for row in describe_models():
        table.add_row(row["name"], str(row["embed_dim"]), str(row["depth"]), f"{row['encoder_params_m']:.1f}")
    console.print(table)
    console.print("Run the quick start:  starx run specs/quickstart.yaml   (help: starx --help)")


@app.command()
def doctor():
    """What loads here (CUDA, mamba-ssm kernels, FFCV, submitit, SLURM) and how to fix what is missing."""
    from starx.doctor import checks

    from rich.table import Table

    table = Table(title=f"starx {__version__} doctor")
    for col in ("component", "status", "details / fix"):
        table.add_column(col)
    worst = 0
    for name, ok, details in checks():
        status = "[green]ok[/]" if ok is True else "[yellow]missing[/]" if ok is None else "[red]broken[/]"
        worst = max(worst, 0 if ok in (True, None) else 1)
        table.add_row(name, status, details)
    console.print(table)
    raise typer.Exit(worst)


def _mount_subcommands() -> None:
    from starx.data.cli import app as data_app

    app.add_typer(data_app, name="data", help="Build and inspect FFCV datasets.")
    from starx import jobs_cli

    for fn in (jobs_cli.sweep, jobs_cli.status, jobs_cli.results):
        app.command(fn.__name__)(guarded(fn))


_mount_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
