//! Long-lived sandboxes with the agent as PID 1, under real runc as root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

use std::path::PathBuf;
use std::time::Duration;

use corral_runtime::{Limits, OciRuntime, Sandbox, SandboxSpec};
use corral_types::agent::{ExecRequest, SpawnRequest};
use corral_types::terminal::TerminalInput;

/// The agent binary: `CORRAL_AGENT_BIN`, else the workspace's debug build
/// (`make test` builds it first; so does `cargo build -p corral-agent`).
fn agent() -> PathBuf {
    corral_runtime::test_agent_binary()
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
    runtime: OciRuntime,
    id: String,
    dir: tempfile::TempDir,
}

impl Running {
    /// The agent's environment, read from the host (inside, the agent is
    /// not dumpable and its /proc/1/environ is refused), one per line.
    fn agent_environment(&self) -> String {
        let pid = self.runtime.init_pid(&self.id).unwrap();
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
            .replace('\0', "\n")
    }
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
    Running {
        sandbox,
        runtime,
        id,
        dir,
    }
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
        stdin_stream: false,
        sole: false,
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
            "for f in /proc/self/fd/*; do [ -e \"$f\" ] && echo ${f##*/} $(readlink $f); done",
            10_000,
        ))
        .unwrap();
    let environment = running.agent_environment();
    assert!(
        environment.contains("HOME="),
        "the agent's environment is read: {environment}"
    );
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
            !environment.contains(secret) && !out.stdout.contains(secret),
            "{secret} visible in the agent's environment: {environment}"
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

/// [`probe`] with `call(nr, *args)` defined: a raw system call's outcome,
/// `ALLOWED` or the errno's name.
fn probe_calls(running: &Running, python: &str) -> String {
    const CALL: &str = r#"
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ALLOWED" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
"#;
    probe(running, &format!("{CALL}{python}"))
}

/// Python: `attempt(what, f)` prints `what DONE`, or `what refused ERRNO`
/// when `f` raises an `OSError`.
const ATTEMPT: &str = r"
import os
def attempt(what, f):
    try:
        f()
        print(what, 'DONE')
    except OSError as e:
        print(what, 'refused', e.errno)
";

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

/// Security row 8 of issue 17: the file API runs as the agent, so
/// `/proc/self` is the agent; neither it nor `/proc/<agent>` is reachable
/// in any spelling, and the agent's stdout and stderr are no longer the
/// host's `agent.log` once it serves (they are the sandbox's /dev/null).
#[test]
fn the_file_api_does_not_reach_the_agents_own_proc_entries() {
    use corral_runtime::RuntimeError;
    use corral_types::agent::{AgentRequest, AgentResponse};

    let running = start("proc-self");
    let sandbox = &running.sandbox;
    let out = sandbox
        .exec(sh(
            "ln -s /proc/self/fd/1 /tmp/out; ln -s /proc/1 /tmp/agent; \
             ln -s /proc/self/fd/3 /tmp/socket",
            10_000,
        ))
        .unwrap();
    assert_eq!(out.exit_code, Some(0), "{}", out.stderr);
    let refused = |result: Result<Vec<u8>, RuntimeError>, path: &str| match result {
        Err(RuntimeError::Refused { kind, message }) => {
            assert_eq!(kind, "invalid", "{path}: {message}");
            assert!(message.contains("agent"), "{path}: {message}");
        }
        other => panic!("{path} was not refused: {other:?}"),
    };
    for path in [
        "/proc/self/fd/1",
        "/proc/self/fd/2",
        "/proc/1/fd/1",
        "/proc/thread-self/environ",
        "/proc/1/environ",
        "/proc/self/../self/status",
        "/proc/./1/mem",
        "/tmp/out",
        "/tmp/agent/environ",
        "/tmp/socket",
    ] {
        refused(sandbox.read_file(path, 1 << 20), path);
    }
    for request in [
        AgentRequest::Stat {
            path: "/proc/self".to_owned(),
        },
        AgentRequest::List {
            path: "/proc/1/fd".to_owned(),
        },
        AgentRequest::Chmod {
            path: "/proc/self/fd/1".to_owned(),
            mode: 0o777,
        },
    ] {
        match sandbox.file_op(&request) {
            Err(RuntimeError::Refused { kind, .. }) if kind == "invalid" => {}
            other => panic!("{request:?} was not refused: {other:?}"),
        }
    }
    refused(
        sandbox
            .write_file("/proc/self/fd/1", b"x", None)
            .map(|()| Vec::new()),
        "write /proc/self/fd/1",
    );
    // Other /proc files and ordinary ones are as before.
    sandbox.write_file("/tmp/plain", b"plain", None).unwrap();
    assert_eq!(sandbox.read_file("/tmp/plain", 1 << 20).unwrap(), b"plain");
    match sandbox.file_op(&AgentRequest::List {
        path: "/proc".to_owned(),
    }) {
        Ok(AgentResponse::Entries { entries }) => assert!(!entries.is_empty()),
        other => panic!("listing /proc: {other:?}"),
    }
    let pid = running.runtime.init_pid(&running.id).unwrap();
    for fd in [1, 2] {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(target, PathBuf::from("/dev/null"), "the agent's fd {fd}");
    }
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
    let out = probe_calls(
        &running,
        r#"
import os, socket
print("tiocsti", call(16, 0, 0x5412, 0))
print("tioclinux", call(16, 0, 0x541C, 0))
# The kernel reads the request as 32 bits: high bits must not slip past.
print("tiocsti-high", call(16, 0, 0x5412 | (1 << 32), 0))
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
    assert!(out.contains("tiocsti-high ENOSYS"), "{out}");
    assert!(out.contains("udp ENETUNREACH"), "{out}");
    assert!(out.contains("raw EPERM"), "{out}");
    assert!(out.contains("mknod EPERM"), "{out}");
    assert!(out.contains("devmem False kmsg False"), "{out}");
}

/// The agent, not runc, installs the seccomp profile (compiled at the
/// agent's build, see corral-agent's seccomp.rs): the bundle carries none,
/// and the agent and every program it starts are filtered as runc filtered
/// them: the reviewed deny list answers EPERM, anything outside the
/// allowlist ENOSYS. The third filter refuses changing PID 1's
/// scheduling by naming it (its nice value by PID, by a PID with high bits
/// the kernel drops, or by user; its CPUs; its limits), while a program's
/// own stays its to change. All three show in /proc (runc's single filter
/// would show as one).
#[test]
fn the_agent_installs_the_seccomp_profile_on_itself_and_its_programs() {
    let running = start("seccomp");
    let config =
        std::fs::read_to_string(running.dir.path().join("sandbox/bundle/config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert!(
        config["linux"].get("seccomp").is_none(),
        "runc was given the profile too: {}",
        config["linux"]
    );
    let out = probe_calls(
        &running,
        r#"
print("unshare", call(272, 0x10000000))
print("io_uring_setup", call(425, 1, 0))
print("ptrace", call(101, 16, 1, 0, 0))
print("keyctl", call(250, 0, 0))
print("bpf", call(321, 0, 0, 0))
print("clone3", call(435, 0, 0))
print("unknown", call(1000))
print("vsock", call(41, 40, 1, 0))
print("vsock_high_bits", call(41, 40 | 1 << 32, 1, 0))
print("inet", call(41, 2, 1, 0))
print("getpid", "ALLOWED" if call(39) == "ALLOWED" else "refused")
print("renice-agent", call(141, 0, 1, 19))
print("renice-agent-wide", call(141, 0, 1 + (1 << 32), 19))
print("renice-user", call(141, 2, 0, 19))
print("pin-agent", call(203, 1, 8, 0))
print("prlimit-agent", call(302, 1, 7, 0, 0))
print("renice-self", call(141, 0, 0, 5))
for pid in ("1", "self"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Seccomp"):
            print(pid, " ".join(line.split()))
"#,
    );
    for expected in [
        "unshare EPERM",
        "io_uring_setup EPERM",
        "ptrace EPERM",
        "keyctl EPERM",
        "bpf EPERM",
        "clone3 ENOSYS",
        "unknown ENOSYS",
        "vsock ENOSYS",
        "vsock_high_bits ENOSYS",
        "inet ALLOWED",
        "getpid ALLOWED",
        "1 Seccomp: 2",
        "renice-agent EPERM",
        "renice-agent-wide EPERM",
        "renice-user EPERM",
        "pin-agent EPERM",
        "prlimit-agent EPERM",
        "renice-self ALLOWED",
        "1 Seccomp_filters: 3",
        "self Seccomp: 2",
        "self Seccomp_filters: 3",
    ] {
        assert!(
            out.lines().any(|l| l == expected),
            "no `{expected}` in:\n{out}"
        );
    }
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

fn spawn(argv: &[&str]) -> SpawnRequest {
    SpawnRequest {
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("TERM".into(), "xterm-256color".into()),
        ],
        cwd: "/tmp".into(),
        cols: 80,
        rows: 24,
    }
}

/// An attached terminal connection, read until some text shows up.
struct Attached {
    stream: std::os::unix::net::UnixStream,
    seen: Vec<u8>,
}

impl Attached {
    fn new(sandbox: &Sandbox, id: &str) -> Attached {
        let (_, stream, seen) = sandbox.terminal_attach(id).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Attached { stream, seen }
    }

    fn send(&mut self, input: &TerminalInput) {
        use std::io::Write;
        let mut line = serde_json::to_vec(input).unwrap();
        line.push(b'\n');
        self.stream.write_all(&line).unwrap();
    }

    fn type_text(&mut self, text: &str) {
        self.send(&TerminalInput::Input { data: text.into() });
    }

    /// Reads until `needle` has been seen; everything read so far.
    fn until(&mut self, needle: &str) -> String {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&self.seen).into_owned();
            if text.contains(needle) {
                return text;
            }
            let n = self
                .stream
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("waiting for {needle:?}: {e}; saw {text:?}"));
            assert!(n > 0, "the terminal ended before {needle:?}: {text:?}");
            self.seen.extend_from_slice(&buf[..n]);
        }
    }
}

#[test]
fn a_terminal_keeps_its_shell_and_screen_between_attachments() {
    let running = start("terminal");
    let sandbox = &running.sandbox;
    let info = sandbox.terminal_open(spawn(&["/bin/sh"])).unwrap();
    assert!(info.running && info.pid > 1, "{info:?}");
    let mut first = Attached::new(sandbox, &info.id);
    first.type_text("export KEPT=still-here; echo first-$((40+2))\n");
    first.until("first-42");
    first.send(&TerminalInput::Resize {
        cols: 100,
        rows: 30,
    });
    first.type_text("stty size\n");
    first.until("30 100");
    // The job has a controlling terminal: ^C interrupts it, not the shell.
    first.type_text("sleep 30; echo after-sleep\n");
    std::thread::sleep(Duration::from_millis(300));
    first.type_text("\u{3}echo interrupted\n");
    first.until("interrupted\r\n");
    drop(first);

    // Nobody attached: the shell keeps running.
    let listed = sandbox.terminals().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].running);
    assert_eq!((listed[0].cols, listed[0].rows), (100, 30));

    // Re-attaching shows what came before, and the shell's state is intact.
    let mut second = Attached::new(sandbox, &info.id);
    // The greeting (recent output, then the screen) comes first.
    second.until("first-42");
    second.type_text("echo \"$KEPT\"\n");
    second.until("still-here\r\n");

    // Two clients see the same output.
    let mut third = Attached::new(sandbox, &info.id);
    second.type_text("echo both-$((6*7))\n");
    second.until("both-42");
    third.until("both-42");

    // Closing ends the shell and the attached connections.
    sandbox.terminal_close(&info.id).unwrap();
    let mut rest = Vec::new();
    use std::io::Read;
    let _ = third.stream.read_to_end(&mut rest);
    assert!(sandbox.terminals().unwrap().is_empty());
    let error = sandbox.terminal_attach(&info.id).unwrap_err().to_string();
    assert!(error.contains("no terminal"), "{error}");
}

#[test]
fn a_terminal_that_exits_reports_its_status() {
    let running = start("terminal-exit");
    let sandbox = &running.sandbox;
    let info = sandbox.terminal_open(spawn(&["/bin/sh"])).unwrap();
    let mut early = Attached::new(sandbox, &info.id);
    early.send(&TerminalInput::Resize {
        cols: 100,
        rows: 30,
    });
    early.type_text("sleep 60\n");
    std::thread::sleep(Duration::from_millis(300));
    early.type_text("\u{3}echo one-$((0+1))\n");
    early.until("one-1");
    drop(early);
    let mut client = Attached::new(sandbox, &info.id);
    client.type_text("exit 7\n");
    let mut rest = Vec::new();
    use std::io::Read;
    client
        .stream
        .read_to_end(&mut rest)
        .expect("the connection ends with the terminal");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = sandbox.terminals().unwrap();
        if !now[0].running {
            assert_eq!(now[0].exit_code, Some(7), "{now:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{now:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Attaching after the end is not refused: the client gets the
    // terminal's last output and its status (`corral shell -- CMD` whose
    // program ended before the client attached).
    let (late, mut stream, mut replay) = sandbox.terminal_attach(&info.id).unwrap();
    // `terminal_attach` hands over what came with its answer; the rest of
    // the replay is still on the connection, which the agent then closes
    // (a bound in case it does not).
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .read_to_end(&mut replay)
        .expect("the replay ends with the connection");
    assert!(!late.running, "{late:?}");
    assert_eq!(late.exit_code, Some(7), "{late:?}");
    assert!(
        String::from_utf8_lossy(&replay).contains("exit 7"),
        "{}",
        String::from_utf8_lossy(&replay)
    );
    // Bad sizes and programs are refused clearly.
    let mut huge = spawn(&["/bin/sh"]);
    huge.cols = 5000;
    let error = sandbox.terminal_open(huge).unwrap_err().to_string();
    assert!(error.contains("cols and rows"), "{error}");
    let error = sandbox
        .terminal_open(spawn(&["/no/such/shell"]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("/no/such/shell"), "{error}");
}

/// Hostile program: typing into one's own terminal's input queue (TIOCSTI)
/// would let a program inject commands into the shell that runs it.
#[test]
fn a_program_cannot_inject_input_into_its_terminal() {
    let running = start("terminal-tiocsti");
    let sandbox = &running.sandbox;
    let info = sandbox.terminal_open(spawn(&["/bin/sh"])).unwrap();
    let mut client = Attached::new(sandbox, &info.id);
    let inject = r#"import ctypes
libc = ctypes.CDLL(None, use_errno=True)
for request in (0x5412, 0x5412 | (1 << 32), 0x5412 | (0xFFFFFFFF << 32)):
    for c in b"echo INJECTED-$((1+1))\n":
        r = libc.syscall(ctypes.c_long(16), ctypes.c_long(0), ctypes.c_long(request), ctypes.byref(ctypes.c_char(c)))
        if r == 0: print("TIOCSTI worked for", hex(request))
print("done-" + "injecting")"#;
    client.type_text(&format!(
        "python3 -c '{}'; echo probe-fin$((1))ished\n",
        inject.replace('\'', "'\\''")
    ));
    // Markers computed by the shell, so the echo of the typed line never matches.
    let text = client.until("probe-fin1ished");
    std::thread::sleep(Duration::from_millis(300));
    client.type_text("echo end-$((2+2))\n");
    let text = format!("{text}{}", client.until("end-4"));
    assert!(text.contains("done-injecting"), "{text}");
    assert!(!text.contains("INJECTED-2"), "{text}");
    assert!(!text.contains("worked for 0x"), "{text}");
}

#[test]
fn background_processes_keep_logs_take_input_and_signals() {
    let running = start("processes");
    let sandbox = &running.sandbox;
    let echo = sandbox
        .process_start(spawn(&[
            "/bin/sh",
            "-c",
            "echo out-1; echo err-1 >&2; read line; echo got-$line; exit 4",
        ]))
        .unwrap();
    assert_eq!(echo.status, "running");
    sandbox.process_input(echo.pid, "abc\n", true).unwrap();
    let mut text = String::new();
    let mut last = None;
    sandbox
        .process_follow(echo.pid, 0, |logs| {
            for chunk in &logs.chunks {
                text.push_str(&chunk.data);
            }
            last = Some(logs.process);
            true
        })
        .unwrap();
    let last = last.unwrap();
    assert_eq!((last.status.as_str(), last.exit_code), ("exited", Some(4)));
    assert!(text.contains("out-1") && text.contains("err-1") && text.contains("got-abc"));

    // Logs read later, from an offset, split by stream.
    let logs = sandbox.process_logs(echo.pid, 0).unwrap();
    assert!(!logs.truncated);
    let err: Vec<_> = logs
        .chunks
        .iter()
        .filter(|c| c.stream == "stderr")
        .collect();
    assert_eq!(err.len(), 1);
    assert_eq!(err[0].data, "err-1\n");
    let tail = sandbox.process_logs(echo.pid, logs.next_offset).unwrap();
    assert!(tail.chunks.is_empty());

    // Signals reach the process group.
    let sleeper = sandbox
        .process_start(spawn(&["/bin/sh", "-c", "sleep 60; sleep 60"]))
        .unwrap();
    sandbox.process_signal(sleeper.pid, 15).unwrap();
    sandbox.process_follow(sleeper.pid, 0, |_| true).unwrap();
    let listed = sandbox.processes().unwrap();
    let ended = listed.iter().find(|p| p.pid == sleeper.pid).unwrap();
    assert_eq!(ended.signal, Some(15), "{ended:?}");
    let error = sandbox
        .process_signal(sleeper.pid, 15)
        .unwrap_err()
        .to_string();
    assert!(error.contains("already exited"), "{error}");
    let error = sandbox.process_logs(99_999, 0).unwrap_err().to_string();
    assert!(error.contains("no background process"), "{error}");

    // The log is bounded: a flood keeps only the most recent megabyte.
    let flood = sandbox
        .process_start(spawn(&[
            "/bin/sh",
            "-c",
            "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo the-end",
        ]))
        .unwrap();
    sandbox.process_follow(flood.pid, 0, |_| true).unwrap();
    let logs = sandbox.process_logs(flood.pid, 0).unwrap();
    assert!(logs.truncated);
    let kept: usize = logs.chunks.iter().map(|c| c.data.len()).sum();
    assert!(kept <= 1024 * 1024, "{kept}");
    assert!(logs.chunks.last().unwrap().data.ends_with("the-end\n"));
    assert_eq!(logs.process.output_bytes, 3_000_009);
}

/// Hostile program 9, the other way in: a program runs with the agent's
/// uid, but cannot read or write the agent's memory, steal its descriptors
/// (the listening socket) or read its environment, because the agent is
/// not dumpable.
#[test]
fn the_agent_cannot_be_taken_over_through_proc() {
    let running = start("agent-proc");
    let out = probe(
        &running,
        &format!(
            r"{ATTEMPT}
attempt('mem', lambda: open('/proc/1/mem', 'r+b'))
attempt('environ', lambda: open('/proc/1/environ', 'rb').read())
attempt('fd', lambda: open('/proc/1/fd/0', 'rb'))
attempt('socket', lambda: os.open('/proc/1/fd/3', os.O_RDWR))
"
        ),
    );
    for what in ["mem", "environ", "fd", "socket"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{what} refused"))),
            "/proc/1 {what} must be refused: {out}"
        );
    }
    // The agent still answers.
    assert_eq!(
        running.sandbox.exec(sh("echo ok", 5_000)).unwrap().stdout,
        "ok\n"
    );
}

/// What a program may leave in the places every sandbox can write:
/// `/tmp`, `/dev/shm`, `/dev/mqueue`.
const LEFT_FILES: [&str; 3] = ["ls -A /tmp", "ls -A /dev/shm", "ls -A /dev/mqueue"];
/// How many System V IPC objects there are.
const LEFT_IPC: &str = "ipcs | grep -c '^0x'; true";

/// What each of `scripts` prints, run by `sh` as root in `running`.
fn outputs(running: &Running, scripts: &[&str]) -> Vec<String> {
    scripts
        .iter()
        .map(|script| running.sandbox.exec(sh(script, 10_000)).unwrap().stdout)
        .collect()
}

/// A reset returns the sandbox to how it started: what one program left
/// (files in /tmp, /dev/shm and /dev, a POSIX message queue, System V IPC,
/// processes that detached, a changed mode of /tmp) is gone for the next.
#[test]
fn a_reset_leaves_nothing_of_the_last_program() {
    let running = start("reset");
    let leave = "mkdir -p /tmp/d/e && echo x > /tmp/d/e/f && echo y > /tmp/top && \
                 echo z > /dev/shm/s && touch /dev/extra && ln -s /etc/passwd /tmp/link && \
                 ipcmk -M 4096 >/dev/null && ipcmk -Q >/dev/null && ipcmk -S 1 >/dev/null && \
                 python3 -c \"import ctypes; l = ctypes.CDLL(None, use_errno=True); \
                   assert l.mq_open(b'/left', 0o100 | 2, 0o600, None) >= 0, ctypes.get_errno()\" && \
                 (setsid sleep 1000 >/dev/null 2>&1 &) && \
                 i=0; while [ $i -lt 200 ] && ! grep -qs sleep /proc/[0-9]*/comm; do \
                   sleep 0.05; i=$((i+1)); done; \
                 chmod 700 /tmp && echo left";
    let fresh = running
        .sandbox
        .exec(sh("stat -c %a /tmp", 10_000))
        .unwrap()
        .stdout;
    let out = running.sandbox.exec(sh(leave, 10_000)).unwrap();
    assert_eq!(out.stdout, "left\n", "{}", out.stderr);
    let look = |script: &str| running.sandbox.exec(sh(script, 10_000)).unwrap().stdout;
    let state = || {
        outputs(
            &running,
            &[
                LEFT_FILES[0],
                LEFT_FILES[1],
                LEFT_FILES[2],
                "ls /dev/extra 2>&1; true",
                "stat -c %a /tmp",
                LEFT_IPC,
                "grep -l sleep /proc/[0-9]*/comm 2>/dev/null | wc -l",
            ],
        )
    };
    // The script waits until the sleeper has exec'd `sleep` (so `setsid`
    // has already taken it out of the exec's process group, which is killed
    // when the exec ends: on a loaded machine it could be killed before
    // leaving, and this test failed once in CI). Its comm may still lag.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while look("grep -l sleep /proc/[0-9]*/comm 2>/dev/null | wc -l") != "1\n"
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = state();
    assert_eq!(before[0], "d\nlink\ntop\n", "{before:?}");
    assert_eq!(before[1], "s\n", "{before:?}");
    assert_eq!(before[2], "left\n", "{before:?}");
    assert_eq!(before[3], "/dev/extra\n", "{before:?}");
    assert_eq!(before[4], "700\n", "{before:?}");
    assert_eq!(before[5], "3\n", "{before:?}");
    // The exec's process group is killed when it ends; the sleeper that
    // left it with setsid lives on.
    assert_eq!(
        before[6], "1\n",
        "the sleeper runs before the reset: {before:?}"
    );

    running.sandbox.reset().unwrap();
    let after = state();
    assert_eq!(after[..3], ["", "", ""], "{after:?}");
    assert!(
        after[3].contains("No such file"),
        "/dev/extra is gone: {after:?}"
    );
    assert_eq!(after[4], fresh, "/tmp's mode is back: {after:?}");
    assert_eq!(after[5], "0\n", "no IPC object is left: {after:?}");
    assert_eq!(after[6], "0\n", "no sleeper is left: {after:?}");
    // The devices are still there and the sandbox still runs programs.
    assert_eq!(
        running
            .sandbox
            .exec(sh(
                "echo ok > /dev/null && ls /dev/null /dev/pts >/dev/null && echo ok",
                5_000
            ))
            .unwrap()
            .stdout,
        "ok\n"
    );
    // It can be reset again and again.
    running.sandbox.reset().unwrap();
}

/// A reset is refused while something lives that the host started on
/// purpose (a background process), instead of killing it.
#[test]
fn a_reset_is_refused_while_a_background_process_lives() {
    let running = start("reset-busy");
    running
        .sandbox
        .process_start(spawn(&["/bin/sleep", "30"]))
        .unwrap();
    let refused = running.sandbox.reset().unwrap_err().to_string();
    assert!(refused.contains("background"), "{refused}");
}

/// A judge run (`sole`) in `/tmp/run`, as the judge makes them: the host
/// wrote its files there first.
fn judge_run(running: &Running, python: &str) -> corral_types::agent::ExecResult {
    let mut request = sh("", 20_000);
    request.argv = vec!["/usr/bin/python3".into(), "-c".into(), python.into()];
    request.cwd = "/tmp/run".into();
    request.sole = true;
    running.sandbox.exec(request).unwrap()
}

/// The files the judge writes before a run: its directory and a source.
fn write_judge_files(running: &Running) {
    running
        .sandbox
        .file_op(&corral_types::agent::AgentRequest::Mkdir {
            path: "/tmp/run/sub".into(),
            parents: true,
        })
        .unwrap();
    running
        .sandbox
        .write_file("/tmp/run/sub/main.c", b"int main(){}", None)
        .unwrap();
}

/// Issue 17 item 6 / hostile program 34: a judge run has its own uid, no
/// groups and no capabilities, so the kernel refuses it the agent's
/// `/proc/1` settings (its `oom_score_adj` above all, which would make the
/// agent the OOM victim while the run lasts) and signals to PID 1; it can
/// still write the files the host wrote for it and next to them.
#[test]
fn a_judge_run_is_unprivileged_and_cannot_change_the_agent() {
    let running = start("judge-user");
    write_judge_files(&running);
    let agent_oom = || {
        let pid = running.runtime.init_pid(&running.id).unwrap();
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap()
    };
    let before = agent_oom();
    let out = judge_run(
        &running,
        &format!(
            r"
import os, signal
print('ids', os.getresuid(), os.getresgid(), os.getgroups())
for line in open('/proc/self/status'):
    if line.startswith(('CapEff', 'CapPrm')):
        print(line.split()[0], line.split()[1])
{ATTEMPT}
attempt('oom', lambda: open('/proc/1/oom_score_adj', 'w').write('1000'))
attempt('coredump', lambda: open('/proc/1/coredump_filter', 'w').write('0x7f'))
attempt('kill', lambda: os.kill(1, signal.SIGTERM))
attempt('source', lambda: open('sub/main.c', 'a').write('//'))
attempt('new', lambda: open('sub/a.out', 'w').write('x'))
attempt('dir', lambda: os.mkdir('built'))
"
        ),
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let stdout = out.stdout;
    assert!(
        stdout.contains("ids (1000, 1000, 1000) (1000, 1000, 1000) []\n"),
        "{stdout}"
    );
    assert!(stdout.contains("CapEff: 0000000000000000\n"), "{stdout}");
    assert!(stdout.contains("CapPrm: 0000000000000000\n"), "{stdout}");
    // EACCES: the agent's /proc files are uid 0's; EPERM: another uid's
    // process.
    for refused in ["oom refused 13", "coredump refused 13", "kill refused 1"] {
        assert!(stdout.contains(&format!("{refused}\n")), "{stdout}");
    }
    for done in ["source", "new", "dir"] {
        assert!(stdout.contains(&format!("{done} DONE\n")), "{stdout}");
    }
    assert_eq!(agent_oom(), before, "{stdout}");
    // Programs of the user's own sandbox stay root, without the one
    // capability only the agent holds (CAP_CHECKPOINT_RESTORE, 40, which
    // rewinds the PID counter), which no_new_privs keeps them from taking
    // back from the bounding set.
    let root = running
        .sandbox
        .exec(sh(
            "id -u; for set in CapEff CapPrm CapInh CapBnd; do \
             echo $set $(( (0x$(grep $set /proc/self/status | cut -f2) >> 40) & 1 )); done",
            5_000,
        ))
        .unwrap()
        .stdout;
    assert_eq!(root, "0\nCapEff 0\nCapPrm 0\nCapInh 0\nCapBnd 1\n");
}

/// Issue 17 item 6: PIDs do not keep counting up across the runs of a
/// reused sandbox: after a reset, a run's processes get the PIDs the
/// sandbox's first run's got, however many processes came between.
#[test]
fn a_reset_rewinds_the_pid_counter() {
    let running = start("judge-pids");
    let first_child = || {
        write_judge_files(&running);
        let out = judge_run(
            &running,
            r"
import subprocess
print(subprocess.run(['sh', '-c', 'echo $$'], capture_output=True, text=True).stdout.strip())
for _ in range(50):
    subprocess.run(['true'])
",
        );
        assert!(out.stderr.is_empty(), "{}", out.stderr);
        out.stdout
    };
    let fresh = first_child();
    running.sandbox.reset().unwrap();
    assert_eq!(first_child(), fresh);
    running.sandbox.reset().unwrap();
    assert_eq!(first_child(), fresh);
}

/// What a judge run leaves (files in /tmp, /dev/shm, the work directory,
/// a POSIX message queue, System V IPC, which only its owner may remove)
/// is gone after a reset, and the reset is not refused for it.
#[test]
fn a_reset_leaves_nothing_of_a_judge_run() {
    let running = start("judge-reset");
    let state = || {
        outputs(
            &running,
            &[LEFT_FILES[0], LEFT_FILES[1], LEFT_FILES[2], LEFT_IPC],
        )
    };
    let fresh = state();
    write_judge_files(&running);
    let out = judge_run(
        &running,
        r"
import ctypes, os, subprocess
for args in (['-M', '4096'], ['-Q'], ['-S', '1']):
    subprocess.run(['ipcmk', *args], check=True, stdout=subprocess.DEVNULL)
libc = ctypes.CDLL(None, use_errno=True)
assert libc.mq_open(b'/left', 0o100 | 2, 0o600, None) >= 0, ctypes.get_errno()
open('/dev/shm/s', 'w').write('z')
open('/tmp/top', 'w').write('y')
os.makedirs('/tmp/d/e')
os.chmod('/tmp/d', 0)
print('left')
",
    );
    assert_eq!(out.stdout, "left\n", "{}", out.stderr);
    let left = state();
    assert_eq!(left[3], "3\n", "{left:?}");
    running.sandbox.reset().unwrap();
    assert_eq!(state(), fresh);
}
