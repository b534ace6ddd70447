"""A static cost model of starx's Triton kernels, with no GPU: compile a kernel for sm_90 as a
launch specialises it, disassemble it with the cuobjdump Triton ships, and count the SASS
instructions of its loops. bench/triton_conv.py and bench/triton_scan.py use it (``--sass``).

A launch specialises what the JIT sees: pointers 16-byte aligned, integer arguments that are
multiples of 16 marked so, and integers equal to 1 turned into constants (unit strides). The
model's numbers: registers and spilled bytes a thread (from ptxas), and each innermost loop's
instruction count and mix; the time to issue them is instructions x warps over 4 warp
instructions a clock a multiprocessor (H200: 132 SMs at 1.98 GHz).
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import tempfile

SMS, CLOCK = 132, 1.98e9  # H200
MIX = ("FFMA", "FMUL", "FADD", "MUFU", "SHFL", "BAR", "STS", "LDS", "LDG", "STG", "MOV", "PRMT", "IMAD")


def compile_sass(fn, types: dict[str, str], values: dict[str, int], constexprs: dict, num_warps: int,
                 maxnreg: int | None = None, gluon: bool = False, num_stages: int | None = None) -> tuple[str, int, int]:
    """(SASS, registers, spilled bytes) of ``fn`` (a Triton kernel, or with ``gluon`` a Gluon one)
    compiled for sm_90.

    types: each pointer (and float) argument's Triton type ("*bf16", "*fp32", "fp32", ...); values: each integer
    argument's launch value (it decides the specialisation); constexprs: the kernel's constexprs."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if gluon:
        from triton.experimental.gluon._runtime import GluonASTSource as ASTSource  # noqa: N814

    consts = dict(constexprs)
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif name in types:  # pointers (16-byte aligned) and floats ("fp32")
            sig[name] = types[name]
            if types[name].startswith("*"):
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif values[name] == 1:
            sig[name], consts[name] = "constexpr", 1
        else:
            sig[name] = "i32"
            if values[name] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    options = ({"num_warps": num_warps} | ({"maxnreg": maxnreg} if maxnreg else {})
               | ({"num_stages": num_stages} if num_stages else {}))  # (None: Triton's default, as a launch without it)
    cc = triton.compile(ASTSource(fn, sig, consts, attrs), target=GPUTarget("cuda", 90, 64), options=options)
    tools = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cc.asm["cubin"])
        f.flush()
        sass = subprocess.run([f"{tools}/cuobjdump", "-sass", f.name], capture_output=True, text=True).stdout
    ptxas = subprocess.run([f"{tools}/ptxas", "-arch=sm_90a", "-v", "-o", os.devnull, "-"], input=cc.asm["ptx"],
                           capture_output=True, text=True).stderr  # (maxnreg travels in the PTX)
    return sass, int(re.search(r"Used (\d+) registers", ptxas)[1]), int(re.search(r"(\d+) bytes spill stores", ptxas)[1])


def instructions(sass: str) -> list[tuple[int, str]]:
    """(address, opcode) of every instruction."""
    pattern = r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)"
    return [(int(m[1], 16), m[2].split(".")[0]) for m in map(lambda x: re.match(pattern, x), sass.splitlines()) if m]


def inner_loops(sass: str) -> list[collections.Counter]:
    """The opcode mix of each innermost loop (a backward branch's span holding no other), in
    address order."""
    instr = instructions(sass)
    spans = []
    for line in sass.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?BRA\s+0x([0-9a-f]+)", line)
        if m and int(m[2], 16) < int(m[1], 16):
            spans.append((int(m[2], 16), int(m[1], 16)))
    innermost = [s for s in spans if not any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in spans)]
    return [collections.Counter(op for a, op in instr if lo <= a <= hi) for lo, hi in sorted(innermost)]


def resident_warps(registers: int, warps_per_program: int) -> int:
    """Warps a multiprocessor holds at ``registers`` a thread (whole programs, at most 64)."""
    return min(64, 65536 // (32 * registers) // warps_per_program * warps_per_program)


def issue_ms(instructions_total: float, warps: int) -> float:
    """Time to issue ``instructions_total`` instructions in each of ``warps`` warps."""
    return instructions_total * warps / (SMS * 4 * CLOCK) * 1e3


def mix(counts: collections.Counter) -> str:
    return " ".join(f"{k} {counts[k]}" for k in MIX if counts[k])
