#!/usr/bin/env bash
# Issue 18 on a lent GPU machine: advance sweeps/reproduction.yaml and sweeps/reproduction_long.yaml
# for one time box, then pack what finished so that the next call (or session) carries it back.
#
# Run from the repository root on the device, in every call of a session:
#   bash bench/reproduction_gpu.sh [BOX_SECONDS]        # default 540 (a call may run 600 s)
# carrying .whl (optuna, submitit, omegaconf, ... as wheels), .gpu-ffcv (FFCV), .data (Fashion-MNIST,
# xz-compressed idx files) and .repro (results.tar.gz: the last call's snapshot, if any).
# Here, after each call: cp <files_at>/repro_results.tar.gz .repro/results.tar.gz
#
# What it does:
# 1. Once per machine: installs the carried wheels into /tmp/site, unpacks the dataset to
#    /tmp/starx-data/fashion-mnist (STARX_FMNIST: the same absolute path on every machine, so every
#    session computes the same run ids), checks that torch sees a GPU and that optuna, submitit and
#    FFCV import.
# 2. A fresh machine with no study yet unpacks .repro/results.tar.gz into results/ (the journal
#    resumes across machines: finished trials are kept; trials that were running when the last
#    machine went away are launched again, from scratch, since checkpoints are not carried).
# 3. Starts one sweep driver per sweep of REPRO_SWEEPS in its own session (setsid), unless it is
#    already running:
#    on a machine still warm from the previous call the drivers and their trials keep going between
#    calls, so a session's calls make one continuous run. Each driver gets REPRO_J /
#    REPRO_LONG_J trials in flight, all on this machine's GPU(s): STARX_TRIALS_PER_GPU lets that
#    many trials share each GPU of the sweep's pool (starx.launch.gpus), spread over the GPUs.
# 4. Waits until the box is over (or nothing is left to run here), printing progress.
# 5. Writes $OUT/repro_results.tar.gz: each sweep's study.journal (whole lines only), trials.json
#    and sweep.yaml, results/repro_code.txt, and the small files of every finished or failed run
#    (spec.yaml, derived.json, result.json, env.json, metrics.jsonl, train.log; no checkpoints);
#    $OUT/summary.txt: the trial tables and the mean over seeds; $OUT/drivers.log: the drivers'
#    log ends.
#
# Knobs (environment): REPRO_SWEEPS (reproduction; or reproduction_long, or both: the sweeps whose
# drivers this call starts; both are always restored, shown and packed), REPRO_J (6), REPRO_LONG_J (2),
# REPRO_LAUNCH_MINUTES (unset: the drivers launch trials until the sweep is done; N: no trial is
# launched later than N minutes after the first call on this machine that gave it (the drivers
# return then, their trials run on and the next calls collect them): give it in a session's first
# call so that the last trials finish before the session's device time ends),
# REPRO_RETRY_FAILED=1 (queue failed trials once more), REPRO_ALLOW_CODE_CHANGE=1 (see below).
#
# Trials share the GPU by time slicing: a trial's wall time is about (trials in flight) x its own GPU
# time, and it must end within the machine's lease (30 minutes held) or it starts over in the next.
# So the long pair (about 4x the GPU time of an 8-epoch trial) runs in sessions of its own:
# REPRO_SWEEPS=reproduction_long REPRO_LONG_J=3, not beside 6 trials of the main sweep.
#
# One commit for every cell, while main moves on: here, `bash bench/reproduction_gpu.sh --freeze [COMMIT]`
# packs the committed code (of HEAD, or of COMMIT: the reproduction's cells run on 616e8ed) the sweeps run (starx/ without its embedded data, pyproject.toml, specs/,
# sweeps/ and this script) into .repro/code.tar.xz with its commit; on the device, every call then
# runs in that frozen tree (unpacked once per machine to /tmp/starx-repro/tree, results/ there), not
# in the working tree that travelled with the call, so sessions may change starx/ between calls.
# The first call also records a hash of the code in results/repro_code.txt; a later call whose code
# hashes differently (a new freeze) stops, unless REPRO_ALLOW_CODE_CHANGE=1.
# `bash bench/reproduction_gpu.sh --code-hash` prints the local tree's hash, commit and dirty state.
set -uo pipefail
cd "$(dirname "$0")/.."
FROZEN_TGZ=.repro/code.tar.xz
TREE=/tmp/starx-repro/tree            # the frozen code on the device
FROZEN_PATHS=(starx pyproject.toml specs sweeps bench/reproduction_gpu.sh bench/fmnist_unpack.py)

code_hash() {  # starx/ (but its embedded data, which no reproduction run reads) and pyproject.toml
    python3 - <<'EOF'
import hashlib, pathlib
h = hashlib.sha256()
files = sorted(p for p in pathlib.Path("starx").rglob("*") if p.is_file() and "__pycache__" not in p.parts
               and p.suffix != ".pyc" and p.parts[:3] != ("starx", "data", "embedded")) + [pathlib.Path("pyproject.toml")]
for p in files:
    h.update(str(p).encode() + b"\0" + p.read_bytes() + b"\0")
print(h.hexdigest()[:16])
EOF
}

if [ "${1:-}" = "--freeze" ]; then  # --freeze [COMMIT]: HEAD by default (then the tree must match it)
    commit=$(git rev-parse --verify "${2:-HEAD}^{commit}") || { echo "no such commit: ${2:-HEAD}" >&2; exit 2; }
    if [ -z "${2:-}" ] && [ -n "$(git status --porcelain -- "${FROZEN_PATHS[@]}")" ]; then
        echo "commit first: --freeze packs the last commit, and these paths differ from it:" >&2
        git status --short -- "${FROZEN_PATHS[@]}" >&2
        exit 2
    fi
    mkdir -p .repro
    git archive "$commit" -- "${FROZEN_PATHS[@]}" ':(exclude)starx/data/embedded' | xz -9 > "$FROZEN_TGZ.tmp" \
        && mv "$FROZEN_TGZ.tmp" "$FROZEN_TGZ" || exit 1
    echo "$commit" > .repro/code_commit.txt
    echo "froze ${commit:0:7} into $FROZEN_TGZ, $(wc -c < "$FROZEN_TGZ") bytes"
    exit 0
fi

if [ -z "${STARX_REPRO_FROZEN:-}" ] && [ -f "$FROZEN_TGZ" ] && [ "${1:-}" != "--code-hash" ]; then
    # the device: run this call in the frozen tree, this call's carried files copied beside it
    if [ ! -e "$TREE/.unpacked" ] || ! cmp -s .repro/code_commit.txt "$TREE/.repro_commit"; then
        rm -rf "$TREE" && mkdir -p "$TREE" && tar -xJf "$FROZEN_TGZ" -C "$TREE" \
            || { echo "FAILED: unpacking $FROZEN_TGZ"; exit 3; }
        cp .repro/code_commit.txt "$TREE/.repro_commit" && touch "$TREE/.unpacked"
    fi
    for d in .whl .gpu-ffcv .data .repro; do
        if [ -e "$d" ]; then rm -rf "${TREE:?}/$d"; cp -r "$d" "$TREE/$d"; fi
    done
    echo "running the frozen tree of commit $(cat .repro/code_commit.txt) ($TREE)"
    STARX_REPRO_FROZEN=1 exec bash "$TREE/bench/reproduction_gpu.sh" "$@"
fi

if [ "${1:-}" = "--code-hash" ]; then
    echo "code $(code_hash)"
    if [ -d .git ]; then
        echo "commit $(git rev-parse HEAD)"
        git status --porcelain -- starx pyproject.toml | sed 's/^/dirty: /'
    fi
    exit 0
fi

BOX=${1:-540}
T0=$(date +%s)
OUT=${OUT:-/tmp/repro-out}
STATE=/tmp/starx-repro               # this machine's setup marker, driver pids and logs
KNOWN="reproduction reproduction_long"  # restored, shown and packed whichever of them runs
SWEEPS=${REPRO_SWEEPS:-reproduction}   # the ones whose drivers this call starts
mkdir -p "$OUT" "$STATE"
say() { echo "[$(date -u +%H:%M:%S) +$(( $(date +%s) - T0 ))s] $*"; }

# ------------------------------------------------------------------ environment (every call)
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
# shellcheck disable=SC1091
source .gpu-ffcv/env.sh              # FFCV and this checkout on PYTHONPATH
export STARX_FMNIST=/tmp/starx-data/fashion-mnist
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 COLUMNS=200
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

# ------------------------------------------------------------------ setup (once per machine)
if [ ! -e "$STATE/setup.done" ]; then
    say "setup: wheels, dataset, imports"
    if ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || { echo "FAILED: pip install of .whl"; exit 3; }
    fi
    python3 bench/fmnist_unpack.py || { echo "FAILED: dataset"; exit 3; }
    python3 -c "
import torch, optuna, submitit, omegaconf, ffcv, starx.cli
assert torch.cuda.is_available(), 'no GPU'
print('torch', torch.__version__, 'optuna', optuna.__version__, 'GPUs', torch.cuda.device_count(),
      torch.cuda.get_device_name(0))" || { echo "FAILED: imports (carry .whl and .gpu-ffcv)"; exit 3; }
    touch "$STATE/setup.done"
fi

# ------------------------------------------------------------------ restore (fresh machine)
have_study=0
for s in $KNOWN; do [ -e "results/$s/study.journal" ] && have_study=1; done
if [ $have_study = 0 ] && [ -f .repro/results.tar.gz ]; then
    say "restoring the carried results (.repro/results.tar.gz)"
    tar -xzf .repro/results.tar.gz || { echo "FAILED: unpacking .repro/results.tar.gz"; exit 3; }
fi
# ------------------------------------------------------------------ one code version
CODE=$(code_hash)
if [ -e results/repro_code.txt ]; then
    FIRST=$(head -n1 results/repro_code.txt | cut -d' ' -f1)
    if [ "$FIRST" != "$CODE" ] && [ "${REPRO_ALLOW_CODE_CHANGE:-0}" != 1 ]; then
        echo "STOP: this tree's code hash is $CODE, the sweeps were started with $FIRST (results/repro_code.txt)."
        echo "      Run on the commit they started on, or set REPRO_ALLOW_CODE_CHANGE=1 to mix code versions."
        exit 4
    fi
fi

mkdir -p results
grep -q "^$CODE " results/repro_code.txt 2>/dev/null || \
    echo "$CODE $(date -u +%Y-%m-%dT%H:%M:%SZ) $(cat .repro_commit 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo no-git)" >> results/repro_code.txt

# ------------------------------------------------------------------ GPUs
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ') || NGPU=0
[ "$NGPU" -ge 1 ] || { echo "FAILED: nvidia-smi -L lists no GPU"; exit 3; }
POOL=$(seq -s, 0 $(( NGPU - 1 )))

alive() { [ -e "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

# REPRO_LAUNCH_MINUTES counts from the first call that gives it on this machine: later calls of the
# session keep that deadline (a driver restarted after it launches nothing)
if [ -n "${REPRO_LAUNCH_MINUTES:-}" ] && [ ! -e "$STATE/launch_deadline" ]; then
    python3 -c "import sys, time; print(int(time.time() + 60 * float(sys.argv[1])))" "$REPRO_LAUNCH_MINUTES" \
        > "$STATE/launch_deadline" || { echo "FAILED: REPRO_LAUNCH_MINUTES=$REPRO_LAUNCH_MINUTES"; exit 3; }
fi

for s in $SWEEPS; do
    if [ "$s" = reproduction_long ]; then J=${REPRO_LONG_J:-2}; else J=${REPRO_J:-6}; fi
    if alive "$s"; then
        say "sweep $s: driver $(cat "$STATE/$s.pid") still running (this machine was warm)"
        continue
    fi
    ARGS=(-m starx.cli sweep "sweeps/$s.yaml" -j "$J")
    if [ -e "$STATE/launch_deadline" ]; then
        LEFT_S=$(( $(cat "$STATE/launch_deadline") - $(date +%s) ))
        if [ $LEFT_S -le 0 ]; then
            say "sweep $s: the launch deadline (REPRO_LAUNCH_MINUTES) has passed: no driver, collecting only"
            continue
        fi
        ARGS+=(--max-minutes "$(python3 -c "print(round($LEFT_S / 60, 2))")")
    fi
    PER=$(( (J + NGPU - 1) / NGPU ))  # trials sharing each GPU, J in flight in all
    [ "${REPRO_RETRY_FAILED:-0}" = 1 ] && ARGS+=(--retry-failed)
    say "sweep $s: starting its driver, $J trials in flight (STARX_GPUS=$POOL STARX_TRIALS_PER_GPU=$PER)"
    STARX_GPUS=$POOL STARX_TRIALS_PER_GPU=$PER setsid python3 "${ARGS[@]}" >> "$STATE/$s.log" 2>&1 < /dev/null &
    echo $! > "$STATE/$s.pid"
done

# ------------------------------------------------------------------ wait
progress() {  # one line per sweep; exit status 0 while something is left to run here
    python3 - "$STATE" $KNOWN <<'EOF'
import collections, os, sys
from pathlib import Path
from starx.results.catalog import ResultsError, load_sweep_record
state, busy = Path(sys.argv[1]), False
for name in sys.argv[2:]:
    pid_file = state / f"{name}.pid"
    try:
        alive = pid_file.exists() and os.kill(int(pid_file.read_text()), 0) is None
    except (OSError, ValueError):
        alive = False
    try:
        sw = load_sweep_record(Path("results"), name)
    except ResultsError:
        print(f"  {name}: no trials.json yet; driver {'running' if alive else 'stopped'}")
        busy |= alive
        continue
    states = collections.Counter(t.status for t in sw.trials)
    # running here: a trial whose run directory is on this machine (one cut off with an earlier
    # machine reads as running until its driver relaunches it)
    running = sum(t.run is not None and t.status in ("running", "queued") for t in sw.trials)
    print(f"  {name}: {sw.info.get('n_trials', '?')} trials: "
          + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
          + f"; driver {'running' if alive else 'stopped'}")
    busy |= alive or running > 0
sys.exit(0 if busy else 1)
EOF
}

END=$(( T0 + BOX - 30 ))            # 30 s for the snapshot
i=0
while [ "$(date +%s)" -lt $END ]; do
    LEFT=$(( END - $(date +%s) ))
    sleep $(( LEFT < 30 ? LEFT : 30 ))
    P=$(progress); busy=$?
    i=$(( i + 1 ))
    if [ $(( i % 4 )) = 1 ] || [ $busy != 0 ]; then say "progress"; echo "$P"; fi
    [ $busy != 0 ] && { say "nothing left to run here"; break; }
done

# ------------------------------------------------------------------ snapshot
say "snapshot -> $OUT/repro_results.tar.gz"
python3 - "$OUT/repro_results.tar.gz" $KNOWN <<'EOF'
import io, json, sys, tarfile, time
from pathlib import Path
out, names = sys.argv[1], sys.argv[2:]
root = Path("results")
SMALL = ("spec.yaml", "derived.json", "result.json", "env.json", "metrics.jsonl", "train.log")
n_runs, seen = 0, set()

def add_bytes(tar, arcname, data):
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))

with tarfile.open(out + ".tmp", "w:gz") as tar:
    if (root / "repro_code.txt").exists():
        tar.add(root / "repro_code.txt")
    for name in names:
        d = root / name
        if not (d / "study.journal").exists():
            continue
        journal = (d / "study.journal").read_bytes()
        add_bytes(tar, str(d / "study.journal"), journal[: journal.rfind(b"\n") + 1])  # whole records only
        for f in ("trials.json", "sweep.yaml"):
            if (d / f).exists():
                tar.add(d / f)
        try:
            trials = json.loads((d / "trials.json").read_text())["trials"]
        except (OSError, ValueError, KeyError):
            trials = []
        for t in trials:
            exp, run_id = t.get("experiment"), t.get("run_id")
            if not exp or not run_id or (exp, run_id) in seen:
                continue
            run = root / exp / run_id
            try:
                status = json.loads((run / "result.json").read_text()).get("status")
            except (OSError, ValueError):
                continue
            if status not in ("done", "failed"):
                continue  # running or preempted: its checkpoints stay here, so it starts again elsewhere
            seen.add((exp, run_id))
            n_runs += 1
            for f in SMALL:
                if (run / f).is_file() and (run / f).stat().st_size < (8 << 20):
                    tar.add(run / f)
Path(out + ".tmp").rename(out)
print(f"  {n_runs} finished or failed runs, {Path(out).stat().st_size / 1e6:.2f} MB")
EOF

{
    for s in $KNOWN; do
        [ -e "results/$s/trials.json" ] || continue
        python3 -m starx.cli results "$s" --all-metrics
        python3 -m starx.cli results "$s" --mean-over seed
        python3 -m starx.cli results "$s" --mean-over seed --paired-against recipe=arm 2>/dev/null
    done
} > "$OUT/summary.txt" 2>&1
for s in $KNOWN; do [ -e "$STATE/$s.log" ] && { echo "== $s"; tail -n 60 "$STATE/$s.log"; }; done > "$OUT/drivers.log"
tail -n 80 "$OUT/summary.txt"
say "done; drivers left running: $(for s in $KNOWN; do alive "$s" && printf '%s ' "$s"; done)"
