#!/usr/bin/env bash
# Builds the sandbox agent as one static binary (glibc linked statically, no
# dynamic dependencies), so it runs in any Linux image: target/crogia-agent.
# Offline: libc.a comes with Debian's libc6-dev, installed when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

arch=$(uname -m)
triple="$arch-unknown-linux-gnu"
if [ ! -f "/usr/lib/$arch-linux-gnu/libc.a" ]; then
  echo "sandbox-agent: installing libc6-dev (static glibc)"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get install -y --no-install-recommends libc6-dev >/dev/null
fi
# --target keeps these flags off build scripts and away from the host's own
# build (a separate directory under target/).
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --quiet --locked --profile agent -p crogia-sandbox-agent --bin crogia-agent --target "$triple"
built="target/$triple/agent/crogia-agent"
if readelf -l "$built" 2>/dev/null | grep -q "Requesting program interpreter"; then
  echo "sandbox-agent: $built is dynamically linked" >&2
  exit 1
fi
install -m 0755 "$built" target/crogia-agent.new
mv -f target/crogia-agent.new target/crogia-agent
echo "sandbox-agent: target/crogia-agent ($(stat -c %s target/crogia-agent) bytes, static)"
