"""ARM's checkpoint key layout (OliverRensu/ARM, ``models_pretrain.py``) mapped onto starx's.

starx's pretraining model mirrors ARM's, and most names are the same: ``patch_embed.proj``,
``layers.<i>.norm1 / norm2``, ``layers.<i>.mlp.w1 / w2 / w3`` (SwiGLU) and the mixer's
mamba_ssm names (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``),
``ar_token``, ``ar_norm``, ``ar_pred``. What differs (read from ARM's code at commit 996d93e):

| ARM | starx | how |
|---|---|---|
| ``norm_1`` .. ``norm_4`` | ``enc_norms.0`` .. ``enc_norms.3`` | renamed |
| ``dec_block.<i>.attn2.{q,kv,proj}`` | ``dec_blocks.<i>.attn.{q,kv,proj}`` | renamed |
| ``dec_block.<i>.norm2_1`` / ``norm2_2`` / ``norm2`` | ``dec_blocks.<i>.norm_q`` / ``norm_kv`` / ``norm2`` | renamed |
| ``dec_block.<i>.mlp.fc1`` / ``fc2`` | ``dec_blocks.<i>.mlp.0`` / ``mlp.2`` | renamed |
| ``enc2dec`` rows ``c * m + d`` (ARM reshapes the output to (..., C, m)) | rows ``d * C + c`` (starx chunks it) | rows permuted |
| ``pos_embed``, ``dec_pos_embed`` (fixed sin-cos), ``mask`` (buffer) | recomputed, not stored | kept / dropped |

``pos_embed`` is kept (the classifier interpolates it to its grid, as ARM's fine-tuning does);
the pretraining model has no such tensor and reports it ignored. ARM has no separators:
a STAR model continued from an ARM checkpoint starts its separator fresh.
"""

from __future__ import annotations

import re
from typing import Mapping

from torch import Tensor

_RENAMES = (
    (re.compile(r"^norm_(\d+)\.(weight|bias)$"), lambda m: f"enc_norms.{int(m[1]) - 1}.{m[2]}"),
    (re.compile(r"^dec_block\.(\d+)\.attn2\.(.+)$"), lambda m: f"dec_blocks.{m[1]}.attn.{m[2]}"),
    (re.compile(r"^dec_block\.(\d+)\.norm2_1\.(.+)$"), lambda m: f"dec_blocks.{m[1]}.norm_q.{m[2]}"),
    (re.compile(r"^dec_block\.(\d+)\.norm2_2\.(.+)$"), lambda m: f"dec_blocks.{m[1]}.norm_kv.{m[2]}"),
    (re.compile(r"^dec_block\.(\d+)\.norm2\.(.+)$"), lambda m: f"dec_blocks.{m[1]}.norm2.{m[2]}"),
    (re.compile(r"^dec_block\.(\d+)\.mlp\.fc1\.(.+)$"), lambda m: f"dec_blocks.{m[1]}.mlp.0.{m[2]}"),
    (re.compile(r"^dec_block\.(\d+)\.mlp\.fc2\.(.+)$"), lambda m: f"dec_blocks.{m[1]}.mlp.2.{m[2]}"),
)
_DROPPED = ("mask", "dec_pos_embed")  # fixed tables starx recomputes


def is_arm_state(state: Mapping[str, object]) -> bool:
    """True for a state_dict in ARM's pretraining layout (its decoder names)."""
    return any(k.startswith("dec_block.") or re.match(r"^norm_\d+\.", k) for k in state)


def from_arm(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """ARM's pretraining state_dict in starx's names and layouts, and what was mapped (one line each)."""
    out: dict[str, Tensor] = {}
    renamed: list[str] = []
    dropped: list[str] = []
    for key, value in state.items():
        if key in _DROPPED:
            dropped.append(key)
            continue
        new = key
        for pattern, fn in _RENAMES:
            m = pattern.match(key)
            if m:
                new = fn(m)
                break
        if new != key:
            renamed.append(key)
        out[new] = value
    notes = []
    if renamed:
        notes.append(f"renamed {len(renamed)} ARM tensors (norm_<j> -> enc_norms.<j-1>; dec_block.<i>.attn2 / "
                     "norm2_1 / norm2_2 / mlp.fc1 / mlp.fc2 -> dec_blocks.<i>.attn / norm_q / norm_kv / mlp.0 / mlp.2)")
    n_taps = sum(1 for k in out if re.match(r"^enc_norms\.\d+\.weight$", k))
    for name in ("enc2dec.weight", "enc2dec.bias"):
        if name in out and n_taps:
            w = out[name]
            rows = w.shape[0]
            if rows % n_taps == 0:
                # ARM: output row c * m + d feeds decoder block d; starx: row d * C + c
                out[name] = w.reshape(rows // n_taps, n_taps, *w.shape[1:]).transpose(0, 1).reshape(w.shape).contiguous()
    if "enc2dec.weight" in out and n_taps:
        notes.append(f"enc2dec output rows permuted from ARM's (channel, depth) to starx's (depth, channel) order "
                     f"({n_taps} decoder depths)")
    if dropped:
        notes.append(f"dropped ARM's fixed {', '.join(dropped)} (starx recomputes them)")
    return out, notes
