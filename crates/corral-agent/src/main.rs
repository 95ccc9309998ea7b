//! `corral-agent`: PID 1 inside every sandbox.
//!
//! - Reaps every process that exits, including orphans re-parented to it (as
//!   PID 1 it must, or they stay zombies and fill the pids limit).
//! - Serves the host on the listening socket it finds at file descriptor 3
//!   (created by the host outside the sandbox and passed in by the OCI
//!   runtime, so no path inside the sandbox leads to it): one JSON request
//!   per connection, see `corral_types::agent`.
//! - Runs programs *inside* the sandbox, each in its own process group so a
//!   timeout kills everything it started.
//!
//! Synchronous and thread-based on purpose: a small static binary with no
//! runtime to start.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use corral_types::agent::{AgentRequest, AgentResponse, ExecRequest, ExecResult};
use corral_types::terminal::ProcessStdinRequest;

use privileges::RunAs;

mod fs;
mod pids;
mod privileges;
mod process;
mod reset;
mod seccomp;
mod terminal;

/// The descriptor the host passes the listening socket on.
const LISTEN_FD: i32 = 3;
/// Largest request line accepted (a request carries stdin).
const MAX_REQUEST: u64 = 16 * 1024 * 1024;

/// How a child ended: exit code or signal.
type Ended = (Option<i32>, Option<i32>);

/// What a child used, as `wait4` reports it (its own and that of the
/// descendants it waited for): CPU milliseconds (user + system) and the
/// largest resident set, KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu_ms: u64,
    max_rss_kb: u64,
}

/// How a child ended, and what it used.
type Exit = (Ended, Usage);

/// Children the host is waiting for: pid → where to send how it ended.
/// The reaper reaps everything; only these are reported.
#[derive(Default)]
struct Waiters {
    waiting: Mutex<HashMap<i32, Sender<Exit>>>,
    /// Wakes the reaper when a child is spawned while it has none to wait for.
    spawned: Condvar,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Sender<Exit>>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Blocks the reaper until a spawn (or a second, for orphans it could
    /// not have been told about).
    fn wait_for_spawn(&self) {
        let guard = self.lock();
        // A child spawned between `waitpid` saying "none" and this lock is
        // already registered: go back to waiting for it at once.
        if guard.is_empty() {
            let _ = self.spawned.wait_timeout(guard, Duration::from_secs(1));
        }
    }
}

/// What lives as long as the agent: children being waited for, terminals
/// and background processes, and the state a reset returns to.
struct Agent {
    waiters: Arc<Waiters>,
    terminals: Arc<terminal::Terminals>,
    processes: process::Processes,
    baseline: reset::Baseline,
}

impl Agent {
    /// Why the sandbox must not be reset right now, if it must not.
    fn busy(&self) -> Option<String> {
        if !self.terminals.is_empty() {
            Some("the sandbox has terminals".to_owned())
        } else if !self.processes.is_empty() {
            Some("the sandbox has background processes".to_owned())
        } else if !self.waiters.lock().is_empty() {
            Some("a program is still running".to_owned())
        } else {
            None
        }
    }
}

fn main() {
    // Not dumpable: the programs run with the agent's uid, and without this
    // they could open /proc/1/mem, /proc/1/fd or /proc/1/environ and take
    // the agent over (in a sandbox that is reset and reused, for the next
    // program too). Children become dumpable again when they exec.
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) changes only this process's flag.
    if unsafe { nix::libc::prctl(nix::libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        eprintln!(
            "corral-agent: cannot make itself non-dumpable: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(2);
    }
    // Before anything else runs: the sandbox's seccomp filter, which runc
    // is not given for agent sandboxes (see seccomp.rs). Fail closed.
    if let Err(error) = seccomp::install() {
        eprintln!("corral-agent: cannot install the seccomp filter: {error}");
        std::process::exit(2);
    }
    let waiters: Arc<Waiters> = Arc::default();
    {
        let waiters = waiters.clone();
        std::thread::spawn(move || reap(&waiters));
    }
    let agent = Arc::new(Agent {
        waiters,
        terminals: Arc::default(),
        processes: process::Processes::default(),
        // Before anything runs, and after the reaper thread, the last task
        // the agent starts before serving: what the sandbox held when it
        // started, and its PID counter at that point.
        baseline: reset::baseline(),
    });
    let listener = match adopt_listener() {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("corral-agent: no listening socket on fd {LISTEN_FD}: {error}");
            std::process::exit(2);
        }
    };
    if let Err(error) = detach_stdio() {
        eprintln!("corral-agent: cannot point its output at /dev/null: {error}");
        std::process::exit(2);
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let agent = agent.clone();
        std::thread::spawn(move || serve(stream, &agent));
    }
}

/// Points stdout and stderr at the sandbox's `/dev/null` once the agent is
/// ready. Until here they are the host's `agent.log`, where a sandbox that
/// fails to start says why; from here on nothing inside the sandbox can
/// name that host file (as `/proc/1/fd/1`, say).
fn detach_stdio() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(())
}

/// The listening socket at fd 3.
fn adopt_listener() -> std::io::Result<UnixListener> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: fd 3 is open in this process (the OCI runtime passed it with
    // `--preserve-fds 1`; `fcntl` below proves it is open before anything
    // else happens) and nothing else in the agent owns or closes it, so this
    // is its only owner.
    nix::fcntl::fcntl(
        unsafe { std::os::fd::BorrowedFd::borrow_raw(LISTEN_FD) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .map_err(std::io::Error::from)?;
    // SAFETY: as above; ownership moves here exactly once.
    let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FD) };
    // The runtime hands it over inheritable; without close-on-exec every
    // program the agent runs would inherit the listening socket and could
    // accept the host's next request in the agent's place.
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(std::io::Error::from)?;
    let listener = UnixListener::from(fd);
    // Not a listening socket: refuse rather than serve garbage.
    listener.local_addr()?;
    listener.set_nonblocking(false)?;
    Ok(listener)
}

/// Reaps every exiting child, forever; reports the ones someone waits for.
fn reap(waiters: &Waiters) {
    loop {
        match wait_any() {
            Some((WaitStatus::Exited(pid, code), usage)) => {
                report(waiters, pid, ((Some(code), None), usage));
            }
            Some((WaitStatus::Signaled(pid, signal, _), usage)) => {
                report(waiters, pid, ((None, Some(signal as i32)), usage));
            }
            Some(_) => {}
            // No children right now: sleep until one is spawned.
            None => waiters.wait_for_spawn(),
        }
    }
}

/// `wait4(-1)`: the next child to end, with its resource usage.
fn wait_any() -> Option<(WaitStatus, Usage)> {
    use nix::libc;
    let mut status: libc::c_int = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: wait4 writes one int and one `rusage` through the two
    // pointers, which point at live locals of the right types.
    let pid = unsafe { libc::wait4(-1, &raw mut status, 0, usage.as_mut_ptr()) };
    if pid <= 0 {
        return None;
    }
    // SAFETY: zero is a valid `rusage` (plain integers), and wait4 filled it.
    let usage = unsafe { usage.assume_init() };
    let millis = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1000 + u64::try_from(t.tv_usec).unwrap_or(0) / 1000
    };
    let used = Usage {
        cpu_ms: millis(usage.ru_utime) + millis(usage.ru_stime),
        max_rss_kb: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    };
    WaitStatus::from_raw(Pid::from_raw(pid), status)
        .ok()
        .map(|ws| (ws, used))
}

fn report(waiters: &Waiters, pid: Pid, exit: Exit) {
    if let Some(tx) = waiters.lock().remove(&pid.as_raw()) {
        let _ = tx.send(exit);
    }
}

/// Spawns `command` as `run_as` with the reaper told to report its end on
/// the channel returned. The waiters' lock is held across spawn and
/// registration, so the reaper cannot reap the child before anyone waits
/// for it. The child starts with an oom_score_adj of 1000 (see
/// [`oom_first`]), set while it still has the agent's uid.
fn spawn_watched(
    command: &mut Command,
    waiters: &Waiters,
    run_as: RunAs,
) -> std::io::Result<(std::process::Child, Receiver<Exit>)> {
    // SAFETY: the hook makes only raw system calls (open, write, close,
    // capget, capset, setgroups, setresgid, setresuid), which are
    // async-signal-safe, on static paths and buffers or its own stack.
    unsafe {
        command.pre_exec(move || {
            oom_first()?;
            match run_as {
                RunAs::Root => privileges::drop_agent_only_capabilities(),
                RunAs::RunUser => privileges::become_run_user(),
            }
        });
    }
    let (tx, rx) = channel();
    let mut waiting = waiters.lock();
    let child = command.spawn()?;
    waiting.insert(child.id() as i32, tx);
    waiters.spawned.notify_all();
    Ok((child, rx))
}

/// Between fork and exec: sets the child's oom_score_adj to the most a
/// process can have, 1000, so that when the sandbox runs out of memory the
/// OOM killer picks the user's programs, never the agent (which stays at
/// 0): the sandbox stays reachable, and only the program that overran is
/// killed. Raising the value needs no privilege; lowering it below the
/// agent's (to shield a program, say) would need CAP_SYS_RESOURCE, which
/// hosts often lack, so the agent is not made -1000 by the host. A program
/// may lower its own value back to 0 at most, and then competes with the
/// agent on size. A child that cannot be set is not started.
fn oom_first() -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: a static NUL-terminated path; `open` returns a new descriptor
    // or -1.
    let fd = unsafe {
        libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    const MOST: &[u8] = b"1000";
    // SAFETY: `fd` is the descriptor just opened; the buffer is a static
    // byte string of the length passed.
    let written = unsafe { libc::write(fd, MOST.as_ptr().cast(), MOST.len()) };
    let error = std::io::Error::last_os_error();
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    if usize::try_from(written).is_ok_and(|n| n == MOST.len()) {
        Ok(())
    } else {
        Err(error)
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn serve(stream: UnixStream, agent: &Agent) {
    let waiters = &agent.waiters;
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    let mut out = &stream;
    let response = match (&mut reader).take(MAX_REQUEST).read_line(&mut line) {
        Ok(0) => return,
        Ok(_) => match serde_json::from_str::<AgentRequest>(&line) {
            Ok(AgentRequest::Ping) => AgentResponse::Pong {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            Ok(AgentRequest::Reset) => match reset::reset(&agent.baseline, agent.busy()) {
                Ok(()) => AgentResponse::Done,
                Err(message) => fs::error("reset", message),
            },
            Ok(AgentRequest::Exec(request)) if request.stream => {
                let Ok(writer) = stream.try_clone() else {
                    return;
                };
                let sink = Arc::new(Mutex::new(writer));
                // Standard input lines follow the request on this
                // connection: what the reader already holds, then the rest.
                let input = if request.stdin_stream {
                    let Ok(rest) = stream.try_clone() else {
                        return;
                    };
                    let held = std::io::Cursor::new(reader.buffer().to_vec());
                    Some(BufReader::new(held.chain(rest)))
                } else {
                    None
                };
                exec(request, waiters, Some(&sink), input)
            }
            Ok(AgentRequest::Exec(request)) => exec(request, waiters, None, None),
            Ok(AgentRequest::List { path }) => fs::list(&path),
            Ok(AgentRequest::Stat { path }) => fs::stat(&path),
            Ok(AgentRequest::Read { path, max_bytes }) => {
                let _ = fs::read(&path, max_bytes, &mut out);
                return;
            }
            Ok(AgentRequest::Write { path, size, mode }) => {
                fs::write(&path, size, mode, &mut reader)
            }
            Ok(AgentRequest::Mkdir { path, parents }) => fs::mkdir(&path, parents),
            Ok(AgentRequest::Move { from, to }) => fs::rename(&from, &to),
            Ok(AgentRequest::Delete { path, recursive }) => fs::delete(&path, recursive),
            Ok(AgentRequest::Chmod { path, mode }) => fs::chmod(&path, mode),
            Ok(AgentRequest::Search {
                path,
                pattern,
                contains,
                max_results,
            }) => fs::search(&path, pattern.as_deref(), contains.as_deref(), max_results),
            Ok(AgentRequest::Replace {
                path,
                find,
                replace,
            }) => fs::replace(&path, &find, &replace),
            Ok(AgentRequest::TerminalOpen(request)) => agent.terminals.open(request, waiters),
            Ok(AgentRequest::TerminalList) => agent.terminals.list(),
            Ok(AgentRequest::TerminalClose { id }) => agent.terminals.close(&id),
            Ok(AgentRequest::TerminalWait { id }) => agent.terminals.wait(&id),
            Ok(AgentRequest::TerminalAttach { id }) => {
                agent.terminals.attach(&id, &stream, reader);
                return;
            }
            Ok(AgentRequest::ProcessStart(request)) => agent.processes.start(request, waiters),
            Ok(AgentRequest::ProcessList) => agent.processes.list(),
            Ok(AgentRequest::ProcessLogs {
                pid,
                offset,
                follow,
            }) => {
                let Ok(mut out) = stream.try_clone() else {
                    return;
                };
                agent.processes.logs(pid, offset, follow, &mut out);
                return;
            }
            Ok(AgentRequest::ProcessInput { pid, data, close }) => {
                agent.processes.input(pid, &data, close)
            }
            Ok(AgentRequest::ProcessSignal { pid, signal }) => agent.processes.signal(pid, signal),
            Err(error) => fs::error("invalid", format!("bad request: {error}")),
        },
        Err(error) => fs::error("invalid", format!("reading the request: {error}")),
    };
    let _ = send(&mut out, &response);
}

/// Writes one answer line.
fn send(out: &mut impl Write, response: &AgentResponse) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).unwrap_or_default();
    line.push(b'\n');
    out.write_all(&line)
}

/// Where a streaming exec's output lines go (shared by the stdout and
/// stderr readers, so each line is written whole).
type Sink = Arc<Mutex<UnixStream>>;

/// Where a streaming exec's standard input comes from: the host's
/// [`ProcessStdinRequest`] lines.
type StdinLines = BufReader<std::io::Chain<std::io::Cursor<Vec<u8>>, UnixStream>>;

fn exec(
    request: ExecRequest,
    waiters: &Waiters,
    sink: Option<&Sink>,
    input: Option<StdinLines>,
) -> AgentResponse {
    let Some((program, args)) = request.argv.split_first() else {
        return fs::error("invalid", "argv is empty");
    };
    let started = Instant::now();
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&request.cwd)
        .stdin(if request.stdin.is_empty() && input.is_none() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills everything it started.
        .process_group(0);
    // The judge's runs: as the run user, with what the host wrote for them.
    let run_as = if request.sole {
        if let Err(message) = privileges::hand_over(&request.cwd) {
            return fs::error("failed", message);
        }
        RunAs::RunUser
    } else {
        RunAs::Root
    };
    let (mut child, rx) = match spawn_watched(&mut command, waiters, run_as) {
        Ok(spawned) => spawned,
        Err(error) => return fs::error("not_found", format!("cannot run {program}: {error}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        match input {
            Some(lines) => {
                std::thread::spawn(move || feed_stdin(lines, stdin));
            }
            None => {
                let input = request.stdin.into_bytes();
                std::thread::spawn(move || {
                    let _ = stdin.write_all(&input);
                });
            }
        }
    }
    let pgid = Pid::from_raw(child.id() as i32);
    let forward = |name: &'static str| {
        sink.map(|sink| {
            let sink = sink.clone();
            let mut pending = Vec::new();
            Box::new(move |chunk: &[u8]| {
                pending.extend_from_slice(chunk);
                let data = utf8_prefix(&mut pending, chunk.is_empty());
                if data.is_empty() {
                    return true;
                }
                let line = AgentResponse::Output {
                    stream: name.to_owned(),
                    data,
                };
                let mut out = sink
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if send(&mut *out, &line).is_err() {
                    // The host went away: nobody wants the rest.
                    let _ = killpg(pgid, Signal::SIGKILL);
                    return false;
                }
                true
            }) as Forward
        })
    };
    let stdout = child
        .stdout
        .take()
        .map(|s| capped(s, request.output_limit, forward("stdout")));
    let stderr = child
        .stderr
        .take()
        .map(|s| capped(s, request.output_limit, forward("stderr")));
    let ((ended, usage), timed_out) = wait(&rx, pgid, Duration::from_millis(request.timeout_ms));
    if request.sole {
        // What left its group (`setsid`) would hold the output pipes open
        // and go on running: nothing of the run outlives it.
        reset::kill_all_others();
    }
    let (stdout, out_cut) = stdout.and_then(|h| h.join().ok()).unwrap_or_default();
    let (stderr, err_cut) = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    AgentResponse::Exited(ExecResult {
        exit_code: ended.0,
        signal: ended.1,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        truncated: out_cut || err_cut,
        timed_out,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        cpu_ms: usage.cpu_ms,
        memory_kb: usage.max_rss_kb,
    })
}

/// Writes the host's standard input lines to a program until one says
/// `close`, the host stops sending, or the program stops reading (its pipe
/// breaks when it ends): each way, the pipe is closed and the program sees
/// end of file.
fn feed_stdin(lines: StdinLines, mut stdin: std::process::ChildStdin) {
    for line in lines.lines() {
        let Ok(line) = line else { break };
        let Ok(input) = serde_json::from_str::<ProcessStdinRequest>(&line) else {
            break;
        };
        if stdin.write_all(input.data.as_bytes()).is_err() || input.close {
            break;
        }
    }
}

/// Waits for the end of the process `pgid` leads; past `timeout`, kills its
/// whole group.
fn wait(rx: &Receiver<Exit>, pgid: Pid, timeout: Duration) -> (Exit, bool) {
    match rx.recv_timeout(timeout) {
        Ok(exit) => {
            // The leader is gone; stragglers in its group go too.
            let _ = killpg(pgid, Signal::SIGKILL);
            (exit, false)
        }
        Err(RecvTimeoutError::Timeout) => {
            let _ = killpg(pgid, Signal::SIGKILL);
            let killed = ((None, Some(9)), Usage::default());
            (rx.recv().unwrap_or(killed), true)
        }
        Err(RecvTimeoutError::Disconnected) => (((None, None), Usage::default()), false),
    }
}

/// Receives a streaming exec's output chunks (an empty chunk: the end);
/// `false` stops forwarding.
type Forward = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// Reads a stream to its end on a thread, keeping (or, with `forward`,
/// passing on) the first `limit` bytes and draining the rest so the writer
/// never blocks.
fn capped(
    mut stream: impl Read + Send + 'static,
    limit: usize,
    mut forward: Option<Forward>,
) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut seen = 0usize;
        let mut cut = false;
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = limit.saturating_sub(seen);
                    let take = &buf[..n.min(room)];
                    seen += take.len();
                    cut |= n > room;
                    match &mut forward {
                        Some(f) if !take.is_empty() => {
                            if !f(take) {
                                forward = None;
                            }
                        }
                        Some(_) => {}
                        None => kept.extend_from_slice(take),
                    }
                }
            }
        }
        if let Some(f) = &mut forward {
            f(&[]);
        }
        (kept, cut)
    })
}

/// Takes the longest prefix of `pending` that is whole UTF-8 (invalid
/// sequences replaced), leaving a character cut at the end for the next
/// chunk; at the `end`, everything.
fn utf8_prefix(pending: &mut Vec<u8>, end: bool) -> String {
    let whole = match std::str::from_utf8(pending) {
        Ok(_) => pending.len(),
        // Cut inside the last character (no error length): keep its bytes.
        Err(e) if e.error_len().is_none() && !end => e.valid_up_to(),
        Err(_) => pending.len(),
    };
    let rest = pending.split_off(whole);
    let text = String::from_utf8_lossy(pending).into_owned();
    *pending = rest;
    text
}
