#!/usr/bin/env python3
"""Execution throughput (the judge) against a running Corral, with a baseline
measured in the same run: bare `/usr/bin/python3 -c 'print(1)'` processes at
the same concurrency.

Usage: execution.py URL TOKEN ROUNDS CORRAL_PID [FLOOD_TOKEN]   (bench/run.sh calls it)
Knobs: BENCH_EXEC_CLIENTS (8), BENCH_EXEC_SECONDS (10, per target and round),
BENCH_EXEC_COLD_RUNS (200), BENCH_FLOOD_CLIENTS (8).

First, on the server as it comes (no sandbox of the judge yet: cold starts
included), a fixed number of runs by the clients, against as many bare
processes before and after. Then the alternating rounds (warm). Last, with
FLOOD_TOKEN (a user of another org), the slowdown of this user's runs while
the other floods the judge with busy loops, against the same runs alone.

Each Corral client is a thread with its own keep-alive connection sending
`POST /api/v1/executions {"language":"python","code":"print(1)","wait":true}`
back to back; each baseline client is a thread running the bare process back
to back. Targets alternate (baseline, Corral, baseline, Corral, ...) so drift
in machine load hits both. Prints a markdown table of medians and ratios.
"""
import hashlib
import http.client
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

URL, TOKEN, ROUNDS, CORRAL_PID = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
FLOOD_TOKEN = sys.argv[5] if len(sys.argv) > 5 else None
CLIENTS = int(os.environ.get("BENCH_EXEC_CLIENTS", "8"))
COLD_RUNS = int(os.environ.get("BENCH_EXEC_COLD_RUNS", "200"))
FLOOD_CLIENTS = int(os.environ.get("BENCH_FLOOD_CLIENTS", "8"))
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


def data_dir():
    """The bench server's --data-dir (its sandboxes' roots are under it)."""
    argv = open(f"/proc/{CORRAL_PID}/cmdline", "rb").read().split(b"\0")
    return os.path.realpath(argv[argv.index(b"--data-dir") + 1].decode())


DATA_DIR = data_dir()
# Where the server keeps its sandbox directories: in memory, under
# /run/corral/<first 8 bytes of sha256(data dir)>, when it runs as root
# (see corral-runtime's `state`); else in the data directory.
SANDBOX_DIRS = [
    os.path.join("/run/corral", hashlib.sha256(os.fsencode(DATA_DIR)).hexdigest()[:16], "sandboxes"),
    os.path.join(DATA_DIR, "sandboxes"),
]


def sandbox_cpu_seconds():
    """CPU of the bench server's sandboxes' cgroups (the agent and what it
    ran), found from the agents' own cgroups; agents of other servers on the
    host are told apart by the sandbox directory the cgroup's name points
    to: (seconds, number of sandboxes)."""
    total, seen = 0.0, set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0] != b"/.corral/agent":
                continue
            lines = open(f"/proc/{pid}/cgroup").read().splitlines()
            # The cgroup is named after the sandbox, whose directory is the server's.
            name = os.path.basename(lines[0].split(":", 2)[2])
            if not (name.startswith("corral-")
                    and any(os.path.isdir(os.path.join(d, name[len("corral-"):])) for d in SANDBOX_DIRS)):
                continue
        except OSError:
            continue
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "cpuacct" in controllers.split(","):
                where = next(d for d in ("/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuacct")
                             if os.path.isdir(d))
                key, read = where + path, lambda k: int(open(k + "/cpuacct.usage").read()) / 1e9
                break
        else:
            path = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
            key = "/sys/fs/cgroup" + path
            read = lambda k: int(next(l.split()[1] for l in open(k + "/cpu.stat") if l.startswith("usage_usec"))) / 1e6
        if key not in seen:
            seen.add(key)
            try:
                total += read(key)
            except OSError:
                pass
    return total, len(seen)


def children_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def busy_ticks():
    for line in open("/proc/stat"):
        if line.startswith("cpu "):
            f = line.split()
            return int(f[1]) + int(f[2]) + int(f[3]) + int(f[6]) + int(f[7])
    return 0


def load(target, seconds=None, clients=None, runs=None):
    """Runs `clients` (CLIENTS) threads of `target` for `seconds`, or until
    `runs` are done between them: (runs/s, latencies ms, results)."""
    stop = time.perf_counter() + (seconds or 0)
    left = [runs]
    latencies, results, errors = [], [], []
    lock = threading.Lock()

    def more():
        if runs is None:
            return time.perf_counter() < stop
        with lock:
            left[0] -= 1
            return left[0] >= 0

    def client():
        conn = http.client.HTTPConnection(HOST, timeout=120) if target is execute else None
        try:
            while more():
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

    threads = [threading.Thread(target=client) for _ in range(clients or CLIENTS)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        sys.exit(f"{target.__name__}: {errors[0]}")
    return len(latencies) / elapsed, latencies, results


def fixed(target, runs):
    """`runs` of `target` shared by CLIENTS threads: (runs/s, latencies ms)."""
    rate, latencies, _ = load(target, runs=runs)
    return rate, latencies


FLOOD_BODY = json.dumps({"language": "python", "code": "while True: pass",
                         "limits": {"time_ms": 1000}, "wait": True})


def flooded(seconds):
    """This user's runs (2 clients, `seconds`) while FLOOD_CLIENTS threads
    of the other org send busy loops of 1 s CPU back to back:
    (runs/s, latencies ms, floods finished, their verdicts)."""
    stop = threading.Event()
    verdicts = []

    def flood():
        conn = http.client.HTTPConnection(HOST, timeout=120)
        headers = {"authorization": f"Bearer {FLOOD_TOKEN}", "content-type": "application/json"}
        while not stop.is_set():
            conn.request("POST", "/api/v1/executions", body=FLOOD_BODY, headers=headers)
            res = conn.getresponse()
            data = res.read()
            verdicts.append(json.loads(data).get("status") if res.status == 200 else res.status)
        conn.close()

    floods = [threading.Thread(target=flood) for _ in range(FLOOD_CLIENTS)]
    for t in floods:
        t.start()
    time.sleep(1)  # the flood holds its places before the measured runs start
    try:
        rate, latencies, _ = load(execute, seconds, clients=2)
    finally:
        stop.set()
        for t in floods:
            t.join()
    return rate, latencies, verdicts


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, int(len(s) * p) - 1))]


def main():
    # Cold: the judge has no sandbox yet. Bare before and after, so drift
    # hits both; the ratio is against their mean.
    cold_bare1, _ = fixed(bare, COLD_RUNS)
    cold, cold_lat = fixed(execute, COLD_RUNS)
    cold_bare2, _ = fixed(bare, COLD_RUNS)
    cold_bare = (cold_bare1 + cold_bare2) / 2
    # Warm-up: page cache, the server's reused sandboxes, the interpreter.
    load(bare, 2)
    load(execute, 3)
    rows = {"bare": [], "corral": []}
    lat = {"bare": [], "corral": []}
    server_cpu, sandbox_cpu, bare_cpu, busy, verdict_ms, sandboxes = [], [], [], [], [], []
    ticks = os.sysconf("SC_CLK_TCK")
    for _ in range(ROUNDS):
        for name, target in (("bare", bare), ("corral", execute)):
            cpu0, busy0, t0 = cpu_seconds(CORRAL_PID), busy_ticks(), time.perf_counter()
            (box0, _), child0 = sandbox_cpu_seconds(), children_cpu_seconds()
            rate, latencies, results = load(target, SECONDS)
            wall = time.perf_counter() - t0
            rows[name].append(rate)
            lat[name].extend(latencies)
            busy.append((name, (busy_ticks() - busy0) / ticks / wall))
            n = max(1, len(latencies))
            if name == "corral":
                time.sleep(0.2)  # the last programs are reaped; counters settle
                box1, boxes = sandbox_cpu_seconds()
                server_cpu.append((cpu_seconds(CORRAL_PID) - cpu0) / n * 1000)
                sandbox_cpu.append((box1 - box0) / n * 1000)
                sandboxes.append(boxes)
                verdict_ms.extend(r["wall_ms"] for r in results if r.get("wall_ms") is not None)
            else:
                bare_cpu.append((children_cpu_seconds() - child0) / n * 1000)
    b, c = statistics.median(rows["bare"]), statistics.median(rows["corral"])
    ratio = c / b if b else 0.0
    print(f"## Executions: `print(1)` in python, {CLIENTS} concurrent clients, {ROUNDS} rounds of {SECONDS:g} s each\n")
    print("| metric | Corral | baseline | ratio | goal | pass/fail |")
    print("|---|---|---|---|---|---|")
    cr = cold / cold_bare if cold_bare else 0.0
    print(f"| throughput with cold starts: {COLD_RUNS} runs from a fresh judge, executions/s | {cold:.1f} | {cold_bare:.1f} ({cold_bare1:.1f} before, {cold_bare2:.1f} after) | **{cr:.2f}** | ≥ 0.7 | {'pass' if cr >= 0.7 else '**FAIL**'} |")
    print(f"| latency with cold starts p50 / p99, ms | {pct(cold_lat, 0.5):.1f} / {pct(cold_lat, 0.99):.1f} | — | — | — | — |")
    print(f"| throughput, warm, executions/s (median of rounds) | {c:.1f} | {b:.1f} (bare `{PYTHON} -c`) | **{ratio:.2f}** | ≥ 0.7 | {'pass' if ratio >= 0.7 else '**FAIL**'} |")
    print(f"| latency per execution p50 / p99, ms | {pct(lat['corral'], 0.5):.1f} / {pct(lat['corral'], 0.99):.1f} | {pct(lat['bare'], 0.5):.1f} / {pct(lat['bare'], 0.99):.1f} | {pct(lat['corral'], 0.5) / pct(lat['bare'], 0.5):.2f} (p50) | — | — |")
    if verdict_ms:
        print(f"| the program's own wall time in the sandbox (`wall_ms`), p50 | {statistics.median(verdict_ms):.0f} ms | — | — | — | — |")
    srv, box, raw = statistics.median(server_cpu), statistics.median(sandbox_cpu), statistics.median(bare_cpu)
    print(f"| CPU per execution, ms: `corral serve` + the sandboxes' cgroups (agent and python) = total | {srv:.2f} + {box:.2f} = {srv + box:.2f} | {raw:.2f} (the bare process) | {(srv + box) / raw:.2f} | — | — |")
    print(f"| capacity on idle CPUs (bare CPU per run ÷ Corral's CPU per execution; the client's own CPU is in neither) | {raw / (srv + box):.2f} | — | — | ≥ 0.7 | {'pass' if raw / (srv + box) >= 0.7 else '**FAIL**'} |")
    print(f"| sandboxes in use at the end of each round (reset and reused) | {', '.join(map(str, sandboxes))} | — | — | — | — |")
    if FLOOD_TOKEN:
        alone_rate, alone_lat, _ = load(execute, SECONDS, clients=2)
        rate, lat_f, verdicts = flooded(SECONDS)
        slow = pct(lat_f, 0.5) / pct(alone_lat, 0.5)
        print(f"| one org's runs (2 clients, `print(1)`) while another org floods ({FLOOD_CLIENTS} clients of 1 s busy loops), p50 / p99 latency, ms | {pct(lat_f, 0.5):.1f} / {pct(lat_f, 0.99):.1f} | {pct(alone_lat, 0.5):.1f} / {pct(alone_lat, 0.99):.1f} (the same runs alone) | {slow:.2f} (p50 slowdown) | — | — |")
        print(f"| the same, executions/s | {rate:.1f} | {alone_rate:.1f} | {rate / alone_rate:.2f} | — | — |")
        counts = {v: verdicts.count(v) for v in set(verdicts)}
        print(f"| the flood's verdicts | {counts} | — | — | — | — |")
    print()
    print("Per round, executions/s: Corral " + ", ".join(f"{r:.1f}" for r in rows["corral"])
          + "; bare " + ", ".join(f"{r:.1f}" for r in rows["bare"])
          + "; per-round ratio " + ", ".join(f"{x / y:.2f}" for x, y in zip(rows["corral"], rows["bare"])) + ".")
    print("Machine CPU busy per round (of 2.00): " + ", ".join(f"{n} {v:.2f}" for n, v in busy) + ".")


if __name__ == "__main__":
    main()
