//! Sandbox API types.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/sandboxes`. Every limit is optional and capped by the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxRequest {
    /// Display name (1–64 characters); defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// Image: `host` (the default; the host's programs, read-only).
    #[serde(default)]
    pub image: Option<String>,
    /// Memory, MiB (16 up to the plan's limit).
    #[serde(default)]
    pub memory_mb: Option<i64>,
    /// CPU, thousandths of a core (100 up to the plan's CPUs × 1000).
    #[serde(default)]
    pub cpu_millicores: Option<i64>,
    /// Writable space (`/tmp`), MiB (1 up to the plan's disk limit).
    #[serde(default)]
    pub disk_mb: Option<i64>,
}

/// A sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxResponse {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Image.
    pub image: String,
    /// `creating`, `running` or `error`.
    pub state: String,
    /// Why it is in `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Memory, MiB.
    pub memory_mb: i64,
    /// CPU, thousandths of a core.
    pub cpu_millicores: i64,
    /// Processes and threads.
    pub pids: i64,
    /// Writable space, MiB.
    pub disk_mb: i64,
    /// Who created it.
    pub created_by: String,
    /// Created (RFC 3339).
    pub created_at: String,
}

/// A page of sandboxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxPage {
    /// The sandboxes, oldest first.
    pub items: Vec<SandboxResponse>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/sandboxes/{id}/exec`: `command` (run by `/bin/sh -c`) or `argv`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequestBody {
    /// A shell command line.
    #[serde(default)]
    pub command: Option<String>,
    /// Program and arguments, run directly.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    /// Extra environment (on top of `PATH`, `HOME`, `LANG`).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Working directory (default `/tmp`).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Text for standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Kill after this many milliseconds (default 30 000; at most the plan's time limit).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}
