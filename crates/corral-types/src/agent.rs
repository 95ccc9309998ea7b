//! The protocol between the host and `corral-agent`, the PID 1 of every
//! sandbox: one JSON object per line over a stream socket the host created
//! and handed to the agent as file descriptor 3 (the sandbox never sees a
//! path to it). Each connection carries one request and its response.

use serde::{Deserialize, Serialize};

use crate::terminal::{ProcessInfo, ProcessLogs, TerminalInfo};

/// A request to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentRequest {
    /// Liveness: answered with [`AgentResponse::Pong`].
    Ping,
    /// Runs a program to completion inside the sandbox.
    Exec(ExecRequest),
    /// Returns the sandbox to the state it started in (every other process
    /// killed, writable filesystems emptied back to their start, System V
    /// IPC removed), or refuses: answered [`AgentResponse::Done`].
    Reset,
    /// Lists a directory.
    List {
        /// Absolute path inside the sandbox.
        path: String,
    },
    /// Describes one path (without following a final symlink).
    Stat {
        /// Absolute path.
        path: String,
    },
    /// Sends a file's bytes: answered by [`AgentResponse::Content`] followed
    /// by exactly that many raw bytes.
    Read {
        /// Absolute path.
        path: String,
        /// Refuse files larger than this.
        max_bytes: u64,
    },
    /// Replaces a file with the `size` raw bytes that follow the request line.
    Write {
        /// Absolute path.
        path: String,
        /// How many bytes follow.
        size: u64,
        /// Permission bits for a new file (default 0644).
        #[serde(default)]
        mode: Option<u32>,
    },
    /// Creates a directory.
    Mkdir {
        /// Absolute path.
        path: String,
        /// Create missing parents too.
        #[serde(default)]
        parents: bool,
    },
    /// Renames a path.
    Move {
        /// From.
        from: String,
        /// To.
        to: String,
    },
    /// Removes a path (a directory only with `recursive`).
    Delete {
        /// Absolute path.
        path: String,
        /// Remove a directory and everything in it.
        #[serde(default)]
        recursive: bool,
    },
    /// Finds paths under `path` whose name matches a glob (`*`, `?`) and,
    /// with `contains`, files holding that text (each matching line).
    Search {
        /// Absolute directory to search.
        path: String,
        /// Glob for the file name (`*` when absent).
        #[serde(default)]
        pattern: Option<String>,
        /// Literal text to look for inside files.
        #[serde(default)]
        contains: Option<String>,
        /// Stop after this many matches.
        max_results: usize,
    },
    /// Replaces every occurrence of `find` by `replace` in one file.
    Replace {
        /// Absolute path of a regular file.
        path: String,
        /// Literal text (not empty).
        find: String,
        /// Its replacement.
        replace: String,
    },
    /// Changes permission bits.
    Chmod {
        /// Absolute path.
        path: String,
        /// Permission bits (such as 0o755 = 493).
        mode: u32,
    },
    /// Starts a program on a new PTY that outlives every connection:
    /// answered with [`AgentResponse::Terminal`].
    TerminalOpen(SpawnRequest),
    /// Lists terminals: [`AgentResponse::Terminals`].
    TerminalList,
    /// Ends a terminal (hang-up, then kill) and forgets it.
    TerminalClose {
        /// Terminal id.
        id: String,
    },
    /// Attaches to a terminal: answered with [`AgentResponse::Terminal`],
    /// after which the connection carries the screen redrawn, recent
    /// output and then live output as raw bytes from the agent, and
    /// [`crate::terminal::TerminalInput`] lines from the host. The agent
    /// closes it when the terminal's program ends.
    TerminalAttach {
        /// Terminal id.
        id: String,
    },
    /// Waits (a few seconds at most) until a terminal's program has ended,
    /// then answers with [`AgentResponse::Terminal`] (still `running` if
    /// it has not).
    TerminalWait {
        /// Terminal id.
        id: String,
    },
    /// Starts a program in the background, its output kept in a bounded
    /// log: answered with [`AgentResponse::Process`].
    ProcessStart(SpawnRequest),
    /// Lists background processes: [`AgentResponse::Processes`].
    ProcessList,
    /// A process's kept output from `offset` on: [`AgentResponse::Log`];
    /// with `follow`, one [`AgentResponse::Log`] line per new piece until
    /// the process is over (and an empty one every 15 s of silence).
    ProcessLogs {
        /// Its PID.
        pid: i32,
        /// Start here (0: the oldest kept).
        #[serde(default)]
        offset: u64,
        /// Keep sending new output until it ends.
        #[serde(default)]
        follow: bool,
    },
    /// Writes to a process's standard input.
    ProcessInput {
        /// Its PID.
        pid: i32,
        /// The text.
        data: String,
        /// Close standard input afterwards.
        #[serde(default)]
        close: bool,
    },
    /// Sends a signal to a background process (and its process group).
    ProcessSignal {
        /// Its PID.
        pid: i32,
        /// Signal number.
        signal: i32,
    },
}

/// A program for a terminal or a background process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The whole environment of the program.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory.
    #[serde(default = "default_cwd")]
    pub cwd: String,
    /// PTY columns (terminals only).
    #[serde(default)]
    pub cols: u16,
    /// PTY rows (terminals only).
    #[serde(default)]
    pub rows: u16,
}

/// One directory entry or stat result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileInfo {
    /// File name (the last path component).
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Last modification (RFC 3339; Unix seconds in Rust).
    #[serde(with = "crate::times::rfc3339_seconds")]
    #[schema(value_type = String, format = DateTime)]
    pub modified: i64,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SearchMatch {
    /// Absolute path.
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// For a content search: the line number (from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// For a content search: the line (lossy UTF-8, at most 1 000 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments (`["/bin/sh", "-c", "…"]` for a shell string).
    pub argv: Vec<String>,
    /// The whole environment of the program.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory.
    #[serde(default = "default_cwd")]
    pub cwd: String,
    /// Bytes for standard input (UTF-8 text; empty: none).
    #[serde(default)]
    pub stdin: String,
    /// Kill the program (and everything it started) after this long.
    pub timeout_ms: u64,
    /// Keep at most this many bytes of each of stdout and stderr.
    pub output_limit: usize,
    /// Send output as it comes ([`AgentResponse::Output`] lines) before the
    /// final [`AgentResponse::Exited`], whose stdout and stderr are then empty.
    #[serde(default)]
    pub stream: bool,
    /// With `stream`: standard input stays open, fed by
    /// [`crate::terminal::ProcessStdinRequest`] lines the host sends on the
    /// same connection (`close` ends it); `stdin` must then be empty.
    #[serde(default)]
    pub stdin_stream: bool,
    /// The program is the sandbox's only work (the judge's runs): when it
    /// ends or its time is up, every other process of the sandbox is killed
    /// too (those that left its process group included), so nothing it
    /// started can hold its output open or go on using CPU.
    #[serde(default)]
    pub sole: bool,
}

fn default_cwd() -> String {
    "/tmp".to_owned()
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentResponse {
    /// To [`AgentRequest::Ping`].
    Pong {
        /// The agent's version.
        version: String,
    },
    /// A finished program.
    Exited(ExecResult),
    /// Output of a streaming exec, as it was written.
    Output {
        /// `stdout` or `stderr`.
        stream: String,
        /// The bytes, as UTF-8 (invalid sequences replaced).
        data: String,
    },
    /// A directory's entries.
    Entries {
        /// Sorted by name.
        entries: Vec<FileInfo>,
    },
    /// One path.
    Info(FileInfo),
    /// Search results.
    Matches {
        /// In walk order.
        matches: Vec<SearchMatch>,
        /// Whether the search stopped at `max_results` (or a walk limit).
        truncated: bool,
    },
    /// How many occurrences a replace changed.
    Replaced {
        /// Occurrences replaced.
        count: u64,
    },
    /// A file's bytes follow this line.
    Content {
        /// How many.
        size: u64,
    },
    /// Done.
    Done,
    /// One terminal.
    Terminal(TerminalInfo),
    /// All terminals, oldest first.
    Terminals {
        /// The terminals.
        terminals: Vec<TerminalInfo>,
    },
    /// One background process.
    Process(ProcessInfo),
    /// All background processes, oldest first.
    Processes {
        /// The processes.
        processes: Vec<ProcessInfo>,
    },
    /// A piece of a process's log (for a follower, the last one shows the
    /// process ended).
    Log(Box<ProcessLogs>),
    /// The request could not be carried out (bad request, program not found…).
    Error {
        /// Why.
        message: String,
        /// `not_found`, `exists`, `not_a_directory`, `too_large`, `no_space` (the
        /// disk is full), `invalid` or `failed`.
        #[serde(default)]
        kind: String,
    },
}

/// How a program ended (also the answer of `POST /api/v1/sandboxes/{id}/exec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecResult {
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Standard output (lossy UTF-8), at most the limit.
    pub stdout: String,
    /// Standard error (lossy UTF-8), at most the limit.
    pub stderr: String,
    /// Whether output beyond the limit was dropped.
    pub truncated: bool,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// CPU time (user + system) of the program and the descendants it
    /// waited for, milliseconds.
    #[serde(default)]
    pub cpu_ms: u64,
    /// Largest resident memory of the program or one of those descendants, KiB.
    #[serde(default)]
    pub memory_kb: u64,
}
