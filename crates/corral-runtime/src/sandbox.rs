//! Long-lived sandboxes: the agent as PID 1, started with the OCI runtime's
//! `run --detach`, reached over a socket the host owns.
//!
//! Layout of a sandbox directory (host-only; nothing here is mounted into
//! the sandbox except what the bundle names):
//!
//! ```text
//! <dir>/bundle/          the OCI bundle (config.json, rootfs/)
//! <dir>/control/agent.sock  the agent's listening socket, bound by the host
//! <dir>/agent.log        the agent's own stdout and stderr
//! ```
//!
//! The host binds the socket and hands the listening descriptor to the
//! agent (`--preserve-fds 1`, as fd 3). The sandbox never sees a path to
//! it, so a hostile sandbox cannot swap it for a symlink to somewhere else:
//! the host never opens a path inside a sandbox by name.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};

use corral_types::agent::{AgentRequest, AgentResponse, ExecRequest, ExecResult};

use crate::bundle::{AGENT_PATH, Bundle, SandboxSpec};
use crate::oci::{OciRuntime, RuntimeError};

/// How long a file operation may take.
const FILE_WAIT: Duration = Duration::from_secs(60);

/// An agent answer the caller did not expect: its refusals become
/// [`RuntimeError::Refused`], anything else a protocol error.
fn unexpected(answer: AgentResponse) -> RuntimeError {
    match answer {
        AgentResponse::Error { message, kind } => RuntimeError::Refused { kind, message },
        other => RuntimeError::Agent(format!("unexpected answer {other:?}")),
    }
}

/// A running sandbox.
#[derive(Debug)]
pub struct Sandbox {
    /// The container id at the OCI runtime.
    pub id: String,
    dir: PathBuf,
    runtime: OciRuntime,
}

impl Sandbox {
    /// Creates and starts sandbox `id` in `dir` (created; must not exist)
    /// with `agent` as its PID 1, and waits until the agent answers.
    pub fn start(
        runtime: &OciRuntime,
        id: &str,
        dir: &Path,
        mut spec: SandboxSpec,
        agent: &Path,
    ) -> Result<Sandbox, RuntimeError> {
        let io = |what: &'static str| {
            move |source| RuntimeError::Bundle {
                what: what.to_owned(),
                source,
            }
        };
        std::fs::create_dir(dir).map_err(io("create the sandbox directory"))?;
        let control = dir.join("control");
        std::fs::create_dir(&control).map_err(io("create the control directory"))?;
        spec.argv = vec![AGENT_PATH.to_owned()];
        spec.agent = Some(agent.to_path_buf());
        let bundle = Bundle::create(&dir.join("bundle"), &spec)?;
        let listener =
            UnixListener::bind(control.join("agent.sock")).map_err(io("bind the agent socket"))?;
        let log = File::create(dir.join("agent.log")).map_err(io("create the agent log"))?;
        let log_err = log.try_clone().map_err(io("open the agent log"))?;
        let mut create = Command::new(&runtime.binary);
        create
            .arg("--root")
            .arg(&runtime.root)
            // One `run --detach` rather than `create` + `start`: a runtime
            // process fewer on the path to a ready sandbox.
            .args(["run", "--detach", "--preserve-fds", "1", "--bundle"])
            .arg(&bundle.dir)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        create
            .fd_mappings(vec![FdMapping {
                parent_fd: OwnedFd::from(listener),
                child_fd: 3,
            }])
            .map_err(|e| RuntimeError::Spec(format!("mapping the agent socket: {e}")))?;
        let sandbox = Sandbox {
            id: id.to_owned(),
            dir: dir.to_path_buf(),
            runtime: runtime.clone(),
        };
        let status = create.status().map_err(|source| RuntimeError::Spawn {
            binary: runtime.binary.clone(),
            source,
        })?;
        if !status.success() {
            let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
            sandbox.destroy();
            return Err(RuntimeError::Runtime { stderr: log });
        }
        match sandbox.request(&AgentRequest::Ping, Duration::from_secs(10)) {
            Ok(AgentResponse::Pong { .. }) => Ok(sandbox),
            other => {
                let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
                sandbox.destroy();
                Err(RuntimeError::Runtime {
                    stderr: format!("the agent did not answer ({other:?}): {log}"),
                })
            }
        }
    }

    /// The sandbox `id` that [`Sandbox::start`] started in `dir`.
    pub fn attach(runtime: &OciRuntime, id: &str, dir: &Path) -> Sandbox {
        Sandbox {
            id: id.to_owned(),
            dir: dir.to_path_buf(),
            runtime: runtime.clone(),
        }
    }

    /// Runs a program inside the sandbox to completion.
    pub fn exec(&self, request: ExecRequest) -> Result<ExecResult, RuntimeError> {
        let wait = Duration::from_millis(request.timeout_ms) + Duration::from_secs(10);
        match self.request(&AgentRequest::Exec(request), wait)? {
            AgentResponse::Exited(result) => Ok(result),
            other => Err(unexpected(other)),
        }
    }

    /// A file operation with a plain answer (list, stat, mkdir, move,
    /// delete, chmod), performed by the agent inside the sandbox.
    pub fn file_op(&self, request: &AgentRequest) -> Result<AgentResponse, RuntimeError> {
        match self.request(request, FILE_WAIT)? {
            AgentResponse::Error { message, kind } => Err(RuntimeError::Refused { kind, message }),
            answer => Ok(answer),
        }
    }

    /// A file's bytes, refused past `max_bytes`.
    pub fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, RuntimeError> {
        let request = AgentRequest::Read {
            path: path.to_owned(),
            max_bytes,
        };
        let (mut reader, answer) = self.exchange(&request, &[], FILE_WAIT)?;
        match answer {
            AgentResponse::Content { size } => {
                let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                (&mut reader)
                    .take(size)
                    .read_to_end(&mut bytes)
                    .map_err(|e| RuntimeError::Agent(format!("reading a file: {e}")))?;
                if bytes.len() as u64 != size {
                    return Err(RuntimeError::Agent("the file ended early".into()));
                }
                Ok(bytes)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Replaces a file with `bytes` (new files get `mode`, default 0644).
    pub fn write_file(
        &self,
        path: &str,
        bytes: &[u8],
        mode: Option<u32>,
    ) -> Result<(), RuntimeError> {
        let request = AgentRequest::Write {
            path: path.to_owned(),
            size: bytes.len() as u64,
            mode,
        };
        match self.exchange(&request, bytes, FILE_WAIT)?.1 {
            AgentResponse::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// One request and its answer over a new connection.
    fn request(
        &self,
        request: &AgentRequest,
        wait: Duration,
    ) -> Result<AgentResponse, RuntimeError> {
        self.exchange(request, &[], wait).map(|(_, answer)| answer)
    }

    /// Sends a request line and `payload`, reads the answer line; the reader
    /// is returned for answers followed by bytes.
    fn exchange(
        &self,
        request: &AgentRequest,
        payload: &[u8],
        wait: Duration,
    ) -> Result<(BufReader<UnixStream>, AgentResponse), RuntimeError> {
        let agent_io =
            |e: std::io::Error| RuntimeError::Agent(format!("talking to the agent: {e}"));
        let stream = UnixStream::connect(self.dir.join("control/agent.sock")).map_err(agent_io)?;
        stream.set_read_timeout(Some(wait)).map_err(agent_io)?;
        let mut line = serde_json::to_vec(request)
            .map_err(|e| RuntimeError::Agent(format!("encoding the request: {e}")))?;
        line.push(b'\n');
        (&stream).write_all(&line).map_err(agent_io)?;
        // The agent may refuse before reading the payload (a path it cannot
        // write) and close its end: its answer is what matters then.
        if let Err(error) = (&stream).write_all(payload)
            && error.kind() != std::io::ErrorKind::BrokenPipe
            && error.kind() != std::io::ErrorKind::ConnectionReset
        {
            return Err(agent_io(error));
        }
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        reader.read_line(&mut answer).map_err(agent_io)?;
        let answer = serde_json::from_str(&answer).map_err(|e| {
            RuntimeError::Agent(format!("the agent's answer is not valid ({e}): {answer}"))
        })?;
        Ok((reader, answer))
    }

    /// Whether the OCI runtime still reports the sandbox as running.
    pub fn is_running(&self) -> bool {
        Command::new(&self.runtime.binary)
            .arg("--root")
            .arg(&self.runtime.root)
            .args(["state", &self.id])
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("\"running\"")
            })
    }

    /// Kills every process of the sandbox, deletes the container and the
    /// sandbox directory. Idempotent; errors are logged, not returned, so a
    /// half-created sandbox is always cleaned up.
    pub fn destroy(&self) {
        let runc = |args: &[&str]| {
            Command::new(&self.runtime.binary)
                .arg("--root")
                .arg(&self.runtime.root)
                .args(args)
                .output()
        };
        let _ = runc(&["kill", "--all", &self.id, "KILL"]);
        if let Ok(out) = runc(&["delete", "--force", &self.id])
            && !out.status.success()
            && !String::from_utf8_lossy(&out.stderr).contains("does not exist")
        {
            tracing::warn!(id = %self.id, stderr = %String::from_utf8_lossy(&out.stderr), "deleting a sandbox failed");
        }
        if let Err(error) = std::fs::remove_dir_all(&self.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(id = %self.id, %error, "removing a sandbox directory failed");
        }
    }
}
