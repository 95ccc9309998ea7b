#!/usr/bin/env python3
"""Sandbox benchmarks against a running Corral, with baselines measured in the
same run: a bare process, `runc run` of an equivalent bundle, and `bwrap`.

Usage: sandbox.py URL TOKEN ROUNDS   (bench/run.sh calls it with BENCH_SANDBOX=1)
Prints a markdown table. Every number is a median (and p99 where it says so).
"""
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

URL, TOKEN, ROUNDS = sys.argv[1], sys.argv[2], int(sys.argv[3])
DENSITY = int(os.environ.get("BENCH_DENSITY", "500"))
WARM_MB = 64  # the class bench/run.sh gives the server's warm pool
HOST = urllib.parse.urlparse(URL).netloc
CONN = http.client.HTTPConnection(HOST, timeout=60)


def api(method, path, body=None):
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    CONN.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    res = CONN.getresponse()
    data = res.read()
    if res.status >= 300:
        sys.exit(f"{method} {path}: {res.status} {data[:300]!r}")
    return json.loads(data) if data else None


def timed(fn, n):
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def med(s):
    return statistics.median(s)


def p99(s):
    return sorted(s)[max(0, int(len(s) * 0.99) - 1)]


# --- baselines --------------------------------------------------------------
def runc_bundle(tmp):
    """A bundle close to Corral's: host dirs read-only, user namespace, tmpfs /tmp."""
    bundle = os.path.join(tmp, "bundle")
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(rootfs)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    cfg = json.load(open(os.path.join(bundle, "config.json")))
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["/bin/true"]
    cfg["root"] = {"path": "rootfs", "readonly": True}
    for d in ["/usr", "/lib", "/lib64", "/bin", "/sbin"]:
        if os.path.islink(d):
            os.symlink(os.readlink(d), os.path.join(rootfs, d[1:]))
        elif os.path.isdir(d):
            os.makedirs(os.path.join(rootfs, d[1:]))
            cfg["mounts"].append({"destination": d, "type": "bind", "source": d,
                                  "options": ["rbind", "ro", "nosuid", "nodev"]})
    for d in ["proc", "dev", "sys", "tmp"]:
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                          "options": ["nosuid", "nodev", "size=64m"]})
    cfg["linux"]["namespaces"] += [{"type": "user"}, {"type": "cgroup"}]
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 900000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 900000, "size": 65536}]
    cfg["linux"]["resources"] = {"memory": {"limit": 128 << 20, "swap": 128 << 20}, "pids": {"limit": 256}}
    json.dump(cfg, open(os.path.join(bundle, "config.json"), "w"))
    return bundle


def main():
    tmp = tempfile.mkdtemp(prefix="corral-bench-")
    os.chmod(tmp, 0o755)  # the user namespace's root must reach the rootfs
    state = ""
    try:
        bundle = runc_bundle(tmp)
        # runc's state where Corral keeps its own (in memory, /run/corral,
        # when Corral made that a tmpfs), so the baseline pays no more for
        # its files than Corral does.
        state = os.path.join(tmp, "runc")
        fs_type = subprocess.run(["stat", "-f", "-c", "%T", "/run/corral"], capture_output=True, text=True)
        if fs_type.returncode == 0 and fs_type.stdout.strip() == "tmpfs":
            state = tempfile.mkdtemp(prefix="bench-runc-", dir="/run/corral")
        n = [0]

        def runc_true():
            n[0] += 1
            run = subprocess.run(["runc", "--root", state, "run", "--bundle", bundle, f"b{n[0]}"],
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"runc run failed: {run.stderr.strip()}")

        bwrap = shutil.which("bwrap")
        bwrap_args = [bwrap, "--unshare-all", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
                      "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                      "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"] if bwrap else None
        bare_true = timed(lambda: subprocess.run(["/bin/true"], check=True), ROUNDS * 5)
        bwrap_true = timed(lambda: subprocess.run(bwrap_args + ["/bin/true"], check=True), ROUNDS) if bwrap else []
        bare_py = timed(lambda: subprocess.run(["/usr/bin/python3", "-c", "print(1)"], check=True,
                                               stdout=subprocess.DEVNULL), ROUNDS)

        # --- Corral -----------------------------------------------------------
        def create_delete():
            start = time.perf_counter()
            sandbox = api("POST", "/api/v1/sandboxes", {})
            took = (time.perf_counter() - start) * 1000
            api("DELETE", f"/api/v1/sandboxes/{sandbox['id']}")
            return took

        # Cold creates alternate with the `runc run` baseline, so drift on a
        # noisy machine hits both alike; each pair also gives a ratio.
        runc_run, cold = [], []
        for _ in range(ROUNDS):
            runc_run += timed(runc_true, 1)
            cold.append(create_delete())
        pair_ratios = [c / r for c, r in zip(cold, runc_run)]

        # Warm: the server keeps a pool of 64 MB sandboxes (bench/run.sh sets
        # sandbox.pool); a create of exactly that class takes one. The pause
        # lets the pool refill between rounds.
        def warm_create_delete():
            time.sleep(0.4)
            start = time.perf_counter()
            sandbox = api("POST", "/api/v1/sandboxes", {"resources": {"memory_mb": WARM_MB}})
            took = (time.perf_counter() - start) * 1000
            api("DELETE", f"/api/v1/sandboxes/{sandbox['id']}")
            return took

        warm = [warm_create_delete() for _ in range(ROUNDS)]
        sandbox = api("POST", "/api/v1/sandboxes", {})
        exec_path = f"/api/v1/sandboxes/{sandbox['id']}/exec"
        exec_true = timed(lambda: api("POST", exec_path, {"argv": ["/bin/true"]}), ROUNDS * 10)
        one_shot = timed(lambda: api("POST", exec_path, {"argv": ["/usr/bin/python3", "-c", "print(1)"]}), ROUNDS)
        rss = api("POST", exec_path, {"command": "grep VmRSS /proc/1/status"})["stdout"].split()[1]
        api("DELETE", f"/api/v1/sandboxes/{sandbox['id']}")

        # Density: DENSITY idle sandboxes at once; memory per sandbox from the
        # host's MemAvailable (everything: agent, runtime leftovers, kernel).
        def available_kib():
            for line in open("/proc/meminfo"):
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1])
            return 0

        before = available_kib()
        ids, density_started = [], time.perf_counter()
        try:
            for _ in range(DENSITY):
                ids.append(api("POST", "/api/v1/sandboxes", {"resources": {"memory_mb": 32}})["id"])
            density_secs = time.perf_counter() - density_started
            time.sleep(2)
            per_sandbox_kib = (before - available_kib()) / max(1, len(ids))
            alive = api("POST", f"/api/v1/sandboxes/{ids[-1]}/exec", {"argv": ["/bin/true"]})["exit_code"] == 0
        finally:
            for sid in ids:
                api("DELETE", f"/api/v1/sandboxes/{sid}")

        rows = [
            ("create to ready (cold, no pool), ms", f"{med(cold):.1f}", f"{med(runc_run):.1f} (`runc run /bin/true`)",
             f"{med(cold) / med(runc_run):.2f}", "≤ 1.2×", "pass" if med(cold) <= 1.2 * med(runc_run) else "**FAIL**"),
            ("create from the warm pool, p50 / p99 ms", f"{med(warm):.2f} / {p99(warm):.2f}",
             f"{med(runc_run):.1f} (`runc run /bin/true`)", f"{med(warm) / med(runc_run):.2f}", "p50 < 5 ms",
             "pass" if med(warm) < 5 else "**FAIL**"),
            ("exec round trip of `true`, p50 / p99 ms", f"{med(exec_true):.2f} / {p99(exec_true):.2f}",
             f"{med(bare_true):.2f} (bare `/bin/true`)", f"{med(exec_true) / med(bare_true):.2f}", "p50 < 2 ms",
             "pass" if med(exec_true) < 2 else "**FAIL**"),
            ("one-shot `python3 -c 'print(1)'` in a running sandbox, ms", f"{med(one_shot):.1f}",
             f"{med(bare_py):.1f} (bare `/usr/bin/python3`)", f"{med(one_shot) / med(bare_py):.2f}", "≤ 1.5×",
             "pass" if med(one_shot) <= 1.5 * med(bare_py) else "**FAIL**"),
            ("agent RSS (kB)", rss, "—", "—", "< 2048", "pass" if int(rss) < 2048 else "**FAIL**"),
            (f"idle sandboxes at once (created in {density_secs:.0f} s, the last still answering)", str(len(ids)),
             "—", "—", "500", "pass" if len(ids) >= 500 and alive else "**FAIL**"),
            ("host memory per idle sandbox (MiB)", f"{per_sandbox_kib / 1024:.2f}", "—", "—", "—", "—"),
        ]
        if bwrap_true:
            rows.insert(1, ("`bwrap` of `/bin/true` (baseline), ms", f"{med(bwrap_true):.1f}", "—", "—", "—", "—"))
        print(f"Medians of {ROUNDS} cold and {ROUNDS} warm creates, {ROUNDS * 10} execs, {ROUNDS} one-shots, "
              f"{DENSITY} idle sandboxes; "
              f"baselines in the same run ({ROUNDS} `runc run`, {ROUNDS} `bwrap`, {ROUNDS * 5} bare `/bin/true`).\n")
        print("| metric | Corral | baseline | ratio | goal | pass/fail |\n|---|---|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print(f"\nCold create ÷ the `runc run` just before it, per pair: median {med(pair_ratios):.2f} "
              f"(min {min(pair_ratios):.2f}, max {max(pair_ratios):.2f}); runc state in `{os.path.dirname(state)}`.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if state.startswith("/run/corral/"):
            shutil.rmtree(state, ignore_errors=True)


main()
