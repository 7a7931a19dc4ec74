#!/usr/bin/env bash
# A throw-away single-node SLURM cluster for PyJAMA's SLURM test (tests/test_slurm.py).
#
#   bash tests/infra/slurm_cluster.sh up       install what is missing, start munge, slurmdbd,
#                                              slurmctld, slurmd; wait until a job runs
#   bash tests/infra/slurm_cluster.sh down     stop ONLY the daemons `up` started (by pid), drop the
#                                              accounting database, remove the files `up` wrote
#   bash tests/infra/slurm_cluster.sh status   exit 0 when the cluster answers and the node is usable
#
# Made for Debian 12 run as root with no init system (CI containers and VMs); SLURM 22.05
# from Debian. Every step is bounded by a timeout; `up` and `down` are idempotent (a second
# `up` reuses what runs, a second `down` does nothing). Docs: docs/slurm.md.
#
# Knobs (environment):
#   PYJAMA_SLURM_DB_HOST / _DB_PORT   MariaDB that receives the accounting database
#                                     (default 127.0.0.1 / 3306; reached as root, no password)
#   PYJAMA_SLURM_ACCOUNTING=0         no slurmdbd: then Snakemake needs `--slurm-status-command squeue`
#   PYJAMA_SLURM_SKIP_APT=1           never call apt-get (fail if packages are missing)
#   PYJAMA_SLURM_PARTITION            partition name (default: debug)
set -euo pipefail

STATE=/var/lib/pyjama-slurm          # pid files, spool, slurmctld state, logs, what we started
STARTED=$STATE/started               # "name pid" per daemon this script started
LOCK=/run/pyjama-slurm.lock
MARK="# written by PyJAMA tests/infra/slurm_cluster.sh"
CLUSTER=pyjama
PART=${PYJAMA_SLURM_PARTITION:-debug}
ACCT=${PYJAMA_SLURM_ACCOUNTING:-1}
DB_HOST=${PYJAMA_SLURM_DB_HOST:-127.0.0.1}
DB_PORT=${PYJAMA_SLURM_DB_PORT:-3306}
DB_NAME=pyjama_slurm_acct
DB_USER=pyjama_slurm
PACKAGES=(slurm-wlm slurmdbd munge)

log() { printf '[slurm_cluster %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# wait_for SECONDS WHAT CMD...  poll CMD (each try bounded to 5 s) until it succeeds
wait_for() {
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until timeout -k 2 5 "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || { log "timed out after ${limit} s waiting for ${what}"; return 1; }
    sleep 0.2
  done
}

# the pid in a pid file, if that process is alive and is the named program
live_pid() {  # live_pid PIDFILE PROGRAM
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$2"* ]] || return 1
  echo "$pid"
}

remember() { echo "$1 $2" >>"$STARTED"; }   # remember NAME PID

sql() { timeout -k 2 20 mariadb --protocol=TCP -h "$DB_HOST" -P "$DB_PORT" -u root -N -B -e "$1"; }

need_root() {
  [[ $(id -u) == 0 ]] || die "must run as root (it installs packages and starts system daemons); \
run it in CI or a VM: sudo bash tests/infra/slurm_cluster.sh up"
}

# ---------------------------------------------------------------------------------- install
packages_missing() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

install_packages() {
  local missing; missing=$(packages_missing)
  [[ -z $missing ]] && return 0
  [[ ${PYJAMA_SLURM_SKIP_APT:-0} == 1 ]] && die "missing Debian packages: ${missing//$'\n'/ } (PYJAMA_SLURM_SKIP_APT=1)"
  command -v apt-get >/dev/null || die "missing packages ${missing//$'\n'/ } and no apt-get; install SLURM (slurmctld, slurmd, slurmdbd) and munge by hand"
  log "apt-get install ${PACKAGES[*]}"
  # Package scripts would start the daemons through invoke-rc.d: forbid that for this install
  # (policy-rc.d exit 101 = "action forbidden"), so only this script starts daemons.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; own_policy=1
  fi
  local rc=0
  export DEBIAN_FRONTEND=noninteractive
  timeout -k 10 300 apt-get update -qq >/dev/null || rc=$?
  if ((rc == 0)); then
    timeout -k 10 600 apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null || rc=$?
  fi
  ((own_policy)) && rm -f "$policy"
  ((rc == 0)) || die "apt-get failed (exit $rc); install by hand: apt-get install ${PACKAGES[*]}"
}

# ---------------------------------------------------------------------------------- munge
start_munge() {
  # An already running munged (a real SLURM node, another service) is used, never restarted.
  if timeout 5 bash -c 'munge -n | unmunge' >/dev/null 2>&1; then log "munged: already running, reused"; return; fi
  if [[ ! -s /etc/munge/munge.key ]]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 status=none
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  rm -f /run/munge/munged.pid
  timeout -k 2 10 runuser -u munge -- /usr/sbin/munged 9>&-     # daemonizes; writes /run/munge/munged.pid
  wait_for 10 munged bash -c 'munge -n | unmunge'
  remember munged "$(live_pid /run/munge/munged.pid munged)"
  log "munged: started (pid $(live_pid /run/munge/munged.pid munged))"
}

# ---------------------------------------------------------------------------------- configs
# We write /etc/slurm/slurm.conf (every SLURM client reads it) only if it is absent or ours.
check_conf_is_ours() {
  local f
  for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
    if [[ -e $f ]] && ! grep -qF "$MARK" "$f"; then
      die "$f exists and was not written by this script: this machine has its own SLURM; \
use that cluster directly (see docs/slurm.md) instead of this test cluster"
    fi
  done
}

write_slurm_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(timeout 10 /usr/sbin/slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  # leave headroom, or slurmd reports less than configured and the node drains (Low RealMemory)
  mem=$((mem > 2048 ? mem - 1024 : mem / 2))
  local acct
  if ((ACCT)); then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
  else
    acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  install -d -m 0755 /etc/slurm
  cat >/etc/slurm/slurm.conf <<EOF
$MARK (removed by its 'down')
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups / systemd in a container: track job processes by parent pid, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job without --mem would otherwise reserve the whole node's memory.
DefMemPerCPU=500
JobCompType=jobcomp/none
$acct
# Finished jobs stay visible to squeue for 5 min: snakemake-executor-plugin-slurm's
# '--slurm-status-command squeue' needs >= 120 s, or it never sees jobs finish.
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PART Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  log "wrote /etc/slurm/slurm.conf (node $host: $cpus CPUs, $mem MB; partition $PART; accounting=$ACCT)"
}

# ---------------------------------------------------------------------------------- accounting
start_slurmdbd() {
  if live_pid "$STATE/slurmdbd.pid" slurmdbd >/dev/null; then log "slurmdbd: already running, reused"; return; fi
  sql "SELECT 1" >/dev/null 2>&1 || die "no MariaDB/MySQL reachable as root at $DB_HOST:$DB_PORT \
(needed for slurmdbd accounting); start it, point PYJAMA_SLURM_DB_HOST/PORT at one, or set PYJAMA_SLURM_ACCOUNTING=0"
  local pass; pass=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
  # Our own user and database only; nothing else in that server is touched.
  sql "CREATE DATABASE IF NOT EXISTS \`$DB_NAME\`;
       CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
       CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$pass';
       ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
       ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$pass';
       GRANT ALL ON \`$DB_NAME\`.* TO '$DB_USER'@'localhost';
       GRANT ALL ON \`$DB_NAME\`.* TO '$DB_USER'@'127.0.0.1';" \
    || die "could not create the accounting database $DB_NAME in MariaDB at $DB_HOST:$DB_PORT"
  touch "$STATE/db_created"
  (umask 077; cat >/etc/slurm/slurmdbd.conf <<EOF
$MARK (removed by its 'down')
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=$DB_HOST
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$pass
StorageLoc=$DB_NAME
EOF
  )
  chown slurm:slurm /etc/slurm/slurmdbd.conf
  rm -f "$STATE/slurmdbd.pid"
  timeout -k 2 20 /usr/sbin/slurmdbd 9>&-                 # daemonizes; writes its pid file
  wait_for 60 "slurmdbd pid file" test -s "$STATE/slurmdbd.pid"
  remember slurmdbd "$(<"$STATE/slurmdbd.pid")"
  wait_for 60 "slurmdbd to answer" sacctmgr -n list cluster
  log "slurmdbd: started (pid $(<"$STATE/slurmdbd.pid"))"
}

# ---------------------------------------------------------------------------------- slurm
start_slurm() {
  local host; host=$(hostname -s)
  if live_pid "$STATE/slurmctld.pid" slurmctld >/dev/null; then log "slurmctld: already running, reused"; else
    rm -f "$STATE/slurmctld.pid"
    timeout -k 2 20 /usr/sbin/slurmctld 9>&-              # daemonizes as SlurmUser
    wait_for 30 "slurmctld pid file" test -s "$STATE/slurmctld.pid"
    remember slurmctld "$(<"$STATE/slurmctld.pid")"
    wait_for 30 "slurmctld to answer" bash -c 'scontrol ping | grep -q UP'
    log "slurmctld: started (pid $(<"$STATE/slurmctld.pid"))"
  fi
  if live_pid "$STATE/slurmd.pid" slurmd >/dev/null; then log "slurmd: already running, reused"; else
    rm -f "$STATE/slurmd.pid"
    timeout -k 2 20 /usr/sbin/slurmd 9>&-
    wait_for 30 "slurmd pid file" test -s "$STATE/slurmd.pid"
    remember slurmd "$(<"$STATE/slurmd.pid")"
    log "slurmd: started (pid $(<"$STATE/slurmd.pid"))"
  fi
  if sinfo -h -n "$host" -o %T 2>/dev/null | grep -Eq 'down|drain'; then   # left over from an unclean stop
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  fi
  wait_for 60 "node $host to be idle" bash -c "sinfo -h -n $host -o %T | grep -Eq '^(idle|mixed|allocated)'"
  if ((ACCT)); then
    wait_for 30 "cluster $CLUSTER registered in slurmdbd" \
      bash -c "sacctmgr -n -P list cluster format=cluster | grep -qx $CLUSTER"
  fi
}

smoke_test() {
  local out
  out=$(timeout -k 5 60 srun -N1 -n1 -t 1 --mem=50 hostname 2>&1) || die "srun smoke test failed: $out"
  [[ $out == "$(hostname)" ]] || die "srun smoke test printed '$out', expected '$(hostname)'"
}

dump_logs() {
  local f
  for f in "$STATE"/log/*.log; do
    [[ -s $f ]] || continue
    log "--- last lines of $f"; tail -n 15 "$f" >&2
  done
}

# ---------------------------------------------------------------------------------- commands
up() {
  local t0=$SECONDS
  need_root
  install_packages
  log "packages ready after $((SECONDS - t0)) s"
  check_conf_is_ours
  install -d -m 0755 "$STATE"
  install -d -o slurm -g slurm -m 0755 "$STATE/slurmctld" "$STATE/log"
  install -d -m 0755 "$STATE/slurmd"
  touch "$STARTED"
  trap 'log "up failed; daemon logs follow (run down to clean up)"; dump_logs' ERR
  start_munge
  write_slurm_conf
  if ((ACCT)); then start_slurmdbd; fi
  start_slurm
  smoke_test
  trap - ERR
  log "SLURM up in $((SECONDS - t0)) s: partition $PART, accounting=$ACCT; \
'bash $0 down' stops it"
  sinfo >&2
}

stop_pid() {  # stop_pid NAME PID  -- TERM, wait up to 15 s, then KILL
  local name=$1 pid=$2
  [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$name"* ]] || return 0   # gone or reused pid
  kill "$pid" 2>/dev/null || true
  local end=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < end)); do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; log "$name (pid $pid) killed"; else
    log "$name (pid $pid) stopped"; fi
}

down() {
  need_root
  if [[ -s $STARTED ]]; then
    local name
    for name in slurmd slurmctld slurmdbd munged; do    # dependents first
      while read -r n pid; do if [[ $n == "$name" ]]; then stop_pid "$n" "$pid"; fi; done <"$STARTED"
    done
  fi
  if [[ -e $STATE/db_created ]]; then
    sql "DROP DATABASE IF EXISTS \`$DB_NAME\`; DROP USER IF EXISTS '$DB_USER'@'localhost';
         DROP USER IF EXISTS '$DB_USER'@'127.0.0.1';" \
      && log "dropped MariaDB database $DB_NAME and user $DB_USER" \
      || log "WARNING: could not drop MariaDB database $DB_NAME / user $DB_USER"
  fi
  local f
  for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
    if [[ -e $f ]] && grep -qF "$MARK" "$f"; then rm -f "$f"; fi
  done
  rm -rf "$STATE"
  log "down: nothing of the test cluster is left running"
}

status() {
  local ok=0 name pidfile pid
  for name in munged slurmdbd slurmctld slurmd; do
    case $name in munged) pidfile=/run/munge/munged.pid ;; *) pidfile=$STATE/$name.pid ;; esac
    if pid=$(live_pid "$pidfile" "$name"); then echo "$name: running (pid $pid)"
    else echo "$name: not running"; [[ $name == slurmdbd && $ACCT == 0 ]] || ok=1; fi
  done
  command -v scontrol >/dev/null || { echo "SLURM is not installed"; return 1; }
  timeout 5 scontrol ping 2>&1 | grep -q UP || ok=1
  timeout 5 sinfo -h -o '%P %T %c CPUs %m MB' 2>&1 | sed 's/^/node: /' || ok=1
  timeout 5 sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)' || ok=1
  ((ok == 0)) && echo "cluster: usable" || echo "cluster: NOT usable"
  return $ok
}

cmd=${1:-}
case $cmd in
  up|down)
    # one up/down at a time (a CI job and a developer, or two test sessions); the daemons
    # are started with fd 9 closed, or they would hold this lock for their whole life
    exec 9>"$LOCK"
    flock -w 300 9 || die "another $0 up/down held $LOCK for 300 s"
    "$cmd"
    if [[ $cmd == down ]]; then rm -f "$LOCK"; fi
    ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
