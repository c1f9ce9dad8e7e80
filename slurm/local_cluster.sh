#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, for tests and for trying the sbatch/submitit routes on a laptop.
#
#   slurm/local_cluster.sh start DIR   # munged + slurmctld + slurmd, state and logs under DIR; prints the env to export
#   slurm/local_cluster.sh stop DIR    # stops the daemons started for DIR (by their pid files) and waits for them
#
# Needs root and Debian's `slurmctld slurmd slurm-client munge` (apt-get install -y ...). No systemd:
# the daemons are started by hand with their own socket, pid and log files under DIR. Clients use
# SLURM_CONF=DIR/slurm.conf. CPUs default to the machine's (override with SLURM_LOCAL_CPUS).
set -euo pipefail

cmd=${1:?usage: local_cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: local_cluster.sh start|stop DIR}")
node=$(hostname -s)
cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
port=${SLURM_LOCAL_PORT:-6817}

pid_of() { [[ -s "$dir/$1.pid" ]] && cat "$dir/$1.pid" || true; }

stop() {
  local pids=()
  for daemon in slurmd slurmctld munged; do
    pid=$(pid_of "$daemon")
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null && pids+=("$pid") || true; fi
    rm -f "$dir/$daemon.pid"
  done
  for _ in $(seq 50); do  # up to 5 s, then SIGKILL
    alive=(); for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    (( ${#alive[@]} == 0 )) && return 0
    sleep 0.1
  done
  kill -9 "${alive[@]}" 2>/dev/null || true
}

start() {
  mkdir -p "$dir"/{state,spool,munge}
  chmod 0755 "$dir" "$dir/munge"
  cat > "$dir/slurm.conf" <<EOF
ClusterName=difflab-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
SchedulerParameters=defer_batch,sched_interval=1
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 2048 )) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  if [[ ! -s "$dir/munge/munge.key" ]]; then  # this cluster's own key
    (umask 077 && dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none)
  fi
  munged --force --socket="$dir/munge/munge.socket" --pid-file="$dir/munged.pid" --key-file="$dir/munge/munge.key" \
    --log-file="$dir/munged.log" --seed-file="$dir/munge/munged.seed"
  SLURM_CONF="$dir/slurm.conf" slurmctld -f "$dir/slurm.conf"
  SLURM_CONF="$dir/slurm.conf" slurmd -f "$dir/slurm.conf" -N "$node"
  for _ in $(seq 100); do  # wait until the node takes jobs
    if SLURM_CONF="$dir/slurm.conf" sinfo -h -N -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
      echo "export SLURM_CONF=$dir/slurm.conf"
      return 0
    fi
    sleep 0.2
  done
  echo "local SLURM cluster did not come up; logs under $dir" >&2
  tail -n 20 "$dir"/*.log >&2 || true
  stop
  return 1
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: local_cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
