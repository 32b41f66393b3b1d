#!/usr/bin/env bash
# Stop the single-node SLURM started by .ci/slurm/up.sh, by the PIDs in its PID files (never by process name):
# slurmctld first (it saves its state), then slurmd, slurmdbd, MariaDB, and munged only if up.sh started it;
# then the configs up.sh rendered into /etc/slurm (recognised by their first line).
BASE=${PALMARES_SLURM_DIR:-/tmp/palmares-slurm}
MARK="# palmares-radiomics make test-slurm"
ours() { [ -s "$1" ] && [ "$(head -1 "$1")" = "$MARK" ]; }
ours /etc/slurm/slurm.conf && command -v scancel >/dev/null && timeout 10 scancel --user="$(id -un)" 2>/dev/null

stop() {  # $1 = PID file
  [ -s "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$1"
}
for daemon in slurmctld slurmd slurmdbd mariadbd munged; do
  stop "$BASE/run/$daemon.pid"
done
for conf in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
  ours "$conf" && rm -f "$conf"
done
exit 0
