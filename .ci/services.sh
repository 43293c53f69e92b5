#!/usr/bin/env bash
# Installs PostgreSQL from the system packages and starts a test server on 127.0.0.1.
#
# Usage: eval "$(bash .ci/services.sh)"   (then run the tests)
# Stdout carries only the line `export HARNESS_TEST_POSTGRES_URL=...`, which the test fixtures
# (tests/services.py) read; progress goes to stderr. Idempotent: a second call finds the packages
# installed, the data directory initialised and the server running, and only prints the line again.
# Stop the server with: bash .ci/services.sh stop
#
# Settings (environment): HARNESS_PG_PORT (55432), HARNESS_SERVICES_DIR (${TMPDIR:-/tmp}/harness-services).
# The server trusts every connection on 127.0.0.1 and listens nowhere else: a test server, not a deployment.
set -euo pipefail

PORT="${HARNESS_PG_PORT:-55432}"
STATE="${HARNESS_SERVICES_DIR:-${TMPDIR:-/tmp}/harness-services}/postgres"
ROLE=harness
DB=harness_test

say() { echo "services: $*" >&2; }

server_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# PostgreSQL refuses to run as root; the Debian package creates the `postgres` account for it.
as_server_user() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ -z "$(server_bin)" ] || [ ! -x "$(server_bin)/initdb" ]; then
    say "installing postgresql from the system packages"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
fi
BIN="$(server_bin)"
[ -x "$BIN/initdb" ] || { say "error: no PostgreSQL server binaries under /usr/lib/postgresql after install"; exit 1; }

if [ "${1:-}" = stop ]; then
    if [ -f "$STATE/data/postmaster.pid" ]; then as_server_user "$BIN/pg_ctl" -D "$STATE/data" -m fast -w stop >&2; fi
    exit 0
fi

mkdir -p "$STATE"
if [ "$(id -u)" = 0 ]; then chown postgres: "$STATE"; fi
if [ ! -f "$STATE/data/PG_VERSION" ]; then
    say "initialising $STATE/data"
    as_server_user "$BIN/initdb" -D "$STATE/data" -U "$ROLE" --auth=trust -E UTF8 --no-sync >/dev/null
fi
if ! as_server_user "$BIN/pg_ctl" -D "$STATE/data" status >/dev/null 2>&1; then
    say "starting PostgreSQL on 127.0.0.1:$PORT"
    as_server_user "$BIN/pg_ctl" -D "$STATE/data" -l "$STATE/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $STATE" start >/dev/null ||
        { say "error: PostgreSQL did not start; see $STATE/server.log"; tail -n 5 "$STATE/server.log" >&2; exit 1; }
fi

psql_admin() { "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d postgres -v ON_ERROR_STOP=1 -qtAc "$1"; }
if [ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    say "creating database $DB"
    psql_admin "CREATE DATABASE $DB OWNER $ROLE" >/dev/null
fi

echo "export HARNESS_TEST_POSTGRES_URL=postgresql://$ROLE@127.0.0.1:$PORT/$DB"
