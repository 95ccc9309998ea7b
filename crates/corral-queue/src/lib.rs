//! Corral's durable job queue.
//!
//! Jobs live in the store's database (SQLite or PostgreSQL, the `queue_*`
//! tables of migration 0011) or, when configured, in Redis Streams. Either
//! way the contract is the same:
//!
//! - **At-least-once.** A claim is a lease that the worker keeps alive by
//!   heartbeating; a job whose lease runs out goes back to the queue and
//!   runs again (handlers must be idempotent).
//! - **Fencing.** Every claim increments the job's attempt number, and a
//!   completion, failure, heartbeat or release is written only while the
//!   job is still leased under the attempt the worker claimed. A worker
//!   that was paused past its lease cannot overwrite the result of the
//!   worker that reclaimed the job ([`QueueError::LeaseLost`]).
//! - **One clock.** Leases, delays and backoff use the database's (or
//!   Redis's) clock, never a replica's.
//!
//! [`Queue`] is the handle for enqueueing and administration; [`Workers`]
//! runs handlers; [`Scheduler`] enqueues periodic jobs.

mod driver;
mod error;
mod job;
mod middleware;
mod periodic;
mod redis_streams;
mod seal;
mod sql;
mod worker;

pub use error::QueueError;
pub use job::{
    Backoff, BatchIds, BatchStatus, ChainIds, Claimed, DEFAULT_QUEUE, Enqueued, FailOutcome,
    JobFilter, JobRecord, JobState, NewBatch, NewJob, QueueStats,
};
pub use middleware::{Logging, Middleware, Next, Throttle, Timing, TimingStats};
pub use periodic::{PeriodicJob, Scheduler, SchedulerHandle, TickReport};
pub use seal::EncryptionKey;
pub use worker::{
    JobContext, JobError, JobResult, ShutdownReport, WorkerHandle, WorkerOptions, Workers,
};

use std::sync::Arc;
use std::time::Duration;

use corral_core::id::new_id;
use corral_store::Store;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use serde_json::Value;
use tokio::sync::Notify;

use crate::driver::{Ending, RawBatch, RawClaim, RawRecord, RawStats, StoredJob};
use crate::job::RunAt;
use crate::redis_streams::RedisDriver;
use crate::seal::Sealer;
use crate::sql::SqlDriver;

/// Where jobs are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DriverConfig {
    /// In the store's database (the default; transactional enqueue).
    #[default]
    Database,
    /// In Redis Streams with consumer groups (one Redis server, not a cluster).
    Redis {
        /// `redis://…`.
        url: String,
        /// Prefix of every key, so several installations or tests can share a
        /// server. It becomes a hash tag (`{prefix}`), keeping a queue's keys
        /// together.
        prefix: String,
    },
}

/// A rate limit: at most `max` jobs started per `per` window (fixed windows,
/// shared by every worker of every replica).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// What is limited.
    pub scope: RateScope,
    /// Jobs per window.
    pub max: u64,
    /// The window.
    pub per: Duration,
}

/// What a [`RateLimit`] counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateScope {
    /// Every job of this queue.
    Queue(String),
    /// The jobs of this queue with the same [`NewJob::rate_key`], per key.
    EachKey(String),
}

/// How to open a [`Queue`].
#[derive(Debug, Clone, Default)]
pub struct QueueConfig {
    /// Where jobs are kept.
    pub driver: DriverConfig,
    /// The key for [`NewJob::sensitive`] payloads; without one, sensitive
    /// jobs are refused.
    pub encryption_key: Option<EncryptionKey>,
    /// Rate limits applied when jobs are claimed.
    pub rate_limits: Vec<RateLimit>,
}

#[derive(Debug, Clone)]
enum Driver {
    Sql(SqlDriver),
    Redis(RedisDriver),
}

/// Calls the same method on whichever driver is configured.
macro_rules! on_driver {
    ($self:ident, $d:ident => $call:expr) => {
        match &$self.inner.driver {
            Driver::Sql($d) => $call,
            Driver::Redis($d) => $call,
        }
    };
}

struct Inner {
    driver: Driver,
    sealer: Option<Sealer>,
    rate_limits: Vec<RateLimit>,
    wake: Notify,
}

/// The queue handle; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("driver", &self.driver_name())
            .finish_non_exhaustive()
    }
}

/// How many claims in a row may be deferred by rate limits before a claim
/// gives up and reports nothing ready.
const MAX_DEFERRALS: usize = 32;

impl Queue {
    /// Opens the queue on `store` (already migrated), or on Redis when the
    /// configuration says so.
    pub async fn open(store: Store, config: QueueConfig) -> Result<Queue, QueueError> {
        let driver = match &config.driver {
            DriverConfig::Database => Driver::Sql(SqlDriver::new(store)),
            DriverConfig::Redis { url, prefix } => {
                Driver::Redis(RedisDriver::connect(url, prefix, store).await?)
            }
        };
        Ok(Queue {
            inner: Arc::new(Inner {
                driver,
                sealer: config.encryption_key.as_ref().map(Sealer::new),
                rate_limits: config.rate_limits,
                wake: Notify::new(),
            }),
        })
    }

    /// `database` or `redis`.
    pub fn driver_name(&self) -> &'static str {
        match self.inner.driver {
            Driver::Sql(_) => "database",
            Driver::Redis(_) => "redis",
        }
    }

    /// The store this queue was opened with.
    pub fn store(&self) -> &Store {
        match &self.inner.driver {
            Driver::Sql(d) => d.store(),
            Driver::Redis(d) => d.store(),
        }
    }

    /// Wakes this process's idle workers (enqueues through this handle do so
    /// themselves; other replicas are woken by the driver).
    pub fn wake(&self) {
        self.inner.wake.notify_waiters();
    }

    pub(crate) fn wake_signal(&self) -> &Notify {
        &self.inner.wake
    }

    fn stored(&self, id: String, job: &NewJob) -> Result<StoredJob, QueueError> {
        let plain = job.payload.to_string();
        let payload = if job.sensitive {
            let sealer = self
                .inner
                .sealer
                .as_ref()
                .ok_or_else(|| QueueError::NoKey { id: id.clone() })?;
            sealer.seal(&id, &plain)?
        } else {
            plain
        };
        let (run_at, delay_ms) = match job.run_at {
            RunAt::Now => (None, 0),
            RunAt::After(delay) => (None, millis(delay)),
            RunAt::At(ms) => (Some(ms.max(0)), 0),
        };
        Ok(StoredJob {
            id,
            queue: job.queue.clone(),
            kind: job.kind.clone(),
            payload,
            sensitive: job.sensitive,
            waiting: false,
            priority: job.priority,
            run_at,
            delay_ms,
            max_attempts: i64::from(job.max_attempts),
            backoff_base_ms: millis(job.backoff.base),
            backoff_max_ms: millis(job.backoff.max),
            unique_key: job.unique_key.clone(),
            rate_key: job.rate_key.clone(),
            batch_id: None,
            callback_for: None,
            chain_id: None,
            chain_pos: None,
        })
    }

    /// Enqueues a job. With a unique key that a kept job already has, nothing
    /// is added and that job's id is returned as [`Enqueued::Duplicate`].
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, QueueError> {
        let stored = self.stored(new_id(), &job)?;
        let done = on_driver!(self, d => d.enqueue(&stored).await)?;
        self.wake();
        Ok(done)
    }

    /// Enqueues many independent jobs in one round trip (one transaction on
    /// the database, one script on Redis): all of them or, on error, none.
    /// Unlike a batch, members may carry unique keys; each answer says, in
    /// the order given, whether its job was created or which kept job (or
    /// earlier member of the same call) already has its key.
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let rows = jobs
            .iter()
            .map(|job| self.stored(new_id(), job))
            .collect::<Result<Vec<_>, _>>()?;
        let done = on_driver!(self, d => d.enqueue_many(&rows).await)?;
        self.wake();
        Ok(done)
    }

    /// Enqueues a job inside the caller's transaction (begun on
    /// [`Store::pool`]): it exists, and workers hear of it, only if the
    /// transaction commits. Database driver only. On SQLite, local workers
    /// find it at their next poll unless the caller calls [`Queue::wake`]
    /// after committing.
    pub async fn enqueue_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        job: NewJob,
    ) -> Result<Enqueued, QueueError> {
        let Driver::Sql(driver) = &self.inner.driver else {
            return Err(QueueError::Unsupported {
                what: "transactional enqueue",
                driver: "redis",
            });
        };
        let stored = self.stored(new_id(), &job)?;
        driver.insert(conn, &stored).await
    }

    /// Enqueues a batch: its members, a progress record and the callback
    /// (held back until every member has completed or failed). All or
    /// nothing. Members cannot carry unique keys.
    pub async fn enqueue_batch(&self, batch: NewBatch) -> Result<BatchIds, QueueError> {
        if batch.jobs.iter().any(|j| j.unique_key.is_some()) {
            return Err(QueueError::Invalid(
                "batch members cannot carry unique keys".to_owned(),
            ));
        }
        let batch_id = new_id();
        let mut rows = Vec::with_capacity(batch.jobs.len() + 1);
        let callback_job_id = match &batch.callback {
            Some(callback) => {
                let mut row = self.stored(new_id(), callback)?;
                row.waiting = true;
                row.callback_for = Some(batch_id.clone());
                let id = row.id.clone();
                rows.push(row);
                Some(id)
            }
            None => None,
        };
        let mut job_ids = Vec::with_capacity(batch.jobs.len());
        for job in &batch.jobs {
            let mut row = self.stored(new_id(), job)?;
            row.batch_id = Some(batch_id.clone());
            job_ids.push(row.id.clone());
            rows.push(row);
        }
        let allowed = i64::try_from(batch.allowed_failures).unwrap_or(i64::MAX);
        let spec = Some((batch_id.as_str(), allowed, callback_job_id.as_deref()));
        on_driver!(self, d => d.enqueue_all(&rows, spec).await)?;
        self.wake();
        Ok(BatchIds {
            batch_id,
            job_ids,
            callback_job_id,
        })
    }

    /// Enqueues a chain: the jobs run one after another in the order given,
    /// each only after the previous one completed; a member that fails for
    /// good cancels the rest. All or nothing. Members cannot carry unique keys.
    pub async fn enqueue_chain(&self, jobs: Vec<NewJob>) -> Result<ChainIds, QueueError> {
        if jobs.is_empty() {
            return Err(QueueError::Invalid(
                "a chain needs at least one job".to_owned(),
            ));
        }
        if jobs.iter().any(|j| j.unique_key.is_some()) {
            return Err(QueueError::Invalid(
                "chain members cannot carry unique keys".to_owned(),
            ));
        }
        let chain_id = new_id();
        let mut rows = Vec::with_capacity(jobs.len());
        for (pos, job) in jobs.iter().enumerate() {
            let mut row = self.stored(new_id(), job)?;
            row.chain_id = Some(chain_id.clone());
            row.chain_pos = Some(pos as i64);
            row.waiting = pos > 0;
            rows.push(row);
        }
        let job_ids = rows.iter().map(|r| r.id.clone()).collect();
        on_driver!(self, d => d.enqueue_all(&rows, None).await)?;
        self.wake();
        Ok(ChainIds { chain_id, job_ids })
    }

    /// Leases the best ready job of `queues` (highest priority, then oldest
    /// `run_at`) to `worker` for `lease`. A job over a rate limit is put back
    /// until its window ends (its attempt given back) and the next is tried.
    /// A job whose payload cannot be opened is failed for good.
    pub async fn claim(
        &self,
        queues: &[String],
        worker: &str,
        lease: Duration,
    ) -> Result<Option<Claimed>, QueueError> {
        Ok(self.claim_many(queues, worker, lease, 1).await?.pop())
    }

    /// Leases up to `max` of the best ready jobs of `queues` at once (one
    /// statement on the database), best first. Each is its own lease under
    /// its own attempt, exactly as [`Queue::claim`] would give it; rate
    /// limits and unreadable payloads are handled per job as there.
    pub async fn claim_many(
        &self,
        queues: &[String],
        worker: &str,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claimed>, QueueError> {
        let lease_ms = millis(lease).max(1);
        let mut claimed = Vec::new();
        for _ in 0..MAX_DEFERRALS {
            let want = max - claimed.len();
            let raws = on_driver!(self, d => d.claim(queues, worker, lease_ms, want).await)?;
            if raws.is_empty() {
                break;
            }
            for raw in raws {
                if let Some(until) = self.over_rate_limit(&raw).await? {
                    let delay_ms = (until - raw.db_now).max(1);
                    let ending = Ending::Released { delay_ms };
                    on_driver!(self, d => d.finish(&raw.id, raw.attempt, ending).await)?;
                    continue;
                }
                let (id, attempt) = (raw.id.clone(), raw.attempt);
                match self.open_claim(raw) {
                    Ok(job) => claimed.push(job),
                    Err(error) => {
                        tracing::error!(job = %id, %error, "failing a job whose payload cannot be read");
                        let message = error.to_string();
                        let ending = Ending::Failed { error: &message };
                        on_driver!(self, d => d.finish(&id, attempt, ending).await)?;
                    }
                }
            }
            if !claimed.is_empty() {
                break;
            }
        }
        Ok(claimed)
    }

    /// The end of the window a claimed job must wait for, if a rate limit
    /// that applies to it is used up.
    async fn over_rate_limit(&self, raw: &RawClaim) -> Result<Option<i64>, QueueError> {
        let mut until = None;
        for limit in &self.inner.rate_limits {
            let name = match (&limit.scope, &raw.rate_key) {
                (RateScope::Queue(q), _) if *q == raw.queue => format!("queue-rate:{q}"),
                (RateScope::EachKey(q), Some(key)) if *q == raw.queue => {
                    format!("queue-rate:{q}:key:{key}")
                }
                _ => continue,
            };
            let window = millis(limit.per).max(1);
            let start = raw.db_now - raw.db_now.rem_euclid(window);
            let count = on_driver!(self, d => d.rate_hit(&name, start, window).await)?;
            if u64::try_from(count).unwrap_or(0) > limit.max {
                until = Some(until.map_or(start + window, |u: i64| u.max(start + window)));
            }
        }
        Ok(until)
    }

    fn open_payload(&self, id: &str, stored: &str, sensitive: bool) -> Result<Value, QueueError> {
        let plain;
        let text = if sensitive {
            let sealer = self
                .inner
                .sealer
                .as_ref()
                .ok_or_else(|| QueueError::NoKey { id: id.to_owned() })?;
            plain = sealer.open(id, stored)?;
            plain.as_str()
        } else {
            stored
        };
        serde_json::from_str(text).map_err(QueueError::Payload)
    }

    fn open_claim(&self, raw: RawClaim) -> Result<Claimed, QueueError> {
        let payload = self.open_payload(&raw.id, &raw.payload, raw.sensitive != 0)?;
        Ok(Claimed {
            payload,
            spent: u32::try_from(raw.attempt - raw.released).unwrap_or(u32::MAX),
            max_attempts: u32::try_from(raw.max_attempts).unwrap_or(1),
            backoff: Backoff {
                base: Duration::from_millis(u64::try_from(raw.backoff_base_ms).unwrap_or(0)),
                max: Duration::from_millis(u64::try_from(raw.backoff_max_ms).unwrap_or(0)),
            },
            attempt: raw.attempt,
            run_at: raw.run_at,
            claimed_at: raw.db_now,
            id: raw.id,
            queue: raw.queue,
            kind: raw.kind,
            rate_key: raw.rate_key,
            batch_id: raw.batch_id,
            callback_for: raw.callback_for,
        })
    }

    /// Completes `(id, attempt)` pairs, answering whether each lease was held.
    pub(crate) async fn complete_fenced(
        &self,
        jobs: &[(&str, i64)],
    ) -> Result<Vec<bool>, QueueError> {
        let held = on_driver!(self, d => d.complete_many(jobs).await)?;
        self.wake();
        Ok(held)
    }

    pub(crate) fn lost_lease(job: &Claimed) -> QueueError {
        Queue::lost(job)
    }

    fn lost(job: &Claimed) -> QueueError {
        QueueError::LeaseLost {
            id: job.id.clone(),
            attempt: job.attempt,
        }
    }

    /// Extends the lease on `job` to `lease` from now.
    pub async fn heartbeat(&self, job: &Claimed, lease: Duration) -> Result<(), QueueError> {
        let lease_ms = millis(lease).max(1);
        let held = on_driver!(self, d => d.heartbeat(&job.id, job.attempt, lease_ms).await)?;
        if held { Ok(()) } else { Err(Queue::lost(job)) }
    }

    async fn finish(&self, job: &Claimed, ending: Ending<'_>) -> Result<(), QueueError> {
        let held = on_driver!(self, d => d.finish(&job.id, job.attempt, ending).await)?;
        if !held {
            return Err(Queue::lost(job));
        }
        if !matches!(ending, Ending::Failed { .. }) {
            self.wake();
        }
        Ok(())
    }

    /// Records `job` as completed (and moves its batch or chain on).
    pub async fn complete(&self, job: &Claimed) -> Result<(), QueueError> {
        self.finish(job, Ending::Completed).await
    }

    /// Records several jobs as completed, in one statement on the database
    /// for jobs outside batches and chains (the others each in their own
    /// transaction, as [`Queue::complete`] does). Each job is fenced by its
    /// own attempt: the answers, in the order given, are `Ok` or
    /// [`QueueError::LeaseLost`]. An outer error means the database failed
    /// part way: some completions may be recorded, and those that are not
    /// run again once their leases expire.
    pub async fn complete_many(
        &self,
        jobs: &[Claimed],
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<(&str, i64)> = jobs.iter().map(|j| (j.id.as_str(), j.attempt)).collect();
        let held = self.complete_fenced(&pairs).await?;
        Ok(jobs
            .iter()
            .zip(held)
            .map(|(job, held)| if held { Ok(()) } else { Err(Queue::lost(job)) })
            .collect())
    }

    /// Records a failed attempt: retried after the backoff while attempts
    /// remain and `retryable`, else kept as failed with `error`.
    pub async fn fail(
        &self,
        job: &Claimed,
        error: &str,
        retryable: bool,
    ) -> Result<FailOutcome, QueueError> {
        if retryable && job.spent < job.max_attempts {
            let delay_ms = millis(job.backoff.delay(job.spent));
            self.finish(job, Ending::Retry { error, delay_ms }).await?;
            Ok(FailOutcome::Retrying {
                at: job.claimed_at + delay_ms,
            })
        } else {
            self.finish(job, Ending::Failed { error }).await?;
            Ok(FailOutcome::Failed)
        }
    }

    /// Gives `job` back unrun, ready again after `delay`; the attempt does
    /// not count against its budget.
    pub async fn release(&self, job: &Claimed, delay: Duration) -> Result<(), QueueError> {
        let delay_ms = millis(delay);
        self.finish(job, Ending::Released { delay_ms }).await
    }

    /// Returns jobs with expired leases to their queue (or fails them when
    /// that was their last attempt). Workers call this on every poll; it is
    /// safe to call from anywhere, any number of times.
    pub async fn reap_expired(&self) -> Result<u64, QueueError> {
        let n = on_driver!(self, d => d.reap().await)?;
        if n > 0 {
            self.wake();
        }
        Ok(n)
    }

    fn record(&self, raw: RawRecord) -> Result<JobRecord, QueueError> {
        let state = JobState::parse(&raw.state).ok_or_else(|| {
            QueueError::Corrupt(format!("job {} has state {}", raw.id, raw.state))
        })?;
        let payload = if raw.sensitive != 0 {
            None
        } else {
            serde_json::from_str(&raw.payload).ok()
        };
        Ok(JobRecord {
            state,
            priority: raw.priority,
            attempts: u32::try_from(raw.attempt - raw.released).unwrap_or(0),
            max_attempts: u32::try_from(raw.max_attempts).unwrap_or(0),
            run_at: raw.run_at,
            last_error: raw.last_error,
            payload,
            unique_key: raw.unique_key,
            batch_id: raw.batch_id,
            chain_id: raw.chain_id,
            created_at: raw.created_at,
            started_at: raw.started_at,
            finished_at: raw.finished_at,
            id: raw.id,
            queue: raw.queue,
            kind: raw.kind,
        })
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        let raw = on_driver!(self, d => d.job(id).await)?;
        raw.map(|r| self.record(r)).transpose()
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        let raw = on_driver!(self, d => d.list(filter).await)?;
        raw.into_iter().map(|r| self.record(r)).collect()
    }

    /// Failed jobs (of one queue, or all), newest first, at most `limit`.
    pub async fn failed(
        &self,
        queue: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobRecord>, QueueError> {
        self.list(&JobFilter {
            queue: queue.map(str::to_owned),
            state: Some(JobState::Failed),
            before: None,
            limit: Some(limit),
        })
        .await
    }

    /// Puts a failed job back in its queue with a fresh attempt budget (a
    /// chain's cancelled rest waits again behind it). `false` when the job
    /// does not exist or is not failed.
    pub async fn retry(&self, id: &str) -> Result<bool, QueueError> {
        let done = on_driver!(self, d => d.retry(id).await)?;
        if done {
            self.wake();
        }
        Ok(done)
    }

    /// [`Queue::retry`] for every failed job of `queue` (or of all queues).
    pub async fn retry_all(&self, queue: Option<&str>) -> Result<u64, QueueError> {
        let ids = on_driver!(self, d => d.failed_ids(queue).await)?;
        let mut count = 0;
        for id in ids {
            if self.retry(&id).await? {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Deletes every job of `queue` that no worker holds (running jobs
    /// finish; their unique keys are released when they are pruned).
    pub async fn clear(&self, queue: &str) -> Result<u64, QueueError> {
        on_driver!(self, d => d.clear(queue).await)
    }

    /// Deletes completed and cancelled jobs (and finished batches) older
    /// than `age`, releasing their unique keys.
    pub async fn prune(&self, age: Duration) -> Result<u64, QueueError> {
        let age_ms = millis(age);
        on_driver!(self, d => d.prune(age_ms).await)
    }

    /// A batch's progress.
    pub async fn batch(&self, id: &str) -> Result<Option<BatchStatus>, QueueError> {
        let raw: Option<RawBatch> = on_driver!(self, d => d.batch(id).await)?;
        Ok(raw.map(|b| BatchStatus {
            id: b.id,
            total: u64::try_from(b.total).unwrap_or(0),
            succeeded: u64::try_from(b.succeeded).unwrap_or(0),
            failed: u64::try_from(b.failed).unwrap_or(0),
            allowed_failures: u64::try_from(b.allowed_failures).unwrap_or(0),
            callback_job_id: b.callback_job_id,
            finished_at: b.finished_at,
        }))
    }

    /// Numbers per queue (every queue that has kept jobs).
    pub async fn stats(&self) -> Result<Vec<QueueStats>, QueueError> {
        let raw: Vec<RawStats> = on_driver!(self, d => d.stats().await)?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(raw
            .into_iter()
            .map(|s| QueueStats {
                pending: count(s.pending),
                scheduled: count(s.scheduled),
                waiting: count(s.waiting),
                running: count(s.running),
                failed: count(s.failed),
                completed: count(s.completed),
                completed_last_minute: count(s.completed_last_minute),
                oldest_pending_ms: s.oldest_ready.map_or(0, |t| count(s.db_now - t)),
                mean_wait_ms: s.mean_wait_ms.map(count),
                queue: s.queue,
            })
            .collect())
    }

    /// Names of queues that got ready jobs, as other processes report them
    /// (PostgreSQL `NOTIFY`, Redis `PUBLISH`), until the connection drops;
    /// `None` on SQLite, where every enqueue is in this process.
    pub(crate) async fn wake_events(
        &self,
    ) -> Result<Option<BoxStream<'static, String>>, QueueError> {
        match &self.inner.driver {
            Driver::Sql(d) => {
                let Some(listener) = d.listener().await? else {
                    return Ok(None);
                };
                let events = futures_util::stream::unfold(listener, |mut listener| async move {
                    match listener.try_recv().await {
                        Ok(Some(note)) => Some((note.payload().to_owned(), listener)),
                        Ok(None) | Err(_) => None,
                    }
                });
                Ok(Some(events.boxed()))
            }
            Driver::Redis(d) => d.wake_events().await.map(Some),
        }
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
