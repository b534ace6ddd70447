"""Read an ncu per-SASS-instruction export (speed_session.sh's ncu_* parts write ``<part>_sass.csv``
with ``ncu -i REP --page source --csv --print-source sass``): where a scan kernel's loop spends its
issue slots and its stalls, without ncu installed here.

    python bench/ncu_summary.py bench/results/ncu_scan_bwd_h200_gluon_k4_sass.csv.gz [--top 6]

Prints the instructions a warp executes per step of its hottest loop (a step: the execution count
of an instruction that accounts for the most executions, i.e. warps x steps), the opcode mix per step with each opcode's
share of the stall samples, the stall reasons over the whole kernel, and the instructions holding
the most samples of the main reasons (what a loop waits on, e.g. a loop-carried copy of a load).
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import io
from pathlib import Path


def read(path: Path) -> tuple[list[str], list[list[str]]]:
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    rows = list(csv.reader(io.StringIO(text)))
    start = next(i for i, r in enumerate(rows) if r and r[0] == "Address")  # (a kernel-name line precedes it)
    return rows[start], [r for r in rows[start + 1 :] if len(r) == len(rows[start])]


def opcode(source: str) -> str:
    words = source.split()
    op = words[1] if words and words[0].startswith("@") and len(words) > 1 else (words[0] if words else "?")
    return op.split(".")[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", type=Path)
    p.add_argument("--top", type=int, default=6, help="instructions listed per stall reason")
    args = p.parse_args()
    header, rows = read(args.csv)
    col = {name: i for i, name in enumerate(header)}
    num = lambda r, name: int(r[col[name]] or 0)  # noqa: E731
    executed = [num(r, "Instructions Executed") for r in rows]
    # warps x steps of the hot loop: the execution count holding the most executions
    step = max(collections.Counter(e for e in executed if e).items(), key=lambda kv: kv[0] * kv[1])[0]
    samples = sum(num(r, "Warp Stall Sampling (All Samples)") for r in rows)
    mix, share = collections.Counter(), collections.Counter()
    for r, e in zip(rows, executed):
        op = opcode(r[col["Source"]])
        mix[op] += e
        share[op] += num(r, "Warp Stall Sampling (All Samples)")
    print(f"{args.csv.name}: {sum(executed) / step:.0f} instructions a warp-step over the kernel "
          f"(a step = {step} warp-executions), {samples} stall samples")
    print("opcode mix a step (share of samples):")
    print("  " + "  ".join(f"{op} {n / step:.1f} ({share[op] / samples:.0%})" for op, n in mix.most_common(24)))
    reasons = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]
    totals = {h: sum(num(r, h) for r in rows) for h in reasons}
    total = sum(totals.values()) or 1
    print("stall reasons: " + "  ".join(f"{h[6:]} {v / total:.1%}" for h, v in
                                        sorted(totals.items(), key=lambda x: -x[1]) if v / total >= 0.01))
    for h in sorted(totals, key=lambda x: -totals[x])[:4]:
        top = sorted(range(len(rows)), key=lambda i: -num(rows[i], h))[: args.top]
        print(f"{h[6:]}: " + "; ".join(f"{rows[i][col['Source']].strip()[:48]} ({num(rows[i], h)})" for i in top))


if __name__ == "__main__":
    main()
