//! Background processes: programs that run after the request that started
//! them, with their output kept in a bounded log that can be read from an
//! offset or followed, and a standard input that stays open for writing.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use corral_types::agent::{AgentResponse, SpawnRequest};
use corral_types::terminal::{LogChunk, ProcessInfo, ProcessLogs};

use crate::privileges::RunAs;
use crate::{Waiters, fs, send, spawn_watched, unix_now, utf8_prefix};

/// Most processes remembered (running or ended); the oldest ended ones are
/// forgotten first.
const MAX_PROCESSES: usize = 64;
/// Output kept per process (both streams together).
const LOG_BYTES: usize = 1024 * 1024;
/// How long a follower waits for output before sending an empty heartbeat
/// (which is how it finds out the host went away).
const HEARTBEAT: Duration = Duration::from_secs(15);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every background process of the sandbox.
#[derive(Default)]
pub struct Processes {
    all: Mutex<Vec<Arc<Process>>>,
}

struct Process {
    pid: i32,
    command: Vec<String>,
    started_at: i64,
    stdin: Mutex<Option<ChildStdin>>,
    state: Mutex<State>,
    /// Wakes followers when output arrives or the process ends.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Kept output: (offset, stream, text), oldest first.
    log: VecDeque<(u64, &'static str, String)>,
    kept: usize,
    /// Bytes written in all, which is also the next chunk's offset.
    total: u64,
    /// Streams still open.
    open_streams: u8,
    ended: Option<(Option<i32>, Option<i32>)>,
    ended_at: Option<i64>,
}

impl State {
    /// Over: exited and both streams drained.
    fn finished(&self) -> bool {
        self.ended.is_some() && self.open_streams == 0
    }

    fn chunks_from(&self, offset: u64) -> (Vec<LogChunk>, bool) {
        let oldest = self.log.front().map_or(self.total, |(at, _, _)| *at);
        let chunks = self
            .log
            .iter()
            .filter(|(at, _, text)| at + text.len() as u64 > offset)
            .map(|(at, stream, text)| {
                // A chunk that starts before `offset`: from the first whole
                // character at or after it.
                let mut skip = usize::try_from(offset.saturating_sub(*at)).unwrap_or(0);
                while !text.is_char_boundary(skip) {
                    skip += 1;
                }
                LogChunk {
                    offset: at + skip as u64,
                    stream: (*stream).to_owned(),
                    data: text[skip..].to_owned(),
                }
            })
            .collect();
        (chunks, offset < oldest)
    }
}

impl Process {
    fn info(&self) -> ProcessInfo {
        let state = lock(&self.state);
        ProcessInfo {
            pid: self.pid,
            command: self.command.clone(),
            status: if state.ended.is_some() {
                "exited"
            } else {
                "running"
            }
            .to_owned(),
            exit_code: state.ended.and_then(|e| e.0),
            signal: state.ended.and_then(|e| e.1),
            started_at: self.started_at,
            ended_at: state.ended_at,
            output_bytes: state.total,
        }
    }

    /// Reads one of its streams into the log until the stream ends.
    fn collect(&self, name: &'static str, mut stream: impl Read) {
        let mut buf = [0u8; 16 * 1024];
        let mut partial = Vec::new();
        loop {
            let n = stream.read(&mut buf).unwrap_or(0);
            partial.extend_from_slice(&buf[..n]);
            let text = utf8_prefix(&mut partial, n == 0);
            let mut state = lock(&self.state);
            if !text.is_empty() {
                let at = state.total;
                state.total += text.len() as u64;
                state.kept += text.len();
                state.log.push_back((at, name, text));
                while state.kept > LOG_BYTES {
                    let Some((_, _, old)) = state.log.pop_front() else {
                        break;
                    };
                    state.kept -= old.len();
                }
            }
            if n == 0 {
                state.open_streams -= 1;
            }
            self.changed.notify_all();
            if n == 0 {
                return;
            }
        }
    }

    fn log_answer(&self, offset: u64) -> (AgentResponse, u64, bool) {
        let state = lock(&self.state);
        let (chunks, truncated) = state.chunks_from(offset);
        let next = state.total.max(offset);
        let finished = state.finished();
        drop(state);
        let answer = AgentResponse::Log(Box::new(ProcessLogs {
            chunks,
            next_offset: next,
            truncated,
            process: self.info(),
        }));
        (answer, next, finished)
    }
}

impl Processes {
    /// Whether there are none (a reset is refused while there are).
    pub fn is_empty(&self) -> bool {
        lock(&self.all).is_empty()
    }

    fn find(&self, pid: i32) -> Option<Arc<Process>> {
        lock(&self.all).iter().find(|p| p.pid == pid).cloned()
    }

    /// Starts a program in the background.
    pub fn start(&self, request: SpawnRequest, waiters: &Arc<Waiters>) -> AgentResponse {
        let Some((program, args)) = request.argv.split_first() else {
            return fs::error("invalid", "argv is empty");
        };
        {
            let mut all = lock(&self.all);
            if all.len() >= MAX_PROCESSES {
                match all.iter().position(|p| lock(&p.state).finished()) {
                    Some(oldest) => {
                        all.remove(oldest);
                    }
                    None => {
                        return fs::error(
                            "too_large",
                            format!("{MAX_PROCESSES} background processes are already running"),
                        );
                    }
                }
            }
        }
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(request.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&request.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so a signal reaches what it started too.
            .process_group(0);
        let (mut child, ended) = match spawn_watched(&mut command, waiters, RunAs::Root) {
            Ok(spawned) => spawned,
            Err(error) => return fs::error("not_found", format!("cannot run {program}: {error}")),
        };
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        let process = Arc::new(Process {
            pid,
            command: request.argv.clone(),
            started_at: unix_now(),
            stdin: Mutex::new(child.stdin.take()),
            state: Mutex::new(State {
                open_streams: 2,
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        for (name, stream) in [
            (
                "stdout",
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ),
            (
                "stderr",
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ),
        ] {
            let process = process.clone();
            std::thread::spawn(move || match stream {
                Some(stream) => process.collect(name, stream),
                None => process.collect(name, std::io::empty()),
            });
        }
        {
            let process = process.clone();
            std::thread::spawn(move || {
                let how = ended.recv().map_or((None, None), |(how, _)| how);
                let mut state = lock(&process.state);
                state.ended = Some(how);
                state.ended_at = Some(unix_now());
                process.changed.notify_all();
                drop(state);
                drop(child);
            });
        }
        let info = process.info();
        let mut all = lock(&self.all);
        // A PID can come back after its process ended and was reaped.
        all.retain(|p| p.pid != pid);
        all.push(process);
        AgentResponse::Process(info)
    }

    /// Every process.
    pub fn list(&self) -> AgentResponse {
        let all: Vec<Arc<Process>> = lock(&self.all).clone();
        AgentResponse::Processes {
            processes: all.iter().map(|p| p.info()).collect(),
        }
    }

    /// Sends kept output from `offset`; with `follow`, keeps sending until
    /// the process is over or the host goes away.
    pub fn logs(&self, pid: i32, offset: u64, follow: bool, out: &mut UnixStream) {
        let Some(process) = self.find(pid) else {
            let _ = send(out, &not_found(pid));
            return;
        };
        let (answer, mut next, mut finished) = process.log_answer(offset);
        if send(out, &answer).is_err() || !follow {
            return;
        }
        while !finished {
            {
                let state = lock(&process.state);
                if state.total <= next && !state.finished() {
                    let _ = process.changed.wait_timeout(state, HEARTBEAT);
                }
            }
            let answer;
            (answer, next, finished) = process.log_answer(next);
            if send(out, &answer).is_err() {
                return;
            }
        }
    }

    /// Writes to its standard input.
    pub fn input(&self, pid: i32, data: &str, close: bool) -> AgentResponse {
        let Some(process) = self.find(pid) else {
            return not_found(pid);
        };
        let mut stdin = lock(&process.stdin);
        let Some(pipe) = stdin.as_mut() else {
            return fs::error("invalid", "its standard input is closed");
        };
        if let Err(error) = pipe.write_all(data.as_bytes()) {
            *stdin = None;
            return fs::error("invalid", format!("writing its standard input: {error}"));
        }
        if close {
            *stdin = None;
        }
        AgentResponse::Done
    }

    /// Signals it (and its process group).
    pub fn signal(&self, pid: i32, signal: i32) -> AgentResponse {
        let Some(process) = self.find(pid) else {
            return not_found(pid);
        };
        if lock(&process.state).ended.is_some() {
            return fs::error("invalid", format!("process {pid} has already exited"));
        }
        let Ok(signal) = Signal::try_from(signal) else {
            return fs::error("invalid", format!("no signal {signal}"));
        };
        match killpg(Pid::from_raw(pid), signal) {
            Ok(()) => AgentResponse::Done,
            Err(error) => fs::error("failed", format!("signalling {pid}: {error}")),
        }
    }
}

fn not_found(pid: i32) -> AgentResponse {
    fs::error("not_found", format!("no background process {pid}"))
}
