# Shared by the image build scripts (sourced, not run).

# Exits the calling script when image $1 is present (unless FORCE=1).
skip_if_present() {
  if [ "${FORCE:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; then
    echo "$2: $1 already present, skipped"
    exit 0
  fi
}

# Runs a command as root: directly, through sudo, or not at all.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "need root (or sudo) to run: $*" >&2; exit 1
  fi
}
