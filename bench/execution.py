#!/usr/bin/env python3
"""Execution throughput (the judge) against a running Corral, with a baseline
measured in the same run: bare `/usr/bin/python3 -c 'print(1)'` processes at
the same concurrency.

Usage: execution.py URL TOKEN ROUNDS CORRAL_PID   (bench/run.sh calls it)
Knobs: BENCH_EXEC_CLIENTS (8), BENCH_EXEC_SECONDS (10, per target and round).

Each Corral client is a thread with its own keep-alive connection sending
`POST /api/v1/executions {"language":"python","code":"print(1)","wait":true}`
back to back; each baseline client is a thread running the bare process back
to back. Targets alternate (baseline, Corral, baseline, Corral, ...) so drift
in machine load hits both. Prints a markdown table of medians and ratios.
"""
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

URL, TOKEN, ROUNDS, CORRAL_PID = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
CLIENTS = int(os.environ.get("BENCH_EXEC_CLIENTS", "8"))
SECONDS = float(os.environ.get("BENCH_EXEC_SECONDS", "10"))
HOST = urllib.parse.urlparse(URL).netloc
PYTHON = "/usr/bin/python3"  # not the pyenv shim first on PATH (it adds ~100 ms)
BODY = json.dumps({"language": "python", "code": "print(1)", "wait": True})
HEADERS = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}


def execute(conn):
    conn.request("POST", "/api/v1/executions", body=BODY, headers=HEADERS)
    res = conn.getresponse()
    data = res.read()
    if res.status != 200:
        raise RuntimeError(f"POST /api/v1/executions: {res.status} {data[:300]!r}")
    result = json.loads(data)
    if result.get("status") != "ok" or result.get("stdout") != "1\n":
        raise RuntimeError(f"unexpected verdict: {result}")
    return result


def bare(_conn):
    out = subprocess.run([PYTHON, "-c", "print(1)"], capture_output=True, check=True)
    if out.stdout != b"1\n":
        raise RuntimeError(f"bare python3 printed {out.stdout!r}")
    return None


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def busy_ticks():
    for line in open("/proc/stat"):
        if line.startswith("cpu "):
            f = line.split()
            return int(f[1]) + int(f[2]) + int(f[3]) + int(f[6]) + int(f[7])
    return 0


def load(target, seconds):
    """Runs CLIENTS threads of `target` for `seconds`: (done, latencies ms, results)."""
    stop = time.perf_counter() + seconds
    latencies, results, errors = [], [], []
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection(HOST, timeout=120) if target is execute else None
        try:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                result = target(conn)
                took = (time.perf_counter() - start) * 1000
                with lock:
                    latencies.append(took)
                    if result is not None:
                        results.append(result)
        except Exception as e:  # noqa: BLE001 - any failure ends the run
            with lock:
                errors.append(e)
        finally:
            if conn is not None:
                conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        sys.exit(f"{target.__name__}: {errors[0]}")
    return len(latencies) / elapsed, latencies, results


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, int(len(s) * p) - 1))]


def main():
    # Warm-up: page cache, the server's reused sandboxes, the interpreter.
    load(bare, 2)
    load(execute, 3)
    rows = {"bare": [], "corral": []}
    lat = {"bare": [], "corral": []}
    server_cpu, busy, verdict_ms = [], [], []
    ticks = os.sysconf("SC_CLK_TCK")
    for _ in range(ROUNDS):
        for name, target in (("bare", bare), ("corral", execute)):
            cpu0, busy0, t0 = cpu_seconds(CORRAL_PID), busy_ticks(), time.perf_counter()
            rate, latencies, results = load(target, SECONDS)
            wall = time.perf_counter() - t0
            rows[name].append(rate)
            lat[name].extend(latencies)
            busy.append((name, (busy_ticks() - busy0) / ticks / wall))
            if name == "corral":
                server_cpu.append((cpu_seconds(CORRAL_PID) - cpu0) / max(1, len(latencies)) * 1000)
                verdict_ms.extend(r["wall_ms"] for r in results if r.get("wall_ms") is not None)
    b, c = statistics.median(rows["bare"]), statistics.median(rows["corral"])
    ratio = c / b if b else 0.0
    print(f"## Executions: `print(1)` in python, {CLIENTS} concurrent clients, {ROUNDS} rounds of {SECONDS:g} s each\n")
    print("| metric | Corral | baseline | ratio | goal | pass/fail |")
    print("|---|---|---|---|---|---|")
    print(f"| throughput, executions/s (median of rounds) | {c:.1f} | {b:.1f} (bare `{PYTHON} -c`) | **{ratio:.2f}** | ≥ 0.7 | {'pass' if ratio >= 0.7 else '**FAIL**'} |")
    print(f"| latency per execution p50 / p99, ms | {pct(lat['corral'], 0.5):.1f} / {pct(lat['corral'], 0.99):.1f} | {pct(lat['bare'], 0.5):.1f} / {pct(lat['bare'], 0.99):.1f} | {pct(lat['corral'], 0.5) / pct(lat['bare'], 0.5):.2f} (p50) | — | — |")
    if verdict_ms:
        print(f"| the program's own wall time in the sandbox (`wall_ms`), p50 | {statistics.median(verdict_ms):.0f} ms | — | — | — | — |")
    print(f"| `corral serve` CPU per execution (median of rounds; the sandbox's processes are not in it) | {statistics.median(server_cpu):.2f} ms | — | — | — | — |")
    print()
    print("Per round, executions/s: Corral " + ", ".join(f"{r:.1f}" for r in rows["corral"])
          + "; bare " + ", ".join(f"{r:.1f}" for r in rows["bare"])
          + "; per-round ratio " + ", ".join(f"{x / y:.2f}" for x, y in zip(rows["corral"], rows["bare"])) + ".")
    print("Machine CPU busy per round (of 2.00): " + ", ".join(f"{n} {v:.2f}" for n, v in busy) + ".")


if __name__ == "__main__":
    main()
