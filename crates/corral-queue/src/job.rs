//! What a job is: the enqueue request, the leased job a worker holds, and
//! the records the admin side reads.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::QueueError;

/// The queue a job goes to when none is named.
pub const DEFAULT_QUEUE: &str = "default";

/// Retry delays: exponential from `base`, capped at `max`, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry (before jitter).
    pub base: Duration,
    /// The longest delay (before jitter).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
        }
    }
}

impl Backoff {
    /// The delay after the `spent`-th failed attempt (1 for the first), with
    /// "equal jitter": half the exponential step is fixed, the other half is
    /// `unit` (in `[0, 1)`) of it. Delays therefore still grow with every
    /// attempt, while workers that failed together spread out.
    pub fn delay_with(&self, spent: u32, unit: f64) -> Duration {
        let base = self.base.as_millis().min(u128::from(u64::MAX)) as f64;
        let cap = self.max.as_millis().min(u128::from(u64::MAX)) as f64;
        let exponent = spent.saturating_sub(1).min(62);
        let step = (base * 2f64.powi(exponent as i32)).min(cap);
        let jittered = step / 2.0 + step / 2.0 * unit.clamp(0.0, 1.0);
        Duration::from_millis(jittered as u64)
    }

    /// [`Backoff::delay_with`] with a random jitter.
    pub fn delay(&self, spent: u32) -> Duration {
        self.delay_with(spent, rand::random::<f64>())
    }
}

/// When a new job becomes ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunAt {
    /// At once.
    Now,
    /// This long after the enqueue (by the queue's clock).
    After(Duration),
    /// At this Unix ms time.
    At(i64),
}

/// A job to enqueue; build with [`NewJob::new`] and the setters.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub(crate) queue: String,
    pub(crate) kind: String,
    pub(crate) payload: Value,
    pub(crate) priority: i64,
    pub(crate) run_at: RunAt,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) unique_key: Option<String>,
    pub(crate) rate_key: Option<String>,
    pub(crate) sensitive: bool,
}

impl NewJob {
    /// A job of `kind` (the handler that runs it) with a JSON payload, on the
    /// default queue, priority 0, ready now, 5 attempts, default backoff.
    pub fn new(kind: impl Into<String>, payload: Value) -> NewJob {
        NewJob {
            queue: DEFAULT_QUEUE.to_owned(),
            kind: kind.into(),
            payload,
            priority: 0,
            run_at: RunAt::Now,
            max_attempts: 5,
            backoff: Backoff::default(),
            unique_key: None,
            rate_key: None,
            sensitive: false,
        }
    }

    /// [`NewJob::new`] with a payload serialized from `payload`.
    pub fn json(kind: impl Into<String>, payload: &impl Serialize) -> Result<NewJob, QueueError> {
        let value = serde_json::to_value(payload).map_err(QueueError::Payload)?;
        Ok(NewJob::new(kind, value))
    }

    /// The named queue to put it on.
    pub fn queue(mut self, queue: impl Into<String>) -> NewJob {
        self.queue = queue.into();
        self
    }

    /// Higher runs first among ready jobs of a queue.
    pub fn priority(mut self, priority: i64) -> NewJob {
        self.priority = priority;
        self
    }

    /// Ready only after `delay`.
    pub fn delay(mut self, delay: Duration) -> NewJob {
        self.run_at = RunAt::After(delay);
        self
    }

    /// Ready only at `unix_ms`.
    pub fn run_at(mut self, unix_ms: i64) -> NewJob {
        self.run_at = RunAt::At(unix_ms);
        self
    }

    /// Attempts before the job is kept as failed (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> NewJob {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The retry delays.
    pub fn backoff(mut self, backoff: Backoff) -> NewJob {
        self.backoff = backoff;
        self
    }

    /// At most one job with this key is kept: a second enqueue while the
    /// first is kept (in any state, until cleared or pruned) returns the
    /// first's id. Put a date or a version in the key to allow repeats.
    pub fn unique(mut self, key: impl Into<String>) -> NewJob {
        self.unique_key = Some(key.into());
        self
    }

    /// The key of per-key rate limits ([`crate::RateScope::EachKey`]), e.g. an org id.
    pub fn rate_key(mut self, key: impl Into<String>) -> NewJob {
        self.rate_key = Some(key.into());
        self
    }

    /// Encrypt the payload at rest (needs the queue's encryption key).
    pub fn sensitive(mut self) -> NewJob {
        self.sensitive = true;
        self
    }

    /// The queue it goes to.
    pub fn queue_name(&self) -> &str {
        &self.queue
    }

    /// The kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job with this id.
    Created(String),
    /// A job with the same unique key is already kept; this is its id.
    Duplicate(String),
}

impl Enqueued {
    /// The id of the job, new or existing.
    pub fn id(&self) -> &str {
        match self {
            Enqueued::Created(id) | Enqueued::Duplicate(id) => id,
        }
    }

    /// Whether a new job was created.
    pub fn is_created(&self) -> bool {
        matches!(self, Enqueued::Created(_))
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for its `run_at` or a worker.
    Pending,
    /// Leased to a worker.
    Running,
    /// Done.
    Completed,
    /// Out of attempts, or failed permanently; kept until retried or cleared.
    Failed,
    /// A chain member behind an unfinished predecessor, or a batch callback.
    Waiting,
    /// A chain member after an earlier member failed.
    Cancelled,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 6] = [
        JobState::Pending,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Waiting,
        JobState::Cancelled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Waiting => "waiting",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The state a stored name denotes.
    pub fn parse(name: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A job as the admin side sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Id (UUIDv7).
    pub id: String,
    /// Queue.
    pub queue: String,
    /// Kind.
    pub kind: String,
    /// State.
    pub state: JobState,
    /// Priority.
    pub priority: i64,
    /// Attempts spent (claims not given back).
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When it is (or was) ready (Unix ms).
    pub run_at: i64,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// The payload; `None` for sensitive jobs, which are never shown.
    pub payload: Option<Value>,
    /// Unique key.
    pub unique_key: Option<String>,
    /// The batch it belongs to.
    pub batch_id: Option<String>,
    /// The chain it belongs to.
    pub chain_id: Option<String>,
    /// Enqueued (Unix ms).
    pub created_at: i64,
    /// The last claim (Unix ms).
    pub started_at: Option<i64>,
    /// Completed or failed (Unix ms).
    pub finished_at: Option<i64>,
}

/// Which jobs [`crate::Queue::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<JobState>,
    /// Only jobs with a smaller id (the previous page's last id).
    pub before: Option<String>,
    /// At most this many (default 50, at most 1000).
    pub limit: Option<u32>,
}

/// A job leased to a worker. `attempt` is the fencing token: everything the
/// worker reports about the job is recorded only while the job is still
/// leased under this attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Id.
    pub id: String,
    /// Queue.
    pub queue: String,
    /// Kind.
    pub kind: String,
    /// The payload (decrypted).
    pub payload: Value,
    /// The fencing token: grows by one on every claim.
    pub attempt: i64,
    /// Attempts spent, including this one.
    pub spent: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Retry delays.
    pub backoff: Backoff,
    /// Rate-limit key.
    pub rate_key: Option<String>,
    /// Batch membership.
    pub batch_id: Option<String>,
    /// The batch this job is the completion callback of.
    pub callback_for: Option<String>,
    /// When the job was ready (Unix ms, queue clock).
    pub run_at: i64,
    /// The queue clock when it was claimed (Unix ms).
    pub claimed_at: i64,
}

/// What a failure report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Will run again at this time (Unix ms).
    Retrying {
        /// When.
        at: i64,
    },
    /// Out of attempts (or permanent): kept as failed.
    Failed,
}

/// A batch to enqueue: jobs that run independently, a progress count, and
/// an optional callback job enqueued once every member has finished.
#[derive(Debug, Clone, Default)]
pub struct NewBatch {
    /// The members.
    pub jobs: Vec<NewJob>,
    /// How many members may fail with the batch still counted a success.
    pub allowed_failures: u64,
    /// Runs once every member has completed or failed; its handler can read
    /// the outcome with [`crate::Queue::batch`] (its context names the batch).
    pub callback: Option<NewJob>,
}

/// A batch's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStatus {
    /// Id.
    pub id: String,
    /// Members.
    pub total: u64,
    /// Members completed.
    pub succeeded: u64,
    /// Members failed for good.
    pub failed: u64,
    /// Failures allowed.
    pub allowed_failures: u64,
    /// The callback job.
    pub callback_job_id: Option<String>,
    /// When the last member finished (Unix ms).
    pub finished_at: Option<i64>,
}

impl BatchStatus {
    /// Every member has finished.
    pub fn is_finished(&self) -> bool {
        self.finished_at.is_some()
    }

    /// Finished with no more failures than allowed.
    pub fn is_success(&self) -> bool {
        self.is_finished() && self.failed <= self.allowed_failures
    }
}

/// What [`crate::Queue::enqueue_batch`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchIds {
    /// The batch.
    pub batch_id: String,
    /// Its members, in the order given.
    pub job_ids: Vec<String>,
    /// The callback job.
    pub callback_job_id: Option<String>,
}

/// What [`crate::Queue::enqueue_chain`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainIds {
    /// The chain.
    pub chain_id: String,
    /// Its members, in running order.
    pub job_ids: Vec<String>,
}

/// One queue's numbers, for `/metrics` and the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Queue name.
    pub queue: String,
    /// Ready now.
    pub pending: u64,
    /// Pending with a future `run_at` (delayed or backing off).
    pub scheduled: u64,
    /// Chain members and batch callbacks not yet released.
    pub waiting: u64,
    /// Leased to workers.
    pub running: u64,
    /// Kept as failed.
    pub failed: u64,
    /// Completed and still kept.
    pub completed: u64,
    /// Completed in the last minute (throughput).
    pub completed_last_minute: u64,
    /// How long the oldest ready job has waited (ms).
    pub oldest_pending_ms: u64,
    /// Mean wait from ready to claim of jobs completed in the last five
    /// minutes (ms); `None` when there were none or the driver does not keep it.
    pub mean_wait_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spent: u32, unit: f64, expected_ms: u64) {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        assert_eq!(
            backoff.delay_with(spent, unit),
            Duration::from_millis(expected_ms),
            "attempt {spent}, jitter {unit}"
        );
    }

    #[test]
    fn backoff_doubles_with_half_jitter_and_caps() {
        check(1, 0.0, 50);
        check(1, 1.0, 100);
        check(2, 0.0, 100);
        check(2, 0.5, 150);
        check(3, 0.0, 200);
        check(4, 1.0, 800);
        check(5, 0.0, 500);
        check(40, 1.0, 1000);
        check(u32::MAX, 0.0, 500);
    }

    #[test]
    fn random_backoff_stays_in_its_band() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(60),
        };
        for _ in 0..200 {
            let d = backoff.delay(3).as_millis();
            assert!((200..=400).contains(&d), "{d}");
        }
    }

    #[test]
    fn states_round_trip() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("nope"), None);
    }
}
