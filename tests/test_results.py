"""Results and status read fixture run directories (no engine): tables, sorting, CSV/Markdown,
plots, failed runs with their error lines, and no torch/optuna import on the way."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from starx.cli import jobs as jobs_cli
from starx.results.catalog import ResultsError, resolve
from starx.results.status import job_rows, status_table
from starx.results.table import mean_over, paired_against, runs_table, sort_rows, sweep_table, t975, to_csv, to_markdown


def make_run(root: Path, exp: str, run_id: str, k: int, status: str | None, top1: float | None = None,
             error: str | None = None, launch: dict | None = None) -> Path:
    d = root / exp / run_id
    d.mkdir(parents=True)
    spec = {"experiment": exp, "seed": 0, "model": {"seq_multiplier": k, "separator": "cluster"},
            "launch": {"kind": "local"}, "output_dir": str(root)}
    (d / "spec.yaml").write_text(yaml.safe_dump(spec))
    (d / "derived.json").write_text("{}")
    with open(d / "metrics.jsonl", "w") as f:
        for step in range(1, 6):
            f.write(json.dumps({"stage": "pretrain", "step": step, "loss": 1.0 / step + k / 100, "lr": 1e-3}) + "\n")
        if top1 is not None:
            f.write(json.dumps({"stage": "finetune", "kind": "eval", "epoch": 1, "top1": top1 - 1}) + "\n")
            f.write(json.dumps({"stage": "finetune", "kind": "eval", "epoch": 2, "top1": top1}) + "\n")
    if status is not None:
        metrics = {} if top1 is None else {"top1": top1, "top1_ema": top1 - 0.5, "pretrain_loss": 0.2 + k / 100,
                                           "pretrain_steps": 5}
        (d / "result.json").write_text(json.dumps({
            "experiment": exp, "run_id": run_id, "status": status, "metrics": metrics,
            "wall_time_s": 65.0 * k, "versions": {}, "device": "cpu", "error": error}))
    if launch is not None:
        (d / "launch.json").write_text(json.dumps({"submitted": time.time() - 100, **launch}))
    return d


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "results"
    a = make_run(r, "exp", "k1", 1, "done", 70.0, launch={"backend": "local", "job_id": None, "pid": 1 << 30})
    b = make_run(r, "exp", "k4", 4, "done", 75.5, launch={"backend": "subprocess", "job_id": "1073741823",
                                                         "folder": str(r / "exp" / "k4" / "launch")})
    c = make_run(r, "exp", "k8", 8, "failed", None, error="Traceback (most recent call last):\n  File x\n"
                 "FloatingPointError: non-finite loss at step 12", launch={"backend": "local", "pid": 1 << 30})
    d = make_run(r, "exp", "k2", 2, None, None, launch={"backend": "subprocess", "job_id": "1073741822",
                                                        "folder": str(r / "exp" / "k2" / "launch")})
    make_run(r, "other", "o1", 1, "done", 60.0)
    sw = r / "ksweep"
    sw.mkdir()
    trials = [
        {"number": 0, "state": "COMPLETE", "params": {"model.seq_multiplier": 1}, "value": 70.0, "run_dir": str(a)},
        {"number": 1, "state": "COMPLETE", "params": {"model.seq_multiplier": 4}, "value": 75.5, "run_dir": str(b)},
        {"number": 2, "state": "FAIL", "params": {"model.seq_multiplier": 8}, "value": None, "run_dir": str(c),
         "fail_reason": "Traceback ...\nFloatingPointError: non-finite loss at step 12"},
        {"number": 3, "state": "RUNNING", "params": {"model.seq_multiplier": 2}, "value": None, "run_dir": str(d)},
    ]
    (sw / "trials.json").write_text(json.dumps({
        "name": "ksweep", "objective": {"metric": "top1", "direction": "maximize"}, "sampler": "grid",
        "params": ["model.seq_multiplier"], "n_trials": 4,
        "best": {"number": 1, "value": 75.5, "params": {"model.seq_multiplier": 4}}, "trials": trials}))
    (sw / "sweep.yaml").write_text(yaml.safe_dump({"params": {"model.seq_multiplier": {"values": [1, 2, 4, 8]}}}))
    return r


def app() -> typer.Typer:
    a = typer.Typer()
    for name in ("results", "status", "sweep"):
        a.command(name)(getattr(jobs_cli, name))
    return a


def test_experiment_table_shows_differing_keys_metrics_and_states(root):
    kind, runs = resolve(root, "exp")
    assert kind == "experiment" and len(runs) == 4
    t = runs_table(runs)
    assert t.columns[:2] == ["run_id", "model.seq_multiplier"]
    assert {"top1", "top1_ema", "pretrain_loss", "state", "wall"} <= set(t.columns)
    assert "pretrain_steps" not in t.columns and "pretrain_steps" in t.csv_columns
    state = {r["run_id"]: r["state"] for r in t.rows}
    assert state == {"k1": "done", "k4": "done", "k8": "failed", "k2": "lost"}
    assert any("non-finite loss" in n for n in t.notes)


def test_all_runs_view_has_an_experiment_column(root):
    kind, runs = resolve(root, None)
    t = runs_table(runs)
    assert kind == "all" and t.columns[0] == "experiment" and len(t.rows) == 5


def test_sweep_table_sorted_by_objective_best_first(root):
    kind, sw = resolve(root, "ksweep")
    assert kind == "sweep"
    t = sweep_table(sw)
    assert t.columns[:3] == ["trial", "model.seq_multiplier", "top1"]
    sort_rows(t, "top1")
    assert [r["trial"] for r in t.rows] == [1, 0, 2, 3]  # blanks last
    sort_rows(t, "top1", reverse=False)
    assert [r["trial"] for r in t.rows][:2] == [0, 1]
    states = {r["trial"]: r["state"] for r in t.rows}
    assert states == {0: "done", 1: "done", 2: "failed", 3: "lost"}
    assert t.notes[0].startswith("best: trial 1") and "non-finite loss" in t.notes[1]
    with pytest.raises(ValueError, match="did you mean 'top1'"):
        sort_rows(t, "topp1")


def test_mean_over_seeds_gives_mean_and_spread_per_setting(tmp_path):
    r = tmp_path / "results"
    values = {("arm", 0): 87.0, ("arm", 1): 88.0, ("star", 0): 86.0, ("star", 1): 86.5, ("star", 2): 87.5}
    trials = []
    for i, ((recipe, seed), top1) in enumerate(values.items()):
        run = make_run(r, "exp", f"{recipe}{seed}", 4, "done", top1)
        trials.append({"number": i, "state": "COMPLETE", "params": {"seed": seed, "recipe": recipe}, "value": top1,
                       "run_dir": str(run)})
    trials.append({"number": 9, "state": "FAIL", "params": {"seed": 3, "recipe": "star"}, "value": None,
                   "run_dir": str(make_run(r, "exp", "star3", 4, "failed", None, error="boom"))})
    (r / "sw").mkdir()
    (r / "sw" / "trials.json").write_text(json.dumps({
        "name": "sw", "objective": {"metric": "top1", "direction": "maximize"}, "sampler": "grid",
        "params": ["seed", "recipe"], "n_trials": 6, "trials": trials}))
    t = mean_over(sweep_table(resolve(r, "sw")[1]), ["seed"])
    rows = {row["recipe"]: row for row in t.rows}
    assert t.columns[:4] == ["recipe", "n", "top1", "top1_std"] and set(rows) == {"arm", "star"}
    assert rows["arm"]["n"] == 2 and rows["arm"]["top1"] == pytest.approx(87.5)
    assert rows["arm"]["top1_std"] == pytest.approx(0.5 ** 0.5)  # sample std of 87, 88
    assert rows["star"]["n"] == 3 and rows["star"]["top1"] == pytest.approx(86.6666667)  # the failed trial left out
    assert rows["star"]["top1_std"] == pytest.approx(0.7637626)
    assert "pretrain_loss_std" in t.csv_columns and "wall_std" not in t.csv_columns
    with pytest.raises(ValueError, match="did you mean 'seed'"):
        mean_over(sweep_table(resolve(r, "sw")[1]), ["sed"])
    res = CliRunner().invoke(app(), ["results", "sw", "--root", str(r), "--mean-over", "seed",
                                     "--csv", str(tmp_path / "m.csv")])
    assert res.exit_code == 0, res.output
    with open(tmp_path / "m.csv") as f:
        got = {row["recipe"]: row for row in csv.DictReader(f)}
    assert float(got["star"]["top1"]) == pytest.approx(86.6666667) and got["star"]["n"] == "3"


def _seed_sweep(r: Path, values: dict[tuple, float | None], params: list[str], k: dict[str, int]) -> None:
    """A grid sweep 'sw' over ``params`` whose trials finished with these top1 values (None: failed)."""
    trials = []
    for i, (point, top1) in enumerate(values.items()):
        label = "-".join(map(str, point))
        run = make_run(r, "exp", label, k[point[params.index("recipe")]], "done" if top1 is not None else "failed",
                       top1, error=None if top1 is not None else "boom")
        trials.append({"number": i, "state": "COMPLETE" if top1 is not None else "FAIL",
                       "params": dict(zip(params, point)), "value": top1, "run_dir": str(run)})
    (r / "sw").mkdir()
    (r / "sw" / "trials.json").write_text(json.dumps({
        "name": "sw", "objective": {"metric": "top1", "direction": "maximize"}, "sampler": "grid",
        "params": params, "n_trials": len(trials), "trials": trials}))


def test_paired_against_gives_per_seed_differences_with_a_t_interval(tmp_path):
    r = tmp_path / "results"
    _seed_sweep(r, {(0, "arm"): 87.0, (1, "arm"): 88.0, (2, "arm"): 87.5,
                    (0, "star"): 86.0, (1, "star"): 87.5, (2, "star"): 86.5,
                    (0, "k8"): 85.0, (1, "k8"): None, (2, "k8"): 86.0,
                    (0, "scratch"): 84.0},
                ["seed", "recipe"], {"arm": 1, "star": 4, "k8": 8, "scratch": 4})
    t = paired_against(sweep_table(resolve(r, "sw")[1]), ["seed"], ["recipe=arm"])
    rows = {row["recipe"]: row for row in t.rows}
    assert t.columns == ["recipe", "n", "top1", "top1_std", "top1_diff_n", "top1_diff", "top1_diff_std",
                         "top1_diff_lo", "top1_diff_hi"]
    assert "top1_diff" not in rows["arm"] and rows["arm"]["top1"] == pytest.approx(87.5)  # the reference
    # star - arm per seed: -1.0, -0.5, -1.0 -> mean -5/6, sample std sqrt(1/12), t(0.975; 2) = 4.3027
    star = rows["star"]
    assert star["top1_diff_n"] == 3 and star["top1_diff"] == pytest.approx(-5 / 6)
    assert star["top1_diff_std"] == pytest.approx(0.2886751)
    half = 4.3027 * 0.2886751 / 3 ** 0.5  # 0.7171167
    assert star["top1_diff_lo"] == pytest.approx(-5 / 6 - half) and star["top1_diff_hi"] == pytest.approx(-5 / 6 + half)
    assert star["top1_diff_lo"] == pytest.approx(-1.550450, abs=1e-5) and star["top1_diff_hi"] == pytest.approx(-0.116217,
                                                                                                                  abs=1e-5)
    # k8 failed at seed 1: two pairs (-2.0, -1.5), t(0.975; 1) = 12.7062 -> -1.75 +- 12.7062 * 0.25
    k8 = rows["k8"]
    assert k8["n"] == 2 and k8["top1_diff_n"] == 2 and k8["top1_diff"] == pytest.approx(-1.75)
    assert k8["top1_diff_std"] == pytest.approx(0.3535534)
    assert (k8["top1_diff_lo"], k8["top1_diff_hi"]) == (pytest.approx(-4.926550), pytest.approx(1.426550))
    # one pair: a difference, no spread and no interval
    assert rows["scratch"]["top1_diff"] == pytest.approx(-3.0) and rows["scratch"]["top1_diff_n"] == 1
    assert "top1_diff_std" not in rows["scratch"] and "top1_diff_lo" not in rows["scratch"]
    # every metric's differences in the CSV: pretrain_loss is 0.2 + k/100, so star - arm = 0.03 at each seed
    assert star["pretrain_loss_diff"] == pytest.approx(0.03) and star["pretrain_loss_diff_std"] == pytest.approx(0)
    assert star["top1_ema_diff_lo"] == pytest.approx(star["top1_diff_lo"])  # top1_ema = top1 - 0.5
    assert {"top1_diff", "top1_diff_lo", "top1_diff_hi", "top1_diff_n", "pretrain_loss_diff"} <= set(t.csv_columns)
    assert any("recipe=arm" in n for n in t.notes) and "paired against recipe=arm" in t.title
    # another metric on the screen
    t5 = paired_against(sweep_table(resolve(r, "sw")[1]), ["seed"], ["recipe=arm"], metric="pretrain_loss")
    assert t5.columns[2:5] == ["pretrain_loss", "pretrain_loss_std", "pretrain_loss_diff_n"]

    res = CliRunner().invoke(app(), ["results", "sw", "--root", str(r), "--mean-over", "seed",
                                     "--paired-against", "recipe=arm", "--csv", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    assert "paired against recipe=arm" in res.output
    with open(tmp_path / "p.csv") as f:
        got = {row["recipe"]: row for row in csv.DictReader(f)}
    assert float(got["star"]["top1_diff"]) == pytest.approx(-5 / 6)
    assert float(got["star"]["top1_diff_hi"]) == pytest.approx(-0.116217, abs=1e-5)
    assert got["arm"]["top1_diff"] == "" and got["k8"]["top1_diff_n"] == "2"


def test_paired_against_keeps_the_other_parameters_and_refuses_bad_references(tmp_path):
    r = tmp_path / "results"
    # two pretraining lengths: star at 32 epochs is paired with arm at 32 epochs, not at 8
    _seed_sweep(r, {(0, "arm", 8): 87.0, (1, "arm", 8): 88.0, (0, "star", 8): 86.0, (1, "star", 8): 87.0,
                    (0, "arm", 32): 88.0, (1, "arm", 32): 89.0, (0, "star", 32): 88.5, (1, "star", 32): 89.5},
                ["seed", "recipe", "ep"], {"arm": 1, "star": 4})
    t = paired_against(sweep_table(resolve(r, "sw")[1]), ["seed"], ["recipe=arm"])
    rows = {(row["recipe"], row["ep"]): row for row in t.rows}
    assert rows[("star", 8)]["top1_diff"] == pytest.approx(-1.0) and rows[("star", 8)]["top1_diff_std"] == 0
    assert rows[("star", 32)]["top1_diff"] == pytest.approx(0.5)
    assert "top1_diff" not in rows[("arm", 32)]
    # both keys named: every row against arm at 8 epochs (an int value given as text)
    t2 = paired_against(sweep_table(resolve(r, "sw")[1]), ["seed"], ["recipe=arm", "ep=8"])
    rows2 = {(row["recipe"], row["ep"]): row for row in t2.rows}
    assert rows2[("arm", 32)]["top1_diff"] == pytest.approx(1.0) and rows2[("star", 32)]["top1_diff"] == pytest.approx(1.5)
    sw = sweep_table(resolve(r, "sw")[1])
    with pytest.raises(ValueError, match="no finished row has recipe=amr .*recipe: arm, star"):
        paired_against(sw, ["seed"], ["recipe=amr"])
    with pytest.raises(ValueError, match="did you mean 'recipe'"):
        paired_against(sw, ["seed"], ["recipie=arm"])
    with pytest.raises(ValueError, match="what the rows are paired over"):
        paired_against(sw, ["seed"], ["seed=0"])
    with pytest.raises(ValueError, match="PARAMETER=VALUE"):
        paired_against(sw, ["seed"], ["arm"])
    res = CliRunner().invoke(app(), ["results", "sw", "--root", str(r), "--paired-against", "recipe=arm"])
    assert res.exit_code == 2 and "--mean-over" in res.output


def test_throughput_per_stage_from_metrics_jsonl(tmp_path):
    r = tmp_path / "results"
    d = make_run(r, "exp", "k4", 4, "done", 80.0)
    with open(d / "metrics.jsonl", "a") as f:
        for step, ips in ((50, 900.0), (100, 2000.0), (150, 2100.0), (200, 1900.0)):  # the first is warm-up
            f.write(json.dumps({"stage": "pretrain", "step": step, "loss": 0.5, "images_per_s": ips}) + "\n")
        f.write(json.dumps({"stage": "pretrain", "kind": "eval", "step": 200, "knn_top1": 70.0,
                            "images_per_s": 1.0}) + "\n")  # an eval line is not training
        for step, ips in ((50, 300.0), (100, 310.0), (150, 320.0)):
            f.write(json.dumps({"stage": "finetune", "step": step, "loss": 0.9, "images_per_s": ips}) + "\n")
        f.write('{"stage": "finetune", "step": 200, "images_per_s": 1')  # a torn last line
    runs = resolve(r, "exp")[1]
    m = runs[0].metrics
    assert m["pretrain_images_per_s"] == pytest.approx(2000.0)  # median of 2000, 2100, 1900
    assert m["finetune_images_per_s"] == pytest.approx(315.0)  # median of 310, 320
    assert m["top1"] == 80.0
    t = runs_table(runs)  # in the CSV (and on the screen with --all-metrics)
    assert {"pretrain_images_per_s", "finetune_images_per_s"} <= set(t.csv_columns)
    assert "finetune_images_per_s" in runs_table(runs, all_metrics=True).columns


def test_sweep_copied_from_another_machine_finds_its_runs_by_experiment_and_run_id(tmp_path):
    """trials.json records the absolute run directories of the machine that ran the sweep; here the
    results folder lives elsewhere, and each trial's run is found as <root>/<experiment>/<run_id>."""
    r = tmp_path / "results"
    make_run(r, "fmnist_gpu", "star_tiny-k4-s0", 4, "done", 86.5)
    (r / "sw").mkdir()
    (r / "sw" / "trials.json").write_text(json.dumps({
        "name": "sw", "objective": {"metric": "top1", "direction": "maximize"}, "sampler": "grid",
        "params": ["seed"], "n_trials": 2, "trials": [
            {"number": 0, "state": "COMPLETE", "params": {"seed": 0}, "value": 86.5,
             "run_dir": "/elsewhere/results/fmnist_gpu/star_tiny-k4-s0", "run_id": "star_tiny-k4-s0",
             "experiment": "fmnist_gpu", "metrics": {"top1": 86.5}},
            {"number": 1, "state": "COMPLETE", "params": {"seed": 1}, "value": 86.0,
             "run_dir": "/elsewhere/results/fmnist_gpu/gone", "run_id": "../../gone", "experiment": "fmnist_gpu",
             "metrics": {"top1": 86.0}, "wall_time_s": 12.0}]}))
    sw = resolve(r, "sw")[1]
    first, second = sw.trials
    assert first.run is not None and first.run.run_dir == r / "fmnist_gpu" / "star_tiny-k4-s0"
    assert first.metrics["pretrain_loss"] == pytest.approx(0.24) and first.wall_time_s == 260.0  # from result.json
    assert second.run is None and second.metrics == {"top1": 86.0} and second.wall_time_s == 12.0  # trials.json's


def test_t975_matches_students_t():
    assert t975(1) == pytest.approx(12.7062) and t975(2) == pytest.approx(4.3027) and t975(30) == pytest.approx(2.0423)
    # beyond the table: the expansion, against t(0.975; 40 / 60 / 120) = 2.0211 / 2.0003 / 1.9799
    assert (t975(40), t975(60), t975(120)) == (pytest.approx(2.02108, abs=1e-5), pytest.approx(2.00030, abs=1e-5),
                                               pytest.approx(1.97993, abs=1e-5))
    assert t975(31) < t975(30) and t975(10 ** 6) == pytest.approx(1.959964, abs=1e-5)
    with pytest.raises(ValueError):
        t975(0)


def test_csv_and_markdown_exports(root, tmp_path):
    _, sw = resolve(root, "ksweep")
    t = sweep_table(sw)
    to_csv(t, tmp_path / "t.csv")
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert rows[1]["top1"] == "75.5" and rows[1]["pretrain_steps"] == "5" and rows[2]["state"] == "failed"
    md = to_markdown(t)
    lines = md.splitlines()
    assert lines[2].startswith("| trial | model.seq_multiplier | top1 |")
    assert lines[3].startswith("|---:|---:|---:|")
    assert "| 1 | 4 | 75.5 |" in md and "1m05s" in md


def test_plots_are_written(root, tmp_path):
    from starx.results.plot import plot_runs, plot_sweep

    _, sw = resolve(root, "ksweep")
    p = plot_sweep(sw, tmp_path / "sweep.png")
    assert p.stat().st_size > 10_000 and p.read_bytes()[:4] == b"\x89PNG"
    _, runs = resolve(root, "exp")
    assert plot_runs(runs, tmp_path / "runs.png", ["model.seq_multiplier"]).stat().st_size > 10_000


def test_the_seeds_of_one_setting_share_a_colour_and_a_legend_entry(root):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from starx.results.plot import _curves, _plot_curves

    k1, k4 = _curves(root / "exp" / "k1"), _curves(root / "exp" / "k4")
    fig, (loss, ev) = plt.subplots(1, 2)
    _plot_curves(loss, ev, [("recipe=arm", k1), ("recipe=star", k4), ("recipe=arm", k4)])
    assert [t.get_text() for t in ev.get_legend().get_texts()] == ["recipe=arm", "recipe=star"]
    colours = [line.get_color() for line in ev.lines]
    assert colours[0] == colours[2] != colours[1]
    plt.close(fig)


def test_a_run_that_finished_after_its_driver_stopped_counts_with_its_own_metric(root):
    """The study still says RUNNING (its driver had stopped launching and recording), but the run
    finished: the table, the means and the plot read the objective from the run."""
    path = root / "ksweep" / "trials.json"
    info = json.loads(path.read_text())
    info["trials"][1].update(state="RUNNING", value=None)
    path.write_text(json.dumps(info))
    _, sw = resolve(root, "ksweep")
    t = sw.trials[1]
    assert (t.status, t.value, t.objective("top1")) == ("done", None, 75.5)
    rows = sweep_table(sw).rows
    assert [r["top1"] for r in rows if r["trial"] == 1] == [75.5]


def test_readouts_taken_during_pretraining_get_their_own_panel(root, tmp_path):
    import struct

    from starx.results.plot import _curves, has_readout_curves, plot_sweep

    _, sw = resolve(root, "ksweep")
    before = plot_sweep(sw, tmp_path / "before.png").read_bytes()
    k4 = root / "exp" / "k4"
    with open(k4 / "metrics.jsonl", "a") as f:
        for epoch, knn, probe in ((8.0, 61.0, 66.5), (16.0, 64.0, 70.0)):
            f.write(json.dumps({"stage": "pretrain", "kind": "eval", "step": int(epoch * 10), "epoch": epoch,
                                "knn_top1": knn, "probe_top1": probe}) + "\n")
    c = _curves(k4)
    assert c.readouts == {"knn_top1": [(8.0, 61.0), (16.0, 64.0)], "probe_top1": [(8.0, 66.5), (16.0, 70.0)]}
    assert [e for e, _ in c.evals] == [1.0, 2.0]  # the fine-tune curve is unchanged
    assert has_readout_curves([c]) and not has_readout_curves([_curves(root / "exp" / "k1")])
    after = plot_sweep(sw, tmp_path / "after.png").read_bytes()
    width = lambda png: struct.unpack(">I", png[16:20])[0]  # noqa: E731 - the PNG header's IHDR width
    assert width(after) > width(before) * 1.2  # one more panel: 3 -> 4


def test_unknown_name_suggests_the_closest(root):
    with pytest.raises(ResultsError, match="did you mean 'ksweep'"):
        resolve(root, "ksweeep")
    res = CliRunner().invoke(app(), ["results", "ksweeep", "--root", str(root)])
    assert res.exit_code == 2 and "did you mean 'ksweep'" in res.output


def test_results_cli_writes_exports(root, tmp_path):
    res = CliRunner().invoke(app(), ["results", "ksweep", "--root", str(root), "--sort", "top1",
                                     "--csv", str(tmp_path / "a.csv"), "--markdown", str(tmp_path / "a.md")])
    assert res.exit_code == 0, res.output
    assert "best: trial 1" in res.output and (tmp_path / "a.csv").exists() and (tmp_path / "a.md").exists()
    res = CliRunner().invoke(app(), ["results", "--root", str(root), "--sort", "nope"])
    assert res.exit_code == 2 and "cannot sort by 'nope'" in res.output


def test_status_lists_jobs_with_the_failure_lines(root):
    rows = job_rows(root, "exp")
    assert [j.run.run_id for j in rows] and len(rows) == 4  # every launched run
    t = status_table(rows)
    by = {r["run_id"]: r for r in t.rows}
    assert by["k8"]["state"] == "failed" and by["k2"]["state"] == "lost" and by["k4"]["backend"] == "subprocess"
    assert any("FloatingPointError: non-finite loss at step 12" in n for n in t.notes)
    res = CliRunner().invoke(app(), ["status", "ksweep", "--root", str(root)])
    assert res.exit_code == 0 and "non-finite loss" in res.output


def test_results_and_status_import_neither_torch_nor_optuna(root):
    """They answer at once on a login node because they never import the heavy stacks (the time
    itself is not asserted: timing belongs to bench/, not to tests on shared CI cores)."""
    code = ("import sys; from starx.cli import jobs as jobs_cli; "
            "jobs_cli.results(sys.argv[1], sort='top1', reverse=False, csv=None, markdown=None, plot=None, "
            "all_metrics=False, mean_over_=None, paired_against_=None, paired_metric=None, root=__import__('pathlib').Path(sys.argv[2])); "
            "jobs_cli.status(None, root=__import__('pathlib').Path(sys.argv[2]), lines=5); "
            "bad = [m for m in ('torch', 'optuna', 'submitit', 'matplotlib') if m in sys.modules]; "
            "print('HEAVY', bad)")
    out = subprocess.run([sys.executable, "-c", code, "ksweep", str(root)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout.splitlines(), out.stdout
    assert "ksweep" in out.stdout  # the table was printed
