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
    let dir = tempfile::tempdir().unwrap();
    let runtime = OciRuntime {
        binary: PathBuf::from(
            std::env::var("CORRAL_TEST_OCI_RUNTIME").unwrap_or_else(|_| "runc".into()),
        ),
        root: dir.path().join("state"),
    };
    let spec = spec();
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
