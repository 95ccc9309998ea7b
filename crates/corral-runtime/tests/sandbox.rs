//! Long-lived sandboxes with the agent as PID 1, under real runc as root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

use std::path::PathBuf;
use std::time::Duration;

use corral_runtime::{Limits, OciRuntime, Sandbox, SandboxSpec};
use corral_types::agent::ExecRequest;

/// The agent binary: `CORRAL_AGENT_BIN`, else the workspace's debug build
/// (`make test` builds it first; so does `cargo build -p corral-agent`).
fn agent() -> PathBuf {
    if let Ok(path) = std::env::var("CORRAL_AGENT_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let path = target.join("debug/corral-agent");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p corral-agent` first (make test does)",
        path.display()
    );
    path
}

/// A sandbox with default limits; `Sandbox::start` sets the agent as PID 1.
fn spec() -> SandboxSpec {
    SandboxSpec {
        argv: Vec::new(),
        env: Vec::new(),
        cwd: "/tmp".into(),
        host_id_base: 300_000,
        limits: Limits::default(),
        agent: None,
    }
}

struct Running {
    sandbox: Sandbox,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.sandbox.destroy();
    }
}

fn start(name: &str) -> Running {
    start_at(name, 300_000)
}

/// A sandbox whose root maps to host uid `base`.
fn start_at(name: &str, base: u32) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let runtime = OciRuntime {
        binary: PathBuf::from(
            std::env::var("CORRAL_TEST_OCI_RUNTIME").unwrap_or_else(|_| "runc".into()),
        ),
        root: dir.path().join("state"),
    };
    let mut spec = spec();
    spec.host_id_base = base;
    let id = format!("corral-sbx-{name}-{}", std::process::id());
    let sandbox =
        Sandbox::start(&runtime, &id, &dir.path().join("sandbox"), spec, &agent()).unwrap();
    Running { sandbox, _dir: dir }
}

fn sh(script: &str, timeout_ms: u64) -> ExecRequest {
    ExecRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/tmp".into(),
        stdin: String::new(),
        timeout_ms,
        output_limit: 1 << 20,
        stream: false,
    }
}

#[test]
fn the_agent_runs_programs_and_the_sandbox_keeps_its_state() {
    let running = start("state");
    let sandbox = &running.sandbox;
    assert!(sandbox.is_running());
    let first = sandbox
        .exec(sh(
            "echo hello > /tmp/kept; echo $$; echo err >&2; exit 3",
            10_000,
        ))
        .unwrap();
    assert_eq!(first.exit_code, Some(3));
    assert_eq!(first.stderr, "err\n");
    assert!(!first.timed_out);
    let second = sandbox
        .exec(sh("cat /tmp/kept; cat /proc/1/cmdline", 10_000))
        .unwrap();
    assert_eq!(
        second.stdout, "hello\n/.corral/agent\0",
        "state survives; the agent is PID 1"
    );

    // Standard input reaches the program.
    let mut with_input = sh("tr a-z A-Z", 10_000);
    with_input.stdin = "shout\n".into();
    assert_eq!(sandbox.exec(with_input).unwrap().stdout, "SHOUT\n");

    // A missing program is a clear error, not a hang.
    let mut missing = sh("", 10_000);
    missing.argv = vec!["/no/such/program".into()];
    let error = sandbox.exec(missing).unwrap_err().to_string();
    assert!(error.contains("/no/such/program"), "{error}");
}

#[test]
fn a_timeout_kills_the_whole_process_group_and_the_sandbox_stays_usable() {
    let running = start("timeout");
    let sandbox = &running.sandbox;
    let slow = sandbox.exec(sh("sleep 60 & sleep 60", 300)).unwrap();
    assert!(slow.timed_out);
    assert_eq!(slow.signal, Some(9));
    // Nothing of it is left: only the agent (and this shell) run.
    let after = sandbox
        .exec(sh(
            "for p in /proc/[0-9]*; do cat $p/comm; done | sort | uniq -c | tr -s ' '",
            10_000,
        ))
        .unwrap();
    assert!(!after.stdout.contains("sleep"), "{}", after.stdout);
}

#[test]
fn orphans_are_reaped_by_the_agent() {
    let running = start("reap");
    let sandbox = &running.sandbox;
    // The shell exits at once; its background children become the agent's.
    sandbox
        .exec(sh("(sleep 0.2 &) ; (sleep 0.2 &) ; exit 0", 10_000))
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let states = sandbox
        .exec(sh(
            "cat /proc/[0-9]*/stat 2>/dev/null | awk '{print $3}' | sort | uniq -c",
            10_000,
        ))
        .unwrap();
    assert!(
        !states.stdout.contains(" Z"),
        "zombies left: {}",
        states.stdout
    );
}

#[test]
fn destroy_removes_the_container_and_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = OciRuntime {
        binary: PathBuf::from("runc"),
        root: dir.path().join("state"),
    };
    let spec = spec();
    let home = dir.path().join("sandbox");
    let id = format!("corral-sbx-destroy-{}", std::process::id());
    let sandbox = Sandbox::start(&runtime, &id, &home, spec, &agent()).unwrap();
    sandbox.destroy();
    assert!(!sandbox.is_running());
    assert!(!home.exists());
    sandbox.destroy(); // idempotent
}

/// Hostile programs 10 (leaked fds) and 12 (environment): a program in the
/// sandbox holds only its stdio, and nothing of the host's environment or
/// the agent's socket reaches it.
#[test]
fn programs_get_only_their_stdio_and_no_secrets() {
    let running = start("fds");
    let out = running
        .sandbox
        .exec(sh(
            "for f in /proc/self/fd/*; do [ -e \"$f\" ] && echo ${f##*/} $(readlink $f); done; \
             tr '\\0' '\\n' < /proc/1/environ",
            10_000,
        ))
        .unwrap();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let fds: Vec<&str> = lines
        .iter()
        .take_while(|l| {
            l.split(' ')
                .next()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .copied()
        .collect();
    // 0-2 and the directory the shell's glob is reading (it shows as gone).
    assert!(
        fds.iter()
            .all(|l| l.starts_with("0 ") || l.starts_with("1 ") || l.starts_with("2 ")),
        "only stdio is open: {fds:?}"
    );
    assert!(
        !out.stdout.contains("socket:"),
        "the agent's socket leaked: {}",
        out.stdout
    );
    for secret in ["DATABASE_URL", "CORRAL_", "TOKEN", "PASSWORD", "SECRET"] {
        assert!(
            !out.stdout.contains(secret),
            "{secret} visible in the agent's environment: {}",
            out.stdout
        );
    }
}

/// Runs a Python probe in a fresh sandbox and returns its stdout.
fn probe(running: &Running, python: &str) -> String {
    let mut request = sh("", 20_000);
    request.argv = vec!["/usr/bin/python3".into(), "-c".into(), python.into()];
    let out = running.sandbox.exec(request).unwrap();
    assert!(out.stderr.is_empty(), "probe failed: {}", out.stderr);
    out.stdout
}

/// Hostile program 9: the agent binary cannot be replaced from inside, and
/// the host's copy is unchanged afterwards.
#[test]
fn the_agent_binary_cannot_be_overwritten() {
    let before = std::fs::read(agent()).unwrap();
    let running = start("proc-exe");
    let out = running
        .sandbox
        .exec(sh(
            "cp /bin/true /.corral/agent 2>&1; echo x > /proc/1/exe 2>&1; true",
            10_000,
        ))
        .unwrap();
    assert!(
        out.stdout
            .contains("'/.corral/agent': Read-only file system"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("/proc/1/exe"),
        "writing /proc/1/exe is refused: {}",
        out.stderr
    );
    assert_eq!(
        std::fs::read(agent()).unwrap(),
        before,
        "the host's agent is unchanged"
    );
}

/// Hostile program 15: /tmp is nosuid and no_new_privs is set.
#[test]
fn tmp_is_nosuid_and_no_new_privs_is_set() {
    let running = start("nosuid");
    let out = running
        .sandbox
        .exec(sh(
            "grep ' /tmp ' /proc/mounts; grep NoNewPrivs /proc/self/status",
            10_000,
        ))
        .unwrap();
    assert!(out.stdout.contains("nosuid"), "{}", out.stdout);
    assert!(out.stdout.contains("NoNewPrivs:\t1"), "{}", out.stdout);
}

/// Hostile programs 23, 26, 27, 30: x32 system calls, terminal injection,
/// the network and devices.
#[test]
fn abi_tty_network_and_device_tricks_fail() {
    let running = start("tricks");
    let out = probe(
        &running,
        r#"
import ctypes, os, socket, errno
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ALLOWED" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
print("tiocsti", call(16, 0, 0x5412, 0))
print("tioclinux", call(16, 0, 0x541C, 0))
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("1.1.1.1", 53)); print("udp ALLOWED")
except OSError as e: print("udp", errno.errorcode[e.errno])
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print("raw ALLOWED")
except OSError as e: print("raw", errno.errorcode[e.errno])
try:
    socket.create_connection(("::1", 8080), timeout=1); print("v6 ALLOWED")
except OSError as e: print("v6", errno.errorcode.get(e.errno, e.errno))
try:
    os.mknod("/tmp/mem", 0o600 | 0o020000, os.makedev(1, 1)); print("mknod ALLOWED")
except OSError as e: print("mknod", errno.errorcode[e.errno])
print("devmem", os.path.exists("/dev/mem"), "kmsg", os.path.exists("/dev/kmsg"))
"#,
    );
    for line in out.lines() {
        assert!(!line.contains("ALLOWED"), "{line}\n{out}");
    }
    // The x32 ABI: the filter kills the caller (SIGSYS) before it runs.
    let mut x32 = sh("", 10_000);
    x32.argv = vec![
        "/usr/bin/python3".into(),
        "-c".into(),
        "import ctypes; print('x32', ctypes.CDLL(None).syscall(39 | 0x40000000), flush=True)"
            .into(),
    ];
    let x32 = running.sandbox.exec(x32).unwrap();
    assert!(
        x32.signal == Some(31) || x32.stdout.trim() == "x32 -1",
        "an x32 system call ran: {x32:?}"
    );
    // Refused by the seccomp filter (ENOSYS), not merely by the kernel
    // finding no terminal (ENOTTY).
    assert!(out.contains("tiocsti ENOSYS"), "{out}");
    assert!(out.contains("tioclinux ENOSYS"), "{out}");
    assert!(out.contains("udp ENETUNREACH"), "{out}");
    assert!(out.contains("raw EPERM"), "{out}");
    assert!(out.contains("mknod EPERM"), "{out}");
    assert!(out.contains("devmem False kmsg False"), "{out}");
}

/// Hostile program 28: one sandbox cannot see or signal another's processes,
/// shared memory or temporary files.
#[test]
fn sandboxes_cannot_reach_each_other() {
    let a = start("lateral-a");
    let b = start("lateral-b");
    b.sandbox
        .exec(sh("echo secret > /dev/shm/b; echo secret > /tmp/b", 10_000))
        .unwrap();
    let seen = a
        .sandbox
        .exec(sh("ls /dev/shm /tmp; kill -9 -1; echo killed", 10_000))
        .unwrap();
    assert!(!seen.stdout.contains('b'), "{}", seen.stdout);
    // B is untouched by A's kill(-1).
    let alive = b.sandbox.exec(sh("cat /tmp/b", 10_000)).unwrap();
    assert_eq!(alive.stdout, "secret\n");
}

/// Hostile program 14: after destroy, nothing of the sandbox runs on the
/// host (no process in its uid range), even a double-forked, setsid'd
/// survivor.
#[test]
fn nothing_survives_destroy() {
    // Its own uid range, so other tests' sandboxes do not count.
    let running = start_at("survivor", 500_000);
    running
        .sandbox
        .exec(sh(
            "setsid sh -c 'trap \"\" HUP; sleep 600' >/dev/null 2>&1 < /dev/null & sleep 0.3; exit 0",
            10_000,
        ))
        .unwrap();
    let in_range = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
            // A zombie holds nothing but its exit status.
            .filter(|status| !status.contains("State:\tZ"))
            .filter_map(|status| {
                let uid: u32 = status
                    .lines()
                    .find(|l| l.starts_with("Uid:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                (500_000..565_536).contains(&uid).then_some(uid)
            })
            .count()
    };
    assert!(
        in_range() >= 2,
        "the agent and the survivor run before destroy"
    );
    running.sandbox.destroy();
    // Killed processes may linger a moment as zombies before they are reaped.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while in_range() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(in_range(), 0, "processes of the sandbox survived destroy");
}
