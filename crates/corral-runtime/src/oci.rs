//! Driving an OCI runtime through its standard command line.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::bundle::Bundle;

/// A failure to prepare or run a sandbox (not the sandboxed program failing).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Writing the bundle failed.
    #[error("cannot {what}")]
    Bundle {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The OCI spec could not be built (a bug).
    #[error("invalid OCI spec: {0}")]
    Spec(String),
    /// The runtime binary could not be started.
    #[error("cannot run the OCI runtime `{binary}`")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The agent refused a request (`kind`: `not_found`, `exists`,
    /// `not_a_directory`, `too_large`, `no_space`, `invalid`, `failed`).
    #[error("{message}")]
    Refused {
        /// Machine-readable reason.
        kind: String,
        /// What the agent said.
        message: String,
    },
    /// The agent inside the sandbox failed or could not be reached.
    #[error("agent: {0}")]
    Agent(String),
    /// The sandbox's disk could not be made or mounted.
    #[error(transparent)]
    Disk(#[from] crate::disk::DiskError),
    /// The runtime refused the sandbox (its message is in `stderr`).
    #[error("the OCI runtime failed: {stderr}")]
    Runtime {
        /// What the runtime said.
        stderr: String,
    },
}

/// An OCI runtime CLI (`runc`, `crun`, `youki`, `runsc` share it) and the
/// state directory it keeps its containers in.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    /// The runtime binary.
    pub binary: PathBuf,
    /// Its `--root` state directory.
    pub root: PathBuf,
}

/// What a finished sandboxed program left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// Exit code (128 + signal for a killed program, as the runtime reports it).
    pub exit_code: i32,
    /// Standard output, at most the limit given.
    pub stdout: Vec<u8>,
    /// Standard error, at most the limit given.
    pub stderr: Vec<u8>,
    /// Whether more output was produced than kept.
    pub output_truncated: bool,
    /// Whether the wall-time limit killed it.
    pub timed_out: bool,
    /// Wall time.
    pub wall: Duration,
}

impl OciRuntime {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--root").arg(&self.root);
        command
    }

    /// Runs the bundle's program to completion as container `id`, killing it
    /// after `wall`, keeping at most `output_limit` bytes of each stream. The
    /// container is deleted afterwards, whatever happened.
    pub fn run(
        &self,
        id: &str,
        bundle: &Bundle,
        wall: Duration,
        output_limit: usize,
    ) -> Result<RunOutput, RuntimeError> {
        let started = Instant::now();
        let mut child = self
            .command()
            .arg("run")
            .arg("--bundle")
            .arg(&bundle.dir)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        let stdout = child.stdout.take().map(|s| capped_reader(s, output_limit));
        let stderr = child.stderr.take().map(|s| capped_reader(s, output_limit));
        let (status, timed_out) = self.wait(&mut child, id, started + wall);
        let _ = self.command().args(["delete", "--force", id]).output();
        let (stdout, out_cut) = stdout.and_then(|h| h.join().ok()).unwrap_or_default();
        let (stderr, err_cut) = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
        let exit_code = status.and_then(|s| s.code()).unwrap_or(-1);
        // runc exits non-zero with its own message when it could not start the
        // container at all; a started program's failure is the program's.
        if exit_code != 0 && !timed_out && stderr.starts_with(b"time=") && stdout.is_empty() {
            return Err(RuntimeError::Runtime {
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            });
        }
        Ok(RunOutput {
            exit_code,
            stdout,
            stderr,
            output_truncated: out_cut || err_cut,
            timed_out,
            wall: started.elapsed(),
        })
    }

    /// The containers in this runtime's state directory: (id, status).
    pub fn list(&self) -> Result<Vec<(String, String)>, RuntimeError> {
        // `null` when there are none.
        let listed: Option<Vec<serde_json::Value>> =
            serde_json::from_value(self.json(&["list", "--format", "json"])?)
                .map_err(|e| RuntimeError::Spec(format!("unreadable `list` output: {e}")))?;
        Ok(listed
            .unwrap_or_default()
            .iter()
            .filter_map(|c| {
                Some((
                    c.get("id")?.as_str()?.to_owned(),
                    c.get("status")?.as_str()?.to_owned(),
                ))
            })
            .collect())
    }

    /// The host PID of container `id`'s first process (a sandbox's agent),
    /// from the runtime's `state`.
    pub fn init_pid(&self, id: &str) -> Result<u32, RuntimeError> {
        self.json(&["state", id])?
            .get("pid")
            .and_then(serde_json::Value::as_u64)
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|pid| *pid > 0)
            .ok_or_else(|| RuntimeError::Spec(format!("`state` of {id} names no pid")))
    }

    /// Runs a runtime command that answers JSON on stdout.
    fn json(&self, args: &[&str]) -> Result<serde_json::Value, RuntimeError> {
        let out = self
            .command()
            .args(args)
            .output()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(RuntimeError::Runtime {
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| RuntimeError::Spec(format!("unreadable `{}` output: {e}", args[0])))
    }

    /// Waits for `child` until `deadline`, then kills the container.
    fn wait(
        &self,
        child: &mut std::process::Child,
        id: &str,
        deadline: Instant,
    ) -> (Option<ExitStatus>, bool) {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return (Some(status), false),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.command().args(["kill", "--all", id, "KILL"]).output();
                    let status = child.wait().ok();
                    return (status, true);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => return (None, false),
            }
        }
    }
}

/// Reads a stream to its end on a thread, keeping the first `limit` bytes
/// (the rest is drained, so the writer never blocks on a full pipe).
fn capped_reader(
    mut stream: impl Read + Send + 'static,
    limit: usize,
) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut cut = false;
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = limit.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                    cut |= n > room;
                }
            }
        }
        (kept, cut)
    })
}
