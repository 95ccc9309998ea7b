//! The isolation baseline, tested by running real programs under runc as
//! root (as Corral runs): each test runs hostile shell or Python one-liners
//! in a sandbox and checks the host-side outcome.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

use std::path::PathBuf;
use std::time::Duration;

use corral_runtime::{Bundle, Limits, OciRuntime, RunOutput, SandboxSpec};

/// The OCI runtime under test: `CORRAL_TEST_OCI_RUNTIME`, else `runc`.
fn runtime(state: &std::path::Path) -> OciRuntime {
    let binary = std::env::var("CORRAL_TEST_OCI_RUNTIME").unwrap_or_else(|_| "runc".into());
    OciRuntime {
        binary: PathBuf::from(binary),
        root: state.to_path_buf(),
    }
}

/// Runs `sh -c script` in a fresh sandbox with `limits`.
fn sh_with(script: &str, limits: Limits, wall: Duration) -> RunOutput {
    let dir = tempfile::tempdir().unwrap();
    let spec = SandboxSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
        cwd: "/tmp".into(),
        host_id_base: 200_000,
        limits,
        agent: None,
    };
    let bundle = Bundle::create(&dir.path().join("bundle"), &spec).unwrap();
    let id = format!("corral-test-{}-{}", std::process::id(), rand_suffix());
    runtime(&dir.path().join("state"))
        .run(&id, &bundle, wall, 1 << 20)
        .unwrap()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn sh(script: &str) -> RunOutput {
    sh_with(script, Limits::default(), Duration::from_secs(20))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_program_runs_and_its_exit_code_and_output_come_back() {
    let out = sh("echo out; echo err >&2; exit 7");
    assert_eq!(out.exit_code, 7);
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    assert!(!out.timed_out);
}

#[test]
fn sandbox_root_is_an_unprivileged_host_uid() {
    let out = sh("id -u; cat /proc/self/uid_map");
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("0"), "{stdout}");
    let map: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        map,
        ["0", "200000", "65536"],
        "root inside is uid 200000 outside"
    );
}

/// `CAP_CHECKPOINT_RESTORE` (40) is the agent's alone: a program run
/// directly as PID 1 does not have it, not even in its bounding set.
#[test]
fn a_program_run_directly_never_gets_the_agents_capability() {
    let out = sh("for set in CapEff CapBnd; do \
                  echo $set $(( (0x$(grep $set /proc/self/status | cut -f2) >> 40) & 1 )); done");
    assert_eq!(
        text(&out.stdout),
        "CapEff 0\nCapBnd 0\n",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn only_the_given_environment_crosses_in() {
    // SAFETY-free: set in this test process, which runc inherits.
    let out = sh("env");
    let env = text(&out.stdout);
    assert!(env.contains("PATH=/usr/local/bin:/usr/bin:/bin"), "{env}");
    for leaked in ["HOME=/root", "CARGO", "RUST", "PWD=/work"] {
        assert!(!env.contains(leaked), "{leaked} leaked into {env}");
    }
}

#[test]
fn the_network_is_loopback_only() {
    let out = sh("ls /sys/class/net; cat /proc/net/route | wc -l");
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().next(), Some("lo"), "{stdout}");
    assert_eq!(
        stdout.lines().count(),
        2,
        "only lo, and no routes: {stdout}"
    );
}

#[test]
fn the_root_and_sys_are_read_only_and_tmp_is_capped() {
    let out = sh_with(
        "touch /usr/x 2>&1; touch /x 2>&1; touch /sys/x 2>&1; echo ok > /tmp/ok && cat /tmp/ok; \
         dd if=/dev/zero of=/tmp/big bs=1M count=32 2>&1",
        Limits {
            tmp_mb: 8,
            file_size_mb: 64,
            ..Limits::default()
        },
        Duration::from_secs(20),
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.matches("Read-only file system").count(),
        3,
        "{stdout}"
    );
    assert!(stdout.contains("ok\n"), "/tmp is writable: {stdout}");
    assert!(
        stdout.contains("No space left on device"),
        "/tmp is capped at 8 MiB: {stdout}"
    );
}

#[test]
fn tmp_runs_out_of_inodes_before_the_host_does() {
    let out = sh_with(
        "i=0; while [ $i -lt 500 ]; do touch /tmp/f$i 2>/dev/null || { echo full at $i; exit 0; }; i=$((i+1)); done; echo not full",
        Limits {
            tmp_inodes: 100,
            ..Limits::default()
        },
        Duration::from_secs(20),
    );
    assert!(
        text(&out.stdout).starts_with("full at"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_fork_bomb_hits_the_pids_limit() {
    // Python keeps forking until the kernel refuses, then reports how far it got.
    let script = "import os, time\nn = 0\ntry:\n    while n < 500:\n        if os.fork() == 0:\n            time.sleep(5); os._exit(0)\n        n += 1\nexcept OSError as e:\n    print(n, e.errno)\nelse:\n    print(n, 0)\n";
    let out = sh_with(
        &format!("python3 -c '{script}'"),
        Limits {
            pids: 20,
            ..Limits::default()
        },
        Duration::from_secs(20),
    );
    let stdout = text(&out.stdout);
    let (forked, errno) = stdout.trim().split_once(' ').unwrap_or(("", ""));
    let forked: u32 = forked.parse().unwrap_or(0);
    assert!(
        forked > 0 && forked < 20,
        "stopped below 20 processes: {stdout}{}",
        text(&out.stderr)
    );
    assert_eq!(errno, "11", "EAGAIN from the pids limit: {stdout}");
}

#[test]
fn memory_beyond_the_limit_is_killed_without_swapping() {
    let out = sh_with(
        "python3 -c 'a = bytearray(200 * 1024 * 1024); print(len(a))'",
        Limits {
            memory_mb: 64,
            ..Limits::default()
        },
        Duration::from_secs(20),
    );
    assert_ne!(out.exit_code, 0, "{}", text(&out.stdout));
    assert!(
        !text(&out.stdout).contains("209715200"),
        "allocated past the limit"
    );
}

#[test]
fn wall_time_kills_a_program_that_never_ends() {
    let out = sh_with("sleep 60", Limits::default(), Duration::from_millis(500));
    assert!(out.timed_out);
    assert!(out.wall < Duration::from_secs(10), "{:?}", out.wall);
}

#[test]
fn output_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SandboxSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), "yes | head -c 100000".into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/tmp".into(),
        host_id_base: 200_000,
        limits: Limits::default(),
        agent: None,
    };
    let bundle = Bundle::create(&dir.path().join("bundle"), &spec).unwrap();
    let out = runtime(&dir.path().join("state"))
        .run(
            "corral-test-output-cap",
            &bundle,
            Duration::from_secs(20),
            1000,
        )
        .unwrap();
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.output_truncated);
}

/// Dangerous system calls are refused by the seccomp allowlist (or, for the
/// ones only capabilities guard, by both): called directly by number, so no
/// library wrapper can hide a refusal.
#[test]
fn dangerous_system_calls_are_refused() {
    let script = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
calls = {
    "io_uring_setup": (425, 1, 0), "unshare": (272, 0x10000000), "setns": (308, 0, 0),
    "mount": (165, 0, 0, 0, 0, 0), "ptrace": (101, 16, 1), "bpf": (321, 0, 0, 0),
    "perf_event_open": (298, 0, 0, -1, -1, 0), "keyctl": (250, 0), "userfaultfd": (323, 0),
    "kexec_load": (246, 0, 0, 0, 0), "init_module": (175, 0, 0, 0),
    "process_vm_readv": (310, 1, 0, 0, 0, 0, 0), "clone_newuser": (56, 0x10000000 | 17, 0, 0, 0, 0),
    "vsock": (41, 40, 1, 0), "vsock_high_bits": (41, 40 | 1 << 32, 1, 0),
}
for name, (nr, *args) in calls.items():
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    print(name, "ALLOWED" if r >= 0 else os.strerror(ctypes.get_errno()))
fcntl_ok = libc.syscall(72, 0, 1, 0)  # fcntl(0, F_GETFD): ordinary calls still work
print("fcntl", "ok" if fcntl_ok >= 0 else "refused")
unix_ok = libc.syscall(41, 1, 1, 0)  # socket(AF_UNIX): other families still work
print("unix socket", "ok" if unix_ok >= 0 else "refused")
"#;
    let out = sh(&format!("python3 -c '{}'", script.replace('\'', "\"")));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("fcntl ok"), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("unix socket ok"),
        "{stdout}{}",
        text(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 17, "{stdout}{}", text(&out.stderr));
    for line in stdout
        .lines()
        .filter(|l| !l.starts_with("fcntl") && !l.starts_with("unix"))
    {
        assert!(!line.ends_with("ALLOWED"), "{line}");
        // Refused by the filter itself, not by a kernel without vsock.
        if line.starts_with("vsock") {
            assert!(line.ends_with("Function not implemented"), "{line}");
        }
    }
}

#[test]
fn proc_secrets_are_masked() {
    // /proc/timer_list and /proc/keys exist on this kernel (kcore does not).
    let out = sh("wc -c < /proc/timer_list; wc -c < /proc/keys; \
         echo 1 > /proc/sys/kernel/panic 2>&1; grep -c . /proc/timer_list 2>/dev/null || true");
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("0"),
        "nothing of /proc/timer_list: {stdout}"
    );
    assert_eq!(lines.next(), Some("0"), "nothing of /proc/keys: {stdout}");
    assert!(
        text(&out.stderr).contains("/proc/sys/kernel/panic: Read-only file system"),
        "/proc/sys is read-only: {stdout}{}",
        text(&out.stderr)
    );
}
