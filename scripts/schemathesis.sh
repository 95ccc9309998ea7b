#!/usr/bin/env bash
# Fuzzes the live API with schemathesis, on SQLite and on PostgreSQL, and
# fails if any request gets a 5xx. Bounded: a few examples per operation and
# a time budget per backend (`make test-schemathesis`; part of `make test`).
#
#   CORRAL_BIN                  the corral binary (default target/debug/corral)
#   CORRAL_AGENT_BIN            the agent (default the static build)
#   SCHEMATHESIS_EXAMPLES       examples per operation (default 5)
#   SCHEMATHESIS_MAX_TIME       seconds per backend (default 60)
#   CORRAL_TEST_POSTGRES_URL    an admin URL of the PostgreSQL to use
#   SCHEMATHESIS_BACKENDS       default "sqlite postgres"
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CORRAL_BIN:-target/debug/corral}"
agent="${CORRAL_AGENT_BIN:-$PWD/target/static/x86_64-unknown-linux-gnu/release/corral-agent}"
examples="${SCHEMATHESIS_EXAMPLES:-5}"
max_time="${SCHEMATHESIS_MAX_TIME:-60}"
pg_admin="${CORRAL_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
command -v st >/dev/null || { echo "schemathesis.sh: no schemathesis (scripts/deps.sh test installs it)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

server_pid=""
work=""
database=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  [ -n "$database" ] && psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  # Sandboxes the fuzzer left (stopped ones keep their disk mounted, by
  # design, for a later start) hold loop mounts under the work directory:
  # undo them, deepest first, or the folder cannot be removed.
  if [ -n "$work" ]; then
    findmnt -rn -o TARGET | grep -F "$work/" | sort -r | while read -r mount; do
      umount -l "$mount" || true
    done
    rm -rf "$work"
  fi
  server_pid="" database="" work=""
}
trap cleanup EXIT

run_backend() {
  local backend="$1"
  work="$(mktemp -d)"
  # Sandbox users pass through it to their bundles.
  chmod 755 "$work"
  local port; port="$(free_port)"
  local url="http://127.0.0.1:$port"
  local db_url=""
  if [ "$backend" = postgres ]; then
    database="corral_schemathesis_$$"
    psql "$pg_admin" -qc "CREATE DATABASE $database" >/dev/null
    db_url="${pg_admin%/*}/$database"
  fi
  (
    export CORRAL_DATA_DIR="$work/data" CORRAL_SERVER__LISTEN="127.0.0.1:$port"
    export CORRAL_SANDBOX__AGENT="$agent" CORRAL_SANDBOX__PULL_MISSING_IMAGES=false
    export CORRAL_SANDBOX__RUNTIME_ROOT="$work/runtime" CORRAL_SANDBOX__DIR="$work/sandboxes"
    export CORRAL_LIMITS__PER_IP_PER_MINUTE=0 CORRAL_LIMITS__PER_USER_PER_MINUTE=0
    export CORRAL_LOG__LEVEL=warn
    [ -n "$db_url" ] && export CORRAL_DATABASE__URL="$db_url"
    exec "$bin" serve
  ) >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    curl -fs "$url/health" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.2
  done
  curl -fs -o /dev/null -H 'content-type: application/json' "$url/api/v1/auth/register" \
    -d '{"email":"fuzz@example.com","username":"fuzz","password":"correct horse battery"}'
  local token
  token="$(curl -fs -H 'content-type: application/json' "$url/api/v1/auth/login" \
    -d '{"login":"fuzz","password":"correct horse battery"}' \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"
  echo "schemathesis: $backend at $url"
  # Signing out or deleting the account would turn the rest into 401s;
  # the terminal WebSocket is not HTTP.
  local status=0
  # From the work directory: schemathesis keeps a cache where it runs.
  (cd "$work" && st run "$url/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error \
    --max-examples "$examples" \
    --max-time "$max_time" \
    --request-timeout 30 \
    --workers 1 \
    --exclude-path-regex '/(auth/logout|auth/session|terminals/\{tid\}/ws)$' \
    --suppress-health-check all \
    --generation-database none \
    --no-color) || status=$?
  if grep -q "panicked" "$work/server.log"; then
    echo "schemathesis: the server panicked on $backend:" >&2
    grep -A5 "panicked" "$work/server.log" >&2
    status=1
  fi
  if [ "$status" != 0 ]; then
    echo "schemathesis: errors the server logged on $backend:" >&2
    grep -E "ERROR|error" "$work/server.log" | tail -n 40 >&2 || true
  fi
  cleanup
  return "$status"
}

failed=0
for backend in ${SCHEMATHESIS_BACKENDS:-sqlite postgres}; do
  run_backend "$backend" || failed=1
done
exit "$failed"
