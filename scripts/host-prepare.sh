#!/usr/bin/env bash
# Prepare a Debian host for DS01 (idempotent): Docker Engine with the `nvidia` runtime name,
# Debian packages DS01 uses, and DS01 installed in a system venv readable by every user.
# Used by both README commands (scripts/setup.sh and scripts/test.sh).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DS01_VENV:-/opt/ds01/venv}"
STATE="${DS01_HOST_STATE:-/run/ds01-host}"
mkdir -p "$STATE"

log() { printf '\033[1m[ds01]\033[0m %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "run as root: DS01 installs packages and starts the Docker Engine" >&2
  exit 1
fi

need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v busybox >/dev/null || need_pkgs+=(busybox-static)
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v git >/dev/null || need_pkgs+=(git)
command -v runuser >/dev/null || need_pkgs+=(util-linux)
command -v sshd >/dev/null || need_pkgs+=(openssh-server)  # container-ssh tests: the host's real sshd
command -v ssh >/dev/null || need_pkgs+=(openssh-client)    # ssh-keygen (per-user container host keys), the tests' client
[ -x /usr/bin/python3 ] || need_pkgs+=(python3)
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need_pkgs+=(python3-venv)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need_pkgs+=(ca-certificates)
command -v promtool >/dev/null || need_pkgs+=(prometheus)  # promtool checks deploy/prometheus rules
command -v chromium >/dev/null || need_pkgs+=(chromium)    # headless test of the web status page
command -v setquota >/dev/null || need_pkgs+=(quota)       # max_workspace_bytes as user quotas (ext4/XFS)
[ -x /usr/bin/docker-registry ] || need_pkgs+=(docker-registry)  # the pull tests' local registry (issue 17)
[ -x /usr/bin/docker-registry ] || need_pkgs+=(docker-registry)  # a real local registry for the image pull / catalog tests
command -v slurmctld >/dev/null || need_pkgs+=(slurm-wlm slurm-client munge)  # the two-node Slurm test cluster (issue 18)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# The Docker Engine. DS01's GPU hand-off uses the runtime named `nvidia`; on hosts without the
# NVIDIA container toolkit it is plain runc, so the same path runs end to end.
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (runtime nvidia -> runc)"
  runtime=/usr/sbin/runc
  command -v nvidia-container-runtime >/dev/null && runtime="$(command -v nvidia-container-runtime)"
  # --no-new-privileges: the engine's build API takes no security options, so this is the only
  # way build steps get it (DS01's own containers set it per container as well)
  nohup dockerd --add-runtime "nvidia=$runtime" --no-new-privileges >/var/log/ds01-dockerd.log 2>&1 &
  echo $! > "$STATE/dockerd.pid"
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/ds01-dockerd.log" >&2; tail -20 /var/log/ds01-dockerd.log >&2; exit 1; }
fi
if ! docker info --format '{{json .Runtimes}}' | grep -q '"nvidia"'; then
  log "warning: the running Docker Engine has no 'nvidia' runtime; set gpu.binding or add the runtime"
fi

# DS01 itself, in a venv every user can execute (a venv under /root would not be).
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  mkdir -p "$(dirname "$VENV")"
  /usr/bin/python3 -m venv "$VENV"
fi
log "installing DS01 into $VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade "$REPO[test]" 2>&1 | grep -v -E '^WARNING: (Location|The directory)' || true
"$VENV/bin/python" -c 'import ds01' || { echo "DS01 did not install" >&2; exit 1; }
chmod -R a+rX "$VENV"
for cmd in "$VENV"/bin/ds01 "$VENV"/bin/ds01d "$VENV"/bin/container-* "$VENV"/bin/image-* "$VENV"/bin/project-* \
           "$VENV"/bin/user-setup "$VENV"/bin/dir-create "$VENV"/bin/git-init "$VENV"/bin/readme-create \
           "$VENV"/bin/check-limits "$VENV"/bin/gpu-queue "$VENV"/bin/vscode-setup; do
  [ -e "$cmd" ] && ln -sf "$cmd" "/usr/local/bin/$(basename "$cmd")"
done
getent group ds01-admin >/dev/null || groupadd ds01-admin
log "host ready: $("$VENV/bin/ds01" --version)"
