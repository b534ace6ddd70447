"""Patch an unpacked mamba-ssm 2.3.2.post1 source tree: selectable selective-scan chunking.

Why: stock mamba-ssm sizes the scan's chunk to the next power of two at or above the sequence
(up to 2048 tokens): 512 < L <= 1024 runs as one chunk of 64 threads x 16 items, so STAR's k=4
sequence (624 tokens) pays for 1024, and k=8 (1264) for 2048. The kernels already carry the
scan state from chunk to chunk (they do so past 2048 tokens), so a shorter chunk repeated
ceil(L / chunk) times pads less. This patch:

* adds ``scan_config(seqlen, is_complex)`` to selective_scan.h, the one place that says which
  (threads, items) runs a given length;
* makes the forward and backward launchers and both ``n_chunks`` computations in
  selective_scan.cpp (the per-chunk states the backward reads) follow it;
* reads ``MAMBA_SCAN_CONFIG`` once per process, the configuration for every L > 256: ``stock``
  (or unset: mamba-ssm's behaviour, unchanged), ``auto`` (the least padded length x measured
  cost per token; starx sets this), or one of ``64x16``, ``32x24``, ``32x16``, ``32x8``,
  ``32x4``. Complex weights always keep the stock choice.
* restricts the build to sm_90 (H100 / H200).

Usage: python patch_mamba_ssm.py <mamba_ssm-2.3.2.post1 source dir>
Every replacement asserts that it matched exactly once, so another release fails loudly.
"""

from __future__ import annotations

import sys
from pathlib import Path

HEADER_ADDITION = r"""
// ---- starx patch: scan chunk configuration (scripts/gpu_kernels/patch_mamba_ssm.py) ----
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

struct ScanConfig {
    int threads, items;
    int chunk() const { return threads * items; }
};

// MAMBA_SCAN_CONFIG, read once per process: which chunk shape runs every seqlen > 256 (real
// weights). Unset or "stock": mamba-ssm's own choice; "auto": scan_config_auto; or a fixed shape.
struct ScanConfigMode {
    enum Kind { kStock, kAuto, kFixed } kind;
    ScanConfig fixed;
};

inline ScanConfigMode scan_config_mode() {
    static const ScanConfigMode mode = [] {
        const char *s = std::getenv("MAMBA_SCAN_CONFIG");
        if (s == nullptr || *s == '\0' || std::strcmp(s, "stock") == 0) { return ScanConfigMode{ScanConfigMode::kStock, {0, 0}}; }
        if (std::strcmp(s, "auto") == 0) { return ScanConfigMode{ScanConfigMode::kAuto, {0, 0}}; }
        for (const ScanConfig cfg : {ScanConfig{64, 16}, ScanConfig{32, 24}, ScanConfig{32, 16}, ScanConfig{32, 8}, ScanConfig{32, 4}}) {
            if (std::to_string(cfg.threads) + "x" + std::to_string(cfg.items) == s) { return ScanConfigMode{ScanConfigMode::kFixed, cfg}; }
        }
        throw std::invalid_argument(
            std::string("MAMBA_SCAN_CONFIG must be stock, auto, 64x16, 32x24, 32x16, 32x8 or 32x4; got ") + s);
    }();
    return mode;
}

// The shape with the least padded length x cost per padded token. The costs are the forward +
// backward time per padded token, relative, measured on an H100 (d_inner 768, d_state 16, bf16,
// 256 images a batch at STAR's k = 2, 4, 8; starx bench/scan_configs.py): 32x16 is the cheapest
// per token; shorter chunks pad less but cost more per token; 32x24 fits 513..768 in one chunk.
inline ScanConfig scan_config_auto(int seqlen) {
    struct Candidate { ScanConfig cfg; long cost; };
    constexpr Candidate candidates[] = {{{32, 16}, 77}, {{32, 24}, 84}, {{32, 8}, 99}, {{32, 4}, 114}};
    ScanConfig best = candidates[0].cfg;
    long best_cost = -1;
    for (const Candidate &c : candidates) {
        const long padded = long((seqlen + c.cfg.chunk() - 1) / c.cfg.chunk()) * c.cfg.chunk();
        if (best_cost < 0 || padded * c.cost < best_cost) { best = c.cfg; best_cost = padded * c.cost; }
    }
    return best;
}

// Threads x items per chunk for a sequence of seqlen; the scan runs ceil(seqlen / chunk) chunks.
inline ScanConfig scan_config(int seqlen, bool is_complex) {
    if (seqlen > 256 && !is_complex) {
        const ScanConfigMode mode = scan_config_mode();
        if (mode.kind == ScanConfigMode::kFixed) { return mode.fixed; }
        if (mode.kind == ScanConfigMode::kAuto) { return scan_config_auto(seqlen); }
    }
    if (seqlen <= 128) { return {32, 4}; }
    if (seqlen <= 256) { return {32, 8}; }
    if (seqlen <= 512) { return {32, 16}; }
    if (seqlen <= 1024) { return {64, 16}; }
    return {128, 16};
}

inline int scan_n_chunks(int seqlen, bool is_complex) {
    const int chunk = scan_config(seqlen, is_complex).chunk();
    return (seqlen + chunk - 1) / chunk;
}
"""

# (file, old, new): each old text must occur exactly once.
FWD_OLD = """        if (params.seqlen <= 128) {           
            selective_scan_fwd_launch<32, 4, input_t, weight_t>(params, stream);
        } else if (params.seqlen <= 256) {
            selective_scan_fwd_launch<32, 8, input_t, weight_t>(params, stream);
        } else if (params.seqlen <= 512) {
            selective_scan_fwd_launch<32, 16, input_t, weight_t>(params, stream);
        } else if (params.seqlen <= 1024) {
            selective_scan_fwd_launch<64, 16, input_t, weight_t>(params, stream);
        } else {
            selective_scan_fwd_launch<128, 16, input_t, weight_t>(params, stream);
        }"""


def _dispatch(kind: str) -> str:
    launch = f"selective_scan_{kind}_launch"
    return f"""        constexpr bool kIsComplexW = std::is_same_v<weight_t, complex_t>;
        const ScanConfig cfg = scan_config(params.seqlen, kIsComplexW);
        if (cfg.threads == 32 && cfg.items == 4) {{
            {launch}<32, 4, input_t, weight_t>(params, stream);
        }} else if (cfg.threads == 32 && cfg.items == 8) {{
            {launch}<32, 8, input_t, weight_t>(params, stream);
        }} else if (cfg.threads == 32 && cfg.items == 16) {{
            {launch}<32, 16, input_t, weight_t>(params, stream);
        }} else if (cfg.threads == 64 && cfg.items == 16) {{
            {launch}<64, 16, input_t, weight_t>(params, stream);
        }} else if (cfg.threads == 128 && cfg.items == 16) {{
            {launch}<128, 16, input_t, weight_t>(params, stream);
        }} else {{
            if constexpr (!kIsComplexW) {{  // the mid-length options, real weights only
                if (cfg.threads == 32 && cfg.items == 24) {{
                    {launch}<32, 24, input_t, weight_t>(params, stream);
                    return;
                }}
            }}
            TORCH_CHECK(false, "selective scan: no kernel for ", cfg.threads, "x", cfg.items);
        }}"""


BWD_OLD = FWD_OLD.replace("fwd_launch", "bwd_launch").replace("<= 128) {           ", "<= 128) {")

CPP_OLD = "const int n_chunks = (seqlen + 2048 - 1) / 2048;"
CPP_NEW = "const int n_chunks = scan_n_chunks(seqlen, weight_type == at::ScalarType::ComplexFloat);"


def _replace_once(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    found = text.count(old)
    if found != count:
        raise SystemExit(f"{path}: expected {count} occurrence(s) of the text to patch, found {found}")
    path.write_text(text.replace(old, new))


def patch(src: Path) -> None:
    scan = src / "csrc" / "selective_scan"
    header = scan / "selective_scan.h"
    if "starx patch" in header.read_text():
        raise SystemExit(f"{src} is already patched")
    _replace_once(header, "#pragma once\n", "#pragma once\n" + HEADER_ADDITION)
    _replace_once(scan / "selective_scan_fwd_kernel.cuh", FWD_OLD, _dispatch("fwd"))
    _replace_once(scan / "selective_scan_bwd_kernel.cuh", BWD_OLD, _dispatch("bwd"))
    _replace_once(scan / "selective_scan.cpp", CPP_OLD, CPP_NEW, count=2)
    # Build for sm_90 (H100 / H200) only: the stock list compiles every kernel for up to 8 archs.
    setup = src / "setup.py"
    text = setup.read_text()
    first = text.index('        cc_flag.append("-gencode")\n        cc_flag.append("arch=compute_75,code=sm_75")')
    last_line = 'cc_flag.append("arch=compute_121,code=sm_121")\n'
    last = text.index(last_line, first) + len(last_line)
    sm90 = '        cc_flag.append("-gencode")\n        cc_flag.append("arch=compute_90,code=sm_90")\n'
    setup.write_text(text[:first] + sm90 + text[last:])

if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[-2])
    patch(Path(sys.argv[1]))
    print(f"patched {sys.argv[1]}")
