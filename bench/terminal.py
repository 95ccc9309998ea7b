#!/usr/bin/env python3
"""Terminal benchmarks against a running Corral, with a local PTY baseline
measured in the same run.

Usage: terminal.py URL TOKEN ROUNDS [CORRAL_PID]   (bench/run.sh calls it with BENCH_TERMINAL=1)

- Keystroke echo: one character sent as an `input` message over the
  terminal's WebSocket, timed until its echo (by the sandbox's TTY: the
  terminal runs `cat >/dev/null`) arrives as output. Baseline: the same
  round trip on a local PTY (`os.openpty`, the same `cat`), one byte written
  to the master and read back.
- Output throughput: `cat` of a text file (100 MB by default) in the
  sandbox's /tmp, through the WebSocket. Every byte received is counted and
  compared with what the TTY must deliver (the file plus a CR before every
  LF); a redraw (ESC[H ESC[2J: the agent dropped this client's queue) is
  reported, never hidden. Baselines: `script -qc 'cat FILE' /dev/null` and a
  Python PTY reader, on a same-size file on the host.

Baselines and Corral alternate within every round; the table shows medians
over the rounds (echo percentiles over all samples) and the ratios. Needs the
`websockets` package (bench/run.sh installs it).
"""
import asyncio
import http.client
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

import websockets

URL, TOKEN, ROUNDS = sys.argv[1], sys.argv[2], int(sys.argv[3])
CORRAL_PID = int(sys.argv[4]) if len(sys.argv) > 4 else None
SAMPLES = int(os.environ.get("BENCH_ECHO_SAMPLES", "500"))
WARMUP = 50
FILE_MB = int(os.environ.get("BENCH_TERMINAL_MB", "100"))
CPU = os.environ.get("BENCH_TERMINAL_CPU")  # sandbox CPUs; unset: the server's default
LINE = b"x" * 79 + b"\n"  # 80-byte lines, so the TTY adds one CR per 80 bytes
SIZE = FILE_MB * 1_000_000
LINES = SIZE // len(LINE)
EXPECTED = SIZE + LINES  # ONLCR: every LF goes out as CR LF
REDRAW = b"\x1b[H\x1b[2J"  # how the agent starts the redraw that replaces a dropped queue
NEWLINE_EVERY = 64  # keeps the canonical-mode line buffer (4 KiB) from filling
SANDBOX_FILE = "/tmp/corral-bench-terminal.txt"
HOST = urllib.parse.urlparse(URL).netloc
CONN = http.client.HTTPConnection(HOST, timeout=120)
CLK = os.sysconf("SC_CLK_TCK")


def api(method, path, body=None):
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    payload = json.dumps(body) if body is not None else None
    try:
        CONN.request(method, path, body=payload, headers=headers)
        res = CONN.getresponse()
    except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
        # The server closed the idle keep-alive connection while a baseline ran.
        CONN.close()
        CONN.request(method, path, body=payload, headers=headers)
        res = CONN.getresponse()
    data = res.read()
    if res.status >= 300:
        sys.exit(f"{method} {path}: {res.status} {data[:300]!r}")
    return json.loads(data) if data else None


def pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, int(round(len(s) * q)) - 1))]


med = statistics.median


# --- CPU accounting -----------------------------------------------------------
def proc_ticks(pid):
    """user + system of a whole process (all threads), in ticks; None once it is gone."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def parent_of(argv):
    """The host PID of the parent of the process running exactly `argv`: waits up to 5 s."""
    want = ("\0".join(argv) + "\0").encode()
    for _ in range(50):
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if open(f"/proc/{pid}/cmdline", "rb").read() == want:
                        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
                except OSError:
                    pass
        time.sleep(0.1)
    sys.exit(f"no process {argv} found on the host")


def busy_ticks():
    for line in open("/proc/stat"):
        if line.startswith("cpu "):
            f = line.split()
            return int(f[1]) + int(f[2]) + int(f[3]) + int(f[6]) + int(f[7])  # user nice system irq softirq
    return 0


def self_seconds():
    t = os.times()
    return t.user + t.system


def children_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def compilers():
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                comm = open(f"/proc/{pid}/comm").read().strip()
                if comm in ("rustc", "cargo", "cc1", "ld", "wrk") or (comm == "corral" and int(pid) != CORRAL_PID):
                    n += 1
            except OSError:
                pass
    return n


# --- local PTY baselines ------------------------------------------------------
def local_echo(samples):
    """Echo round trip of one byte on a local PTY whose program is `cat >/dev/null`."""
    master, slave = os.openpty()
    child = subprocess.Popen(["/bin/sh", "-c", "exec cat >/dev/null"], stdin=slave, stdout=slave,
                             stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        def round_trip(ch):
            os.write(master, ch)
            seen = b""
            while ch not in seen:
                seen += os.read(master, 4096)

        times = []
        for i in range(WARMUP + samples):
            ch = bytes([97 + i % 26])
            start = time.perf_counter()
            round_trip(ch)
            took = (time.perf_counter() - start) * 1000
            if i >= WARMUP:
                times.append(took)
            if i % NEWLINE_EVERY == NEWLINE_EVERY - 1:
                round_trip(b"\n")
        return times
    finally:
        child.kill()
        child.wait()
        os.close(master)


def local_script_cat(path):
    """`script -qc 'cat FILE' /dev/null`: (seconds, bytes, CPU seconds of script and cat)."""
    c0 = children_seconds()
    start = time.perf_counter()
    proc = subprocess.Popen(["script", "-qc", f"cat {path}", "/dev/null"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE)
    got = 0
    fd = proc.stdout.fileno()
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        got += len(chunk)
    took = time.perf_counter() - start
    proc.wait()
    return took, got, children_seconds() - c0


def local_pty_cat(path):
    """A Python PTY reader (what the agent does, minus the relay): (seconds, bytes, CPU seconds of the
    reader, CPU seconds of cat)."""
    r0, c0 = self_seconds(), children_seconds()
    start = time.perf_counter()
    master, slave = os.openpty()
    proc = subprocess.Popen(["cat", path], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    got = 0
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        got += len(chunk)
    took = time.perf_counter() - start
    reader = self_seconds() - r0
    proc.wait()
    os.close(master)
    return took, got, reader, children_seconds() - c0


# --- Corral -------------------------------------------------------------------
def ws_url(sid, tid):
    return f"ws://{HOST}/api/v1/sandboxes/{sid}/terminals/{tid}/ws?token={urllib.parse.quote(TOKEN)}"


async def connect(sid, tid):
    return await websockets.connect(ws_url(sid, tid), compression=None, max_size=1 << 22)


async def drain_greeting(ws, quiet=0.3):
    """The recent output and screen redraw every attach starts with: bytes."""
    got = 0
    while True:
        try:
            message = await asyncio.wait_for(ws.recv(), quiet)
        except asyncio.TimeoutError:
            return got
        if isinstance(message, bytes):
            got += len(message)


async def until(ws, needle):
    seen = b""
    while needle not in seen:
        message = await ws.recv()
        if isinstance(message, bytes):
            seen += message


async def corral_echo(sid, tid, samples):
    """Keystroke echo and, in between, WebSocket ping/pong (server only, no agent): ms lists."""
    ws = await connect(sid, tid)
    try:
        await drain_greeting(ws)
        await ws.send(json.dumps({"type": "input", "data": "sync\n"}))
        await until(ws, b"sync\r\n")
        echo, ping = [], []
        for i in range(WARMUP + samples):
            ch = chr(97 + i % 26)
            message = json.dumps({"type": "input", "data": ch})
            start = time.perf_counter()
            await ws.send(message)
            await until(ws, ch.encode())
            took = (time.perf_counter() - start) * 1000
            start = time.perf_counter()
            await ws.send('{"type":"ping"}')
            while await ws.recv() != '{"type":"pong"}':
                pass
            pinged = (time.perf_counter() - start) * 1000
            if i >= WARMUP:
                echo.append(took)
                ping.append(pinged)
            if i % NEWLINE_EVERY == NEWLINE_EVERY - 1:
                await ws.send(json.dumps({"type": "input", "data": "\n"}))
                await until(ws, b"\r\n")
        return echo, ping
    finally:
        await ws.close()


async def corral_cat(sid):
    """One `cat` of the file through a fresh terminal's WebSocket."""
    argv = ["/bin/sh", "-c", f"read go; exec cat {SANDBOX_FILE}"]
    term = api("POST", f"/api/v1/sandboxes/{sid}/terminals", {"cols": 80, "rows": 24, "command": argv})
    agent = parent_of(argv)  # the sandbox's agent (PID 1 inside), as the host sees it
    ws = await connect(sid, term["id"])
    try:
        greeting = await drain_greeting(ws)
        s0, a0, b0, m0, c0 = proc_ticks(CORRAL_PID) if CORRAL_PID else 0, proc_ticks(agent), \
            api("GET", f"/api/v1/sandboxes/{sid}/stats")["cpu_ms"], busy_ticks(), self_seconds()
        start = last = time.perf_counter()
        await ws.send(json.dumps({"type": "input", "data": "go\n"}))
        got, frames, redraws, tail = 0, 0, 0, b""
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    last = time.perf_counter()
                    got += len(message)
                    frames += 1
                    redraws += (tail + message[:len(REDRAW) - 1]).count(REDRAW) + message.count(REDRAW)
                    tail = message[-(len(REDRAW) - 1):]
        except websockets.ConnectionClosed:
            pass
        closed = ws.close_code
        took = last - start
        c1, m1 = self_seconds(), busy_ticks()
        time.sleep(0.2)  # the agent reaps cat; the sandbox's counters settle
        s1, a1, b1 = proc_ticks(CORRAL_PID) if CORRAL_PID else 0, proc_ticks(agent), \
            api("GET", f"/api/v1/sandboxes/{sid}/stats")["cpu_ms"]
    finally:
        await ws.close()
    api("DELETE", f"/api/v1/sandboxes/{sid}/terminals/{term['id']}")
    got -= len(b"go\r\n")  # the TTY's echo of what we typed
    return {
        "secs": took, "bytes": got, "frames": frames, "redraws": redraws, "close": closed, "greeting": greeting,
        "server_cpu": (s1 - s0) / CLK if CORRAL_PID else None,
        "agent_cpu": (a1 - a0) / CLK,
        "sandbox_cpu": (b1 - b0) / 1000,  # the sandbox's cgroup: the agent and cat
        "client_cpu": c1 - c0,
        "machine_cpu": (m1 - m0) / CLK,
    }


def host_file(tmp):
    path = os.path.join(tmp, "big.txt")
    block = LINE * 12500  # 1 MB
    with open(path, "wb") as f:
        for _ in range(SIZE // len(block)):
            f.write(block)
        f.write(LINE * ((SIZE % len(block)) // len(LINE)))
    assert os.path.getsize(path) == SIZE
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)  # into the page cache
    return path


def main():
    resources = {"memory_mb": 512, "disk_mb": 256}  # the file lives in /tmp, a tmpfs charged to memory
    if CPU:
        resources["cpu"] = float(CPU)
    sandbox = api("POST", "/api/v1/sandboxes", {"resources": resources})
    sid = sandbox["id"]
    tmp = tempfile.mkdtemp(prefix="corral-bench-term-")
    try:
        made = api("POST", f"/api/v1/sandboxes/{sid}/exec", {
            "command": f"yes '{LINE[:-1].decode()}' | head -c {SIZE} > {SANDBOX_FILE} && wc -c < {SANDBOX_FILE}",
            "timeout_ms": 120_000})
        if made["exit_code"] != 0 or made["stdout"].strip() != str(SIZE):
            sys.exit(f"could not write {SANDBOX_FILE} in the sandbox: {made}")
        path = host_file(tmp)
        echo_term = api("POST", f"/api/v1/sandboxes/{sid}/terminals",
                        {"cols": 80, "rows": 24, "command": ["/bin/sh", "-c", "exec cat >/dev/null"]})

        rounds = []
        for r in range(ROUNDS):
            busy0, t0, comp = busy_ticks(), time.perf_counter(), compilers()
            base_echo = local_echo(SAMPLES)
            echo, ping = asyncio.run(corral_echo(sid, echo_term["id"], SAMPLES))
            script = local_script_cat(path)
            pyreader = local_pty_cat(path)
            cat = asyncio.run(corral_cat(sid))
            busy = (busy_ticks() - busy0) / CLK / (time.perf_counter() - t0) / os.cpu_count() * 100
            rounds.append({"base_echo": base_echo, "echo": echo, "ping": ping, "script": script,
                           "pyreader": pyreader, "cat": cat, "busy": busy, "compilers": comp})
            print(f"  round {r + 1}/{ROUNDS}: echo p50 {med(echo):.3f} ms (local {med(base_echo):.3f}); "
                  f"cat {cat['bytes'] / cat['secs'] / 1e6:.0f} MB/s, {cat['bytes']} B, {cat['redraws']} redraws "
                  f"(script {script[1] / script[0] / 1e6:.0f} MB/s)", file=sys.stderr)
        api("DELETE", f"/api/v1/sandboxes/{sid}")
    finally:
        for name in os.listdir(tmp):
            os.remove(os.path.join(tmp, name))
        os.rmdir(tmp)
    report(rounds)


def report(rounds):
    all_echo = [s for r in rounds for s in r["echo"]]
    all_base = [s for r in rounds for s in r["base_echo"]]
    all_ping = [s for r in rounds for s in r["ping"]]
    echo_p50s = [med(r["echo"]) for r in rounds]
    base_p50s = [med(r["base_echo"]) for r in rounds]
    mbps = [r["cat"]["bytes"] / r["cat"]["secs"] / 1e6 for r in rounds]
    script_mbps = [r["script"][1] / r["script"][0] / 1e6 for r in rounds]
    py_mbps = [r["pyreader"][1] / r["pyreader"][0] / 1e6 for r in rounds]
    redraws = sum(r["cat"]["redraws"] for r in rounds)
    short = [r["cat"]["bytes"] for r in rounds if r["cat"]["bytes"] != EXPECTED]
    exact = not short and redraws == 0
    base_short = [r["script"][1] for r in rounds if r["script"][1] != EXPECTED]

    def trio(s):
        return f"{pct(s, 0.5):.3f} / {pct(s, 0.9):.3f} / {pct(s, 0.99):.3f}"

    def ok(b):
        return "pass" if b else "**FAIL**"

    echo_p50 = med(echo_p50s)
    tput = med(mbps)
    rows = [
        ("keystroke echo over the WebSocket, p50 / p90 / p99 ms", trio(all_echo),
         f"{trio(all_base)} (local PTY)", f"{echo_p50 / med(base_p50s):.1f}", "p50 < 2 ms", ok(echo_p50 < 2)),
        ("WebSocket ping/pong through the server (no agent), p50 / p99 ms", f"{pct(all_ping, 0.5):.3f} / "
         f"{pct(all_ping, 0.99):.3f}", "—", "—", "— (informational)", "—"),
        (f"`cat` of a {FILE_MB} MB file through the WebSocket, MB/s received", f"{tput:.0f}",
         f"{med(script_mbps):.0f} (`script -qc cat`)", f"**{tput / med(script_mbps):.2f}**", "≥ 100 MB/s",
         ok(tput >= 100 and exact)),
        ("same file, Python PTY reader (baseline), MB/s; its CPU seconds: reader / `cat`", f"{med(py_mbps):.0f}; "
         f"{med(r['pyreader'][2] for r in rounds):.2f} / {med(r['pyreader'][3] for r in rounds):.2f}",
         "—", "—", "—", "—"),
        ("bytes received per `cat` (expected: file + one CR per LF)",
         f"{len(rounds) - len(short)} of {len(rounds)} rounds complete (median "
         f"{med(r['cat']['bytes'] for r in rounds):,.0f} of {EXPECTED:,})".replace(",", " "),
         f"{med(r['script'][1] for r in rounds):,.0f} (`script`)".replace(",", " "), "—", "all of them",
         ok(not short)),
        ("redraws (a dropped queue) during the `cat`s, all rounds", str(redraws), "—", "—", "0", ok(redraws == 0)),
    ]
    cpu = {k: med(r["cat"][k] for r in rounds) for k in ("agent_cpu", "sandbox_cpu", "client_cpu", "machine_cpu")}
    server = med(r["cat"]["server_cpu"] for r in rounds) if CORRAL_PID else None
    secs = med(r["cat"]["secs"] for r in rounds)
    script_cpu = med(r["script"][2] for r in rounds)
    script_secs = med(r["script"][0] for r in rounds)
    used = (server or 0) + cpu["sandbox_cpu"] + cpu["client_cpu"]
    rows.append((
        "CPU seconds per `cat`: server / agent / `cat` (sandbox − agent) / bench client",
        f"{server if server is not None else float('nan'):.2f} / {cpu['agent_cpu']:.2f} / "
        f"{cpu['sandbox_cpu'] - cpu['agent_cpu']:.2f} / {cpu['client_cpu']:.2f} (of {secs:.2f} s wall)",
        f"{script_cpu:.2f} (`script` + `cat`, of {script_secs:.2f} s wall)",
        f"{used / script_cpu:.1f}", "—", "—"))
    rows.append(("machine CPU busy during a Corral `cat` (2 CPUs = 2.00 per s), s",
                 f"{cpu['machine_cpu']:.2f} (others: {max(0.0, cpu['machine_cpu'] - used):.2f})", "—", "—", "—", "—"))

    sandbox_cpus = CPU or "the server's default (1)"
    print(f"Medians of {len(rounds)} alternating rounds (local PTY echo, Corral echo, `script` cat, Python PTY cat, "
          f"Corral cat); {SAMPLES} echo samples per round after {WARMUP} warm-up, percentiles over all "
          f"{len(all_echo)}; a {FILE_MB} MB file of 80-byte lines; sandbox of 512 MB, CPUs: {sandbox_cpus}.\n")
    print("| metric | Corral | baseline | ratio | goal | pass/fail |\n|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(f"- echo p50 per round, ms: Corral {', '.join(f'{x:.3f}' for x in echo_p50s)}; "
          f"local PTY {', '.join(f'{x:.3f}' for x in base_p50s)}")
    print(f"- `cat` MB/s per round: Corral {', '.join(f'{x:.0f}' for x in mbps)}; "
          f"`script` {', '.join(f'{x:.0f}' for x in script_mbps)}; Python PTY {', '.join(f'{x:.0f}' for x in py_mbps)}")
    print(f"- bytes received per round: {', '.join(str(r['cat']['bytes']) for r in rounds)} (expected {EXPECTED}); "
          f"redraws {', '.join(str(r['cat']['redraws']) for r in rounds)}; close codes "
          f"{', '.join(str(r['cat']['close']) for r in rounds)}; greeting bytes before the `cat` "
          f"{', '.join(str(r['cat']['greeting']) for r in rounds)}")
    print(f"- output frames per `cat`: {', '.join(str(r['cat']['frames']) for r in rounds)} "
          f"(mean {med(r['cat']['bytes'] / max(1, r['cat']['frames']) for r in rounds):.0f} bytes a frame; "
          f"the server sends at most 64 KiB a frame)")
    def each(values):
        return ", ".join(f"{v:.2f}" for v in values)

    per_byte = med(r["cat"]["agent_cpu"] / max(1, r["cat"]["bytes"]) * 1e9 for r in rounds)
    print(f"- CPU seconds per `cat` per round: agent {each(r['cat']['agent_cpu'] for r in rounds)}; "
          f"server {each(r['cat']['server_cpu'] or 0 for r in rounds)}; "
          f"bench client {each(r['cat']['client_cpu'] for r in rounds)}; "
          f"Python PTY reader {each(r['pyreader'][2] for r in rounds)} "
          f"(the agent's median per byte received: {per_byte:.1f} ns)")
    if base_short:
        print(f"- `script` delivered {base_short} bytes instead of {EXPECTED} in some rounds")
    busy = ", ".join(f"{r['busy']:.0f}%" for r in rounds)
    print(f"- machine CPU busy per round (all processes, % of {os.cpu_count()} CPUs): {busy}; "
          f"compilers, `wrk` or other Corral servers running at round start: {', '.join(str(r['compilers']) for r in rounds)}")
    if any(r["compilers"] for r in rounds):
        print("- **Other work (compilers, another bench) was running during this run; treat the numbers with care.**")


main()
