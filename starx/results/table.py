"""Tables of runs and sweep trials: rich for the terminal, CSV and Markdown for papers and notes."""

from __future__ import annotations

import csv
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .catalog import KEY_METRICS, RunRecord, SweepRecord, varying_keys

MAX_PARAM_COLUMNS = 6


@dataclass
class Tabular:
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    objective: Optional[str] = None
    maximize: bool = True
    notes: list[str] = field(default_factory=list)
    csv_columns: Optional[list[str]] = None  # CSV gets every metric; the screen a selection
    params: list[str] = field(default_factory=list)  # the columns that say what differs between rows


def _metric_columns(metric_dicts: list[dict], first: Optional[str] = None, all_metrics: bool = False) -> list[str]:
    present = {k for m in metric_dicts for k in m}
    cols = [k for k in KEY_METRICS if k in present]
    if all_metrics:
        cols += sorted(present - set(cols))
    if first:
        cols = [first] + [c for c in cols if c != first]
    return cols


def fmt_duration(s: Optional[float]) -> str:
    if s is None or not isinstance(s, (int, float)) or math.isnan(s):
        return ""
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v)


# ----------------------------------------------------------------------------- builders
def sweep_table(sw: SweepRecord, all_metrics: bool = False, commit: bool = False) -> Tabular:
    metric = sw.metric
    mcols = _metric_columns([t.metrics for t in sw.trials], first=metric, all_metrics=all_metrics)
    if metric not in mcols:
        mcols = [metric] + mcols
    every = _metric_columns([t.metrics for t in sw.trials], first=metric, all_metrics=True)
    if metric not in every:
        every = [metric] + every
    head = ["trial", *sw.param_names]
    tail = ["state", "wall", "run_id"] + (["commit"] if commit else [])
    rows = []
    notes = []
    for t in sorted(sw.trials, key=lambda t: t.number):
        row: dict[str, Any] = {"trial": t.number, **{p: t.params.get(p) for p in sw.param_names}}
        m = t.metrics
        for c in every:
            row[c] = m.get(c)
        row[metric] = t.objective(metric)
        row["state"] = t.status
        row["wall"] = t.wall_time_s
        row["run_id"] = t.run.run_id if t.run else (t.raw.get("run_id") or "")
        if commit:
            row["commit"] = t.run.code if t.run else None
        rows.append(row)
        if t.status == "failed":
            reason = (t.fail_reason or "").strip().splitlines()
            notes.append(f"trial {t.number} failed: {reason[-1] if reason else '(no reason recorded)'}")
        elif t.status == "unreadable":
            notes.append(f"unreadable: {t.fail_reason}")
    info = sw.info
    n_done = sum(t.status == "done" for t in sw.trials)
    title = (f"sweep {sw.name}: {n_done}/{info.get('n_trials', len(sw.trials))} done, "
             f"{info.get('sampler', '?')} sampler, objective {metric} "
             f"({'max' if sw.maximize else 'min'})")
    best = info.get("best")
    if best:
        notes.insert(0, f"best: trial {best.get('number')}  {metric}={fmt(best.get('value'))}  "
                        + " ".join(f"{k}={v}" for k, v in (best.get("params") if isinstance(best.get("params"), dict)
                                                              else {}).items()))
    return Tabular(title, head + mcols + tail, rows, objective=metric, maximize=sw.maximize, notes=notes,
                   csv_columns=head + every + tail, params=list(sw.param_names))


def runs_table(runs: list[RunRecord], all_metrics: bool = False, title: Optional[str] = None,
               commit: bool = False) -> Tabular:
    several_exps = len({r.experiment for r in runs}) > 1
    keys = varying_keys(r.spec for r in runs)
    shown_keys = keys[:MAX_PARAM_COLUMNS]
    mcols = _metric_columns([r.metrics for r in runs], all_metrics=all_metrics)
    every = _metric_columns([r.metrics for r in runs], all_metrics=True)
    head = (["experiment"] if several_exps else []) + ["run_id"]
    tail = ["state", "wall"] + (["commit"] if commit else [])
    rows, notes = [], []
    for r in sorted(runs, key=lambda r: (r.experiment, r.run_id)):
        row: dict[str, Any] = {"experiment": r.experiment, "run_id": r.run_id}
        for k in keys:
            row[k] = r.spec.get(k)
        m = r.metrics
        for c in every:
            row[c] = m.get(c)
        row["state"] = r.status
        row["wall"] = r.wall_time_s
        if commit:
            row["commit"] = r.code
        rows.append(row)
        if r.state is not None and r.state.state in ("failed", "unreadable"):
            notes.append(f"{r.experiment}/{r.run_id} {r.state.state}: {r.state.detail}")
    if title is None:
        exps = sorted({r.experiment for r in runs})
        title = f"{len(runs)} runs" + (f" of {exps[0]}" if len(exps) == 1 else f" in {len(exps)} experiments")
    if len(keys) > len(shown_keys):
        notes.append(f"{len(keys) - len(shown_keys)} more differing spec keys in the CSV export")
    return Tabular(title, head + shown_keys + mcols + tail, rows, notes=notes,
                   csv_columns=head + keys + every + tail, params=list(keys))


# ----------------------------------------------------------------------------- aggregation
def _split_params(t: Tabular, over: list[str]) -> tuple[list[str], list[str]]:
    """(the parameters kept as row keys, the metric columns) of an average over ``over``."""
    unknown = [k for k in over if k not in t.params]
    if unknown:
        hint = difflib.get_close_matches(unknown[0], t.params, n=1)
        raise ValueError(f"cannot average over '{unknown[0]}': not a parameter"
                         + (f" (did you mean '{hint[0]}'?)" if hint else f" (parameters: {', '.join(t.params)})"))
    keep = [k for k in t.params if k not in over]
    skip = {"trial", "run_id", "experiment", "state", "commit", *t.params}
    return keep, [c for c in (t.csv_columns or t.columns) if c not in skip]


def _is_number(v: Any) -> bool:
    """A metric value to pair: a real number, not a bool, not NaN."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _sample_std(values: list[float], mean: float) -> float:
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def mean_over(t: Tabular, over: list[str]) -> Tabular:
    """One row per setting of the other parameters, over the finished rows: n, then the mean and
    the sample standard deviation ("<metric>_std") of every metric, e.g. over seeds."""
    keep, metrics = _split_params(t, over)
    groups: dict[tuple, list[dict]] = {}
    for row in t.rows:
        if row.get("state") == "done":
            groups.setdefault(tuple(repr(row.get(k)) for k in keep), []).append(row)
    rows = []
    for members in groups.values():
        row: dict[str, Any] = {k: members[0].get(k) for k in keep}
        row["n"] = len(members)
        for c in metrics:
            values = [r[c] for r in members if isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)]
            if values:
                mean = sum(values) / len(values)
                row[c] = mean
                if len(values) > 1:
                    row[f"{c}_std"] = _sample_std(values, mean)
        rows.append(row)
    with_std = lambda cols: [x for c in cols for x in ((c, f"{c}_std") if c != "wall" else (c,))]  # noqa: E731
    # the screen: the objective's spread, other metrics' means; the CSV: every mean and spread
    shown = [x for c in t.columns if c in metrics for x in ((c, f"{c}_std") if c == t.objective else (c,))]
    done = sum(len(m) for m in groups.values())
    return Tabular(f"{t.title} | mean over {', '.join(over)} of {done} finished", keep + ["n"] + shown,
                   rows, objective=t.objective, maximize=t.maximize,
                   csv_columns=keep + ["n"] + with_std(metrics), params=keep)


# Two-sided 95% quantiles of Student's t, t(0.975; df) for df = 1..30 (beyond: the Cornish-Fisher
# expansion below, within 1e-7 of the exact value there).
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: int) -> float:
    """t(0.975; df): a 95% interval of a mean of n values is mean +- t975(n - 1) * std / sqrt(n)."""
    if df < 1:
        raise ValueError(f"t975: degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054  # the normal's 0.975 quantile; Abramowitz & Stegun 26.7.5
    g = ((z ** 3 + z) / 4, (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
         (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384,
         (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160)
    return z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))


def _parse_reference(reference: list[str], keep: list[str], over: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in reference:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--paired-against takes PARAMETER=VALUE (e.g. recipe=arm), got '{item}'")
        if key in over:
            raise ValueError(f"cannot pair against '{key}': it is what the rows are paired over")
        if key not in keep:
            hint = difflib.get_close_matches(key, keep, n=1)
            raise ValueError(f"cannot pair against '{key}': not a parameter"
                             + (f" (did you mean '{hint[0]}'?)" if hint else f" (parameters: {', '.join(keep)})"))
        out[key] = value.strip()
    if not out:
        raise ValueError("--paired-against needs PARAMETER=VALUE (e.g. recipe=arm)")
    return out


def _matches(value: Any, text: str) -> bool:
    """Whether a parameter's value is the one written on the command line (``arm``, ``4``, ``0.5``, ``true``)."""
    if text in (str(value), fmt(value)):
        return True
    if isinstance(value, bool) or value is None:
        return text.lower() == ("null" if value is None else str(value).lower())
    if isinstance(value, (int, float)):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return False


def paired_against(t: Tabular, over: list[str], reference: list[str], metric: Optional[str] = None) -> Tabular:
    """:func:`mean_over` plus each setting's paired difference to a reference setting.

    ``reference``: ``PARAMETER=VALUE`` items (e.g. ``recipe=arm``) naming the reference among the
    parameters that are not averaged over. For every setting, the rows are paired with the
    reference's rows at the same values of ``over`` (the same seed), the other parameters kept:
    d_i = metric(setting, seed i) - metric(reference, seed i). Per metric the CSV gets
    ``<m>_diff`` (mean of the d_i), ``<m>_diff_std`` (their sample std), ``<m>_diff_lo`` and
    ``<m>_diff_hi`` (the 95% t-interval of the mean: mean +- t(0.975; n-1) std / sqrt(n)) and
    ``<m>_diff_n`` (pairs); the screen shows them for ``metric`` (default: the objective). The
    reference's own row has no differences. Two finished rows of one setting and seed (a point run
    twice) count as their mean."""
    keep, metrics = _split_params(t, over)
    ref = _parse_reference(reference, keep, over)
    base = mean_over(t, over)
    done = [r for r in t.rows if r.get("state") == "done"]
    ref_rows = [r for r in done if all(_matches(r.get(k), v) for k, v in ref.items())]
    if not ref_rows:
        seen = {k: sorted({fmt(r.get(k)) for r in done}) for k in ref}
        raise ValueError("no finished row has " + " ".join(f"{k}={v}" for k, v in ref.items()) + " ("
                         + "; ".join(f"{k}: {', '.join(vals) or 'none'}" for k, vals in seen.items()) + ")")
    ref_values = {k: ref_rows[0].get(k) for k in ref}  # as the rows hold them (an int seed, not '0')
    cells: dict[tuple, dict[tuple, list[dict]]] = {}  # setting -> paired value -> rows
    for r in done:
        cells.setdefault(tuple(repr(r.get(k)) for k in keep), {}).setdefault(
            tuple(repr(r.get(k)) for k in over), []).append(r)
    if metric is None:
        metric = t.objective if t.objective in metrics else next((c for c in metrics if c != "wall"), None)
    if metric not in metrics:
        hint = difflib.get_close_matches(metric or "", metrics, n=1)
        raise ValueError(f"cannot pair '{metric}': not a metric" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    diff_cols = ("diff", "diff_std", "diff_lo", "diff_hi", "diff_n")
    ref_label = " ".join(f"{k}={fmt(v)}" for k, v in ref_values.items())
    for row in base.rows:
        setting = {k: row.get(k) for k in keep}
        partner = {**setting, **ref_values}
        if all(repr(setting[k]) == repr(partner[k]) for k in keep):
            continue  # the reference itself
        mine = cells.get(tuple(repr(setting[k]) for k in keep), {})
        theirs = cells.get(tuple(repr(partner[k]) for k in keep), {})
        for c in metrics:
            d = []
            for point, rows in mine.items():
                a = [r[c] for r in rows if _is_number(r.get(c))]
                b = [r[c] for r in theirs.get(point, []) if _is_number(r.get(c))]
                if a and b:
                    d.append(sum(a) / len(a) - sum(b) / len(b))
            if not d:
                continue
            mean = sum(d) / len(d)
            row[f"{c}_diff"], row[f"{c}_diff_n"] = mean, len(d)
            if len(d) > 1:
                std = _sample_std(d, mean)
                half = t975(len(d) - 1) * std / math.sqrt(len(d))
                row[f"{c}_diff_std"], row[f"{c}_diff_lo"], row[f"{c}_diff_hi"] = std, mean - half, mean + half
    screen = keep + ["n", metric, f"{metric}_std"] + [f"{metric}_{s}" for s in ("diff_n", "diff", "diff_std",
                                                                                "diff_lo", "diff_hi")]
    notes = [f"{metric}_diff: the row's {metric} minus the reference's ({ref_label}) at the same "
             f"{', '.join(over)}, averaged over the {metric}_diff_n pairs; lo / hi: its 95% t-interval "
             f"(mean +- t(0.975; n-1) std / sqrt(n)); the CSV has every metric's"]
    return Tabular(f"{base.title}, paired against {ref_label}", screen, base.rows, objective=t.objective,
                   maximize=t.maximize, notes=notes,
                   csv_columns=(base.csv_columns or []) + [f"{c}_{s}" for c in metrics for s in diff_cols],
                   params=keep)


# ----------------------------------------------------------------------------- sorting
def sort_rows(t: Tabular, key: str, reverse: Optional[bool] = None) -> None:
    """Sort by a column (numbers numerically, blanks last). Objective: best first unless reversed."""
    cols = t.csv_columns or t.columns
    if key not in cols:
        hint = difflib.get_close_matches(key, cols, n=1)
        raise ValueError(f"cannot sort by '{key}': not a column"
                         + (f" (did you mean '{hint[0]}'?)" if hint else f" (columns: {', '.join(cols)})"))
    if reverse is None:
        reverse = key == t.objective and t.maximize

    def blank(row: dict) -> bool:
        v = row.get(key)
        return v is None or (isinstance(v, float) and math.isnan(v))

    def k(row: dict) -> tuple:
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return (0, v, "")
        return (1, 0, str(v))

    filled = sorted((r for r in t.rows if not blank(r)), key=k, reverse=reverse)
    t.rows[:] = filled + [r for r in t.rows if blank(r)]


# ----------------------------------------------------------------------------- output
_STATE_STYLE = {"done": "green", "failed": "red", "unreadable": "red", "running": "cyan", "queued": "yellow",
                "preempted": "magenta", "lost": "red", "unknown": "yellow", "waiting": "dim"}


def _cell(col: str, v: Any) -> str:
    return fmt_duration(v) if col == "wall" else fmt(v)


def render_rich(t: Tabular, console) -> None:
    from rich.table import Table

    table = Table(title=t.title, title_justify="left", header_style="bold")
    for c in t.columns:
        numeric = any(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in t.rows)
        table.add_column(c + (" *" if c == t.objective else ""), justify="right" if numeric or c == "wall" else "left",
                         style="bold" if c == t.objective else None)
    from rich.text import Text

    for r in t.rows:
        cells = []
        for c in t.columns:
            s = _cell(c, r.get(c))
            # Text, not markup: names, errors and paths print as they are ("[low, high]" included)
            cells.append(Text(s, style=_STATE_STYLE[s]) if c == "state" and s in _STATE_STYLE else Text(s))
        table.add_row(*cells)
    console.print(table)
    for n in t.notes:
        console.print(f"  {n}", highlight=False, markup=False)


def to_csv(t: Tabular, path: str | Path) -> None:
    cols = t.csv_columns or t.columns
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in t.rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])


def to_markdown(t: Tabular) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    numeric = {c for c in t.columns
               if c == "wall" or any(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in t.rows)}
    lines = [f"**{esc(t.title)}**", "", "| " + " | ".join(esc(c) for c in t.columns) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in t.columns) + "|"]
    for r in t.rows:
        lines.append("| " + " | ".join(esc(_cell(c, r.get(c))) for c in t.columns) + " |")
    if t.notes:
        lines.append("")
        lines += [f"- {esc(n)}" for n in t.notes]
    return "\n".join(lines) + "\n"
