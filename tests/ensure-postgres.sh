#!/usr/bin/env bash
# Starts a throw-away PostgreSQL cluster for the tests (idempotent): Debian's
# `postgresql` (installed when missing), its own data directory, listening on
# 127.0.0.1 only, one superuser `crogia` with a password (scram-sha-256, so
# the tests go through real authentication). Each test makes its own
# database there and drops it.
#
# Usage: tests/ensure-postgres.sh [--stop | --sweep | --url]
#   env CROGIA_POSTGRES_DIR (default /var/lib/crogia-postgres),
#       CROGIA_POSTGRES_PORT (default 54329)
set -euo pipefail

DIR="${CROGIA_POSTGRES_DIR:-/var/lib/crogia-postgres}"
PORT="${CROGIA_POSTGRES_PORT:-54329}"
URL="postgres://crogia:crogia@127.0.0.1:$PORT/postgres"

if [ "${1:-}" = --url ]; then
  echo "$URL"
  exit 0
fi

bin_dir() {
  local pg_ctl
  for pg_ctl in /usr/lib/postgresql/*/bin/pg_ctl; do
    [ -x "$pg_ctl" ] && dirname "$pg_ctl"
  done | sort -V | tail -n 1
}

BIN=$(bin_dir)
as_postgres() { runuser -u postgres -- "$@"; }

if [ "${1:-}" = --sweep ]; then
  # Databases of test processes that died before dropping theirs.
  if [ -n "$BIN" ] && "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    export PGPASSWORD=crogia
    "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U crogia -d postgres -Atc \
      "SELECT datname FROM pg_database WHERE datname LIKE 'crogia\_test\_%'" |
      while read -r db; do
        "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U crogia -d postgres -qc "DROP DATABASE \"$db\" WITH (FORCE)" || true
      done
  fi
  exit 0
fi

if [ "${1:-}" = --stop ]; then
  if [ -n "$BIN" ] && [ -f "$DIR/data/postmaster.pid" ]; then
    as_postgres "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null && echo "postgres: stopped"
  fi
  exit 0
fi

answers() { [ -n "$BIN" ] && "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }

if answers; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "postgres: nothing answers on 127.0.0.1:$PORT and we are not root to start a cluster" >&2
  exit 1
fi
if [ -z "$BIN" ]; then
  echo "postgres: installing Debian's postgresql"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  BIN=$(bin_dir)
  # The package starts a cluster of its own; these tests use theirs.
  command -v pg_ctlcluster >/dev/null && for c in /etc/postgresql/*/main; do
    [ -d "$c" ] && pg_ctlcluster "$(basename "$(dirname "$c")")" main stop 2>/dev/null || true
  done
fi

mkdir -p "$DIR"
chown postgres: "$DIR"
chmod 700 "$DIR"
if [ ! -f "$DIR/data/PG_VERSION" ]; then
  echo "postgres: creating a cluster in $DIR/data"
  printf 'crogia\n' >"$DIR/password"
  chown postgres: "$DIR/password"
  as_postgres "$BIN/initdb" -D "$DIR/data" -U crogia --pwfile="$DIR/password" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log"
fi
echo "postgres: starting on 127.0.0.1:$PORT (log: $DIR/postgres.log)"
# Tests make and drop databases and open a pool per server: room for that.
as_postgres "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=300 -c fsync=on" start >/dev/null
if ! answers; then
  echo "postgres: the cluster did not answer on 127.0.0.1:$PORT" >&2
  tail -n 20 "$DIR/postgres.log" >&2 || true
  exit 1
fi
