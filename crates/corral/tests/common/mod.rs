//! What the `corral` binary's end-to-end tests share: the agent binary and
//! starting `corral serve` up to its "listening" line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should fail the test"
)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The agent binary: `CORRAL_AGENT_BIN`, else the one `cargo build -p
/// corral-agent` makes.
pub fn agent() -> PathBuf {
    corral_runtime::test_agent_binary()
}

/// Spawns `serve` (a `corral serve` command, its arguments and environment
/// set) and waits for its "is listening on URL" line; returns the child and
/// the URL. Its stdout is drained from then on, so it never blocks.
pub fn serve(serve: &mut Command) -> (Child, String) {
    let mut child = serve
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some((_, url)) = line.split_once("is listening on ") {
                    break url.trim().to_owned();
                }
            }
            Err(_) => {
                let exited = child.try_wait().unwrap();
                if exited.is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let mut err = String::new();
                    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                    panic!("server did not start ({exited:?}): {err}");
                }
            }
        }
    };
    std::thread::spawn(move || while rx.recv().is_ok() {});
    (child, url)
}

/// Runs `command` with `stdin` fed on a thread of its own (so a program
/// that writes before it reads never deadlocks against us) and collects
/// its output.
pub fn run_with_stdin(command: &mut Command, stdin: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = input.write_all(&stdin);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}
