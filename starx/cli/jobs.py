"""``starx sweep``, ``starx status`` and ``starx results``.

Heavy imports (optuna, submitit, matplotlib) stay inside the functions, and ``results``/``status``
never import torch. Each function is guarded (the CLI's one error path) where it is defined, so
an app that registers it elsewhere gets the same messages and exit codes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from starx.cli._app import EXIT_FAILED, UsageError, command

RootOpt = typer.Option(None, "--root", help="Results root (default: $STARX_RESULTS or ./results).",
                       show_default=False)


def _root(root: Optional[Path]) -> Path:
    return Path(root) if root is not None else Path(os.environ.get("STARX_RESULTS", "results"))


def _console():
    from rich.console import Console

    return Console()


@command()
def sweep(
    sweep_file: Path = typer.Argument(..., help="Sweep file, e.g. sweeps/quickstart.yaml"),
    overrides: Optional[List[str]] = typer.Argument(
        None, help="Extra fixed overrides for every trial, e.g. launch.kind=slurm launch.slurm.partition=gpu"),
    resume: bool = typer.Option(False, "--resume", help="Require an existing study and continue it "
                                "(running a sweep again continues it anyway)."),
    parallel: Optional[int] = typer.Option(None, "--parallel", "-j", help="Trials in flight (overrides n_parallel)."),
    detach: bool = typer.Option(False, "--detach", help="Return once the last trials are launched; "
                                "run the sweep again later to collect them."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Return after this long, "
                                                "leaving trials running (resume later)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Queue each failed trial's point once more "
                                      "(e.g. after fixing a missing dataset); it resumes from its checkpoint."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the search space / grid cells and exit."),
    force: bool = typer.Option(False, "--force", help="A trial whose run is already done (e.g. by an older "
                               "code version) runs again instead of reusing its result; its old outputs "
                               "are moved into superseded/. Trials this study already completed are kept."),
):
    """Run an ablation or hyper-parameter search: an Optuna study on disk, N trials in flight, resumable.

    Local trials needing GPUs each get their own: the pool is STARX_GPUS (0,1,...), else CUDA_VISIBLE_DEVICES, else all.

    STARX_TRIALS_PER_GPU=N lets N trials share each GPU of the pool.
    """
    from starx import api

    if parallel is not None and parallel < 1:
        raise UsageError("--parallel must be >= 1")
    cfg = api.load_sweep(sweep_file, overrides or [], n_parallel=parallel)
    console = _console()
    if dry_run:
        console.print(f"sweep {cfg.name}: spec {cfg.spec}, sampler {cfg.sampler}, "
                      f"{cfg.total_trials()} trials, {cfg.n_parallel} in flight, "
                      f"objective {cfg.objective.metric} ({cfg.objective.direction})", highlight=False, markup=False)
        if cfg.sampler == "grid":
            for i, cell in enumerate(cfg.grid_cells()):
                console.print(f"  {i:3d}  " + " ".join(cfg.trial_overrides(cell)[len(cfg.overrides):]),
                              highlight=False, markup=False)
        else:
            for name, p in cfg.params.items():
                console.print(f"  {name}: {p.type} {p.values if p.type == 'choice' else (p.low, p.high)}"
                              + (" log" if p.log or p.type == "logfloat" else ""), highlight=False, markup=False)
        return
    summary, record = api.sweep(cfg, max_minutes=max_minutes, detach=detach, retry_failed=retry_failed,
                                require_existing=resume, force=force)
    from starx.results.table import render_rich, sweep_table

    render_rich(sweep_table(record), console)
    console.print(f"study: {summary.dir}   ({summary.complete} done, {summary.failed} failed, "
                  f"{summary.running} running; {summary.stopped})", highlight=False, markup=False)
    if summary.running:
        console.print(f"trials still running: run `starx sweep {sweep_file}` again to collect them", highlight=False,
                      markup=False)
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED)


@command()
def status(
    name: Optional[str] = typer.Argument(None, help="Experiment or sweep (default: every run under the root)."),
    root: Optional[Path] = RootOpt,
    lines: int = typer.Option(5, "--lines", "-n", help="Error lines shown per failed run."),
):
    """List launched runs with their state: queued, running, done, failed (with the error's last lines)."""
    from starx import api
    from starx.results.status import status_table
    from starx.results.table import render_rich

    rows = api.status(_root(root), name)
    render_rich(status_table(rows, lines), _console())


@command()
def results(
    name: Optional[str] = typer.Argument(None, help="Experiment or sweep name (or its directory)."),
    sort: Optional[str] = typer.Option(None, "--sort", "-s", help="Sort by a column (the objective: best first)."),
    reverse: bool = typer.Option(False, "--reverse", "-r", help="Reverse the sort order."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the table (every metric) as CSV."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", "--md", help="Also write a Markdown table."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG: objective vs parameters, loss and fine-tune curves, and the "
                                           "read-outs during pretraining when runs took them more than once."),
    all_metrics: bool = typer.Option(False, "--all-metrics", "-a", help="Show every metric column."),
    commit: bool = typer.Option(False, "--commit", help="Show the code version (git commit, +dirty) that "
                                "computed each run (env.json)."),
    mean_over_: Optional[List[str]] = typer.Option(
        None, "--mean-over", help="Average the finished rows over this parameter (repeatable), e.g. seed: "
        "one row per setting of the others, with n and each metric's mean and standard deviation."),
    paired_against_: Optional[List[str]] = typer.Option(
        None, "--paired-against", help="With --mean-over: each setting's difference to this reference setting "
        "(PARAMETER=VALUE, e.g. recipe=arm; repeatable), paired at the same --mean-over values (per seed): mean, "
        "std and 95% t-interval of the differences (the CSV has every metric's)."),
    paired_metric: Optional[str] = typer.Option(None, "--paired-metric", help="The metric whose paired "
                                                "differences the table shows (default: the objective)."),
    root: Optional[Path] = RootOpt,
):
    """Tables of runs or sweep trials (parameters, objective, key metrics, state, wall time)."""
    from starx import api
    from starx.results.catalog import varying_keys
    from starx.results.table import mean_over, paired_against, render_rich, runs_table, sort_rows, sweep_table, to_csv, to_markdown

    console = _console()
    kind, obj = api.results(_root(root), name)
    if kind == "sweep":
        table = sweep_table(obj, all_metrics=all_metrics, commit=commit)
    else:
        if not obj:
            console.print(f"no runs under {_root(root)}/", markup=False)
            return
        table = runs_table(obj, all_metrics=all_metrics, commit=commit)
    if paired_metric and not paired_against_:
        raise UsageError("--paired-metric needs --paired-against")
    if paired_against_ and not mean_over_:
        raise UsageError("--paired-against pairs the rows at the same values of --mean-over: give both "
                         "(e.g. --mean-over seed --paired-against recipe=arm)")
    if mean_over_:
        try:
            table = (paired_against(table, mean_over_, paired_against_, paired_metric) if paired_against_
                     else mean_over(table, mean_over_))
        except ValueError as e:
            raise UsageError(str(e)) from None
    if sort:
        try:
            sort_rows(table, sort, reverse=(None if not reverse else not (sort == table.objective and table.maximize)))
        except ValueError as e:
            raise UsageError(str(e)) from None
    elif reverse:
        table.rows.reverse()
    render_rich(table, console)
    if csv:
        to_csv(table, csv)
        console.print(f"wrote {csv}")
    if markdown:
        Path(markdown).write_text(to_markdown(table))
        console.print(f"wrote {markdown}")
    if plot:
        from starx.results.plot import plot_runs, plot_sweep

        if kind == "sweep":
            plot_sweep(obj, plot)
        else:
            plot_runs(obj, plot, varying_keys(r.spec for r in obj))
        console.print(f"wrote {plot}")
