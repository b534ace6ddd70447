"""The read-outs a sweep's runs took during pretraining (``eval.every_epochs``), paired per epoch.

`starx results --paired-against` pairs the final read-out of each trial; this pairs the ones in
between, from each run's metrics.jsonl, with the same code (``mean_over`` / ``paired_against`` of
starx.results.table): one row per (setting, pretraining epoch), the mean and sample std over
``--over`` (default seed) and the paired difference to the reference with its 95% t-interval.

    python bench/readout_trajectory.py reproduction_long --root /tmp/r/results --against recipe=arm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from starx.results.catalog import load_sweep_record
from starx.results.table import Tabular, paired_against

READOUTS = ("knn_top1", "probe_top1")


def pretrain_readouts(run_dir: Path) -> dict[float, dict]:
    """{pretraining epoch: the eval record} from a run's metrics.jsonl."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("stage") == "pretrain" and rec.get("kind") == "eval" and any(m in rec for m in READOUTS):
            out[float(rec["epoch"])] = rec
    return out


def trajectory_table(root: Path, sweep: str) -> Tabular:
    sw = load_sweep_record(root, sweep)
    params = [p for p in (sw.trials[0].params if sw.trials else {})] + ["epoch"]
    rows = []
    for t in sw.trials:
        if t.run is None or not (t.run.run_dir / "metrics.jsonl").is_file():
            continue
        for epoch, rec in sorted(pretrain_readouts(t.run.run_dir).items()):
            rows.append({**t.params, "epoch": epoch, "state": "done", **{m: rec[m] for m in READOUTS if m in rec}})
    return Tabular(f"{sweep}: read-outs during pretraining", params + list(READOUTS), rows, params=params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep")
    ap.add_argument("--root", type=Path, default=Path("results"))
    ap.add_argument("--over", default="seed", help="the parameter the pairs are over")
    ap.add_argument("--against", required=True, help="the reference, PARAMETER=VALUE (e.g. recipe=arm)")
    args = ap.parse_args()
    table = trajectory_table(args.root, args.sweep)
    for m in READOUTS:
        print(f"{m}: mean (std) over {args.over}, and minus {args.against} at the same {args.over} [95% t-interval]")
        paired = paired_against(table, [args.over], [args.against], metric=m)
        for r in sorted(paired.rows, key=lambda r: (r["epoch"], [str(r[k]) for k in paired.params])):
            setting = " ".join(f"{k}={r[k]}" for k in paired.params if k != "epoch")
            line = f"  epoch {r['epoch']:4g}  {setting:16s} {r[m]:6.2f} ({r.get(f'{m}_std', float('nan')):.2f})"
            if f"{m}_diff" in r:
                line += f"  {r[f'{m}_diff']:+.2f} [{r.get(f'{m}_diff_lo', float('nan')):+.2f}, {r.get(f'{m}_diff_hi', float('nan')):+.2f}]"
            print(line)


if __name__ == "__main__":
    main()
