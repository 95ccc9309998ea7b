#!/usr/bin/env bash
# Instructions per request of each HTTP target, under valgrind's callgrind:
# repeatable on a shared machine where wall-clock numbers are not.
#
#   bash bench/callgrind.sh [CORRAL_BIN]     (default: $CARGO_TARGET_DIR/release/corral)
#
# Sets up the bench user (Enterprise plan, a JWT and an API key) with the
# binary running natively, restarts it under callgrind on the same data
# directory, then for each target: zero the counters, send BENCH_CG_REQUESTS
# requests on one keep-alive connection, dump. An idle period of the same
# length is dumped too (timers, queue workers), so it can be subtracted.
# Writes bench/results/callgrind/ and prints instructions (Ir) per request:
# the connection task's inclusive cost (the steady number) and all threads'.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${1:-$TARGET_DIR/release/corral}"
N="${BENCH_CG_REQUESTS:-2000}"
OUT="$ROOT/bench/results/callgrind${BENCH_CG_TAG:+-$BENCH_CG_TAG}"
command -v valgrind >/dev/null || { echo "valgrind is required" >&2; exit 1; }
rm -rf "$OUT"; mkdir -p "$OUT"
TMP="$(mktemp -d -t corral-cg.XXXXXX)"
PID=""
cleanup() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"
start() { # prefix...
  env $(compgen -e | { grep '^CORRAL_' || true; } | sed 's/^/-u /') CORRAL_LOG__LEVEL=warn \
    CORRAL_LIMITS__PER_IP_PER_MINUTE=4000000000 CORRAL_LIMITS__PER_USER_PER_MINUTE=4000000000 \
    CORRAL_LIMITS__PER_KEY_PER_MINUTE=4000000000 \
    "$@" "$BIN" serve --data-dir "$TMP/data" --listen "127.0.0.1:$PORT" >>"$TMP/corral.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 1200); do curl -fsS -m 5 -o /dev/null "$URL/ready" 2>/dev/null && return 0; sleep 0.1; done
  tail "$TMP/corral.log" >&2; exit 1
}
start
curl -fsS -o /dev/null -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","username":"bench","password":"correct horse battery"}' "$URL/api/v1/auth/register"
echo 'correct horse battery' | env $(compgen -e | { grep '^CORRAL_' || true; } | sed 's/^/-u /') \
  "$BIN" admin create-user --data-dir "$TMP/data" --username benchadmin --email benchadmin@example.com \
  --password-stdin --admin >/dev/null
tok() { curl -fsS -H 'content-type: application/json' -d "{\"login\":\"$1\",\"password\":\"correct horse battery\"}" \
  "$URL/api/v1/auth/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'; }
ADMIN="$(tok benchadmin)"; JWT="$(tok bench)"
KEY="$(curl -fsS -H 'content-type: application/json' -H "authorization: Bearer $JWT" \
  -d '{"name":"bench","scopes":["sandboxes:read"]}' "$URL/api/v1/api-keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
ID="$(curl -fsS -H "authorization: Bearer $JWT" "$URL/api/v1/users/me" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
curl -fsS -o /dev/null -X PATCH -H 'content-type: application/json' -H "authorization: Bearer $ADMIN" \
  -d '{"plan":"enterprise"}' "$URL/api/v1/admin/users/$ID"
kill -TERM "$PID"; wait "$PID" || true
start valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.%p.out" --dump-instr=no
VG="$PID"
drive() { # path auth n
  python3 - "$PORT" "$1" "$2" "$3" <<'PY'
import http.client, sys
port, path, auth, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = http.client.HTTPConnection("127.0.0.1", int(port))
h = {"authorization": "Bearer " + auth} if auth else {}
h["user-agent"] = "wrk"
for _ in range(n):
    c.request("GET", path, headers=h)
    r = c.getresponse(); r.read()
    if r.status != 200: sys.exit(f"{path}: {r.status}")
PY
}
measure() { # name path auth
  drive "$2" "$3" 200            # warm-up: caches, first-use allocations
  callgrind_control -z "$VG" >/dev/null
  local t0; t0=$(date +%s.%N)
  drive "$2" "$3" "$N"
  callgrind_control -d "$1" "$VG" >/dev/null
  python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)" >"$OUT/$1.secs"
}
measure health /health ""
measure routed "/health?routed" ""
measure jwt /api/v1/users/me "$JWT"
measure key /api/v1/users/me "$KEY"
# Background work for as long as the slowest run took.
callgrind_control -z "$VG" >/dev/null
sleep "$(cat "$OUT"/*.secs | sort -n | tail -1)"
callgrind_control -d idle "$VG" >/dev/null
python3 - "$OUT" "$N" <<'PY'
import glob, re, subprocess, sys
out, n = sys.argv[1], int(sys.argv[2])
def total(name):
    for f in glob.glob(f"{out}/callgrind.*.out.*"):
        text = open(f, errors="replace").read(200000)
        if re.search(rf"^desc: Trigger: .*Client Request: {name}$", text, re.M) or \
           re.search(rf"^desc: Trigger: .*{name}\b", text, re.M):
            m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            secs = float(open(f"{out}/{name}.secs").read()) if name != "idle" else None
            return int(m.group(1)), secs, f
    return None, None, None
idle, _, _ = total("idle")
idle_secs = max(float(open(p).read()) for p in glob.glob(f"{out}/*.secs"))
print(f"requests per target: {n}; idle: {idle:,} Ir in {idle_secs:.0f} s")
def connection(f):
    # Inclusive cost of the connection task: hyper, router, middleware,
    # handler; not tokio's parking nor background tasks, so it repeats.
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", f],
                          capture_output=True, text=True).stdout
    m = re.search(r"^\s*([\d,]+) .*UpgradeableConnection<I,S,E> as core::future::future::Future>::poll \[", text, re.M)
    return int(m.group(1).replace(",", "")) if m else 0
print("| target | connection task, Ir per request | all threads | all threads minus idle share |")
print("|---|---|---|---|")
for name in ("health", "routed", "jwt", "key"):
    ir, secs, f = total(name)
    adj = ir - idle * secs / idle_secs
    print(f"| {name} | {connection(f) / n:,.0f} | {ir / n:,.0f} | {adj / n:,.0f} |")
PY
