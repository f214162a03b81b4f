#!/usr/bin/env bash
# Starts a second Docker engine on this machine (idempotent), with its own
# socket, data root and exec root, and loads the sandbox images into it. The
# tests use it as an engine that is not local: nothing of this host's
# filesystem is shared with it, so the server injects the sandbox agent by
# archive upload and keeps workspaces in named volumes there.
#
# Usage: sandbox/ensure-second-engine.sh [--stop]   (env CROGIA_ENGINE2_DIR, default /var/lib/crogia-engine2)
set -euo pipefail

DIR="${CROGIA_ENGINE2_DIR:-/var/lib/crogia-engine2}"
SOCK="$DIR/docker.sock"
HOST="unix://$SOCK"
IMAGES=(crogia-sandbox:latest crogia-minimal:latest)

d2() { docker -H "$HOST" "$@"; }

if [ "${1:-}" = --stop ]; then
  if [ -f "$DIR/pid" ] && kill "$(cat "$DIR/pid")" 2>/dev/null; then
    for _ in $(seq 1 30); do
      [ -e "$DIR/pid" ] || break
      sleep 1
    done
    echo "engine2: stopped"
  fi
  exit 0
fi

if ! d2 info >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "engine2: no second engine answers at $SOCK and we are not root to start one" >&2
    exit 1
  fi
  command -v dockerd >/dev/null || bash "$(dirname "$0")/ensure-docker.sh"
  mkdir -p "$DIR/root" "$DIR/exec"
  # An empty config file: /etc/docker/daemon.json sets the first engine's data root.
  echo '{}' >"$DIR/daemon.json"
  rm -f "$SOCK"
  echo "engine2: starting a second dockerd at $SOCK (log: $DIR/dockerd.log)"
  nohup dockerd --config-file "$DIR/daemon.json" --host "$HOST" \
    --data-root "$DIR/root" --exec-root "$DIR/exec" --pidfile "$DIR/pid" \
    --bridge none --iptables=false --ip-masq=false >"$DIR/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    d2 info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! d2 info >/dev/null 2>&1; then
    echo "engine2: the second dockerd did not answer within 60 s" >&2
    tail -n 20 "$DIR/dockerd.log" >&2 || true
    exit 1
  fi
fi

for image in "${IMAGES[@]}"; do
  want=$(docker image inspect --format '{{.Id}}' "$image")
  have=$(d2 image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  if [ "$want" != "$have" ]; then
    echo "engine2: loading $image"
    docker save "$image" | d2 load -q >/dev/null
  fi
done
echo "engine2: answers at $HOST ($(d2 version --format '{{.Server.Version}}'))"
