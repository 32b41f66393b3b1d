#!/usr/bin/env bash
# Start a real single-node SLURM cluster on localhost for `make test-slurm` (Debian 12, as root, no systemd).
# Installs Debian's slurmctld, slurmd, slurm-client and munge when missing (+ mariadb-server and slurmdbd for
# accounting), renders .ci/slurm/*.conf.in into /etc/slurm and starts the daemons, each writing its PID file
# under $PALMARES_SLURM_DIR/run; .ci/slurm/down.sh stops them by those PIDs and removes the rendered configs.
#   PALMARES_SLURM_DIR  state, logs and PID files (default /tmp/palmares-slurm)
#   PALMARES_SLURM_DBD  1 (default): slurmdbd + MariaDB, so `sacct` works; 0: no accounting (squeue status)
# The configs go to the default /etc/slurm, not to a folder named by SLURM_CONF: the SLURM plugin's job step
# drops every SLURM_* variable before its inner `srun`, which then cannot find a config anywhere else.
# An /etc/slurm/slurm.conf that up.sh did not write (a real cluster's) is never overwritten.
# Recipe and measurements: ../shared/recipes/slurm-single-node.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BASE=${PALMARES_SLURM_DIR:-/tmp/palmares-slurm}
DBD=${PALMARES_SLURM_DBD:-1}
ETC=/etc/slurm
MARK="# palmares-radiomics make test-slurm"
export DEBIAN_FRONTEND=noninteractive

[ "$(id -u)" = 0 ] || { echo "make test-slurm starts SLURM daemons and installs Debian packages: run it as root" >&2; exit 1; }

packages="slurmctld slurmd slurm-client munge"
[ "$DBD" = 1 ] && packages="$packages slurmdbd mariadb-server"
missing=$(for p in $packages; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx "install ok installed" || echo "$p"
done)
if [ -n "$missing" ]; then
  echo "installing" $missing
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ -s "$ETC/slurm.conf" ] && [ "$(head -1 "$ETC/slurm.conf")" != "$MARK" ]; then
  echo "$ETC/slurm.conf belongs to another SLURM installation; make test-slurm will not replace it" >&2
  exit 1
fi
mkdir -p "$BASE"/{state,spool,log,run} "$ETC"
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
render() {  # template -> rendered file, marked as ours on its first line
  { echo "$MARK"; sed -e "s#@BASE@#$BASE#g" -e "s#@CPUS@#$(nproc)#g" -e "s#@MEM_MB@#$MEM_MB#g" -e "s#@ACCOUNTING@#$ACCOUNTING#g" \
    "$1"; } > "$2"
}

# The node offers this machine's CPUs and three quarters of its memory.
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024 * 3 / 4)}' /proc/meminfo)
ACCOUNTING=accounting_storage/none
[ "$DBD" = 1 ] && ACCOUNTING=accounting_storage/slurmdbd
render "$HERE/slurm.conf.in" "$ETC/slurm.conf"

# munge (authentication): reuse a running munged, else start one and remember that we did.
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
fi
mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
if ! alive /run/munge/munged.pid; then
  runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1
  cp /run/munge/munged.pid "$BASE/run/munged.pid"
fi
munge -n | unmunge >/dev/null

# Accounting: MariaDB (system data directory, TCP on 127.0.0.1 only) and slurmdbd, before slurmctld.
if [ "$DBD" = 1 ]; then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! alive "$BASE/run/mariadbd.pid"; then
    /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 </dev/null >"$BASE/log/mariadb.log" 2>&1 &
    echo $! > "$BASE/run/mariadbd.pid"
  fi
  for _ in $(seq 120); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  render "$HERE/slurmdbd.conf.in" "$ETC/slurmdbd.conf"
  chmod 600 "$ETC/slurmdbd.conf"
  alive "$BASE/run/slurmdbd.pid" || slurmdbd </dev/null >/dev/null 2>&1
  for _ in $(seq 60); do sacctmgr -n show cluster >/dev/null 2>&1 && break; sleep 0.5; done
  sacctmgr -n -P show cluster format=cluster | grep -qx palmares-ci || sacctmgr -i add cluster palmares-ci >/dev/null
fi

# Controller and node daemon (both daemonize and write the PID files named in slurm.conf).
alive "$BASE/run/slurmctld.pid" || slurmctld </dev/null >/dev/null 2>&1
alive "$BASE/run/slurmd.pid" || slurmd </dev/null >/dev/null 2>&1
for _ in $(seq 60); do sinfo -h -o %t 2>/dev/null | grep -qx idle && break; sleep 0.5; done
sinfo -h -o %t | grep -qx idle || { echo "the SLURM node is not idle; see $BASE/log" >&2; exit 1; }
sinfo
