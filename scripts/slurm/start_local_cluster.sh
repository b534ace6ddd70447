#!/usr/bin/env bash
# Start a one-node SLURM cluster on localhost for the slurm-marked tests (and for trying
# `launch.kind=slurm` on a laptop). Idempotent: a second call finds the cluster answering
# and returns at once. Needs root and Debian's `munge slurmctld slurmd slurm-client`.
#
#   scripts/slurm/start_local_cluster.sh          # start (or check) the cluster
#   scripts/slurm/start_local_cluster.sh --stop   # stop the daemons this script started
#
# State, spool, logs and slurm.conf live in $STARX_SLURM_DIR (default /tmp/starx-slurm).
# Clients find the config through /etc/slurm/slurm.conf (a symlink this script creates when
# that path is free) or through SLURM_CONF=$STARX_SLURM_DIR/slurm.conf; the tests set
# SLURM_CONF themselves when that file exists.
#
# Two nodes on this one machine (the multi-node test, tests/test_multinode.py):
#   STARX_SLURM_NODES=2 STARX_SLURM_DIR=/tmp/starx-slurm-2n STARX_SLURM_PORT=6827 \
#       scripts/slurm/start_local_cluster.sh
# starts a second controller (ports 6827, slurmd 6828 and 6829) with one slurmd per node
# (`slurmd -N <node>`: Debian's build runs several on one host). The nodes are starx-node1
# and starx-node2, which this script adds to /etc/hosts as 127.0.0.1 when they do not resolve:
# on a real cluster node names resolve, and submitit's MASTER_ADDR is the first node's name.
# No /etc/slurm symlink for it (SLURM_CONF only).
#
# Test-friendly settings (see the comments in the generated slurm.conf):
#   AuthInfo=cred_expire=5   a requeued job waits cred_expire seconds before it may start
#                            again (default 120 s: the "2 minute" requeue delay; 5 is the
#                            minimum, smaller values are rejected and fall back to 120);
#                            measured: requeue -> running again in about 7 s;
#   CPUs = 4 x the real cores (SlurmdParameters=config_overrides) so that several tiny
#   jobs run at once on a small CI machine; SelectTypeParameters=CR_CPU (memory is not
#   a consumable resource, --mem is only checked against RealMemory).
set -euo pipefail

DIR="${STARX_SLURM_DIR:-/tmp/starx-slurm}"
CONF="$DIR/slurm.conf"
NODE="localhost"
NODES_N="${STARX_SLURM_NODES:-1}"
PORT="${STARX_SLURM_PORT:-6817}"  # slurmctld; slurmd listen on the ports after it
CRED_EXPIRE="${STARX_SLURM_CRED_EXPIRE:-5}"  # 5 is the smallest value SLURM accepts
NODE_NAMES=("$NODE")
if [[ "$NODES_N" == 2 ]]; then
    # not "localhost": SLURM reads that node name as this machine's hostname
    NODE_NAMES=(starx-node1 starx-node2)
elif [[ "$NODES_N" != 1 ]]; then
    echo "[start_local_cluster] STARX_SLURM_NODES: 1 or 2, got '$NODES_N'" >&2
    exit 1
fi

log() { echo "[start_local_cluster] $*" >&2; }

stop() {
    local pidfile
    for pidfile in "$DIR"/slurmd.pid "$DIR"/slurmd.*.pid "$DIR"/slurmctld.pid; do
        if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            log "stopping $(basename "$pidfile" .pid) ($(cat "$pidfile"))"
            kill "$(cat "$pidfile")" || true
        fi
    done
    if [[ -f "$DIR/munged.pid" ]] && kill -0 "$(cat "$DIR/munged.pid")" 2>/dev/null; then
        log "stopping munged ($(cat "$DIR/munged.pid"))"
        kill "$(cat "$DIR/munged.pid")" || true
    fi
}

if [[ "${1:-}" == "--stop" ]]; then
    stop
    exit 0
fi

export SLURM_CONF="$CONF"

node_idle() {
    # true when the controller answers and each of our nodes is usable (idle, mixed or allocated)
    local state name
    for name in "${NODE_NAMES[@]}"; do
        state="$(timeout 5 sinfo -h -n "$name" -o '%T' 2>/dev/null | head -n1)" || return 1
        [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]] || return 1
    done
}

if [[ -f "$CONF" ]] && node_idle; then
    log "cluster already up ($(sinfo -h -o '%P %T %c CPUs'))"
    echo "export SLURM_CONF=$CONF"
    exit 0
fi

if [[ $EUID -ne 0 ]]; then
    log "must run as root (munged, slurmctld and slurmd are started as root)"
    exit 1
fi
for bin in munged slurmctld slurmd sinfo; do
    command -v "$bin" >/dev/null || { log "$bin not found: apt-get install munge slurmctld slurmd slurm-client"; exit 1; }
done

mkdir -p "$DIR"/{state,spool,log}
for name in "${NODE_NAMES[@]}"; do
    if [[ "$name" != localhost ]] && ! getent hosts "$name" >/dev/null; then
        log "adding $name (127.0.0.1) to /etc/hosts"
        [[ ! -s /etc/hosts || -z "$(tail -c1 /etc/hosts)" ]] || echo >>/etc/hosts
        echo "127.0.0.1 $name  # scripts/slurm/start_local_cluster.sh" >>/etc/hosts
    fi
done
stop  # a half-started cluster from an earlier call
sleep 0.5

# ---- munge ---------------------------------------------------------------------------
if ! (munge -n 2>/dev/null | unmunge >/dev/null 2>&1); then
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key 2>/dev/null || true
        chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    log "starting munged"
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- munged --pid-file="$DIR/munged.pid" 2>"$DIR/log/munged.err" \
            || munged --force --pid-file="$DIR/munged.pid"
    else
        munged --force --pid-file="$DIR/munged.pid"
    fi
    for _ in $(seq 50); do (munge -n | unmunge >/dev/null 2>&1) && break; sleep 0.1; done
    # munged writes its pid file from the daemon; copy it where --stop looks if needed
    [[ -f "$DIR/munged.pid" ]] || pgrep -o munged >"$DIR/munged.pid" || true
fi
(munge -n | unmunge >/dev/null) || { log "munge does not work"; exit 1; }

# ---- slurm.conf ----------------------------------------------------------------------
CORES="$(nproc)"
CPUS=$((CORES * 4 / NODES_N))
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
if [[ "$NODES_N" == 1 ]]; then
    CLUSTER=starx-local
    SLURMD_PID="$DIR/slurmd.pid"
    SLURMD_LOG="$DIR/log/slurmd.log"
    SPOOL="$DIR/spool"
    NODE_LINES="NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN"
else  # one slurmd per node on this host: each its own port, spool, pid and log (%n = node name)
    CLUSTER=starx-local$NODES_N
    SLURMD_PID="$DIR/slurmd.%n.pid"
    SLURMD_LOG="$DIR/log/slurmd.%n.log"
    SPOOL="$DIR/spool/%n"
    NODE_LINES=""
    for i in "${!NODE_NAMES[@]}"; do
        mkdir -p "$DIR/spool/${NODE_NAMES[$i]}"
        NODE_LINES+="NodeName=${NODE_NAMES[$i]} NodeAddr=127.0.0.1 Port=$((PORT + 1 + i)) CPUs=$CPUS RealMemory=$((MEM_MB / NODES_N)) State=UNKNOWN"$'\n'
    done
fi
cat >"$CONF" <<EOF
# Generated by scripts/slurm/start_local_cluster.sh: a $NODES_N-node test cluster on this machine.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
CredType=cred/munge
# A requeued job may start again only after cred_expire seconds (default 120).
AuthInfo=cred_expire=$CRED_EXPIRE
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
MpiDefault=none
# slurmctld starts with -c (fresh job state): keep job ids from repeating across restarts
FirstJobId=$(( $(date +%s) % 50000000 + 1000 ))
ReturnToService=2
# keep finished jobs visible to squeue/scontrol for 10 minutes (no sacct here)
MinJobAge=600
KillWait=30
# Time limits are enforced every 10 s; requeue after preemption is allowed.
JobRequeue=1
SlurmdTimeout=60
SlurmctldTimeout=60
InactiveLimit=0
SlurmdParameters=config_overrides
$NODE_LINES
PartitionName=debug Nodes=$(IFS=,; echo "${NODE_NAMES[*]}") Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
: >"$DIR/cgroup.conf"

# Clients without SLURM_CONF read /etc/slurm/slurm.conf: point it at ours when that is free
# (the one-node cluster's only: the tests find the two-node one through SLURM_CONF).
if [[ "$NODES_N" != 1 ]]; then
    :
elif [[ ! -e /etc/slurm/slurm.conf || -L /etc/slurm/slurm.conf ]]; then
    mkdir -p /etc/slurm
    ln -sfn "$CONF" /etc/slurm/slurm.conf
else
    log "/etc/slurm/slurm.conf exists and is not ours: clients need SLURM_CONF=$CONF"
fi

# ---- daemons -------------------------------------------------------------------------
log "starting slurmctld"
slurmctld -f "$CONF" -c 2>>"$DIR/log/slurmctld.err"   # -c: clear old job state
for _ in $(seq 100); do timeout 5 scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
for name in "${NODE_NAMES[@]}"; do
    log "starting slurmd for node $name"
    slurmd -f "$CONF" -N "$name" 2>>"$DIR/log/slurmd.err"
done

for i in $(seq 300); do
    if node_idle; then
        log "cluster up after $((i / 10)).$((i % 10)) s: $(sinfo -h -o '%P %T %c CPUs %m MB')"
        echo "export SLURM_CONF=$CONF"
        exit 0
    fi
    for name in "${NODE_NAMES[@]}"; do
        state="$(sinfo -h -n "$name" -o '%T' 2>/dev/null | head -n1 || true)"
        if [[ "$state" == drain* || "$state" == down* ]]; then
            scontrol update NodeName="$name" State=RESUME >/dev/null 2>&1 || true
        fi
    done
    sleep 0.1
done
log "node did not become idle; last state: $(sinfo -h -o '%T %E' 2>&1 || true)"
tail -n 20 "$DIR/log/slurmctld.log" "$DIR"/log/slurmd*.log >&2 || true
exit 1
