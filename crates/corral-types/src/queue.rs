//! Wire types of the job queue's admin API (`/api/v1/admin/queues`,
//! `/api/v1/admin/jobs`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One queue's numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueStatsResponse {
    /// Queue name.
    pub queue: String,
    /// Ready now.
    pub pending: u64,
    /// Pending with a future run time (delayed or backing off).
    pub scheduled: u64,
    /// Chain members and batch callbacks not yet released.
    pub waiting: u64,
    /// Leased to workers.
    pub running: u64,
    /// Kept as failed (retry or clear them).
    pub failed: u64,
    /// Completed and still kept.
    pub completed: u64,
    /// Completed in the last minute.
    pub completed_last_minute: u64,
    /// How long the oldest ready job has waited, milliseconds.
    pub oldest_pending_ms: u64,
    /// Mean wait from ready to claim over the last five minutes, milliseconds.
    pub mean_wait_ms: Option<u64>,
}

/// `GET /api/v1/admin/queues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    /// `database` or `redis`.
    pub driver: String,
    /// Every queue that holds a job, by name.
    pub queues: Vec<QueueStatsResponse>,
}

/// A job as administrators see it. Payloads of sensitive jobs are never shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobResponse {
    /// Id.
    pub id: String,
    /// Queue.
    pub queue: String,
    /// Kind, such as `execution.run`.
    pub kind: String,
    /// `pending`, `running`, `completed`, `failed`, `waiting` or `cancelled`.
    pub state: String,
    /// Higher runs first.
    pub priority: i64,
    /// Attempts spent.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When it is (or was) ready (RFC 3339).
    pub run_at: String,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// The JSON payload; absent when the job is sensitive.
    pub payload: Option<serde_json::Value>,
    /// Whether the payload is sealed and withheld.
    pub sensitive: bool,
    /// Dedupe key.
    pub unique_key: Option<String>,
    /// Batch.
    pub batch_id: Option<String>,
    /// Chain.
    pub chain_id: Option<String>,
    /// Enqueued (RFC 3339).
    pub created_at: String,
    /// Last claimed (RFC 3339).
    pub started_at: Option<String>,
    /// Completed or failed (RFC 3339).
    pub finished_at: Option<String>,
}

/// A page of jobs; pass `next_cursor` as `cursor` for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    /// Jobs, newest first.
    pub items: Vec<JobResponse>,
    /// Absent on the last page.
    pub next_cursor: Option<String>,
}

/// What a retry or clear did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueActionResponse {
    /// The queue.
    pub queue: String,
    /// Jobs retried or deleted.
    pub count: u64,
}
