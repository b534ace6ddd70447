"""The step benchmarks' switches between starx's own kernels and what Inductor compiles, for A / B
pairs in one device call: one owner for the flags of bench/pretrain_step.py and bench/finetune_step.py.

Each flag's default is starx's own choice (the module's USE_KERNELS or path), so a run without
flags times what a user's run gets; the JSON info records what ran (``choices``).
"""

from __future__ import annotations

import argparse

from starx.ops import inner as inner_ops
from starx.ops import layer_norm as layer_norm_ops
from starx.ops import swiglu as swiglu_ops


def add_kernel_choices(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mlp-gate", default=None, choices=["kernel", "inductor"],
                   help="the SwiGLU gate on the triton backend: starx's kernels (starx.ops.swiglu) or as Inductor "
                        "compiles silu(w1 x) * w2 x (default: starx's choice, starx.ops.swiglu.USE_KERNELS)")
    p.add_argument("--add-norm", default=None, choices=["kernel", "inductor"],
                   help="the residual add + LayerNorm on the triton backend: starx's kernels (starx.ops.layer_norm) "
                        "or the twin as Inductor compiles it (default: starx's choice, its USE_KERNELS)")
    p.add_argument("--mixer-inner", default="fused", choices=["fused", "composed"],
                   help="the unidirectional Mamba mixer's conv -> projections -> scan on the triton backend: one "
                        "autograd node (starx.ops.triton_inner, starx's) or composed of the conv's and the scan's own "
                        "autograd ops (as before 2026-12-02: autograd adds the conv output's two gradients and joins "
                        "dx and dz in kernels of their own)")


# starx's own choices, restored by a run that does not set a flag (bench/ab_step.py sets them in turn)
_STARX = {"mlp_gate": swiglu_ops.USE_KERNELS, "add_norm": layer_norm_ops.USE_KERNELS,
          "triton_conv_applies": inner_ops.triton_conv_applies}


def _composed(x, backend) -> bool:
    """triton_conv_applies for --mixer-inner composed: never, so the CPU path's composition runs, on
    the GPU's Triton conv and scan."""
    return False


def apply_kernel_choices(args: argparse.Namespace) -> dict:
    """Set the modules' switches from the flags (starx's own where a flag is not given); returns
    what runs, for the JSON info."""
    swiglu_ops.USE_KERNELS = _STARX["mlp_gate"] if args.mlp_gate is None else args.mlp_gate == "kernel"
    layer_norm_ops.USE_KERNELS = _STARX["add_norm"] if args.add_norm is None else args.add_norm == "kernel"
    inner_ops.triton_conv_applies = _composed if args.mixer_inner == "composed" else _STARX["triton_conv_applies"]
    return {"mlp_gate": "kernel" if swiglu_ops.USE_KERNELS else "inductor",
            "add_norm": "kernel" if layer_norm_ops.USE_KERNELS else "inductor", "mixer_inner": args.mixer_inner}
