"""The ``starx`` Typer app and its one error path.

Every command is wrapped by :func:`guarded`: library errors become a one-line ``error: ...`` on
stderr and an exit code, the same for every command:

- 0: done;
- 1 (EXIT_FAILED): the job itself failed (non-finite loss, corrupt checkpoint, a failed sweep, ...);
- 2 (EXIT_USAGE): bad input (spec, override, sweep file, data source, results name, option), or a run
  that another process is training (its run directory is locked); nothing was started;
- 130: interrupted.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

# The app's own options, also accepted after the sub-command (`starx run spec.yaml --debug`).
GLOBAL_FLAGS = ("--debug", "--quiet", "-q")


def hoist_global_flags(args: list[str]) -> list[str]:
    """Move the global flags found after the sub-command in front of it (up to a ``--``)."""
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if a in GLOBAL_FLAGS]
    return [*flags, *[a for a in args[:end] if a not in GLOBAL_FLAGS], *args[end:]]


class StarxGroup(TyperGroup):
    def parse_args(self, ctx, args):  # type: ignore[override]
        return super().parse_args(ctx, hoist_global_flags(list(args)))


app = typer.Typer(
    name="starx",
    cls=StarxGroup,
    help="STAR: separator-packed autoregressive pretraining of Vision Mamba, as declarative experiments.\n\n"
    "Quick start: starx run specs/quickstart.yaml\n\n"
    "--debug and -q/--quiet also work after the command. Shell completion: starx --install-completion",
    no_args_is_help=False,
    invoke_without_command=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

OverridesArg = typer.Argument(None, help="Dotted overrides, e.g. model.seq_multiplier=2 optim.base_lr=3e-4")


class UsageError(ValueError):
    """Bad input found by a command itself (an option out of range, nothing to resume, ...): exit 2."""


def fail(message: str, code: int) -> None:
    from rich.text import Text

    # the message as Text, not markup: "[low, high]", "[a|b]" and bracketed file names print as they are
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'your input is wrong' (exit 2) rather than 'the job broke' (exit 1)."""
    from starx.data.errors import DataError
    from starx.results.catalog import ResultsError
    from starx.rundir import RunLocked
    from starx.spec import SpecError  # SweepError is a SpecError
    from starx.train.errors import CheckpointInputError  # a checkpoint the user named (init, export)

    return (UsageError, SpecError, DataError, ResultsError, RunLocked, CheckpointInputError)


F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Run a command body, turning known errors into one-line messages and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except _usage_errors() as e:
            fail(str(e), EXIT_USAGE)
        except KeyboardInterrupt:
            fail("interrupted; a run resumes from its last checkpoint, if it wrote one, when started again",
                 EXIT_INTERRUPTED)
        except Exception as e:  # noqa: BLE001 - the CLI's last line of defence
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            first = str(e).splitlines()[0] if str(e) else ""
            fail(f"{type(e).__name__}: {first} (run with --debug for the traceback)", EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


def command(typer_app: typer.Typer = app, name: str | None = None) -> Callable[[F], F]:
    """Register a guarded command on ``typer_app``."""

    def register(fn: F) -> F:
        wrapped = guarded(fn)
        typer_app.command(name)(wrapped)
        return wrapped

    return register
