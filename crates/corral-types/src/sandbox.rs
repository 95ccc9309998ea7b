//! Sandbox API types.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/sandboxes`. Every field is optional; resources are capped
/// by the plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxRequest {
    /// Display name (1–64 characters).
    #[serde(default)]
    pub name: Option<String>,
    /// Image: `host` (the default; the host's programs, read-only).
    #[serde(default)]
    pub image: Option<String>,
    /// CPU, memory, disk and processes.
    #[serde(default)]
    pub resources: Resources,
    /// Environment every command in the sandbox starts with.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Free-form labels (at most 16; keys and values up to 64 characters).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Stop the sandbox after this many minutes without an exec, file
    /// operation or terminal input (1–10 080; default: never).
    #[serde(default)]
    pub auto_stop_minutes: Option<i64>,
    /// Delete the sandbox after it has been stopped this long (1–525 600;
    /// default: never).
    #[serde(default)]
    pub auto_delete_minutes: Option<i64>,
}

/// `PATCH /api/v1/sandboxes/{id}`: each field optional; `null` for a
/// minutes field turns that automatic step off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSandboxRequest {
    /// Display name (1–64 characters).
    #[serde(default)]
    pub name: Option<String>,
    /// Replaces all labels.
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// Idle minutes before an automatic stop (`null`: never).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub auto_stop_minutes: Option<Option<i64>>,
    /// Stopped minutes before an automatic delete (`null`: never).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub auto_delete_minutes: Option<Option<i64>>,
}

/// A field that is present, even as `null` (absent stays `None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Resources of a sandbox; each optional, capped by the plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU cores (0.1 up to the plan's CPUs; default 1).
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Memory, MiB (16 up to the plan's limit).
    #[serde(default)]
    pub memory_mb: Option<i64>,
    /// Writable space (`/tmp`), MiB (1 up to the plan's disk limit).
    #[serde(default)]
    pub disk_mb: Option<i64>,
    /// Processes and threads (16 to 1024; default 256).
    #[serde(default)]
    pub pids: Option<i64>,
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
    /// `creating`, `running`, `paused`, `stopped`, `starting` or `error`.
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
    /// The org it belongs to.
    #[serde(default)]
    pub org_id: String,
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Idle minutes before an automatic stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_stop_minutes: Option<i64>,
    /// Stopped minutes before an automatic delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_delete_minutes: Option<i64>,
    /// Last exec, file operation or terminal input (RFC 3339).
    pub last_active_at: String,
    /// When it was last stopped (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// Its terminals (in the detail of a running sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminals: Option<Vec<crate::terminal::TerminalInfo>>,
    /// Its background processes (in the detail of a running sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<crate::terminal::ProcessInfo>>,
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
    /// Keep at most this many bytes of each of stdout and stderr (default
    /// 1 048 576; at most the server's `sandbox.exec_max_output_bytes`,
    /// 8 MiB unless configured). Past it the output is dropped, the program
    /// runs on, and the result says `truncated: true`.
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
    /// Keep the program's standard input open for
    /// `POST /api/v1/sandboxes/{id}/exec/{exec_id}/stdin` (event streams
    /// only, and not with `stdin`): the stream's first event is then
    /// `started` (`{"exec_id": …}`). The program sees end of file when a
    /// write says `close`, or when it ends.
    #[serde(default)]
    pub stream_stdin: bool,
}

/// The first event of an exec stream with `stream_stdin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecStarted {
    /// Names the running exec in `POST …/exec/{exec_id}/stdin`.
    pub exec_id: String,
}

/// `POST /api/v1/sandboxes/{id}/files/mkdir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    /// Absolute path.
    pub path: String,
    /// Create missing parents too.
    #[serde(default)]
    pub parents: bool,
}

/// `POST /api/v1/sandboxes/{id}/files/move`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// Absolute source path.
    pub from: String,
    /// Absolute destination path.
    pub to: String,
}

/// `POST /api/v1/sandboxes/{id}/files/delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// Absolute path.
    pub path: String,
    /// Delete a directory and everything in it.
    #[serde(default)]
    pub recursive: bool,
}

/// `POST /api/v1/sandboxes/{id}/files/chmod`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChmodRequest {
    /// Absolute path.
    pub path: String,
    /// Octal permission bits, such as `"755"`.
    pub mode: String,
}

/// `POST /api/v1/sandboxes/{id}/files/replace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceRequest {
    /// Absolute path of a UTF-8 text file.
    pub path: String,
    /// Literal text to replace (not empty).
    pub find: String,
    /// What replaces each occurrence.
    pub replace: String,
}

/// How many occurrences a replace changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplaceResponse {
    /// Occurrences replaced (0: the file is unchanged).
    pub replaced: u64,
}

/// `GET /api/v1/sandboxes/{id}/files/search`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SearchResponse {
    /// Matching paths (and lines, for a content search), in walk order.
    pub matches: Vec<crate::agent::SearchMatch>,
    /// Whether there were more than were returned.
    pub truncated: bool,
}

/// `GET /api/v1/sandboxes/{id}/stats`: what a sandbox uses now (its
/// cgroup's counters, as the OCI runtime reports them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxStats {
    /// CPU time used since it started, milliseconds.
    pub cpu_ms: u64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Most memory used at once, bytes (0 where the host does not record it).
    pub memory_peak_bytes: u64,
    /// Its memory limit, bytes.
    pub memory_limit_bytes: u64,
    /// Processes and threads now.
    pub pids: u64,
    /// Its process limit.
    pub pids_limit: u64,
}
