#!/usr/bin/env bash
# Property-based fuzzing of the REST API from its own /openapi.json with
# schemathesis: every operation gets generated inputs (valid, edge-case and
# invalid); the check is that none answers 5xx and the server never dies.
# Runs a real server (target/debug/crogia) on a free loopback port with a
# throw-away data directory; removes the containers it made when done.
#
# Usage: tests/fuzz/api.sh [MAX_EXAMPLES]      (default 40 per operation)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
EXAMPLES="${1:-40}"
BIN="$ROOT/target/debug/crogia"
[ -x "$BIN" ] || { echo "fuzz: $BIN missing (cargo build -p crogia-host)" >&2; exit 1; }
command -v schemathesis >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check schemathesis
hash -r

WORK=$(mktemp -d /tmp/crogia-fuzz.XXXXXX)
LABEL="fuzz-$(date +%s)"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/crogia.toml" <<TOML
[server]
data_dir = "$WORK/data"
[sandbox]
memory = "256m"
pids_limit = 64
exec_timeout_secs = 5
labels = { "crogia.test" = "$LABEL" }
[plugins]
dir = "$ROOT/plugins/dist"
TOML

cleanup() {
  [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  docker ps -aq --filter "label=crogia.test=$LABEL" | xargs -r docker rm -f >/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

RUST_LOG=error "$BIN" serve --config "$WORK/crogia.toml" --bind "127.0.0.1:$PORT" &
SERVER=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/api/health" >/dev/null && break
  sleep 0.2
done

echo "fuzz: schemathesis against http://127.0.0.1:$PORT/openapi.json ($EXAMPLES examples per operation)"
status=0
schemathesis run "http://127.0.0.1:$PORT/openapi.json" \
  --checks not_a_server_error \
  --max-examples "$EXAMPLES" \
  --workers 2 \
  --request-timeout 30 \
  --seed 4242 \
  --warnings off \
  --suppress-health-check all || status=$?

# The server must still be alive and answering.
if ! kill -0 "$SERVER" 2>/dev/null || ! curl -sf "http://127.0.0.1:$PORT/api/health" >/dev/null; then
  echo "fuzz: the server died or stopped answering" >&2
  exit 1
fi
exit $status
