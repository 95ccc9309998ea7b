//! Interpreter contexts: a persistent interpreter in a sandbox that runs
//! code sent to it one piece at a time, keeping its variables between runs
//! (like a Jupyter kernel).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/sandboxes/{id}/contexts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContextRequest {
    /// The interpreter: `python`.
    pub language: String,
    /// Working directory (default `/tmp`).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment, over the sandbox's (`MPLBACKEND` defaults to `Agg`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// An interpreter context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContextInfo {
    /// Context id (unique within its sandbox).
    pub id: String,
    /// Its language.
    pub language: String,
    /// The PID of its interpreter, inside the sandbox (it is also one of
    /// the sandbox's background processes).
    pub pid: i32,
    /// When it was created (RFC 3339; Unix seconds in Rust).
    #[serde(with = "crate::times::rfc3339_seconds")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// `POST /api/v1/sandboxes/{id}/contexts/{cid}/run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCodeRequest {
    /// The code. When its last statement is an expression, that
    /// expression's value comes back in `results`.
    pub code: String,
    /// Time limit in milliseconds (default 30 000, capped by the plan's
    /// exec time). Code still running then is interrupted (`SIGINT`) and
    /// the run answers a `TimeoutError`; the context keeps its state.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunResult {
    /// Everything written to standard output (by the code and by programs
    /// it started), up to 256 KiB.
    pub stdout: String,
    /// Everything written to standard error, up to 256 KiB.
    pub stderr: String,
    /// The exception that ended the run, if one did.
    pub error: Option<RunError>,
    /// Rich results, each a map from MIME type to data: the value of a
    /// final expression (`text/plain` is its `repr`, with `text/html` and
    /// others when the object offers them), then every matplotlib figure
    /// left open (`image/png`, base64). Binary data is base64.
    pub results: Vec<BTreeMap<String, String>>,
    /// How many runs this context has started, this one included.
    pub execution_count: u64,
}

/// An exception raised by the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunError {
    /// Its type, e.g. `ZeroDivisionError`; `TimeoutError` when the run
    /// passed its time limit.
    pub name: String,
    /// Its message.
    pub value: String,
    /// The formatted traceback, through the code's own frames only.
    pub traceback: String,
}
