#!/usr/bin/env bash
# Corral HTTP benchmarks, each against a baseline measured in the same run.
#   bash bench/run.sh            full run (about 4 minutes)
#   BENCH_ROUNDS=1 BENCH_DURATION=3s bash bench/run.sh   quick look
# All traffic stays on 127.0.0.1; every load is bounded by BENCH_DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${BENCH_ROUNDS:-5}"
DURATION="${BENCH_DURATION:-10s}"
THREADS="${BENCH_THREADS:-2}"
CONNS="${BENCH_CONNECTIONS:-64}"
OUT="bench/results"
mkdir -p "$OUT"

command -v wrk >/dev/null 2>&1 || {
  echo "==> installing wrk"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null || { echo "error: wrk is needed (apt-get install wrk)"; exit 1; }
}

echo "==> building release binaries"
cargo build --release -q -p corral -p hello-axum

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
wait_http() {
  for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "error: $1 never answered"; exit 1
}

DATA="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

CORRAL_PORT="$(free_port)"
HELLO_PORT="$(free_port)"
CORRAL_LOG__LEVEL=warn ./target/release/corral serve --data-dir "$DATA" --listen "127.0.0.1:$CORRAL_PORT" >/dev/null &
CORRAL_PID=$!; PIDS+=("$CORRAL_PID")
./target/release/hello-axum "127.0.0.1:$HELLO_PORT" &
HELLO_PID=$!; PIDS+=("$HELLO_PID")
CORRAL="http://127.0.0.1:$CORRAL_PORT"
HELLO="http://127.0.0.1:$HELLO_PORT"
wait_http "$CORRAL/ready"
wait_http "$HELLO/health"

echo "==> idle memory"
sleep 2
CORRAL_IDLE="$(rss_mib "$CORRAL_PID")"
HELLO_IDLE="$(rss_mib "$HELLO_PID")"
for _ in $(seq 1 20); do curl -fsS -o /dev/null "$CORRAL/health"; curl -fsS -o /dev/null "$HELLO/health"; done
sleep 1
CORRAL_WARM="$(rss_mib "$CORRAL_PID")"
HELLO_WARM="$(rss_mib "$HELLO_PID")"

echo "==> credentials for the authenticated runs"
curl -fsS -o /dev/null -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","username":"bench","password":"correct horse battery"}' "$CORRAL/api/v1/auth/register"
JWT="$(curl -fsS -H 'content-type: application/json' -d '{"login":"bench","password":"correct horse battery"}' \
  "$CORRAL/api/v1/auth/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
KEY="$(curl -fsS -H 'content-type: application/json' -H "authorization: Bearer $JWT" \
  -d '{"name":"bench","scopes":["sandboxes:read"]}' "$CORRAL/api/v1/api-keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
# Access tokens live 15 minutes; a full run stays well inside that.

# One wrk run; prints requests/s, p50 ms, p99 ms.
load() {
  local name="$1" url="$2" round="$3"; shift 3
  local file="$OUT/wrk-$name-$round.txt"
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" "$url" > "$file"
  python3 - "$file" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v, unit): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", text)
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
if non2xx: sys.exit(f"{sys.argv[1]}: {non2xx.group(1)} error responses")
print(rps, ms(*p50.groups()), ms(*p99.groups()))
PY
}

echo "==> warm-up"
wrk -t"$THREADS" -c"$CONNS" -d2s "$CORRAL/health" >/dev/null
wrk -t"$THREADS" -c"$CONNS" -d2s "$HELLO/health" >/dev/null

declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
  echo "==> round $round/$ROUNDS"
  # Alternate so drift in machine load hits every target alike.
  RESULTS[hello]+="$(load hello "$HELLO/health" "$round");"
  RESULTS[health]+="$(load health "$CORRAL/health" "$round");"
  RESULTS[jwt]+="$(load jwt "$CORRAL/api/v1/users/me" "$round" -H "authorization: Bearer $JWT");"
  RESULTS[key]+="$(load key "$CORRAL/api/v1/users/me" "$round" -H "authorization: Bearer $KEY");"
done

python3 - "$OUT/summary.md" "$CORRAL_IDLE" "$CORRAL_WARM" "$HELLO_IDLE" "$HELLO_WARM" \
  "${RESULTS[hello]}" "${RESULTS[health]}" "${RESULTS[jwt]}" "${RESULTS[key]}" "$ROUNDS" "$DURATION" <<'PY'
import statistics as st, sys
out, c_idle, c_warm, h_idle, h_warm, hello, health, jwt, key, rounds, duration = sys.argv[1:]
def parse(s):
    runs = [tuple(map(float, r.split())) for r in s.strip(";").split(";")]
    return [st.median(col) for col in zip(*runs)]
hello, health, jwt, key = map(parse, (hello, health, jwt, key))
def row(metric, a, b, goal, ok):
    return f"| {metric} | {a} | {b} | {goal} | {'met' if ok else 'MISSED'} |"
lines = [
    f"Medians of {rounds} alternating rounds of `wrk -t2 -c64 -d{duration}` each, on one 2-core VM (wrk shares the cores).",
    "",
    "| metric | Corral | baseline | goal | result |",
    "|---|---|---|---|---|",
    row("idle RSS after start (MiB)", c_idle, f"{h_idle} (hello-axum)", "< 30 MiB", float(c_idle) < 30),
    row("RSS after warm-up requests (MiB)", c_warm, f"{h_warm} (hello-axum)", "< 30 MiB", float(c_warm) < 30),
    row("`/health` requests/s", f"{health[0]:.0f}", f"{hello[0]:.0f} (hello-axum `/health`)", "≥ 0.8× baseline",
        health[0] >= 0.8 * hello[0]) + f" ratio {health[0]/hello[0]:.2f}",
    row("`/health` latency p50 / p99 (ms)", f"{health[1]:.2f} / {health[2]:.2f}", f"{hello[1]:.2f} / {hello[2]:.2f}", "", True).replace(" met |", " — |"),
    row("`GET /api/v1/users/me` with a JWT, requests/s", f"{jwt[0]:.0f}", f"{health[0]:.0f} (Corral `/health`)", "≥ 0.7× `/health`",
        jwt[0] >= 0.7 * health[0]) + f" ratio {jwt[0]/health[0]:.2f}",
    row("`GET /api/v1/users/me` with an API key, requests/s", f"{key[0]:.0f}", f"{health[0]:.0f} (Corral `/health`)", "≥ 0.7× `/health`",
        key[0] >= 0.7 * health[0]) + f" ratio {key[0]/health[0]:.2f}",
    row("`/users/me` latency p50 / p99, JWT · key (ms)", f"{jwt[1]:.2f} / {jwt[2]:.2f} · {key[1]:.2f} / {key[2]:.2f}", "", "", True).replace(" met |", " — |"),
]
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
PY
echo "raw wrk output and this table: $OUT/"
