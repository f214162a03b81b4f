#!/usr/bin/env bash
# Builds every plugin crate in this workspace for wasm32-wasip2 and copies the
# standard tools into plugins/dist/ (the folder the server loads by default).
#
# Toolchain, in order of preference:
#   1. rustup's wasm32-wasip2 target, when it is installed;
#   2. rustup's target, installed now, when rustup's download server answers
#      within 5 s (never waits on an unreachable download);
#   3. offline: Debian's rustc-web + rust-web-src + wasi-libc, building std
#      with -Zbuild-std, linked by rustup's rust-lld (see ../shared/TOOLCHAIN.md).
# Prints which one it used. A second run with no change takes seconds.
#
# Usage: plugins/build.sh [--toolchain-only | --package CRATE]
#        --package builds one crate only (and installs nothing into dist/).
#        CROGIA_PLUGIN_TOOLCHAIN=debian|rustup forces a toolchain;
#        CARGO_TARGET_DIR is honoured.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE"
TARGET=wasm32-wasip2
DEBIAN_PACKAGES=(rustc-web cargo-web rust-web-src wasi-libc)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "plugins: need root (or sudo) to run: $*" >&2; exit 1; fi; }

rustup_target_installed() { [ -d "$(rustc --print sysroot)/lib/rustlib/$TARGET" ]; }

debian_packages_installed() {
  local p
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
  done
}

choose_toolchain() {
  # CROGIA_PLUGIN_TOOLCHAIN=debian|rustup forces one path.
  case "${CROGIA_PLUGIN_TOOLCHAIN:-}" in
    debian) echo debian; return ;;
    rustup) rustup_target_installed || timeout 120 rustup target add "$TARGET" >&2; echo rustup; return ;;
  esac
  if rustup_target_installed; then
    echo rustup; return
  fi
  if command -v rustup >/dev/null 2>&1; then
    local dist="${RUSTUP_DIST_SERVER:-https://static.rust-lang.org}"
    if curl -sf -o /dev/null --max-time 5 "$dist/dist/channel-rust-stable.toml.sha256" 2>/dev/null; then
      echo "plugins: rustup's download server answers; adding $TARGET" >&2
      if timeout 120 rustup target add "$TARGET" >&2 && rustup_target_installed; then
        echo rustup; return
      fi
      echo "plugins: rustup target add failed; using the offline path" >&2
    fi
  fi
  echo debian
}

setup_debian() {
  if ! debian_packages_installed; then
    echo "plugins: installing Debian packages: ${DEBIAN_PACKAGES[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${DEBIAN_PACKAGES[@]}" >/dev/null
  fi
  # wasm-component-ld (shipped with rustc) spawns `wasm-ld`; rustup's rust-lld is one.
  TOOLS="$HERE/target/toolchain-bin"
  mkdir -p "$TOOLS"
  ln -sf "$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld" "$TOOLS/wasm-ld"
}

TOOLCHAIN=$(choose_toolchain)
case "$TOOLCHAIN" in
  rustup) echo "plugins: toolchain = rustup target $TARGET ($(rustc --version))" ;;
  debian) setup_debian
          echo "plugins: toolchain = offline Debian rustc-web ($(/usr/bin/rustc --version)) with -Zbuild-std" ;;
esac
[ "${1:-}" = "--toolchain-only" ] && exit 0
SELECT=()
if [ "${1:-}" = "--package" ]; then
  [ -n "${2:-}" ] || { echo "plugins: --package needs a crate name" >&2; exit 1; }
  SELECT=(--package "$2")
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$HERE/target}"

start=$(date +%s)
if [ "$TOOLCHAIN" = rustup ]; then
  cargo build --release --target "$TARGET" "${SELECT[@]}"
else
  PATH="$TOOLS:$PATH" RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc RUSTFLAGS="-L /usr/lib/wasm32-wasi" \
    /usr/bin/cargo build --release --target "$TARGET" -Zbuild-std=std,panic_abort "${SELECT[@]}"
fi
if [ ${#SELECT[@]} -gt 0 ]; then
  echo "plugins: built $TARGET_DIR/$TARGET/release/${2//-/_}.wasm in $(( $(date +%s) - start )) s"
  exit 0
fi

# The standard tools are the crates directly under plugins/ (not under testing/).
mkdir -p dist
for manifest in */Cargo.toml; do
  crate=$(dirname "$manifest")
  [ "$crate" = testing ] && continue
  wasm="$TARGET_DIR/$TARGET/release/${crate//-/_}.wasm"
  [ -f "$wasm" ] || { echo "plugins: expected $wasm after the build" >&2; exit 1; }
  cmp -s "$wasm" "dist/${crate}.wasm" 2>/dev/null || cp "$wasm" "dist/${crate}.wasm"
done
echo "plugins: built in $(( $(date +%s) - start )) s -> plugins/dist/ ($(ls dist | wc -l) components)"
