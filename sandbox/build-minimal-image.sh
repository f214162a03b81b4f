#!/usr/bin/env bash
# Builds a second, minimal sandbox image (default crogia-minimal:latest): a
# static busybox and nothing else. No python, no bash, no package manager.
# The tests run sessions on it to show that the sandbox agent, mounted in
# at creation, needs nothing from the image a user configures.
#
# Usage: sandbox/build-minimal-image.sh [IMAGE]        (env FORCE=1 rebuilds)
set -euo pipefail

IMAGE="${1:-crogia-minimal:latest}"

# shellcheck source=sandbox/image-common.sh
. "$(dirname "$0")/image-common.sh"
skip_if_present "$IMAGE" minimal-image

BUSYBOX=/bin/busybox
if ! { [ -x "$BUSYBOX" ] && { ldd "$BUSYBOX" 2>&1 || true; } | grep -q "not a dynamic"; }; then
  echo "minimal-image: installing busybox-static (Debian package)"
  as_root apt-get install -y -qq busybox-static >/dev/null 2>&1 || {
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
  }
fi

WORK=$(mktemp -d /var/tmp/crogia-minimal.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/rootfs"
mkdir -p "$ROOT"/{bin,etc,tmp,workspace,root,proc,sys,dev}
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$ROOT/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOT/etc/group"
chmod 1777 "$ROOT/tmp"

tar -C "$ROOT" -c . | docker import \
  -c 'WORKDIR /workspace' \
  -c 'ENV PATH=/bin' \
  -c 'CMD ["sh"]' \
  - "$IMAGE" >/dev/null
echo "minimal-image: built $IMAGE ($(du -sh "$ROOT" | cut -f1))"
