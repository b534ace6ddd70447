#!/usr/bin/env bash
# Issue 12's measurements on the lent H200, each part time-boxed so that a call ends inside the
# 10-minute limit; outputs to $OUT. From the repo root there:
#
#   run(kind="nvidia-h200", carry=[".gpu-wheels", ".whl", ".gpu-ffcv"], timeout_s=600, command="bash bench/speed_session.sh")
#   run(..., command="bash bench/speed_session.sh rows_bwd")    # the backward candidate; then rows_warps rows_steps
#   run(..., command="bash bench/speed_session.sh pretrain_k2_k8 finetune profile_finetune")
#
# Parts (default: the first two, ~8 minutes on a cold machine, where compiling STAR-B and the anchor
# at two k took 240 s on 2026-11-30; a part cut by its box leaves what it wrote):
#   gpu_suite       every GPU test (3-6 min on 2026-12-02) but the rows candidates' and, without .gpu-ffcv, FFCV's
#   gpu_tests       the GPU tests of the Triton scan, conv and span attention (no kernel change is measured before
#                   they pass)
#   pretrain_k4_k1  STAR-B pretraining step vs the causal ViT-B anchor, reduce-overhead, k = 4 and 1, and
#                   STAR-B's encoder blocks alone timed as the anchor is (--encoder)
#   rows_bwd        the backward candidate of bench/scan_bwd_rows.py (one channel a lane, Gluon): its GPU
#                   tests against the twin, then the scan alone at every shape beside scan_bwd
#   rows_tests      rows_bwd's tests alone (no timing: may share the GPU with other work)
#   rows_warps      the best variants with 2 and 4 warps a program, and with 4-step tiles
#   rows_steps      the fine-tuning step (compiled) and the k=4 pretraining step with that candidate
#   pretrain_k4     the pretraining step at k = 4 alone, beside the anchor
#   span_attention  the decoder's span attention kernels: GPU tests, then one block's attention against SDPA at
#                   every k (SPAN_TILES: more tiles to time, FWD/DQ/DKDV each BMxBNxWARPSxSTAGES)
#   span_tests      the span attention GPU tests alone
#   steps_all_k     whole pretraining steps at k = 4 1 2 8 with starx's defaults, beside the anchor
#   inductor_ab     whole k=4 steps with each Inductor setting in INDUCTOR_AB (one step run each)
#   swiglu          the SwiGLU gate's kernels: GPU tests, one MLP against Inductor's gate (SWIGLU_TILES: more tiles)
#   swiglu_k4       whole k=4 steps with Inductor's gate, then with the gate's kernels
#   add_norm_tests  the add + LayerNorm kernels' GPU tests (starx.ops.layer_norm) and tests/test_gpu_kernels.py
#   add_norm_k4     whole k=4 steps, add + LayerNorm compiled by Inductor, then on starx's kernels
#   add_norm_ft     the same for the fine-tuning step beside timm's ViT-B/16
#   ab_add_norm, ab_mlp_gate  whole k=4 steps of two kernel choices built in one process and timed in alternating
#                   rounds (bench/ab_step.py: add + LayerNorm Inductor's / starx's kernels; the SwiGLU gate the same)
#   add_norm_tiles  one add + LayerNorm forward + backward at k=4, Inductor's then the kernels' with each tile set
#                   (LN_TILES: FWD/BWD tile sets, each BMxWARPS/BMxROWSxWARPSxPREFETCH; bench/layer_norm.py --time)
#   inner_tests     the GPU tests the fused mixer node (starx.ops.triton_inner) touches: conv, scan, STAR-B steps, SwiGLU
#   inner_k4        whole k=4 steps with the mixer's inner computation as one node (starx's), then composed
#   blas_k4         whole k=4 steps (both models) with torch's BLAS choice, then with cuBLASLt preferred
#   span_k1, span_k2, span_k4 whole steps at that k with SDPA in the decoder, then with the span kernels from
#                   0 keys on (SPAN_STEP_TILES: their tiles)
#   span_graphs     one decoder block's attention, SDPA against the span kernels, at k = 1 2 4 8, replayed as
#                   CUDA graphs as in the step (without, the CPU's launch cost is timed too), with kernel times
#   span_steps      whole pretraining steps, k=4 with SDPA in the decoder against every k with the span kernels
#   decoder_attention ARM's decoder attention alone: SDPA (each backend) with the dense mask vs FlexAttention
#                   (128 and 64 tiles), k = 4 and 8
#   pretrain_k2_k8  the same at k = 2 and 8
#   finetune        the fine-tuning step vs timm's ViT-B/16, eager, compiled, and compiled with CUDA graphs
#                   (reduce-overhead, both models; not yet measured: 2026-12-01)
#   profile_block   one compiled block, part by part, beside the anchor's
#   inductor_code   the Triton code Inductor writes for the compiled k=4 step (TORCH_LOGS=output_code, gzipped):
#                   which LayerNorm backward, casts and copies it fused, and which it left as kernels of their own
#   profile_finetune_starx  the compiled fine-tuning step kernel by kernel, without timm's
#   profile_finetune the compiled fine-tuning step kernel by kernel, and timm's ViT-B/16 the same way
#   ncu_scan_bwd    ncu of the scan's backward starx launches at k=4 (on Hopper the Gluon scan_bwd_rows;
#                   never profiled yet: 2026-12-01): stall reasons, occupancy, per-instruction samples
#   ncu_scan_fwd    the same for scan_fwd
#   ncu_rows        the same for a candidate of bench/scan_bwd_rows.py (ROWS=<variant>, default rows_prefetch)
#   fmnist_compile  a short fmnist_gpu trial eager and with CUDA graphs (carry .gpu-ffcv and .data instead
#                   of .gpu-wheels: 64 MiB a call)
#   bwd_candidates  backward candidates of bench/scan_bwd_rows.py (BWD_CANDS, default rows_keep_dt_clamp: the
#                   default before session 15, without B and C read as packed words and the adjoint sweep starting from the
#                   recompute sweep's last loads; BWD_CANDS_K selects their tests): the GPU
#                   tests, then the scan alone at every shape beside the default
#   fast_math_bc    session 15's candidates (CPU-checked only): softplus and the gate's sigmoid with the GPU's
#                   approximate log2 and divides (TILES["fast_math"]: in the backward, or in both; --fast-math in the
#                   step benchmarks) and rows_bc_in_step: GPU tests, the scan alone
#   fwd_l2          scan_fwd with its L2 prefetch 2 / 4 steps ahead against without, the scan alone at every shape
#   fwd_unroll      scan_fwd's step loop unrolled twice against once, the scan alone at every shape
#   smem_bwd        the rows backward with its work buffer in shared memory (bench/scan_bwd_rows.py): tests, timing
#   profile_step    the compiled STAR-B k=4 step kernel by kernel
#   gaps            the k=4 step and the anchor's with CUDA graphs: kernel time, kernel launches and time by the
#                   clock, whose difference is the gaps between kernels, and every kernel with its launches a step
#   attribute       the compiled k=4 step without CUDA graphs, with the CPU op (and shapes) behind each kernel
#                   matching ATTRIBUTE (a regex; default the reduce / copy kernels; "." for every kernel)
#   bc_sum          the scan alone with dB / dC summed by atomics (the default) and by per-block partials
#   scan_configs    the scan alone at every STAR shape for the kept tiles and candidates (a forward of
#                   2 warps a program for k=8, whose 768 one-warp programs leave half of each SM idle)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/speed-out}
mkdir -p "$OUT"
# the carried wheels: .gpu-wheels (mamba-ssm, causal-conv1d: the cuda backend and the parity tests) and .whl
# (timm, optuna, ...); a call may leave .gpu-wheels behind to carry .gpu-ffcv and .data (fmnist_compile)
# SPEED_SITE: where they go (/tmp/site; another folder when the reproduction's trials, which import from
# /tmp/site, run on the same machine: an --upgrade under a running trial could break its late imports)
SITE=${SPEED_SITE:-/tmp/site}
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" $(ls .gpu-wheels/*.whl .whl/*.whl 2>/dev/null) \
    || { echo "[speed] installing the carried wheels failed" >&2; exit 1; }
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1
[ -e .gpu-ffcv/env.sh ] && source .gpu-ffcv/env.sh  # FFCV, for the parts that train on data
part() {  # part NAME SECONDS CMD...: run CMD time-boxed, its output to $OUT/NAME.txt, the tail here
    local name=$1 box=$2
    shift 2
    echo "== $name ($(date -u +%H:%M:%S) UTC, box ${box}s): $*"
    timeout "$box" "$@" > "$OUT/$name.txt" 2>&1
    echo "   rc $?"
    grep -v -i "warn" "$OUT/$name.txt" | tail -8
    grep -E "[0-9]+ (passed|failed|error)" "$OUT/$name.txt" | tail -1  # pytest's summary (it names its warnings)
}
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
step() {  # step NAME SECONDS ARGS...: a part timing bench/pretrain_step.py, compiled with CUDA graphs as starx's step
    local name=$1 box=$2
    shift 2
    part "$name" "$box" python3 bench/pretrain_step.py --backend triton --compile --compile-mode reduce-overhead "$@"
}
run_part() {  # run_part PART: one part of the list above (a composite part runs its constituents)
    local p=$1
    case $p in
    gpu_suite)  # every GPU test but the rows candidates' (and FFCV's unless .gpu-ffcv was carried), FAILED lines kept
        part gpu_suite 420 python3 -m pytest -q -m gpu -p no:cacheprovider -rf tests/ -k "not rows" \
            $([ -e .gpu-ffcv/env.sh ] || echo --ignore tests/test_data.py --ignore tests/test_loader_ownership.py)
        grep -E "^FAILED|^ERROR" "$OUT/gpu_suite.txt" | head -20 ;;
    gpu_tests)  # (+ the loader's GPU buffers test where FFCV was carried)
        part gpu_tests 280 python3 -m pytest -q -m gpu -p no:cacheprovider -k "not rows" tests/test_triton_scan.py \
            tests/test_triton_conv.py tests/test_span_attention.py $([ -e .gpu-ffcv/env.sh ] && echo tests/test_loader_ownership.py) ;;
    pretrain_k4) step pretrain_k4 200 --k 4 --steps 24 --out "$OUT/pretrain_step_k4.json" ;;
    span_steps)  # whole pretraining steps: k=4 with SDPA in the decoder, then every k with the span kernels
        step span_steps_sdpa 150 --k 4 --steps 24 --decoder-attention sdpa --out "$OUT/pretrain_step_k4_sdpa.json"
        run_part steps_all_k ;;
    span_k1|span_k2|span_k4)  # whole steps at that k: SDPA in the decoder, then the span kernels from 0 keys on
        # (SPAN_STEP_TILES: their tiles, default starx's)
        local k=${p#span_k}
        step "span_k${k}_sdpa" 150 --k "$k" --steps 24 --decoder-attention sdpa --out "$OUT/pretrain_step_k${k}_sdpa.json"
        step "span_k${k}" 150 --k "$k" --steps 24 --span-min-keys 0 ${SPAN_STEP_TILES:+--span-tiles "$SPAN_STEP_TILES"} \
            --out "$OUT/pretrain_step_k${k}_span.json" ;;
    inductor_ab)  # whole k=4 steps, one for each torch._inductor.config setting in INDUCTOR_AB (space-separated
        # KEY=VALUE, dotted keys for the nested ones: "triton.enable_pdl=True"; INDUCTOR_AB_BOX: seconds each, default
        # 150, more for settings that tune at the first steps); run pretrain_k4 beside it
        local i=0 kv
        for kv in ${INDUCTOR_AB:?INDUCTOR_AB: the settings to try}; do
            i=$((i + 1))
            step "inductor_ab$i" "${INDUCTOR_AB_BOX:-150}" --k 4 --steps 24 --inductor "$kv" --out "$OUT/pretrain_step_k4_inductor_ab$i.json"
        done ;;
    swiglu)  # the SwiGLU gate's kernels (starx.ops.swiglu): GPU tests, then one MLP forward + backward against
        # Inductor's gate at k = 4 1 8, for starx's tiles and those in SWIGLU_TILES (FWD/BWD, each BMxBNxROWSxWARPS)
        part swiglu_tests 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_swiglu.py
        part swiglu_time 150 python3 bench/swiglu.py --k 4 1 8 --tiles default ${SWIGLU_TILES:-} \
            --out "$OUT/swiglu.jsonl" ;;
    inner_tests)  # the fused mixer node's GPU tests: conv (opcheck with the gate, compiled mixers with every
        # gradient), the scan's, and the compiled STAR-B step in one graph against eager
        part inner_tests 300 python3 -m pytest -q -m gpu -p no:cacheprovider -k "not rows" tests/test_triton_conv.py \
            tests/test_triton_scan.py tests/test_gpu_kernels.py tests/test_swiglu.py ;;
    add_norm_tests)  # the add + LayerNorm kernels' GPU tests, and the whole-model ones they touch
        part add_norm_tests 300 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_layer_norm.py \
            tests/test_gpu_kernels.py ;;
    ab_add_norm) part ab_add_norm 420 python3 bench/ab_step.py --k 4 --flag add-norm --variants inductor kernel \
        --out "$OUT/ab_add_norm_k4.json" ;;
    ab_mlp_gate) part ab_mlp_gate 420 python3 bench/ab_step.py --k 4 --flag mlp-gate --variants inductor kernel \
        --out "$OUT/ab_mlp_gate_k4.json" ;;
    add_norm_tiles)
        part add_norm_tiles 300 python3 bench/layer_norm.py --time --tiles default ${LN_TILES:-} \
            --out "$OUT/layer_norm_tiles.jsonl" ;;
    add_norm_k4)  # whole k=4 steps: add + LayerNorm as Inductor compiles the twin, then on starx's kernels
        step add_norm_k4_inductor 200 --k 4 --steps 24 --add-norm inductor --out "$OUT/pretrain_step_k4_add_norm_inductor.json"
        step add_norm_k4_kernel 150 --k 4 --steps 24 --add-norm kernel --out "$OUT/pretrain_step_k4_add_norm_kernel.json" ;;
    add_norm_ft)  # the fine-tuning step (compiled with CUDA graphs, beside timm's), Inductor's add + LayerNorm then
        # the kernels (fine-tuning has drop path, which Inductor fuses into its LayerNorm and the kernels do not)
        part add_norm_ft_inductor 200 python3 bench/finetune_step.py --backends triton --batch 128 --steps 10 \
            --compile-mode reduce-overhead --add-norm inductor --out "$OUT/finetune_step_add_norm_inductor.json"
        part add_norm_ft_kernel 150 python3 bench/finetune_step.py --backends triton --batch 128 --steps 10 \
            --compile-mode reduce-overhead --add-norm kernel --out "$OUT/finetune_step_add_norm_kernel.json" ;;
    inner_k4)  # whole k=4 steps: the mixer's inner computation as one autograd node (starx's), then composed
        step inner_k4_fused 200 --k 4 --steps 24 --out "$OUT/pretrain_step_k4_inner_fused.json"
        step inner_k4_composed 150 --k 4 --steps 24 --mixer-inner composed --out "$OUT/pretrain_step_k4_inner_composed.json" ;;
    swiglu_k4)  # whole k=4 steps: the gate as Inductor compiles it, then on starx's kernels
        step swiglu_k4_inductor 200 --k 4 --steps 24 --mlp-gate inductor --out "$OUT/pretrain_step_k4_gate_inductor.json"
        step swiglu_k4_kernel 150 --k 4 --steps 24 --mlp-gate kernel --out "$OUT/pretrain_step_k4_gate_kernel.json" ;;
    blas_k4)  # torch's BLAS choice (pretrain_k4), then cuBLASLt preferred
        run_part pretrain_k4
        step blas_cublaslt 150 --k 4 --steps 24 --blas cublaslt --out "$OUT/pretrain_step_k4_blas_cublaslt.json" ;;
    span_graphs) part span_graphs 200 python3 bench/decoder_attention.py --k 1 2 4 8 --impls sdpa span \
        --compile-mode reduce-overhead --profile --out "$OUT/span_attention_graphs.jsonl" ;;
    span_tests) part span_tests 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_span_attention.py ;;
    steps_all_k) step steps_all_k 330 --k 4 1 2 8 --steps 24 --out "$OUT/pretrain_step_all_k.json" ;;
    span_attention)  # the decoder's span attention kernels: GPU tests, then one block's attention against SDPA
        # at every k, for starx's tiles and those in SPAN_TILES (FWD/DQ/DKDV, each BMxBNxWARPSxSTAGES)
        [ -n "${SPAN_SKIP_TESTS:-}" ] || run_part span_tests
        # (replayed as CUDA graphs, as the compiled step runs them: without, launches decide: session 18)
        part span_time 200 python3 bench/decoder_attention.py --k 4 1 2 8 --impls sdpa span --compile-mode reduce-overhead \
            --span-tiles default ${SPAN_TILES:-} --out "$OUT/span_attention.jsonl" ;;
    decoder_attention) part decoder_attention 150 python3 bench/decoder_attention.py --k 4 8 \
        --impls sdpa sdpa_cudnn sdpa_efficient flex flex_64 --out "$OUT/decoder_attention.jsonl" ;;
    pretrain_k4_k1) step pretrain_k4_k1 300 --k 4 1 --steps 24 --encoder --anchor-loop --out "$OUT/pretrain_step_k4_k1.json" ;;
    pretrain_k2_k8) step pretrain_k2_k8 160 --k 2 8 --steps 24 --out "$OUT/pretrain_step_k2_k8.json" ;;
    finetune) part finetune 240 python3 bench/finetune_step.py --backends triton --batch 128 --steps 10 \
        --compile-mode none default reduce-overhead --out "$OUT/finetune_step.json" ;;
    profile_block) part profile_block 90 python3 bench/profile_block.py --k 4 --out "$OUT/profile_block_k4.txt" ;;
    inductor_code)
        TORCH_LOGS=output_code step inductor_code 200 --k 4 --steps 4 --no-anchor
        gzip -f "$OUT/inductor_code.txt" ;;
    profile_finetune_starx) part profile_finetune 100 python3 bench/profile_step.py --finetune --backend triton --compile ;;
    profile_finetune)  # (the profiles print to the parts' own files: $OUT brings back at most 8 files)
        run_part profile_finetune_starx
        part profile_finetune_anchor 80 python3 bench/profile_step.py --finetune --anchor --compile ;;
    ncu_scan_bwd|ncu_scan_fwd|ncu_rows)  # the backward starx launches (the Gluon scan_bwd_rows on Hopper), the
        # forward, or a candidate of bench/scan_bwd_rows.py (ROWS): where its chain waits
        case $p in
            ncu_rows) kernel=scan_bwd_rows; args=(--bwd-kernel "${ROWS:-rows_prefetch}") ;;
            *) kernel=${p#ncu_}; args=() ;;
        esac
        part "$p" 120 ncu --clock-control none --kernel-name "regex:^${kernel}" --launch-count 1 \
            --section SpeedOfLight --section WarpStateStats --section Occupancy --section SchedulerStats \
            --section SourceCounters --import-source no -o "$OUT/$p" python3 bench/profile_scan.py --shape k4 "${args[@]}"
        # per-SASS-instruction warp-state samples, to read where the loop stalls
        timeout 60 ncu -i "$OUT/$p.ncu-rep" --page source --csv --print-source sass > "$OUT/${p}_sass.csv" 2>&1
        timeout 60 ncu -i "$OUT/$p.ncu-rep" --page details >> "$OUT/$p.txt" 2>&1 ;;
    bwd_candidates)  # (BWD_CANDS: which of them to time)
        part cand_tests 220 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_triton_scan.py \
            -k "${BWD_CANDS_K:-rows_keep_dt_clamp}"
        part cand_scan 300 python3 bench/triton_scan.py --shapes k4 k1 k8 ft4dir --layouts last \
            --configs 32x1/32x1/8/1x1/168 --bwd-kernels default ${BWD_CANDS:-rows_keep_dt_clamp} --out "$OUT/cand_scan.jsonl" ;;
    fast_math_bc)  # session 15's CPU-checked candidates: fast math (TILES fast_math: backward, or forward and backward)
        # and the backward loading B_t, C_t in their step (rows_bc_in_step): GPU tests, then the scan alone
        part flb_tests 280 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_triton_scan.py \
            -k "fast_math or rows_bc_in_step"
        part flb_scan 240 python3 bench/triton_scan.py --shapes k4 k1 k8 ft4dir --layouts last \
            --configs 32x1/32x1/8/1x1/168 32x1/32x1/8/1x1/168/-/b 32x1/32x1/8/1x1/168/-/fb \
            --bwd-kernels default rows_bc_in_step \
            --out "$OUT/flb_scan.jsonl" ;;
    fwd_l2)  # scan_fwd asking L2 for the inputs 2 / 4 steps ahead (prefetch.global.L2) against not, every shape
        part fwd_l2 150 python3 bench/triton_scan.py --shapes k4 k1 k8 ft4dir --layouts last \
            --configs 32x1/32x1/8/1x1/168/0 32x1/32x1/8/1x1/168/2 32x1/32x1/8/1x1/168/4 --out "$OUT/fwd_l2.jsonl" ;;
    fwd_unroll)  # scan_fwd with its step loop unrolled twice (fewer loop-carried copies a step), beside once
        part fwd_unroll 150 python3 bench/triton_scan.py --shapes k4 k1 k8 ft4dir --layouts last \
            --configs 32x1/32x1/8/1x1/168 32x1/32x1/8/2x1/168 --out "$OUT/fwd_unroll.jsonl" ;;
    smem_bwd)  # the rows backward with its tile's work buffer in shared memory: tests, then the scan alone
        part smem_tests 200 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_triton_scan.py -k "${SMEM_TESTS:-rows_smem}"
        part smem_scan 200 python3 bench/triton_scan.py --shapes k4 k1 k8 ft4dir --layouts last \
            --configs 32x1/32x1/8/1x1/168 --bwd-kernels ${SMEM_KERNELS:-triton rows_prefetch rows_smem rows_smem_noprefetch} \
            --out "$OUT/smem_scan.jsonl" ;;
    profile_step) part profile_step 120 python3 bench/profile_step.py --k 4 --backend triton --compile \
        --out "$OUT/profile_step_k4.txt" ;;
    gaps)  # the k=4 step with CUDA graphs, STAR-B and the anchor: kernel time, launches, and the clock (the gaps)
        part gaps 150 python3 bench/profile_step.py --k 4 --backend triton --compile-mode reduce-overhead --steps 5 \
            --all --out "$OUT/profile_step_k4_graphs.txt"
        part gaps_anchor 100 python3 bench/profile_step.py --k 4 --anchor --compile-mode reduce-overhead --steps 5 \
            --all --out "$OUT/profile_step_k4_anchor_graphs.txt" ;;
    attribute)  # which ops launch the eager reduce / copy kernels of the compiled k=4 step (no CUDA graphs)
        part attribute 150 python3 bench/profile_step.py --k 4 --backend triton --compile \
            --attribute "${ATTRIBUTE:-reduce_kernel|elementwise_kernel|copy}" --out "$OUT/profile_step_k4_attribute.txt" ;;
    bc_sum)  # the scan alone, its sums (dB / dC over channel blocks, dA / dD / dbias over sequences) by atomics
        # (default) vs per-program partials; then the conv alone the same two ways
        part bc_sum 150 python3 bench/triton_scan.py --shapes k4 k1 k8 ft4dir --layouts last \
            --configs 32x1/32x1/8/1x1/168 --bwd-kernels default default_blocks --out "$OUT/bc_sum.jsonl"
        part conv_sums 120 python3 bench/triton_conv.py --shapes k4 ft4dir --configs 64x128x4x1/64x128x4x1 \
            --sums atomic blocks --out "$OUT/conv_sums.jsonl" ;;
    scan_configs) part scan_configs 200 python3 bench/triton_scan.py --shapes k4 k1 k8 ft4dir --layouts last \
        --configs 32x1/32x1/8/1x1/168 32x2/32x1/8/1x1/168 64x2/32x1/8/1x1/168 --out "$OUT/scan_configs.jsonl" ;;
    fmnist_compile)  # one fmnist_gpu trial (1 + 1 epochs) eager and compiled with CUDA graphs: which way the
        # reproduction's trials run (their time is mostly many small kernels)
        export STARX_FMNIST=/tmp/starx-data/fashion-mnist
        python3 bench/fmnist_unpack.py > /dev/null || exit 3
        for m in eager reduce-overhead; do
            c=$([ $m = eager ] && echo "compile=false" || echo "compile=true compile_mode=$m")
            # shellcheck disable=SC2086
            part "fmnist_$m" 200 python3 -m starx.cli run specs/fmnist_gpu.yaml model.backend=triton pretrain.epochs=1 \
                finetune.epochs=1 eval.pixel_baseline=false data.num_workers=4 experiment=fmnist_probe_$m $c
            python3 -m starx.cli results "fmnist_probe_$m" --all-metrics >> "$OUT/fmnist_$m.txt" 2>&1
            grep -h -E "images_per_s|wall_time" results/fmnist_probe_$m/*/result.json >> "$OUT/fmnist_$m.txt" 2>/dev/null
            tail -n 25 "$OUT/fmnist_$m.txt"
        done ;;
    rows_tests)  # its GPU tests alone (they need no idle GPU: may run beside the reproduction's trials)
        part rows_tests 270 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_triton_scan.py -k rows ;;
    rows_bwd)  # the one-channel-a-lane backward candidate (bench/scan_bwd_rows.py): against the twin, then timed
        part rows_tests 270 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_triton_scan.py -k rows
        part rows_scan 240 python3 bench/triton_scan.py --shapes k4 k1 k8 ft4dir --layouts last \
            --configs 32x1/32x1/8/1x1/168 --bwd-kernels triton rows rows_prefetch rows_keep_a rows_f32bc rows_keep_a_f32bc \
            --out "$OUT/rows_scan.jsonl" ;;
    rows_warps)  # 2 and 4 warps a program (64 / 128 channels: fewer dB / dC partials), and 4-step tiles (keep_a's
        # work buffer, 33 KB a program at 8 steps, is 52 MB at k=4: what spilled out of L2 at 16 steps before)
        part rows_scan_warps 200 python3 bench/triton_scan.py --shapes k4 ft4dir --layouts last \
            --configs 32x1/64x2/8/1x1/168 32x1/128x4/8/1x1/168 32x1/32x1/4/1x1/168 32x1/128x4/4/1x1/168 \
            --bwd-kernels rows_f32bc rows_keep_a_f32bc --out "$OUT/rows_scan_warps.jsonl" ;;
    rows_steps)  # the whole steps with the candidate ROWS (ROWS: the variant the scan said, default rows;
        # FAST_MATH=bwd or fwd+bwd: with fast math in those kernels too)
        part rows_finetune 200 python3 bench/finetune_step.py --backends triton --batch 128 --steps 10 \
            --compile-mode default --bwd-kernel "${ROWS:-rows}" ${FAST_MATH:+--fast-math "$FAST_MATH"} --out "$OUT/finetune_step_rows.json"
        step rows_pretrain 300 --k 4 --steps 24 --bwd-kernel "${ROWS:-rows}" ${FAST_MATH:+--fast-math "$FAST_MATH"} \
            --out "$OUT/pretrain_step_k4_rows.json" ;;
    *) echo "[speed] unknown part $p" >&2; exit 2 ;;
    esac
}
PARTS=${*:-gpu_tests pretrain_k4_k1}
for p in $PARTS; do
    run_part "$p"
done
# at most 8 files come back from $OUT: past that, the parts' logs travel as one archive (the results stay apart)
if [ "$(ls "$OUT" | wc -l)" -gt 8 ]; then
    (cd "$OUT" && tar czf logs.tar.gz ./*.txt && rm ./*.txt) && echo "[speed] the logs are in logs.tar.gz"
fi
echo "== done $(date -u +%H:%M:%S) UTC"
