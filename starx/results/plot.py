"""PNG figures from run directories: objective against each swept parameter, loss and eval curves,
and the read-outs taken during pretraining (kNN and linear probe top-1 against the pretraining
epoch, when a run took them more than once: ``eval.every_epochs``).

matplotlib is imported here only (Agg backend), so the results table stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from starx.rundir import RunDir, SweepDir, read_jsonl

from .catalog import RunRecord, SweepRecord

READOUTS = ("knn_top1", "probe_top1")  # drawn solid and dashed


@dataclass
class Curves:
    """What one run's metrics.jsonl says over time."""

    losses: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # stage -> [(step, loss)]
    evals: list[tuple[float, float]] = field(default_factory=list)  # [(fine-tune epoch, top1)]
    readouts: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # metric -> [(pretrain epoch, %)]


def _curves(run_dir: Path) -> Curves:
    c = Curves()
    for r in read_jsonl(RunDir(run_dir).metrics):
        if r.get("kind") == "eval":
            if isinstance(r.get("top1"), (int, float)):
                c.evals.append((float(r.get("epoch", len(c.evals))), float(r["top1"])))
            if r.get("stage") == "pretrain" and isinstance(r.get("epoch"), (int, float)):
                for m in READOUTS:
                    if isinstance(r.get(m), (int, float)):
                        c.readouts.setdefault(m, []).append((float(r["epoch"]), float(r[m])))
        elif isinstance(r.get("loss"), (int, float)) and "step" in r:
            c.losses.setdefault(str(r.get("stage", "train")), []).append((float(r["step"]), float(r["loss"])))
    return c


def has_readout_curves(curves: list[Curves]) -> bool:
    """Whether some run took a read-out at two or more pretraining epochs (worth a panel)."""
    return any(len(pts) > 1 for c in curves for pts in c.readouts.values())


def _smooth(ys: list[float], n: int) -> list[float]:
    if n <= 1 or len(ys) < 3 * n:
        return ys
    out, acc = [], ys[0]
    a = 2.0 / (n + 1)
    for y in ys:
        acc = a * y + (1 - a) * acc
        out.append(acc)
    return out


def _plot_curves(ax_loss, ax_eval, labelled: list[tuple[str, Curves]], ax_read=None) -> bool:
    """Runs with the same label (seeds of one setting) share a colour and one legend entry."""
    any_eval = False
    colors: dict[str, str] = {}
    for label, c in labelled:
        first = label not in colors
        color = colors.setdefault(label, f"C{len(colors) % 10}")
        label = label if first else None
        pre = c.losses.get("pretrain")
        if pre:
            xs, ys = zip(*pre)
            ax_loss.plot(xs, _smooth(list(ys), max(1, len(ys) // 50)), label=label, lw=1.2, color=color)
        if c.evals and ax_eval is not None:
            xs, ys = zip(*c.evals)
            ax_eval.plot(xs, ys, marker="o", ms=3, label=label, lw=1.2, color=color)
            any_eval = True
        if ax_read is not None:
            for m, style in zip(READOUTS, ("-", "--")):
                if c.readouts.get(m):
                    xs, ys = zip(*c.readouts[m])
                    ax_read.plot(xs, ys, style, marker="o", ms=3, lw=1.2, color=color,
                                 label=label if m == READOUTS[0] else None)
    ax_loss.set_xlabel("pretrain step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("pretraining loss")
    many = len(colors) > 6  # one legend, beside the last panel, instead of two covering the curves
    legend = {"fontsize": 6, "loc": "upper left", "bbox_to_anchor": (1.0, 1.0)} if many else {"fontsize": 7}
    if ax_loss.lines and not (many and any_eval):
        ax_loss.legend(**legend)
    if ax_eval is not None:
        ax_eval.set_xlabel("fine-tune epoch")
        ax_eval.set_ylabel("top-1 (%)")
        ax_eval.set_title("fine-tune eval")
        if ax_eval.lines:
            ax_eval.legend(**legend)
    if ax_read is not None:
        ax_read.set_xlabel("pretrain epoch")
        ax_read.set_ylabel("top-1 (%)")
        ax_read.set_title("read-outs of frozen features: kNN (solid), probe (dashed)", fontsize=9)
        ax_read.grid(alpha=0.3)
    return any_eval


def _param_order(sw: SweepRecord, name: str, values: list[Any]) -> list[Any]:
    spec = None
    try:
        import yaml

        spec = yaml.safe_load(SweepDir(sw.dir).sweep_yaml.read_text())
    except Exception:  # noqa: BLE001 - ordering only
        pass
    declared = (((spec or {}).get("params") or {}).get(name) or {}).get("values")
    if isinstance(declared, dict):
        declared = list(declared)
    if isinstance(declared, list):
        return [v for v in declared if v in values] + [v for v in values if v not in declared]
    try:
        return sorted(set(values))
    except TypeError:
        return list(dict.fromkeys(values))


def plot_sweep(sw: SweepRecord, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    params = sw.param_names or ["trial"]
    # the curves of one setting's seeds share a colour and a legend entry (seed is left out of the label)
    shown = [k for k in params if k.split(".")[-1] != "seed"] or params

    def label(t) -> str:
        return " ".join(f"{k.split('.')[-1]}={t.params[k]}" for k in shown if k in t.params) or f"trial {t.number}"

    labelled = [(label(t), _curves(t.run.run_dir)) for t in sorted(sw.trials, key=lambda t: t.number)
                if t.run is not None and t.status != "failed"]
    readouts = has_readout_curves([c for _, c in labelled])
    n = len(params) + 2 + readouts
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    axes = axes[0]
    metric = sw.metric
    for ax, p in zip(axes, params):
        done = [t for t in sw.trials if t.status == "done" and t.objective(metric) is not None]
        retried = {repr(sorted(t.params.items())) for t in done}  # a failure later run again is not shown
        failed = [t for t in sw.trials if t.status == "failed" and repr(sorted(t.params.items())) not in retried]
        vals = [t.params.get(p, t.number) if p != "trial" else t.number for t in sw.trials]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals if v is not None)
        order = _param_order(sw, p, [v for v in vals if v is not None])
        pos = (lambda v: v) if numeric else (lambda v: order.index(v) if v in order else -1)  # noqa: B023
        xs = [pos(t.params.get(p, t.number) if p != "trial" else t.number) for t in done]
        ys = [t.objective(metric) for t in done]
        ax.scatter(xs, ys, zorder=3)
        if len(set(xs)) < len(xs):  # repeated values (seeds): show the mean
            by: dict[Any, list[float]] = {}
            for x, y in zip(xs, ys):
                by.setdefault(x, []).append(y)
            kx = sorted(by)
            ax.plot(kx, [sum(by[k]) / len(by[k]) for k in kx], color="gray", lw=1)
        elif len(xs) > 1:
            pts = sorted(zip(xs, ys))
            ax.plot([a for a, _ in pts], [b for _, b in pts], color="gray", lw=1, zorder=2)
        if failed and ys:
            fx = [pos(t.params.get(p, t.number) if p != "trial" else t.number) for t in failed]
            ax.scatter(fx, [min(ys)] * len(fx), marker="x", color="red", label="failed", zorder=3)
            ax.legend(fontsize=7)
        if not numeric:
            ax.set_xticks(range(len(order)))
            ax.set_xticklabels([str(v) for v in order], rotation=30 if len(order) > 4 else 0)
        elif all(isinstance(v, (int, float)) and v > 0 for v in vals) and max(vals) / max(min(vals), 1e-300) > 50:
            ax.set_xscale("log")
        elif all(isinstance(v, int) for v in vals):  # seeds, k, depth: no 0.5 ticks
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(p)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs {p}")
        ax.grid(alpha=0.3)
    if readouts:
        _plot_curves(axes[-3], axes[-2], labelled, axes[-1])
    else:
        _plot_curves(axes[-2], axes[-1], labelled)
    fig.suptitle(f"sweep {sw.name}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_runs(runs: list[RunRecord], path: str | Path, varying: Optional[list[str]] = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    varying = varying or []

    def label(r: RunRecord) -> str:
        parts = [f"{k.split('.')[-1]}={r.spec.get(k)}" for k in varying[:3]]
        return " ".join(parts) or f"{r.experiment}/{r.run_id}"

    labelled = [(label(r), _curves(r.run_dir)) for r in runs]
    readouts = has_readout_curves([c for _, c in labelled])
    fig, axes = plt.subplots(1, 2 + readouts, figsize=(4.5 * (2 + readouts), 3.6))
    _plot_curves(axes[0], axes[1], labelled, axes[2] if readouts else None)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
