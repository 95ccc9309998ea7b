//! What the queue asks of a driver, in driver-neutral types: rows as
//! stored (payloads still sealed), claims, and transitions fenced by the
//! attempt number.

/// A job row to insert.
#[derive(Debug, Clone)]
pub(crate) struct StoredJob {
    pub id: String,
    pub queue: String,
    pub kind: String,
    /// JSON, or a sealed payload when `sensitive`.
    pub payload: String,
    pub sensitive: bool,
    /// `pending` or `waiting`.
    pub waiting: bool,
    pub priority: i64,
    /// Absolute ready time, or `None` with `delay_ms` after the driver's now.
    pub run_at: Option<i64>,
    pub delay_ms: i64,
    pub max_attempts: i64,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    pub unique_key: Option<String>,
    pub rate_key: Option<String>,
    pub batch_id: Option<String>,
    pub callback_for: Option<String>,
    pub chain_id: Option<String>,
    pub chain_pos: Option<i64>,
}

/// A claimed row, payload still as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RawClaim {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub payload: String,
    pub sensitive: i64,
    pub attempt: i64,
    pub released: i64,
    pub max_attempts: i64,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    pub rate_key: Option<String>,
    pub batch_id: Option<String>,
    pub callback_for: Option<String>,
    pub run_at: i64,
    pub priority: i64,
    pub db_now: i64,
}

/// A stored job for listings, payload still as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RawRecord {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub state: String,
    pub priority: i64,
    pub attempt: i64,
    pub released: i64,
    pub max_attempts: i64,
    pub run_at: i64,
    pub last_error: Option<String>,
    pub payload: String,
    pub sensitive: i64,
    pub unique_key: Option<String>,
    pub batch_id: Option<String>,
    pub chain_id: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// How a leased job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending<'a> {
    Completed,
    /// Back to pending after `delay_ms`, the attempt spent.
    Retry {
        error: &'a str,
        delay_ms: i64,
    },
    /// Kept as failed.
    Failed {
        error: &'a str,
    },
    /// Back to pending after `delay_ms`, the attempt given back.
    Released {
        delay_ms: i64,
    },
}

/// The stats row of one queue, as counted by a driver.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub(crate) struct RawStats {
    pub queue: String,
    pub pending: i64,
    pub scheduled: i64,
    pub waiting: i64,
    pub running: i64,
    pub failed: i64,
    pub completed: i64,
    pub completed_last_minute: i64,
    pub oldest_ready: Option<i64>,
    pub mean_wait_ms: Option<i64>,
    pub db_now: i64,
}

/// Batch row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RawBatch {
    pub id: String,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub allowed_failures: i64,
    pub callback_job_id: Option<String>,
    pub finished_at: Option<i64>,
}
