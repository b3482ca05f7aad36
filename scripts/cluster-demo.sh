#!/usr/bin/env bash
# Cluster mode on one machine (issue 18): the two-node Slurm test cluster, a head ds01d in
# cluster mode and a node agent per node, under a private root. A simulation of two servers
# with a real scheduler (both agents drive this machine's one Docker engine).
#
#   bash scripts/cluster-demo.sh up      # then, as any user: DS01_ROOT=/run/ds01-cluster container-deploy p --gpus 1 --background
#   bash scripts/cluster-demo.sh down
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${DS01_CLUSTER_ROOT:-/run/ds01-cluster}
VENV=${DS01_VENV:-/opt/ds01/venv}
DIR=${DS01_SLURM_DIR:-/run/ds01-slurm}
log() { echo "[cluster-demo] $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

stop_all() {
  for f in "$ROOT"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; done
  pkill -f -- "--root $ROOT --node" 2>/dev/null || true
}

case "${1:-}" in
up)
  [ -x "$VENV/bin/ds01d" ] || { echo "DS01 is not installed in $VENV: run scripts/setup.sh first" >&2; exit 1; }
  bash scripts/slurm-testcluster.sh up
  stop_all
  mkdir -p "$ROOT/etc/ds01" && chmod 755 "$ROOT"
  image=ds01/base:latest
  docker image inspect "$image" >/dev/null 2>&1 || {
    image=ds01-test/busybox:latest
    "$VENV/bin/python" -c "import sys; sys.path.insert(0, '.'); import docker; from tests.integration.harness import ensure_busybox_image as e; e(docker.from_env())"
  }
  cat >"$ROOT/etc/ds01/config.yaml" <<YAML
daemon: {instance: cluster, tick_interval: 2}
images: {default: "$image"}
containers: {name_prefix: ds01c}
observability: {metrics: {listen: ""}, web: {listen: ""}}
defaults: {cpus: 1, memory: 1g, max_gpus: 2, max_gpus_per_container: 2}
cluster: {engine: slurm, slurm_conf: "$DIR/slurm.conf", slurm_include: "$DIR/ds01-managed.conf"}
YAML
  for n in ds01n1 ds01n2; do
    nohup bash scripts/slurm-testcluster.sh exec "$n" "$VENV/bin/ds01d" --root "$ROOT" --node "$n" \
      >"$ROOT/agent-$n.log" 2>&1 &
    echo $! >"$ROOT/agent-$n.pid"
  done
  sleep 1
  nohup "$VENV/bin/ds01d" --root "$ROOT" >"$ROOT/head.log" 2>&1 &
  echo $! >"$ROOT/head.pid"
  for _ in $(seq 1 100); do [ -S "$ROOT/run/ds01/ds01.sock" ] && break; sleep 0.1; done
  [ -S "$ROOT/run/ds01/ds01.sock" ] || { cat "$ROOT/head.log" >&2; exit 1; }
  log "up: head $ROOT (log $ROOT/head.log), agents on ds01n1/ds01n2; image $image"
  log "try: runuser -u <user> -- env DS01_ROOT=$ROOT container-deploy p --gpus 1 --background"
  log "     DS01_ROOT=$ROOT ds01 gpus; export SLURM_CONF=$DIR/slurm.conf; scontrol show job -d"
  ;;
down)
  stop_all
  docker ps -aq --filter label=ds01.instance=cluster | xargs -r docker rm -f >/dev/null 2>&1 || true
  bash scripts/slurm-testcluster.sh down
  rm -rf "$ROOT"
  ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
