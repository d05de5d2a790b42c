#!/usr/bin/env bash
# A single-node SLURM on this machine, to try docs/CLUSTER.md's job arrays without a cluster
# (and what the tests marked `slurm` start and stop).
#
#   sudo scripts/slurm_local.sh start [STATE_DIR]   # prints the `export SLURM_CONF=...` to use
#   sudo scripts/slurm_local.sh stop  [STATE_DIR]
#
# start: installs Debian's slurm-wlm and munge with apt-get if sbatch is missing, writes a
# minimal slurm.conf for this host (all its CPUs, one partition, no accounting, no cgroups),
# and starts munged, slurmctld and slurmd on their own socket, ports and files under STATE_DIR
# (default /tmp/resnet-lab-slurm), so a SLURM already on the machine is left alone. stop: ends
# the three daemons it started, by the pids in STATE_DIR. Needs root (the daemons; apt-get).
set -euo pipefail

action=${1:-}
state=$(realpath -m "${2:-/tmp/resnet-lab-slurm}")
host=$(hostname -s)

say() { echo "slurm_local: $*" >&2; }

stop() {
    for name in slurmd slurmctld munged; do
        if [ -s "$state/$name.pid" ]; then
            pid=$(cat "$state/$name.pid")
            if kill "$pid" 2>/dev/null; then
                for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
                kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
            fi
            rm -f "$state/$name.pid"
        fi
    done
    say "stopped the daemons of $state"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

install() {
    if ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
        say "installing slurm-wlm and munge (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create >/dev/null 2>&1 || create-munge-key -f >/dev/null
    fi
}

write_conf() {
    local cpus ctld_port d_port
    cpus=$(nproc)
    ctld_port=$(free_port)
    d_port=$(free_port)
    cat > "$state/slurm.conf" <<EOF
# A single-node SLURM for resnet-lab (scripts/slurm_local.sh)
ClusterName=resnetlab
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$state/munge/munge.socket,cred_expire=10
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
InactiveLimit=0
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    [ "$(id -u)" -eq 0 ] || { say "needs root (the daemons run as root)"; exit 2; }
    install
    [ -s "$state/slurmctld.pid" ] && kill -0 "$(cat "$state/slurmctld.pid")" 2>/dev/null && {
        say "already running in $state"; echo "export SLURM_CONF=$state/slurm.conf"; return; }
    mkdir -p "$state/munge" "$state/ctld" "$state/d"
    chmod 700 "$state/munge"
    write_conf
    munged --force --socket="$state/munge/munge.socket" --pid-file="$state/munged.pid" \
        --log-file="$state/munged.log" --seed-file="$state/munged.seed"
    export SLURM_CONF=$state/slurm.conf
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF" -N "$host"
    for _ in $(seq 100); do                      # up to 20 s for the node to report in
        if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
            say "SLURM is up: $(sinfo -h -o '%P %D nodes, %c CPUs, %t')"
            echo "export SLURM_CONF=$SLURM_CONF"
            return
        fi
        sleep 0.2
    done
    say "the node did not become idle; see $state/slurmctld.log and $state/slurmd.log"
    stop
    exit 1
}

case "$action" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop [STATE_DIR]" >&2; exit 2 ;;
esac
