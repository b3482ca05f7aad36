#!/usr/bin/env bash
# README command 1: set up DS01 on this host with the embedded defaults and run its main job:
# Docker Engine + ds01d + a locally built base image, then a demo user who sets up, creates and
# launches a project and runs code in it. Idempotent; needs root.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DS01_VENV:-/opt/ds01/venv}"
DEMO_USER="${DS01_DEMO_USER:-ds01-demo}"
log() { printf '\033[1m[ds01]\033[0m %s\n' "$*"; }

bash "$REPO/scripts/host-prepare.sh"
export PATH="$VENV/bin:$PATH"

# 1. the daemon (systemd when the host has it, else a background process)
daemon_up() {  # a socket that accepts (a file left by a crashed daemon does not count)
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(2)
s.connect("/run/ds01/ds01.sock")
PY
}
if daemon_up; then
  log "ds01d is already running"
elif [ -d /run/systemd/system ]; then
  install -m 0644 "$REPO/deploy/ds01d.service" /etc/systemd/system/ds01d.service
  systemctl daemon-reload && systemctl enable --now ds01d
else
  # private: the log and the events carry what users ran (ds01d also fixes the modes at each start)
  install -d -m 0750 /var/log/ds01 && chmod 0750 /var/log/ds01
  (umask 077; : >>/var/log/ds01/ds01d.log) && chmod 0600 /var/log/ds01/ds01d.log
  log "starting ds01d (log: /var/log/ds01/ds01d.log)"
  nohup "$VENV/bin/ds01d" >>/var/log/ds01/ds01d.log 2>&1 &
  echo $! > /run/ds01d.pid
fi
for _ in $(seq 1 100); do daemon_up && break; sleep 0.2; done
daemon_up || { echo "ds01d did not start:" >&2; tail -20 /var/log/ds01/ds01d.log >&2; exit 1; }

# 2. the base image, built locally (no registry needed)
log "base image (debootstrap + python3, built locally; a few minutes the first time)"
ds01 admin base-image bootstrap

# 3. the main job, as a demo user: set up, create a project, launch it, run code in it
id "$DEMO_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$DEMO_USER"
as_demo() { runuser -u "$DEMO_USER" -- env -i HOME="$(getent passwd "$DEMO_USER" | cut -d: -f6)" \
              PATH="$VENV/bin:/usr/bin:/bin" LANG=C.UTF-8 "$@"; }
log "as $DEMO_USER: user-setup --yes"
as_demo user-setup --yes --git-name "DS01 Demo" --git-email "$DEMO_USER@localhost"
log "as $DEMO_USER: project-init demo --yes"
as_demo project-init demo --yes
log "as $DEMO_USER: project-launch demo --background"
as_demo project-launch demo --background
log "as $DEMO_USER: container-run demo -- python3 ..."
as_demo container-run demo -- python3 -c 'import getpass, os, sys; print(f"hello from DS01: {getpass.getuser()} in {os.getcwd()}, Python {sys.version.split()[0]}")'
as_demo container-list
as_demo ds01 gpus
log "done. Try: runuser -u $DEMO_USER -- container-run demo   (a shell in the demo container)"
