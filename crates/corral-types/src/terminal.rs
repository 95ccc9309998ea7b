//! Terminals (persistent PTY sessions) and background processes in a
//! sandbox: API types, shared by the agent protocol.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/sandboxes/{id}/terminals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenTerminalRequest {
    /// Columns (1–1000; default 80).
    #[serde(default = "default_cols")]
    pub cols: u16,
    /// Rows (1–1000; default 24).
    #[serde(default = "default_rows")]
    pub rows: u16,
    /// Program and arguments (default: the sandbox's login shell, `/bin/bash`
    /// when present, else `/bin/sh`).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Extra environment, over the sandbox's (`TERM` defaults to
    /// `xterm-256color`).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Working directory (default `/tmp`).
    #[serde(default)]
    pub cwd: Option<String>,
}

fn default_cols() -> u16 {
    80
}

fn default_rows() -> u16 {
    24
}

/// A terminal session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TerminalInfo {
    /// Terminal id (unique within its sandbox).
    pub id: String,
    /// The PID of its program, inside the sandbox.
    pub pid: i32,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
    /// Whether its program is still running.
    pub running: bool,
    /// Exit code, once it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// How many clients are attached now.
    pub attached: u32,
    /// When it was opened (RFC 3339; Unix seconds in Rust).
    #[serde(with = "crate::times::rfc3339_seconds")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// A message a terminal client sends over the WebSocket (JSON text frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TerminalClientMessage {
    /// Authenticates a connection opened without a token (first message only).
    Auth {
        /// An access token or API key.
        token: String,
    },
    /// Keystrokes or pasted text for the terminal's program.
    Input {
        /// The bytes, as UTF-8.
        data: String,
    },
    /// The client's window size changed.
    Resize {
        /// Columns (1–1000).
        cols: u16,
        /// Rows (1–1000).
        rows: u16,
    },
    /// Keep-alive: answered with `{"type":"pong"}`.
    Ping,
}

/// What the server sends a terminal client in JSON text frames (output
/// travels in binary frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TerminalServerMessage {
    /// The answer to a `ping`.
    Pong,
    /// The terminal's program ended: sent after its last output, just
    /// before the close frame (code 1000).
    Exit {
        /// Its exit code, when it exited.
        exit_code: Option<i32>,
        /// The signal that ended it, when one did.
        signal: Option<i32>,
    },
}

/// What the host sends the agent on an attached terminal connection, one
/// JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TerminalInput {
    /// Bytes for the PTY.
    Input {
        /// The bytes, as UTF-8.
        data: String,
    },
    /// New window size.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
}

/// `POST /api/v1/sandboxes/{id}/processes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartProcessRequest {
    /// A shell command line (run with `/bin/sh -c`), or give `argv`.
    #[serde(default)]
    pub command: Option<String>,
    /// Program and arguments, run directly.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    /// Working directory (default `/tmp`).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment, over the sandbox's.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// A background process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProcessInfo {
    /// Its PID inside the sandbox.
    pub pid: i32,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// `running` or `exited`.
    pub status: String,
    /// Exit code, once it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// When it started (RFC 3339; Unix seconds in Rust).
    #[serde(with = "crate::times::rfc3339_seconds")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: i64,
    /// When it ended (RFC 3339; Unix seconds in Rust).
    #[serde(default, with = "crate::times::rfc3339_seconds_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<i64>,
    /// Bytes of output it has written (the log keeps the most recent part).
    pub output_bytes: u64,
}

/// One piece of a process's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogChunk {
    /// Offset of this chunk in the process's whole output (both streams).
    pub offset: u64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The text (lossy UTF-8).
    pub data: String,
}

/// `GET /api/v1/sandboxes/{id}/processes/{pid}/logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProcessLogs {
    /// The kept output from `offset` on, in order.
    pub chunks: Vec<LogChunk>,
    /// Where the next read should start (`?offset=`).
    pub next_offset: u64,
    /// Whether older output than what is kept was dropped.
    pub truncated: bool,
    /// The process, as of this read.
    pub process: ProcessInfo,
}

/// `POST /api/v1/sandboxes/{id}/processes/{pid}/stdin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessStdinRequest {
    /// Text to write to its standard input.
    #[serde(default)]
    pub data: String,
    /// Close standard input afterwards (end of file).
    #[serde(default)]
    pub close: bool,
}

/// `POST /api/v1/sandboxes/{id}/processes/{pid}/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessSignalRequest {
    /// `TERM`, `KILL`, `INT`, `HUP`, `QUIT`, `USR1`, `USR2`, `STOP` or
    /// `CONT` (with or without `SIG`), or a number.
    pub signal: String,
}

/// The signal a name or number means, among those a client may send.
pub fn signal_number(name: &str) -> Option<i32> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMED: &[(&str, i32)] = &[
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("KILL", 9),
        ("USR1", 10),
        ("USR2", 12),
        ("TERM", 15),
        ("CONT", 18),
        ("STOP", 19),
        ("WINCH", 28),
    ];
    if let Some((_, n)) = NAMED.iter().find(|(n, _)| *n == bare) {
        return Some(*n);
    }
    bare.parse::<i32>()
        .ok()
        .filter(|n| NAMED.iter().any(|(_, k)| k == n))
}
