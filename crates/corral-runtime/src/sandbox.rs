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
//! `<dir>/rw` is the sandbox's disk (see [`crate::disk`]): an ext4 image
//! file kept elsewhere, on persistent storage, loop-mounted here; its
//! `tmp/` is the sandbox's `/tmp`. An image root adds `<dir>/lower/<i>`
//! (the idmapped layers) and mounts the overlay, its upper layer on the
//! disk, at `<dir>/bundle/rootfs` (see [`crate::rootfs`]).
//! [`Sandbox::stop`] keeps all of it; [`Sandbox::teardown`] unmounts it and
//! removes the directory but keeps the disk image; [`Sandbox::destroy`]
//! removes the disk image too.
//!
//! The host binds the socket and hands the listening descriptor to the
//! agent (`--preserve-fds 2`, as fd 3; fd 4 is the PID counter, see
//! [`spawn_and_wait`]). The sandbox never sees a path to
//! it, so a hostile sandbox cannot swap it for a symlink to somewhere else:
//! the host never opens a path inside a sandbox by name.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use corral_types::agent::{AgentRequest, AgentResponse, ExecRequest, ExecResult, SpawnRequest};
use corral_types::terminal::{ProcessInfo, ProcessLogs, TerminalInfo};

use std::os::unix::fs::DirBuilderExt;

use crate::bundle::{AGENT_PATH, Bundle, SandboxSpec};
use crate::cgroup::{Cgroup, Measured, WATCH_INTERVAL_MS};
use crate::disk::Disk;
use crate::oci::{OciRuntime, RuntimeError};
use crate::rootfs::{self, RootSource};

/// How long a file operation may take.
const FILE_WAIT: Duration = Duration::from_secs(60);

fn agent_io(error: std::io::Error) -> RuntimeError {
    RuntimeError::Agent(format!("talking to the agent: {error}"))
}

/// Reads the agent's answer line; the reader is returned for what follows.
fn read_answer(
    mut reader: BufReader<UnixStream>,
) -> Result<(BufReader<UnixStream>, AgentResponse), RuntimeError> {
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(agent_io)?;
    let answer = serde_json::from_str(&answer).map_err(|e| {
        RuntimeError::Agent(format!("the agent's answer is not valid ({e}): {answer}"))
    })?;
    Ok((reader, answer))
}

/// An agent answer the caller did not expect: its refusals become
/// [`RuntimeError::Refused`], anything else a protocol error.
fn unexpected(answer: AgentResponse) -> RuntimeError {
    match answer {
        AgentResponse::Error { message, kind } => RuntimeError::Refused { kind, message },
        other => RuntimeError::Agent(format!("unexpected answer {other:?}")),
    }
}

/// Runs `args` (`args[0]` looked up in `PATH` unless it names a path) with
/// stdin from /dev/null, stdout and stderr to `log` and `listener` as fd 3,
/// and waits: `true` when it exits 0.
///
/// With `posix_spawn` rather than `Command`: handing over an extra
/// descriptor takes a pre-exec hook there, which makes the standard library
/// `fork` the whole server (page tables, then copy-on-write faults in the
/// server afterwards: about a third of the server's own CPU per create in
/// `perf`; the cold-create benchmark went from 44.5 to 34.0 ms, one run
/// each); glibc's `posix_spawn` starts the child without copying the
/// address space.
fn spawn_and_wait(
    args: &[std::ffi::OsString],
    listener: &UnixListener,
    log: &File,
) -> std::io::Result<bool> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;

    use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawnp};
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::wait::{WaitStatus, waitpid};

    let c = |s: &std::ffi::OsStr| {
        CString::new(s.as_bytes()).map_err(|_| std::io::Error::other("a NUL byte in an argument"))
    };
    let argv = args.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
    let envp = std::env::vars_os()
        .map(|(k, v)| {
            let mut pair = k;
            pair.push("=");
            pair.push(v);
            c(&pair)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let null = File::open("/dev/null")?;
    let mut actions = PosixSpawnFileActions::init()?;
    actions.add_dup2(null.as_raw_fd(), 0)?;
    actions.add_dup2(log.as_raw_fd(), 1)?;
    actions.add_dup2(log.as_raw_fd(), 2)?;
    // dup2 clears close-on-exec on the copy (glibc also when the numbers
    // are equal); every other descriptor of the server is close-on-exec.
    actions.add_dup2(listener.as_raw_fd(), 3)?;
    // The PID counter a reset rewinds (see corral-agent's pids.rs): the
    // kernel applies it to the PID namespace of whoever reads or writes
    // it, so the host's own file serves the sandbox. A host that cannot
    // open it (a read-only /proc/sys) passes /dev/null: the agent then
    // refuses resets, and every run gets a fresh sandbox.
    let pid_counter = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/sys/kernel/ns_last_pid")
        .or_else(|_| File::open("/dev/null"))?;
    actions.add_dup2(pid_counter.as_raw_fd(), 4)?;
    // What `Command` does too: no blocked signals, and SIGPIPE (which the
    // Rust runtime ignores) back to its default for the runtime and the agent.
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_sigmask(&SigSet::empty())?;
    let mut default = SigSet::empty();
    default.add(Signal::SIGPIPE);
    attr.set_sigdefault(&default)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    let program = argv
        .first()
        .ok_or_else(|| std::io::Error::other("no program"))?;
    let pid = posix_spawnp(program, &actions, &attr, &argv, &envp)?;
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code == 0),
            Ok(WaitStatus::Signaled(..)) => return Ok(false),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(error) => return Err(error.into()),
        }
    }
}

/// A running sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The container id at the OCI runtime.
    pub id: String,
    dir: PathBuf,
    runtime: OciRuntime,
    /// The disk image (see [`crate::disk`]).
    disk: PathBuf,
}

/// Where a sandbox in `dir` keeps its disk unless told: beside it.
fn default_disk(dir: &Path) -> PathBuf {
    dir.with_extension("disk")
}

impl Sandbox {
    /// Creates and starts sandbox `id` in `dir` (created; must not exist)
    /// with `agent` as its PID 1 and the `host` image as its root, and waits
    /// until the agent answers. Its disk is `<dir>.disk` (see
    /// [`Sandbox::start_on_disk`]).
    pub fn start(
        runtime: &OciRuntime,
        id: &str,
        dir: &Path,
        spec: SandboxSpec,
        agent: &Path,
    ) -> Result<Sandbox, RuntimeError> {
        Sandbox::start_with_root(runtime, id, dir, spec, agent, &RootSource::Host)
    }

    /// [`Sandbox::start`] with `root` as the sandbox's `/`, on the disk
    /// `<dir>.disk`.
    pub fn start_with_root(
        runtime: &OciRuntime,
        id: &str,
        dir: &Path,
        spec: SandboxSpec,
        agent: &Path,
        root: &RootSource,
    ) -> Result<Sandbox, RuntimeError> {
        let disk = default_disk(dir);
        Sandbox::start_on_disk(runtime, id, dir, &disk, spec, agent, root)
    }

    /// Creates and starts sandbox `id` in `dir` (created; must not exist)
    /// with `root` as its `/` and `disk` (an image file on persistent
    /// storage; made if missing, kept as it is otherwise) as its writable
    /// storage: the disk is mounted at `dir/rw` and holds `/tmp` and, for an
    /// image, the writable layer (see [`crate::disk`], [`crate::rootfs`]).
    /// Its size is the image's writable layer's, or `spec.limits.tmp_mb`
    /// for the `host` image. Whatever fails, a half-made sandbox is torn
    /// down before the error returns, and a disk made by this call removed
    /// (an existing one is kept: it holds the sandbox's files).
    pub fn start_on_disk(
        runtime: &OciRuntime,
        id: &str,
        dir: &Path,
        disk: &Path,
        mut spec: SandboxSpec,
        agent: &Path,
        root: &RootSource,
    ) -> Result<Sandbox, RuntimeError> {
        let io = |what: &'static str| {
            move |source| RuntimeError::Bundle {
                what: what.to_owned(),
                source,
            }
        };
        let disk_existed = disk.exists();
        std::fs::create_dir(dir).map_err(io("create the sandbox directory"))?;
        // Absolute and canonical, as mount tables name mount points.
        let sandbox = Sandbox {
            id: id.to_owned(),
            dir: dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()),
            runtime: runtime.clone(),
            disk: disk.to_path_buf(),
        };
        spec.argv = vec![AGENT_PATH.to_owned()];
        spec.agent = Some(agent.to_path_buf());
        let (size_mb, inodes) = match root {
            RootSource::Image { writable, .. } => (writable.size_mb, writable.inodes),
            RootSource::Host => (spec.limits.tmp_mb, spec.limits.tmp_inodes),
        };
        let prepared = (|| {
            std::fs::create_dir(sandbox.dir.join("control"))
                .map_err(io("create the control directory"))?;
            let rw = sandbox.dir.join(rootfs::RW_DIR);
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&rw)
                .map_err(io("create the disk's mount point"))?;
            let disk = Disk {
                image: sandbox.disk.clone(),
                size_mb,
                inodes,
            };
            crate::disk::mount(&disk, &rw)?;
            let tmp = rw.join("tmp");
            crate::disk::owned_dir(&tmp, spec.host_id_base, 0o1777)?;
            let bundle =
                Bundle::create_with_tmp(&sandbox.dir.join("bundle"), &spec, root, Some(&tmp))?;
            if let RootSource::Image { image, .. } = root {
                rootfs::mount(
                    &sandbox.dir,
                    &bundle.dir.join("rootfs"),
                    image,
                    spec.host_id_base,
                )?;
            }
            sandbox.launch()
        })();
        match prepared {
            Ok(()) => Ok(sandbox),
            Err(error) => {
                if disk_existed {
                    sandbox.teardown();
                } else {
                    sandbox.destroy();
                }
                Err(error)
            }
        }
    }

    /// Starts a [stopped](Sandbox::stop) sandbox again from its directory:
    /// the same bundle and root (for an image, the writable layer with
    /// everything written before), a fresh agent.
    pub fn restart(&self) -> Result<(), RuntimeError> {
        let dir = self.canonical_dir();
        // The disk must still be mounted; after a host restart (or a
        // teardown) it is not, and the runtime must not start on the bare
        // mount points: start the sandbox afresh on its disk instead.
        if !rootfs::is_mount_point(&dir.join(rootfs::RW_DIR)) {
            return Err(RuntimeError::Runtime {
                stderr: "the sandbox's disk is no longer mounted (was the host restarted?)".into(),
            });
        }
        self.launch().inspect_err(|_| self.stop())
    }

    /// Binds the agent's socket, runs the bundle with `run --detach` and
    /// waits for the agent's answer. On failure the container may remain:
    /// the caller stops or destroys the sandbox.
    fn launch(&self) -> Result<(), RuntimeError> {
        let io = |what: &'static str| {
            move |source| RuntimeError::Bundle {
                what: what.to_owned(),
                source,
            }
        };
        let dir = &self.dir;
        let runtime = &self.runtime;
        let socket = dir.join("control/agent.sock");
        // A socket of an earlier run (host-only directory).
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(io("bind the agent socket"))?;
        let log = File::create(dir.join("agent.log")).map_err(io("create the agent log"))?;
        // One `run --detach` rather than `create` + `start`: a runtime
        // process fewer on the path to a ready sandbox.
        let mut args: Vec<std::ffi::OsString> =
            vec![runtime.binary.clone().into(), "--root".into()];
        args.push(runtime.root.clone().into());
        args.extend(["run", "--detach", "--preserve-fds", "2", "--bundle"].map(Into::into));
        args.push(dir.join("bundle").into());
        args.push(self.id.clone().into());
        let status =
            spawn_and_wait(&args, &listener, &log).map_err(|source| RuntimeError::Spawn {
                binary: runtime.binary.clone(),
                source,
            })?;
        if !status {
            let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
            return Err(RuntimeError::Runtime { stderr: log });
        }
        match self.request(&AgentRequest::Ping, Duration::from_secs(10)) {
            Ok(AgentResponse::Pong { .. }) => Ok(()),
            other => {
                let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
                Err(RuntimeError::Runtime {
                    stderr: format!("the agent did not answer ({other:?}): {log}"),
                })
            }
        }
    }

    /// The sandbox directory, absolute and canonical when it exists.
    fn canonical_dir(&self) -> PathBuf {
        self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone())
    }

    /// The sandbox `id` that [`Sandbox::start`] started in `dir`.
    pub fn attach(runtime: &OciRuntime, id: &str, dir: &Path) -> Sandbox {
        Sandbox::attach_on_disk(runtime, id, dir, &default_disk(dir))
    }

    /// The sandbox `id` that [`Sandbox::start_on_disk`] started in `dir`
    /// on `disk`.
    pub fn attach_on_disk(runtime: &OciRuntime, id: &str, dir: &Path, disk: &Path) -> Sandbox {
        Sandbox {
            id: id.to_owned(),
            dir: dir.to_path_buf(),
            runtime: runtime.clone(),
            disk: disk.to_path_buf(),
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

    /// The sandbox's cgroup (see [`crate::cgroup`]).
    pub fn cgroup(&self) -> Result<Cgroup, RuntimeError> {
        Cgroup::of(&self.runtime.root, &self.id)
    }

    /// [`Sandbox::exec`] measured by the sandbox's cgroup, so every process
    /// of the run counts, and with a CPU limit: a watchdog reads the
    /// cgroup's CPU counter every [`WATCH_INTERVAL_MS`] and, once the run
    /// has used `cpu_limit_ms`, kills every process of the sandbox but the
    /// agent (and goes on killing whatever is left until the exec ends).
    /// Meant for a sandbox that runs nothing else meanwhile (the judge's).
    pub fn exec_measured(
        &self,
        request: ExecRequest,
        cpu_limit_ms: u64,
    ) -> Result<Measured, RuntimeError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let cgroup = self.cgroup()?;
        let mut peak = cgroup.watch_peak()?;
        let memory_before = cgroup.memory_bytes()?;
        let oom_before = cgroup.oom_kills();
        let cpu_before = cgroup.cpu_ns()?;
        let limit_ns = cpu_limit_ms.saturating_mul(1_000_000);
        let hit = AtomicBool::new(false);
        let (done, ticks) = std::sync::mpsc::channel::<()>();
        let result = std::thread::scope(|scope| {
            let (cgroup, hit) = (&cgroup, &hit);
            scope.spawn(move || {
                // Ends as soon as the exec does: the sender is dropped.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    ticks.recv_timeout(Duration::from_millis(WATCH_INTERVAL_MS))
                {
                    let used = cgroup.cpu_ns().map_or(0, |n| n.saturating_sub(cpu_before));
                    if used >= limit_ns {
                        hit.store(true, Ordering::Relaxed);
                        cgroup.kill_all_but_agent();
                    }
                }
            });
            let result = self.exec(request);
            drop(done);
            result
        })?;
        let cpu_ns = cgroup.cpu_ns()?.saturating_sub(cpu_before);
        let memory_growth = peak.peak()?.saturating_sub(memory_before);
        Ok(Measured {
            result,
            cpu_ms: cpu_ns / 1_000_000,
            memory_growth_kb: memory_growth / 1024,
            oom_killed: cgroup.oom_kills() > oom_before,
            cpu_limit_hit: hit.load(Ordering::Relaxed) || cpu_ns >= limit_ns,
        })
    }

    /// Returns the sandbox to the state it started in, so it can run the
    /// next program (see the agent's reset); an error means it could not
    /// and the sandbox must be discarded.
    pub fn reset(&self) -> Result<(), RuntimeError> {
        match self.file_op(&AgentRequest::Reset)? {
            AgentResponse::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Runs a program inside the sandbox, handing each piece of output to
    /// `on_output(stream, text)` as it is written; `false` from it ends the
    /// program (the agent kills it when the connection closes).
    pub fn exec_stream(
        &self,
        request: ExecRequest,
        on_output: impl FnMut(&str, String) -> bool,
    ) -> Result<ExecResult, RuntimeError> {
        self.exec_stream_with_stdin(request, None, on_output)
    }

    /// [`Sandbox::exec_stream`] whose program reads `stdin` as it comes:
    /// each message is written to its standard input (on a thread of its
    /// own, so a program that does not read holds up only that thread);
    /// `close`, or the sender going away, ends it.
    pub fn exec_stream_with_stdin(
        &self,
        mut request: ExecRequest,
        stdin: Option<std::sync::mpsc::Receiver<corral_types::terminal::ProcessStdinRequest>>,
        mut on_output: impl FnMut(&str, String) -> bool,
    ) -> Result<ExecResult, RuntimeError> {
        request.stream = true;
        request.stdin_stream = stdin.is_some();
        let wait = Duration::from_millis(request.timeout_ms) + Duration::from_secs(10);
        let stream = self.send_request(&AgentRequest::Exec(request), wait)?;
        if let Some(stdin) = stdin {
            let mut to_agent = stream.try_clone().map_err(agent_io)?;
            std::thread::spawn(move || {
                for input in stdin {
                    let close = input.close;
                    let mut line = serde_json::to_vec(&input).unwrap_or_default();
                    line.push(b'\n');
                    if to_agent.write_all(&line).is_err() || close {
                        break;
                    }
                }
                let _ = to_agent.shutdown(std::net::Shutdown::Write);
            });
        } else {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        let (mut reader, mut answer) = read_answer(BufReader::new(stream))?;
        loop {
            match answer {
                AgentResponse::Output { stream, data } => {
                    if !on_output(&stream, data) {
                        return Err(RuntimeError::Agent("the caller went away".into()));
                    }
                }
                AgentResponse::Exited(result) => return Ok(result),
                other => return Err(unexpected(other)),
            }
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => return Err(RuntimeError::Agent("the agent closed the stream".into())),
                Ok(_) => {}
                Err(e) => return Err(RuntimeError::Agent(format!("talking to the agent: {e}"))),
            }
            answer = serde_json::from_str(&line).map_err(|e| {
                RuntimeError::Agent(format!("the agent's answer is not valid ({e}): {line}"))
            })?;
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

    /// Starts a program on a new persistent PTY.
    pub fn terminal_open(&self, request: SpawnRequest) -> Result<TerminalInfo, RuntimeError> {
        match self.file_op(&AgentRequest::TerminalOpen(request))? {
            AgentResponse::Terminal(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// The sandbox's terminals, oldest first.
    pub fn terminals(&self) -> Result<Vec<TerminalInfo>, RuntimeError> {
        match self.file_op(&AgentRequest::TerminalList)? {
            AgentResponse::Terminals { terminals } => Ok(terminals),
            other => Err(unexpected(other)),
        }
    }

    /// Ends a terminal.
    pub fn terminal_close(&self, id: &str) -> Result<(), RuntimeError> {
        match self.file_op(&AgentRequest::TerminalClose { id: id.to_owned() })? {
            AgentResponse::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// A terminal once its program has ended (the agent waits a few
    /// seconds at most; `running` is still true if it has not).
    pub fn terminal_wait(&self, id: &str) -> Result<TerminalInfo, RuntimeError> {
        match self.file_op(&AgentRequest::TerminalWait { id: id.to_owned() })? {
            AgentResponse::Terminal(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Attaches to a terminal: its description, the connection (raw output
    /// from the agent; [`corral_types::terminal::TerminalInput`] lines to
    /// it), and output that already arrived with the answer.
    pub fn terminal_attach(
        &self,
        id: &str,
    ) -> Result<(TerminalInfo, UnixStream, Vec<u8>), RuntimeError> {
        let request = AgentRequest::TerminalAttach { id: id.to_owned() };
        let (reader, answer) = self.exchange_open(&request, FILE_WAIT)?;
        match answer {
            AgentResponse::Terminal(info) => {
                let early = reader.buffer().to_vec();
                let stream = reader.into_inner();
                // Attached connections live as long as the client does.
                stream
                    .set_read_timeout(None)
                    .map_err(|e| RuntimeError::Agent(format!("talking to the agent: {e}")))?;
                Ok((info, stream, early))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Starts a background process.
    pub fn process_start(&self, request: SpawnRequest) -> Result<ProcessInfo, RuntimeError> {
        match self.file_op(&AgentRequest::ProcessStart(request))? {
            AgentResponse::Process(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// The sandbox's background processes, oldest first.
    pub fn processes(&self) -> Result<Vec<ProcessInfo>, RuntimeError> {
        match self.file_op(&AgentRequest::ProcessList)? {
            AgentResponse::Processes { processes } => Ok(processes),
            other => Err(unexpected(other)),
        }
    }

    /// A process's kept output from `offset` on.
    pub fn process_logs(&self, pid: i32, offset: u64) -> Result<ProcessLogs, RuntimeError> {
        let request = AgentRequest::ProcessLogs {
            pid,
            offset,
            follow: false,
        };
        match self.file_op(&request)? {
            AgentResponse::Log(logs) => Ok(*logs),
            other => Err(unexpected(other)),
        }
    }

    /// Follows a process's output from `offset`, handing each piece to
    /// `on_logs` (pieces may be empty heartbeats) until the process is over
    /// or `on_logs` returns `false`.
    pub fn process_follow(
        &self,
        pid: i32,
        offset: u64,
        mut on_logs: impl FnMut(ProcessLogs) -> bool,
    ) -> Result<(), RuntimeError> {
        let request = AgentRequest::ProcessLogs {
            pid,
            offset,
            follow: true,
        };
        // Past two missed heartbeats the agent is gone.
        let (mut reader, mut answer) = self.exchange_open(&request, Duration::from_secs(35))?;
        loop {
            let logs = match answer {
                AgentResponse::Log(logs) => *logs,
                other => return Err(unexpected(other)),
            };
            if !on_logs(logs) {
                return Ok(());
            }
            let mut line = String::new();
            // The agent closes the connection once the process is over.
            if reader.read_line(&mut line).map_err(agent_io)? == 0 {
                return Ok(());
            }
            answer = serde_json::from_str(&line).map_err(|e| {
                RuntimeError::Agent(format!("the agent's answer is not valid ({e}): {line}"))
            })?;
        }
    }

    /// Writes to a background process's standard input.
    pub fn process_input(&self, pid: i32, data: &str, close: bool) -> Result<(), RuntimeError> {
        let request = AgentRequest::ProcessInput {
            pid,
            data: data.to_owned(),
            close,
        };
        match self.file_op(&request)? {
            AgentResponse::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Signals a background process's group.
    pub fn process_signal(&self, pid: i32, signal: i32) -> Result<(), RuntimeError> {
        match self.file_op(&AgentRequest::ProcessSignal { pid, signal })? {
            AgentResponse::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// A file's bytes, refused past `max_bytes`.
    pub fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, RuntimeError> {
        let (size, mut reader) = self.open_file(path, max_bytes)?;
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| RuntimeError::Agent(format!("reading a file: {e}")))?;
        if bytes.len() as u64 != size {
            return Err(RuntimeError::Agent("the file ended early".into()));
        }
        Ok(bytes)
    }

    /// A file's size and a reader of exactly that many bytes, for streaming
    /// it out (refused past `max_bytes`). A reader that ends early means
    /// the agent broke off.
    pub fn open_file(
        &self,
        path: &str,
        max_bytes: u64,
    ) -> Result<(u64, std::io::Take<BufReader<UnixStream>>), RuntimeError> {
        let request = AgentRequest::Read {
            path: path.to_owned(),
            max_bytes,
        };
        let (reader, answer) = self.exchange(&request, &[], FILE_WAIT)?;
        match answer {
            AgentResponse::Content { size } => Ok((size, reader.take(size))),
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
        self.write_file_from(path, bytes.len() as u64, mode, &mut &bytes[..])
    }

    /// Replaces a file with the `size` bytes `source` yields, streamed to
    /// the agent as they come. If `source` fails or ends early the agent
    /// sees the connection end short and keeps the old file.
    pub fn write_file_from(
        &self,
        path: &str,
        size: u64,
        mode: Option<u32>,
        source: &mut dyn Read,
    ) -> Result<(), RuntimeError> {
        let request = AgentRequest::Write {
            path: path.to_owned(),
            size,
            mode,
        };
        match self
            .exchange_from(&request, &mut source.take(size), FILE_WAIT)?
            .1
        {
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
        self.exchange_from(request, &mut &payload[..], wait)
    }

    /// Sends a request line and reads the answer line, leaving the
    /// connection open both ways (for attached terminals and followers).
    fn exchange_open(
        &self,
        request: &AgentRequest,
        wait: Duration,
    ) -> Result<(BufReader<UnixStream>, AgentResponse), RuntimeError> {
        let stream = self.send_request(request, wait)?;
        read_answer(BufReader::new(stream))
    }

    /// [`Sandbox::exchange`] with the payload read from `payload`.
    fn exchange_from(
        &self,
        request: &AgentRequest,
        payload: &mut dyn Read,
        wait: Duration,
    ) -> Result<(BufReader<UnixStream>, AgentResponse), RuntimeError> {
        let stream = self.send_request(request, wait)?;
        // The agent may refuse before reading the payload (a path it cannot
        // write) and close its end: its answer is what matters then.
        match std::io::copy(payload, &mut &stream) {
            Ok(_) => {}
            Err(error)
                if error.kind() == std::io::ErrorKind::BrokenPipe
                    || error.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(error) => {
                // The source failed (a client that went away): end the
                // connection short, so the agent keeps the old file.
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return Err(RuntimeError::Agent(format!(
                    "the upload broke off: {error}"
                )));
            }
        }
        // Everything is sent: a payload that came up short is seen as such
        // by the agent at once, instead of it waiting for the rest.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        read_answer(BufReader::new(stream))
    }

    /// Connects to the agent and sends one request line.
    fn send_request(
        &self,
        request: &AgentRequest,
        wait: Duration,
    ) -> Result<UnixStream, RuntimeError> {
        let stream = UnixStream::connect(self.dir.join("control/agent.sock")).map_err(agent_io)?;
        stream.set_read_timeout(Some(wait)).map_err(agent_io)?;
        let mut line = serde_json::to_vec(request)
            .map_err(|e| RuntimeError::Agent(format!("encoding the request: {e}")))?;
        line.push(b'\n');
        (&stream).write_all(&line).map_err(agent_io)?;
        Ok(stream)
    }

    /// What the sandbox uses right now, from the runtime's `events --stats`
    /// (its cgroup's counters): CPU time, memory now and at most, processes.
    pub fn stats(&self) -> Result<corral_types::sandbox::SandboxStats, RuntimeError> {
        let out = Command::new(&self.runtime.binary)
            .arg("--root")
            .arg(&self.runtime.root)
            .args(["events", "--stats", &self.id])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.runtime.binary.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(RuntimeError::Runtime {
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        let event: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| RuntimeError::Runtime {
                stderr: format!("unreadable stats: {e}"),
            })?;
        let data = &event["data"];
        let number = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        Ok(corral_types::sandbox::SandboxStats {
            cpu_ms: number(&data["cpu"]["usage"]["total"]) / 1_000_000,
            memory_bytes: number(&data["memory"]["usage"]["usage"]),
            memory_peak_bytes: number(&data["memory"]["usage"]["max"]),
            memory_limit_bytes: number(&data["memory"]["usage"]["limit"]),
            pids: number(&data["pids"]["current"]),
            pids_limit: number(&data["pids"]["limit"]),
        })
    }

    /// Freezes every process of the sandbox (the runtime's `pause`: the
    /// cgroup freezer); memory and files stay as they are.
    pub fn pause(&self) -> Result<(), RuntimeError> {
        self.lifecycle("pause")
    }

    /// Thaws a paused sandbox.
    pub fn resume(&self) -> Result<(), RuntimeError> {
        self.lifecycle("resume")
    }

    /// Runs `runc <verb> <id>`, its stderr as the error.
    fn lifecycle(&self, verb: &str) -> Result<(), RuntimeError> {
        let out = Command::new(&self.runtime.binary)
            .arg("--root")
            .arg(&self.runtime.root)
            .args([verb, &self.id])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.runtime.binary.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Runtime {
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
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

    /// Kills every process of the sandbox and deletes the container, but
    /// keeps the sandbox directory and its mounts: for an image root, the
    /// files written survive, and [`Sandbox::restart`] runs it again.
    /// Idempotent; errors are logged, not returned.
    pub fn stop(&self) {
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
    }

    /// Kills every process of the sandbox, deletes the container, unmounts
    /// its root and disk (overlay, layers, the disk at `rw`; addressed by
    /// the mount points the host made, never by a path inside the sandbox)
    /// and removes the sandbox directory, but keeps the disk image: a
    /// [`Sandbox::start_on_disk`] with it later finds every file written.
    /// Idempotent; errors are logged, not returned, so a half-created
    /// sandbox is always cleaned up. If a mount cannot be removed the
    /// directory is kept: deleting through a mounted layer could reach
    /// files that are not the sandbox's.
    pub fn teardown(&self) {
        self.stop();
        let dir = self.canonical_dir();
        if !dir.exists() {
            return;
        }
        if let Err(error) = rootfs::unmount(&dir, &dir.join("bundle/rootfs")) {
            tracing::warn!(id = %self.id, %error, "unmounting a sandbox's root failed; its directory is kept");
            return;
        }
        if let Err(error) = std::fs::remove_dir_all(&dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(id = %self.id, %error, "removing a sandbox directory failed");
        }
    }

    /// [`Sandbox::teardown`], then the disk image is removed too: nothing
    /// of the sandbox is left. Idempotent; errors are logged.
    pub fn destroy(&self) {
        self.teardown();
        // Safe even if the disk could not be unmounted: the loop device
        // keeps the unlinked file until it lets go.
        if let Err(error) = crate::disk::remove(&self.disk) {
            tracing::warn!(id = %self.id, %error, "removing a sandbox's disk failed");
        }
    }
}
