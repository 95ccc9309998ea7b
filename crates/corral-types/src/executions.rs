//! Executions (the judge) and the languages they run.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Limits of one execution; each defaults to the language's and is capped
/// by the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionLimits {
    /// CPU time of the run (compilation has its own allowance), ms: the
    /// CPU its sandbox's cgroup counts, every process of the run included;
    /// past it the run is killed and its verdict is `time_limit`.
    #[serde(default)]
    pub time_ms: Option<u64>,
    /// Wall-clock time of the run, ms (default: 3 × `time_ms` + 2 s, at
    /// most 4 × the plan's longest execution): ends a run that sleeps or
    /// waits on input; its verdict is then `time_limit` too. Time spent
    /// waiting for a turn does not count.
    #[serde(default)]
    pub wall_time_ms: Option<u64>,
    /// Memory, MiB.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Output kept per stream, KiB.
    #[serde(default)]
    pub output_kb: Option<u64>,
}

/// An extra file next to the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionFile {
    /// File name (no directories; 1–100 characters of `[A-Za-z0-9._-]`).
    pub name: String,
    /// Its text.
    pub content: String,
}

/// `POST /api/v1/executions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExecutionRequest {
    /// A language from `GET /api/v1/languages`.
    pub language: String,
    /// Source code (at most 256 KiB).
    pub code: String,
    /// Standard input (at most 1 MiB).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Extra files beside the source (at most 16).
    #[serde(default)]
    pub files: Vec<ExecutionFile>,
    /// With it, output that differs (ignoring trailing whitespace) is
    /// `wrong_answer`.
    #[serde(default)]
    pub expected_output: Option<String>,
    /// Limits (default: the language's; capped by the plan).
    #[serde(default)]
    pub limits: ExecutionLimits,
    /// Answer with the finished result (else 202 at once).
    #[serde(default)]
    pub wait: bool,
    /// POST the finished result here (https or http to a public address;
    /// signed with `X-Corral-Signature`).
    #[serde(default)]
    pub callback_url: Option<String>,
}

/// An execution and, once finished, its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecutionResponse {
    /// Id.
    pub id: String,
    /// Language.
    pub language: String,
    /// `queued`, `running`, `ok`, `wrong_answer`, `compile_error`,
    /// `runtime_error`, `time_limit`, `memory_limit`, `output_limit` or
    /// `internal_error`.
    pub status: String,
    /// Exit code of the program.
    pub exit_code: Option<i64>,
    /// The signal that ended it.
    pub signal: Option<i64>,
    /// Standard output (at most the output limit).
    pub stdout: String,
    /// Standard error (at most the output limit).
    pub stderr: String,
    /// What the compiler said.
    pub compile_output: String,
    /// CPU time of the run, ms.
    pub time_ms: Option<i64>,
    /// Wall time of the run, ms.
    pub wall_ms: Option<i64>,
    /// Peak memory of the run, KiB.
    pub memory_kb: Option<i64>,
    /// The limits it ran under.
    pub limits: ExecutionLimits,
    /// The batch it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Why it is `internal_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// A page of executions, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecutionPage {
    /// The executions.
    pub items: Vec<ExecutionResponse>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/executions/batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1–100 executions (their `wait` must be false).
    pub executions: Vec<CreateExecutionRequest>,
}

/// A batch and its executions, in the order they were given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// Batch id.
    pub id: String,
    /// How many have finished.
    pub finished: usize,
    /// How many there are.
    pub total: usize,
    /// The executions.
    pub executions: Vec<ExecutionResponse>,
}

/// A language executions can use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LanguageResponse {
    /// Its name in requests.
    pub name: String,
    /// For people.
    pub display_name: String,
    /// Whether a compile step runs first.
    pub compiled: bool,
    /// The file the source is written to.
    pub source_file: String,
    /// Default limits.
    pub limits: ExecutionLimits,
}

/// `POST /api/v1/library/{id}/run`: runs a snippet (yours or a public one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSnippetRequest {
    /// Standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Answer with the finished result (default) or 202 at once.
    #[serde(default = "yes")]
    pub wait: bool,
    /// Limits (default: the language's; capped by the plan).
    #[serde(default)]
    pub limits: ExecutionLimits,
}

fn yes() -> bool {
    true
}
