"""Did a refactor of the scan kernels change what runs on the GPU? A fingerprint of the sm_90 SASS
of scan_fwd, scan_bwd and the Gluon scan_bwd_rows at the k=4 launch (bench/triton_scan.py's
launch_spec), with starx's fast math setting (TILES["fast_math"]), under constexpr combinations that cover every
branch (dt bias, softplus, resets, gate, atomic sums); no GPU needed. Identical fingerprints before and after a change mean identical
instructions, so the GPU tests and timings recorded for the old code hold for the new.

    PYTHONPATH=/path/to/triton-3.6:$PWD python bench/sass_fingerprint.py > before.txt
    (edit)  ... > after.txt; diff before.txt after.txt

Use the device's Triton (3.6 on the H200 machine: pip install --no-deps --target DIR triton==3.6.0),
as the SASS depends on the compiler's version.
"""

import hashlib
import itertools

from bench import sass as S
from bench.triton_scan import launch_spec
from starx.ops import _gluon_scan_kernels as G
from starx.ops import _triton_scan_kernels as K
from starx.ops import triton_scan as ts

KERNELS = [("scan_fwd", K.scan_fwd, False), ("scan_bwd", K.scan_bwd, False), ("scan_bwd_rows", G.scan_bwd_rows, True)]
# (HAS_BIAS, SOFTPLUS, HAS_RESET, HAS_Z, ATOMIC_SUMS)
CASES = [(1, 1, 0, 1, 1), (0, 0, 1, 1, 0), (1, 1, 1, 0, 1), (0, 1, 0, 1, 1)]


def fingerprint(sass: str) -> str:
    """SHA-1 of the instructions alone (cuobjdump's /*address*/ columns dropped)."""
    body = "\n".join(line.split("*/", 1)[-1] for line in sass.splitlines() if "/*" in line and "*/" in line)
    return hashlib.sha1(body.encode()).hexdigest()[:12]


def main() -> None:
    import triton

    print(f"# Triton {triton.__version__}, sm_90, k=4 launch; kernel HAS_BIAS SOFTPLUS HAS_RESET HAS_Z ATOMIC_SUMS"
          " registers spilled sha1")
    for (name, fn, gluon), case in itertools.product(KERNELS, CASES):
        types, values, consts = launch_spec(fn, "k4", 32, 16, 1, 2)
        for key, v in zip(("HAS_BIAS", "SOFTPLUS", "HAS_RESET", "HAS_Z", "ATOMIC_SUMS"), case):
            if key in consts:
                consts[key] = bool(v)
        consts["FAST_MATH"] = int(ts.fast_math_in("fwd" if name == "scan_fwd" else "bwd", ts.TILES["fast_math"]))
        if gluon:  # launched as starx launches it on a Hopper GPU (B and C packed where it may: k=4's are)
            default = ts.default_backward("cuda", False)
            consts |= default.constants | ({"PACKED_BC": True} if default.pack_bc else {})
        sass, regs, spills = S.compile_sass(fn, types, values, consts, 1, gluon=gluon)
        print(name, *case, regs, spills, fingerprint(sass), flush=True)


if __name__ == "__main__":
    main()
