"""Static model of starx's add + LayerNorm kernels (starx/ops/_layer_norm_kernels.py) for sm_90, no GPU:
registers, spills, instructions and global load / store widths at STAR-B's shape (768 channels,
bf16 branch, fp32 stream), for each tile set. Their GPU timing is whole steps
(``bash bench/speed_session.sh add_norm_k4``).

    PYTHONPATH=/tmp/t36:$PWD python bench/layer_norm.py [--fwd 2x4 1x4 ...] [--bwd 1x64x4 2x128x8 ...]

(/tmp/t36: a Triton 3.6 install, the device's version, beside the local one.)
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import sass as S  # noqa: E402
from starx.ops import _layer_norm_kernels as K  # noqa: E402
from starx.ops import layer_norm as ln  # noqa: E402

N, BLOCK_N = 768, 1024
TYPES = {"x_ptr": "*bf16", "y_ptr": "*bf16", "dy_ptr": "*bf16", "dx_ptr": "*bf16", "eps": "fp32"}  # the rest fp32


def report(kind: str, tiles: tuple[int, ...]) -> str:
    fn = K.add_ln_fwd if kind == "fwd" else K.add_ln_bwd
    types = {n: TYPES.get(n, "*fp32") for n in fn.arg_names if n.endswith("_ptr") or n == "eps"}
    consts = {"HAS_RES": True, "HAS_BIAS": True, "BM": tiles[0], "BLOCK_N": BLOCK_N} if kind == "fwd" else \
        {"HAS_DS_IN": True, "HAS_RES": True, "BM": tiles[0], "BLOCK_N": BLOCK_N, "ROWS": tiles[1]}
    sass, regs, spills = S.compile_sass(fn, types, {"M": 39936, "N": N}, consts, tiles[-1])
    loops = S.inner_loops(sass)
    count = sum(loops[-1].values()) if kind == "bwd" and loops else len(S.instructions(sass))
    widths = collections.Counter(m[1] for m in re.finditer(r"\b((?:LDG|STG)\.E[.A-Z0-9]*)", sass))
    where = "the row loop" if kind == "bwd" else "the kernel"
    return (f"{kind} {'x'.join(map(str, tiles))}: {regs} registers, {spills} bytes spilled, {count} instructions in "
            f"{where}, global {dict(widths)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fwd", nargs="*", default=["x".join(map(str, ln.TILES["fwd"]))], help="BMxWARPS")
    p.add_argument("--bwd", nargs="*", default=["x".join(map(str, ln.TILES["bwd"]))], help="BMxROWSxWARPS")
    args = p.parse_args()
    for kind in ("fwd", "bwd"):
        for t in getattr(args, kind):
            print(report(kind, tuple(int(v) for v in t.split("x"))), flush=True)


if __name__ == "__main__":
    main()
