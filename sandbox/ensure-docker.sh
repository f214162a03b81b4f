#!/usr/bin/env bash
# Makes sure a Docker engine answers. Where none does on a Debian machine and we
# are root, installs Debian's engine (docker.io) and starts dockerd in the
# background, then waits until it answers.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  echo "docker: engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown))"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "docker: no engine answers and we are not root; start Docker (or add yourself to the docker group) and retry" >&2
  exit 1
fi
if [ ! -f /etc/debian_version ]; then
  echo "docker: no engine answers and this is not Debian; install and start Docker, then retry" >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker: installing Debian's docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

echo "docker: starting dockerd in the background (log: /var/log/crogia-dockerd.log)"
nohup dockerd >/var/log/crogia-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "docker: engine answers"
    exit 0
  fi
  sleep 1
done
echo "docker: dockerd did not answer within 60 s; see /var/log/crogia-dockerd.log" >&2
tail -n 20 /var/log/crogia-dockerd.log >&2 || true
exit 1
