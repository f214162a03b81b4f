#!/usr/bin/env bash
# Builds the sandbox image (default crogia-sandbox:latest) without a registry:
# debootstrap a minimal Debian bookworm root filesystem and `docker import` it.
# Skipped when the image is already present. sandbox/Dockerfile has the same
# contents for machines that can pull from a registry.
#
# Usage: sandbox/build-image.sh [IMAGE]        (env FORCE=1 rebuilds)
set -euo pipefail

IMAGE="${1:-crogia-sandbox:latest}"
PACKAGES="python3,python3-pip,python3-venv,git,ca-certificates,procps,ripgrep,curl"

# shellcheck source=sandbox/image-common.sh
. "$(dirname "$0")/image-common.sh"
skip_if_present "$IMAGE" sandbox-image

if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
  echo "sandbox-image: installing debootstrap (Debian package)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# Use the mirror this machine's apt is already configured with; never hard-code one.
MIRROR=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  MIRROR=$(awk '/^URIs:/{print $2; exit}' "$f")
  [ -n "$MIRROR" ] && break
done
if [ -z "$MIRROR" ] && [ -f /etc/apt/sources.list ]; then
  MIRROR=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
fi
if [ -z "$MIRROR" ]; then
  echo "sandbox-image: no Debian mirror found in /etc/apt/sources.list{,.d}; build from sandbox/Dockerfile instead" >&2
  exit 1
fi

WORK=$(mktemp -d /var/tmp/crogia-rootfs.XXXXXX)
cleanup() { as_root rm -rf "$WORK"; }
trap cleanup EXIT

echo "sandbox-image: debootstrap bookworm (minbase + $PACKAGES) from $MIRROR"
start=$(date +%s)
as_root /usr/sbin/debootstrap --variant=minbase --include="$PACKAGES" bookworm "$WORK/rootfs" "$MIRROR" \
  >"$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }
# Keep the image small: apt lists and caches are not needed inside a sandbox.
as_root rm -rf "$WORK/rootfs/var/cache/apt/archives"/*.deb "$WORK/rootfs/var/lib/apt/lists"/*
as_root mkdir -p "$WORK/rootfs/workspace"

echo "sandbox-image: importing as $IMAGE"
as_root tar -C "$WORK/rootfs" -c . | docker import \
  -c 'WORKDIR /workspace' \
  -c 'ENV LANG=C.UTF-8' \
  -c 'CMD ["sleep","infinity"]' \
  - "$IMAGE" >/dev/null
echo "sandbox-image: built $IMAGE in $(( $(date +%s) - start )) s"
