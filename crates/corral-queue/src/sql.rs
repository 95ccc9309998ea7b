//! The database driver: jobs in the store's database, on SQLite or
//! PostgreSQL through the store's `Any` pool, with portable SQL.
//!
//! Time is the database's clock (`{now}` in the statements below: SQLite's
//! `julianday('now')`, PostgreSQL's `statement_timestamp()`, both fixed for
//! the length of one statement), so leases, delays and backoff mean the
//! same on every replica whatever their clocks say.
//!
//! The claim is one `UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING …`
//! for up to `n` jobs (workers ask for as many as they have free slots).
//! On SQLite the statement holds the single write lock, so two workers can
//! never take the same row; on PostgreSQL the inner select adds
//! `FOR UPDATE SKIP LOCKED` inside `= ANY(ARRAY(…))` (evaluated once), so
//! concurrent claimers skip each other's rows instead of queueing behind
//! them; the locks, taken on each row's latest version with the conditions
//! re-checked, cover a row claimed and committed meanwhile, and the outer
//! update finds the rows by primary key. Each claimed row is its own lease under its own
//! attempt. Completions of jobs outside batches and chains are written many
//! to a statement, each row fenced by its own `(id, attempt)`; batch and
//! chain members complete in a transaction of their own, which moves the
//! batch or chain on.
//!
//! Workers are woken by `NOTIFY corral_queue, '<queue>'`. A transactional
//! enqueue (`enqueue_in`) sends it inside the caller's transaction, so a
//! rolled-back enqueue wakes no one. The queue's own enqueues announce the
//! queue after their commit instead, coalesced by one task per driver into
//! one notifying statement that does not wait for the disk: PostgreSQL
//! serializes the commits of notifying transactions, so a `NOTIFY` inside
//! every enqueue would make enqueues wait for each other's WAL flushes.

use std::collections::HashSet;

use corral_store::{Backend, Store};
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe};
use tokio::sync::mpsc;

use crate::QueueError;
use crate::driver::{Ending, RawBatch, RawClaim, RawRecord, RawStats, StoredJob};
use crate::job::{Enqueued, JobFilter};

/// The PostgreSQL notification channel; the payload is the queue name.
pub(crate) const CHANNEL: &str = "corral_queue";

const CLAIM_COLUMNS: &str = "id, queue, kind, payload, sensitive, attempt, released, \
     max_attempts, backoff_base_ms, backoff_max_ms, rate_key, batch_id, callback_for, run_at";

const RECORD_COLUMNS: &str = "id, queue, kind, state, priority, attempt, released, max_attempts, \
     run_at, last_error, payload, sensitive, unique_key, batch_id, chain_id, created_at, \
     started_at, finished_at";

/// The columns a new job is inserted with, in the order of its
/// [`INSERT_PARAMS`] parameters (`created_at` last, from the clock).
const INSERT_COLUMNS: &str = "id, queue, kind, payload, sensitive, state, priority, run_at, \
     max_attempts, backoff_base_ms, backoff_max_ms, unique_key, rate_key, batch_id, \
     callback_for, chain_id, chain_pos, created_at";

/// Parameters per inserted row.
const INSERT_PARAMS: usize = 18;

/// The `VALUES` tuple of the `row`th job (from 0) of an insert, its
/// parameters numbered from `row * INSERT_PARAMS + 1`, in
/// [`INSERT_COLUMNS`] order and bound by [`bind_job`]. `$8` is an absolute
/// `run_at` (negative: none), `$9` a delay from now.
fn insert_row_values(row: usize) -> String {
    let p = |i: usize| format!("${}", row * INSERT_PARAMS + i);
    format!(
        "({}, {}, {}, {}, {}, {}, {}, CASE WHEN {} >= 0 THEN {} ELSE {{now}} + {} END, \
         {}, {}, {}, {}, {}, {}, {}, {}, {}, {{now}})",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6),
        p(7),
        p(8),
        p(8),
        p(9),
        p(10),
        p(11),
        p(12),
        p(13),
        p(14),
        p(15),
        p(16),
        p(17),
        p(18)
    )
}

/// Binds `job`'s [`INSERT_PARAMS`] values in [`insert_row_values`] order.
fn bind_job<'q, O>(
    query: sqlx::query::QueryScalar<'q, sqlx::Any, O, sqlx::any::AnyArguments>,
    job: &'q StoredJob,
) -> sqlx::query::QueryScalar<'q, sqlx::Any, O, sqlx::any::AnyArguments> {
    query
        .bind(job.id.as_str())
        .bind(job.queue.as_str())
        .bind(job.kind.as_str())
        .bind(job.payload.as_str())
        .bind(i64::from(job.sensitive))
        .bind(if job.waiting { "waiting" } else { "pending" })
        .bind(job.priority)
        .bind(job.run_at.unwrap_or(-1))
        .bind(job.delay_ms)
        .bind(job.max_attempts)
        .bind(job.backoff_base_ms)
        .bind(job.backoff_max_ms)
        .bind(job.unique_key.as_deref())
        .bind(job.rate_key.as_deref())
        .bind(job.batch_id.as_deref())
        .bind(job.callback_for.as_deref())
        .bind(job.chain_id.as_deref())
        .bind(job.chain_pos)
}

/// Rows per multi-row insert: well under SQLite's 32 766 and PostgreSQL's
/// 65 535 parameters per statement.
const ROWS_PER_INSERT: usize = 500;

/// `(id, attempt)` pairs per batched completion statement.
const COMPLETIONS_PER_STATEMENT: usize = 256;

/// Why a lease ran out, as kept in `last_error` of a reaped job.
const LEASE_EXPIRED: &str = "lease expired: the worker stopped heartbeating";
const LEASE_EXPIRED_LAST: &str =
    "lease expired on the last attempt: the worker stopped heartbeating (poison job?)";

/// What a transition returns: the job's queue, batch, chain and place in it.
type Links = (String, Option<String>, Option<String>, Option<i64>);

#[derive(Debug, Clone)]
pub(crate) struct SqlDriver {
    store: Store,
    /// Queues to announce once the enqueue that filled them has committed
    /// (PostgreSQL, when a runtime was there to run the announcer).
    wakes: Option<mpsc::UnboundedSender<String>>,
}

impl SqlDriver {
    pub(crate) fn new(store: Store) -> SqlDriver {
        let wakes = match (store.backend(), tokio::runtime::Handle::try_current()) {
            (Backend::Postgres, Ok(runtime)) => {
                let (tx, rx) = mpsc::unbounded_channel();
                runtime.spawn(announce(store.clone(), rx));
                Some(tx)
            }
            _ => None,
        };
        SqlDriver { store, wakes }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    fn pool(&self) -> &AnyPool {
        self.store.pool()
    }

    fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// A statement with `{now}` replaced by the backend's "Unix ms now".
    fn sql(&self, template: &str) -> AssertSqlSafe<String> {
        let now = match self.backend() {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000 AS BIGINT)",
        };
        AssertSqlSafe(template.replace("{now}", now))
    }

    async fn notify(&self, conn: &mut AnyConnection, queue: &str) -> Result<(), QueueError> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(queue)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Tells other processes' workers, after the commit that made them
    /// ready, that `queues` have jobs. A wake-up only saves a poll: if it is
    /// lost (a crash right after the commit), workers find the jobs at their
    /// next poll.
    async fn announce(&self, queues: &[&str]) -> Result<(), QueueError> {
        if self.backend() != Backend::Postgres || queues.is_empty() {
            return Ok(());
        }
        match &self.wakes {
            Some(wakes) => {
                for queue in queues {
                    // Fails only once the announcer is gone (runtime shut down).
                    let _ = wakes.send((*queue).to_owned());
                }
                Ok(())
            }
            None => {
                let mut conn = self.pool().acquire().await?;
                for queue in queues {
                    self.notify(&mut conn, queue).await?;
                }
                Ok(())
            }
        }
    }

    /// Inserts a job inside the caller's transaction; its wake-up is sent
    /// in the same transaction, so only a commit wakes anyone.
    pub(crate) async fn insert(
        &self,
        conn: &mut AnyConnection,
        job: &StoredJob,
    ) -> Result<Enqueued, QueueError> {
        let done = self.insert_row(conn, job).await?;
        if done.is_created() && !job.waiting {
            self.notify(conn, &job.queue).await?;
        }
        Ok(done)
    }

    /// Inserts a job on `conn`, sending no wake-up.
    async fn insert_row(
        &self,
        conn: &mut AnyConnection,
        job: &StoredJob,
    ) -> Result<Enqueued, QueueError> {
        let sql = self.sql(&format!(
            "INSERT INTO queue_jobs ({INSERT_COLUMNS}) VALUES {} \
             ON CONFLICT (unique_key) DO NOTHING RETURNING id",
            insert_row_values(0)
        ));
        let inserted: Option<String> = bind_job(sqlx::query_scalar(sql), job)
            .fetch_optional(&mut *conn)
            .await?;
        match inserted {
            Some(id) => Ok(Enqueued::Created(id)),
            None => {
                let key = job.unique_key.as_deref().unwrap_or_default();
                let existing: Option<String> =
                    sqlx::query_scalar("SELECT id FROM queue_jobs WHERE unique_key = $1")
                        .bind(key)
                        .fetch_optional(&mut *conn)
                        .await?;
                existing.map(Enqueued::Duplicate).ok_or_else(|| {
                    QueueError::Corrupt(format!(
                        "insert of job {} conflicted but no job holds its unique key",
                        job.id
                    ))
                })
            }
        }
    }

    /// Inserts independent jobs in one transaction, [`ROWS_PER_INSERT`] rows
    /// per statement, and wakes each queue once.
    pub(crate) async fn enqueue_many(
        &self,
        jobs: &[StoredJob],
    ) -> Result<Vec<Enqueued>, QueueError> {
        let mut tx = self.pool().begin().await?;
        let mut created = HashSet::with_capacity(jobs.len());
        for chunk in jobs.chunks(ROWS_PER_INSERT) {
            let values = (0..chunk.len())
                .map(insert_row_values)
                .collect::<Vec<_>>()
                .join(", ");
            let sql = self.sql(&format!(
                "INSERT INTO queue_jobs ({INSERT_COLUMNS}) VALUES {values} \
                 ON CONFLICT (unique_key) DO NOTHING RETURNING id"
            ));
            let mut query = sqlx::query_scalar::<_, String>(sql);
            for job in chunk {
                query = bind_job(query, job);
            }
            created.extend(query.fetch_all(&mut *tx).await?);
        }
        let mut out = Vec::with_capacity(jobs.len());
        let mut woken: Vec<&str> = Vec::new();
        for job in jobs {
            if created.contains(&job.id) {
                if !job.waiting && !woken.contains(&job.queue.as_str()) {
                    woken.push(&job.queue);
                }
                out.push(Enqueued::Created(job.id.clone()));
                continue;
            }
            let key = job.unique_key.as_deref().unwrap_or_default();
            let existing: Option<String> =
                sqlx::query_scalar("SELECT id FROM queue_jobs WHERE unique_key = $1")
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
            out.push(Enqueued::Duplicate(existing.ok_or_else(|| {
                QueueError::Corrupt(format!(
                    "insert of job {} conflicted but no job holds its unique key",
                    job.id
                ))
            })?));
        }
        tx.commit().await?;
        self.announce(&woken).await?;
        Ok(out)
    }

    /// Inserts a job (one autocommit statement), then announces it.
    pub(crate) async fn enqueue(&self, job: &StoredJob) -> Result<Enqueued, QueueError> {
        let mut conn = self.pool().acquire().await?;
        let done = self.insert_row(&mut conn, job).await?;
        drop(conn);
        if done.is_created() && !job.waiting {
            self.announce(&[&job.queue]).await?;
        }
        Ok(done)
    }

    /// Inserts every row in one transaction, then the batch row if given.
    pub(crate) async fn enqueue_all(
        &self,
        jobs: &[StoredJob],
        batch: Option<(&str, i64, Option<&str>)>,
    ) -> Result<(), QueueError> {
        let mut tx = self.pool().begin().await?;
        if let Some((id, allowed_failures, callback)) = batch {
            let total = jobs.iter().filter(|j| j.batch_id.is_some()).count() as i64;
            sqlx::query(self.sql(
                "INSERT INTO queue_batches (id, total, allowed_failures, callback_job_id, \
                 created_at, finished_at) \
                 VALUES ($1, $2, $3, $4, {now}, CASE WHEN $2 = 0 THEN {now} END)",
            ))
            .bind(id)
            .bind(total)
            .bind(allowed_failures)
            .bind(callback)
            .execute(&mut *tx)
            .await?;
        }
        let mut woken: Vec<&str> = Vec::new();
        for job in jobs {
            if !job.waiting && !woken.contains(&job.queue.as_str()) {
                woken.push(&job.queue);
            }
            if !self.insert_row(&mut tx, job).await?.is_created() {
                return Err(QueueError::Invalid(
                    "jobs in a batch or chain cannot share a unique key with a kept job".into(),
                ));
            }
        }
        // An empty batch is finished at once: its callback is ready now.
        if let Some((_, _, Some(callback))) = batch
            && !jobs.iter().any(|j| j.batch_id.is_some())
        {
            let queue: Option<String> = sqlx::query_scalar(
                "UPDATE queue_jobs SET state = 'pending' WHERE id = $1 AND state = 'waiting' \
                 RETURNING queue",
            )
            .bind(callback)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(queue) = queue {
                self.notify(&mut tx, &queue).await?;
            }
        }
        tx.commit().await?;
        self.announce(&woken).await?;
        Ok(())
    }

    /// Leases up to `limit` of the best ready jobs of `queues` in one
    /// statement, best first (each row is its own lease under its own
    /// attempt, exactly as if claimed one by one).
    pub(crate) async fn claim(
        &self,
        queues: &[String],
        worker: &str,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<RawClaim>, QueueError> {
        if queues.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let list = (0..queues.len())
            .map(|i| format!("${}", i + 4))
            .collect::<Vec<_>>()
            .join(", ");
        // On PostgreSQL the candidates must be picked exactly once: as a
        // plain `IN (subquery)` the planner may rescan the subquery, and
        // every rescan skips the rows locked so far and finds new ones, so
        // more than `limit` rows would be claimed. `ARRAY(…)` is evaluated
        // once, before the update.
        //
        // The outer update finds the rows by primary key alone on
        // PostgreSQL: with `state = 'pending'` there too, the planner may
        // (when the table was last analyzed nearly empty, as a drained queue
        // often is) look them up through the partial ready index instead,
        // which scans every ready job of the queue per claim. The re-check
        // is not needed there: the subquery holds the rows' locks, taken on
        // their latest versions with its conditions re-checked, until the
        // update commits. SQLite's single writer needs no re-check either,
        // but it costs nothing there.
        let (recheck, open, close) = match self.backend() {
            Backend::Postgres => ("", "= ANY(ARRAY(", " FOR UPDATE SKIP LOCKED))"),
            Backend::Sqlite => ("state = 'pending' AND ", "IN (", ")"),
        };
        let sql = self.sql(&format!(
            "UPDATE queue_jobs SET state = 'running', attempt = attempt + 1, \
             locked_until = {{now}} + $1, locked_by = $2, started_at = {{now}} \
             WHERE {recheck}id {open}SELECT id FROM queue_jobs \
               WHERE state = 'pending' AND queue IN ({list}) AND run_at <= {{now}} \
               ORDER BY priority DESC, run_at, id LIMIT $3{close} \
             RETURNING {CLAIM_COLUMNS}, priority, {{now}} AS db_now"
        ));
        // Planned afresh on every claim, not prepared once per connection:
        // a queue's size swings from empty to a backlog, and a generic plan
        // fixed while the table was empty (PostgreSQL switches to one after
        // five executions) would sort the whole backlog on every claim.
        let mut query = sqlx::query_as::<_, RawClaim>(sql)
            .persistent(false)
            .bind(lease_ms)
            .bind(worker)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        for queue in queues {
            query = query.bind(queue);
        }
        let mut claims = query.fetch_all(self.pool()).await?;
        if claims.len() > limit {
            return Err(QueueError::Corrupt(format!(
                "a claim of at most {limit} jobs leased {}",
                claims.len()
            )));
        }
        // RETURNING has no order of its own.
        claims.sort_by(|a, b| (b.priority, a.run_at, &a.id).cmp(&(a.priority, b.run_at, &b.id)));
        Ok(claims)
    }

    /// Extends the lease; `false` when it is no longer held.
    pub(crate) async fn heartbeat(
        &self,
        id: &str,
        attempt: i64,
        lease_ms: i64,
    ) -> Result<bool, QueueError> {
        let done = sqlx::query(self.sql(
            "UPDATE queue_jobs SET locked_until = {now} + $1 \
             WHERE id = $2 AND attempt = $3 AND state = 'running'",
        ))
        .bind(lease_ms)
        .bind(id)
        .bind(attempt)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a leased job; `false` when the lease is no longer held (nothing
    /// was written). Batch progress and chain moves are in the same
    /// transaction, so they happen exactly once per job.
    pub(crate) async fn finish(
        &self,
        id: &str,
        attempt: i64,
        ending: Ending<'_>,
    ) -> Result<bool, QueueError> {
        let mut tx = self.pool().begin().await?;
        let fence = "WHERE id = $1 AND attempt = $2 AND state = 'running' \
                     RETURNING queue, batch_id, chain_id, chain_pos";
        let (links, success): (Option<Links>, Option<bool>) = match ending {
            Ending::Completed => {
                let links = sqlx::query_as(self.sql(&format!(
                    "UPDATE queue_jobs SET state = 'completed', finished_at = {{now}}, \
                     locked_until = NULL, locked_by = NULL {fence}"
                )))
                .bind(id)
                .bind(attempt)
                .fetch_optional(&mut *tx)
                .await?;
                (links, Some(true))
            }
            Ending::Failed { error } => {
                let links = sqlx::query_as(self.sql(&format!(
                    "UPDATE queue_jobs SET state = 'failed', finished_at = {{now}}, last_error = $3, \
                     locked_until = NULL, locked_by = NULL {fence}"
                )))
                .bind(id)
                .bind(attempt)
                .bind(error)
                .fetch_optional(&mut *tx)
                .await?;
                (links, Some(false))
            }
            Ending::Retry { error, delay_ms } => {
                let links = sqlx::query_as(self.sql(&format!(
                    "UPDATE queue_jobs SET state = 'pending', run_at = {{now}} + $3, \
                     last_error = $4, locked_until = NULL, locked_by = NULL {fence}"
                )))
                .bind(id)
                .bind(attempt)
                .bind(delay_ms)
                .bind(error)
                .fetch_optional(&mut *tx)
                .await?;
                (links, None)
            }
            Ending::Released { delay_ms } => {
                let links = sqlx::query_as(self.sql(&format!(
                    "UPDATE queue_jobs SET state = 'pending', run_at = {{now}} + $3, \
                     released = released + 1, locked_until = NULL, locked_by = NULL {fence}"
                )))
                .bind(id)
                .bind(attempt)
                .bind(delay_ms)
                .fetch_optional(&mut *tx)
                .await?;
                (links, None)
            }
        };
        let Some((queue, batch_id, chain_id, chain_pos)) = links else {
            tx.rollback().await?;
            return Ok(false);
        };
        if success.is_none() {
            self.notify(&mut tx, &queue).await?;
        }
        if let Some(success) = success {
            if let (Some(chain_id), Some(pos)) = (chain_id, chain_pos) {
                self.chain_moved(&mut tx, &chain_id, pos, success).await?;
            }
            if let Some(batch_id) = batch_id {
                self.batch_progress(&mut tx, &batch_id, success).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Completes leased jobs (`(id, attempt)` pairs) in one statement where
    /// it can: jobs outside batches and chains, still running under their
    /// attempt. The others (batch or chain members, whose progress needs a
    /// transaction of its own, and lost leases) go through [`Self::finish`].
    /// Answers, in order, whether each lease was still held.
    pub(crate) async fn complete_many(
        &self,
        jobs: &[(&str, i64)],
    ) -> Result<Vec<bool>, QueueError> {
        let mut held = HashSet::with_capacity(jobs.len());
        for chunk in jobs.chunks(COMPLETIONS_PER_STATEMENT) {
            let fence = (0..chunk.len())
                .map(|k| format!("(id = ${} AND attempt = ${})", 2 * k + 1, 2 * k + 2))
                .collect::<Vec<_>>()
                .join(" OR ");
            let sql = self.sql(&format!(
                "UPDATE queue_jobs SET state = 'completed', finished_at = {{now}}, \
                 locked_until = NULL, locked_by = NULL \
                 WHERE state = 'running' AND batch_id IS NULL AND chain_id IS NULL \
                 AND ({fence}) RETURNING id, attempt"
            ));
            let mut query = sqlx::query_as::<_, (String, i64)>(sql);
            for (id, attempt) in chunk {
                query = query.bind(*id).bind(*attempt);
            }
            held.extend(query.fetch_all(self.pool()).await?);
        }
        let mut out = Vec::with_capacity(jobs.len());
        for (id, attempt) in jobs {
            if held.contains(&((*id).to_owned(), *attempt)) {
                out.push(true);
            } else {
                out.push(self.finish(id, *attempt, Ending::Completed).await?);
            }
        }
        Ok(out)
    }

    /// After a chain member ended: release the next one, or cancel the rest.
    async fn chain_moved(
        &self,
        conn: &mut AnyConnection,
        chain_id: &str,
        pos: i64,
        success: bool,
    ) -> Result<(), QueueError> {
        if success {
            let next: Option<String> = sqlx::query_scalar(self.sql(
                "UPDATE queue_jobs SET state = 'pending', run_at = {now} \
                 WHERE chain_id = $1 AND chain_pos = $2 AND state = 'waiting' RETURNING queue",
            ))
            .bind(chain_id)
            .bind(pos + 1)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(queue) = next {
                self.notify(conn, &queue).await?;
            }
        } else {
            sqlx::query(self.sql(
                "UPDATE queue_jobs SET state = 'cancelled', finished_at = {now} \
                 WHERE chain_id = $1 AND chain_pos > $2 AND state = 'waiting'",
            ))
            .bind(chain_id)
            .bind(pos)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Counts a batch member's end; the last one finishes the batch and
    /// releases its callback.
    async fn batch_progress(
        &self,
        conn: &mut AnyConnection,
        batch_id: &str,
        success: bool,
    ) -> Result<(), QueueError> {
        let row: Option<(i64, i64, i64, Option<String>)> = sqlx::query_as(
            "UPDATE queue_batches SET succeeded = succeeded + $2, failed = failed + $3 \
             WHERE id = $1 AND finished_at IS NULL \
             RETURNING total, succeeded, failed, callback_job_id",
        )
        .bind(batch_id)
        .bind(i64::from(success))
        .bind(i64::from(!success))
        .fetch_optional(&mut *conn)
        .await?;
        let Some((total, succeeded, failed, callback)) = row else {
            return Ok(());
        };
        if succeeded + failed < total {
            return Ok(());
        }
        sqlx::query(self.sql("UPDATE queue_batches SET finished_at = {now} WHERE id = $1"))
            .bind(batch_id)
            .execute(&mut *conn)
            .await?;
        if let Some(callback) = callback {
            let queue: Option<String> = sqlx::query_scalar(self.sql(
                "UPDATE queue_jobs SET state = 'pending', run_at = {now} \
                 WHERE id = $1 AND state = 'waiting' RETURNING queue",
            ))
            .bind(&callback)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(queue) = queue {
                self.notify(conn, &queue).await?;
            }
        }
        Ok(())
    }

    /// Returns jobs whose lease expired to pending, and fails those that
    /// have no attempt left. Returns how many jobs were returned or failed.
    pub(crate) async fn reap(&self) -> Result<u64, QueueError> {
        let requeued: Vec<String> = sqlx::query_scalar(self.sql(
            "UPDATE queue_jobs SET state = 'pending', locked_until = NULL, locked_by = NULL, \
             last_error = $1 \
             WHERE state = 'running' AND locked_until < {now} AND attempt - released < max_attempts \
             RETURNING queue",
        ))
        .bind(LEASE_EXPIRED)
        .fetch_all(self.pool())
        .await?;
        let mut count = requeued.len() as u64;
        if !requeued.is_empty() && self.backend() == Backend::Postgres {
            let mut conn = self.pool().acquire().await?;
            let mut queues = requeued;
            queues.sort();
            queues.dedup();
            for queue in queues {
                self.notify(&mut conn, &queue).await?;
            }
        }
        let exhausted: Vec<(String, i64)> = sqlx::query_as(self.sql(
            "SELECT id, attempt FROM queue_jobs WHERE state = 'running' AND locked_until < {now} \
             AND attempt - released >= max_attempts LIMIT 100",
        ))
        .fetch_all(self.pool())
        .await?;
        for (id, attempt) in exhausted {
            let ending = Ending::Failed {
                error: LEASE_EXPIRED_LAST,
            };
            if self.finish(&id, attempt, ending).await? {
                count += 1;
            }
        }
        Ok(count)
    }

    pub(crate) async fn stats(&self) -> Result<Vec<RawStats>, QueueError> {
        Ok(sqlx::query_as(self.sql(
            "SELECT queue, \
             COUNT(CASE WHEN state = 'pending' AND run_at <= n.now THEN 1 END) AS pending, \
             COUNT(CASE WHEN state = 'pending' AND run_at > n.now THEN 1 END) AS scheduled, \
             COUNT(CASE WHEN state = 'waiting' THEN 1 END) AS waiting, \
             COUNT(CASE WHEN state = 'running' THEN 1 END) AS running, \
             COUNT(CASE WHEN state = 'failed' THEN 1 END) AS failed, \
             COUNT(CASE WHEN state = 'completed' THEN 1 END) AS completed, \
             COUNT(CASE WHEN state = 'completed' AND finished_at >= n.now - 60000 THEN 1 END) \
               AS completed_last_minute, \
             MIN(CASE WHEN state = 'pending' AND run_at <= n.now THEN run_at END) AS oldest_ready, \
             CAST(AVG(CASE WHEN state = 'completed' AND finished_at >= n.now - 300000 \
               THEN started_at - run_at END) AS BIGINT) AS mean_wait_ms, \
             MAX(n.now) AS db_now \
             FROM queue_jobs, (SELECT {now} AS now) n GROUP BY queue ORDER BY queue",
        ))
        .fetch_all(self.pool())
        .await?)
    }

    pub(crate) async fn job(&self, id: &str) -> Result<Option<RawRecord>, QueueError> {
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM queue_jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?)
    }

    pub(crate) async fn list(&self, filter: &JobFilter) -> Result<Vec<RawRecord>, QueueError> {
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.queue.is_some() {
            conditions.push(format!("queue = {}", next()));
        }
        if filter.state.is_some() {
            conditions.push(format!("state = {}", next()));
        }
        if filter.before.is_some() {
            conditions.push(format!("id < {}", next()));
        }
        let limit = next();
        let conditions = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM queue_jobs {conditions} ORDER BY id DESC LIMIT {limit}"
        ));
        let mut query = sqlx::query_as::<_, RawRecord>(sql);
        if let Some(queue) = &filter.queue {
            query = query.bind(queue);
        }
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        if let Some(before) = &filter.before {
            query = query.bind(before);
        }
        let limit = i64::from(filter.limit.unwrap_or(50).clamp(1, 1000));
        Ok(query.bind(limit).fetch_all(self.pool()).await?)
    }

    /// Puts a failed job back to pending with a fresh attempt budget;
    /// `false` when it is not failed.
    pub(crate) async fn retry(&self, id: &str) -> Result<bool, QueueError> {
        let mut tx = self.pool().begin().await?;
        let row: Option<Links> = sqlx::query_as(self.sql(
            "UPDATE queue_jobs SET state = 'pending', run_at = {now}, released = attempt, \
                 finished_at = NULL, locked_until = NULL, locked_by = NULL \
                 WHERE id = $1 AND state = 'failed' RETURNING queue, batch_id, chain_id, chain_pos",
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((queue, batch_id, chain_id, chain_pos)) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        if let Some(batch_id) = batch_id {
            sqlx::query(
                "UPDATE queue_batches SET failed = failed - 1 \
                 WHERE id = $1 AND finished_at IS NULL AND failed > 0",
            )
            .bind(batch_id)
            .execute(&mut *tx)
            .await?;
        }
        if let (Some(chain_id), Some(pos)) = (chain_id, chain_pos) {
            sqlx::query(
                "UPDATE queue_jobs SET state = 'waiting', finished_at = NULL \
                 WHERE chain_id = $1 AND chain_pos > $2 AND state = 'cancelled'",
            )
            .bind(chain_id)
            .bind(pos)
            .execute(&mut *tx)
            .await?;
        }
        self.notify(&mut tx, &queue).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ids of failed jobs (of one queue, or all), newest first.
    pub(crate) async fn failed_ids(&self, queue: Option<&str>) -> Result<Vec<String>, QueueError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM queue_jobs WHERE state = 'failed' AND ($1 = '' OR queue = $1) \
             ORDER BY id DESC",
        )
        .bind(queue.unwrap_or_default())
        .fetch_all(self.pool())
        .await?)
    }

    /// Deletes every job of `queue` that no worker holds.
    pub(crate) async fn clear(&self, queue: &str) -> Result<u64, QueueError> {
        let done = sqlx::query("DELETE FROM queue_jobs WHERE queue = $1 AND state <> 'running'")
            .bind(queue)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Deletes completed jobs and finished batches older than `age_ms`.
    pub(crate) async fn prune(&self, age_ms: i64) -> Result<u64, QueueError> {
        let mut conn = self.pool().acquire().await?;
        let done = sqlx::query(self.sql(
            "DELETE FROM queue_jobs WHERE state IN ('completed', 'cancelled') \
             AND finished_at < {now} - $1",
        ))
        .bind(age_ms)
        .execute(&mut *conn)
        .await?;
        sqlx::query(self.sql("DELETE FROM queue_batches WHERE finished_at < {now} - $1"))
            .bind(age_ms)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn batch(&self, id: &str) -> Result<Option<RawBatch>, QueueError> {
        Ok(sqlx::query_as(
            "SELECT id, total, succeeded, failed, allowed_failures, callback_job_id, finished_at \
             FROM queue_batches WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Adds one hit to a fixed rate window (the store's shared counters).
    pub(crate) async fn rate_hit(
        &self,
        name: &str,
        window_start: i64,
        window_ms: i64,
    ) -> Result<i64, QueueError> {
        Ok(self
            .store
            .rate_hit(name, window_start, window_start + window_ms)
            .await?)
    }

    /// Listens for enqueue notifications (PostgreSQL only; `None` on SQLite).
    pub(crate) async fn listener(&self) -> Result<Option<sqlx::postgres::PgListener>, QueueError> {
        let Some(mut listener) = self.store.pg_listener().await? else {
            return Ok(None);
        };
        listener.listen(CHANNEL).await?;
        Ok(Some(listener))
    }
}

/// Sends the wake-ups [`SqlDriver::announce`] queued: every queue named
/// since the last send, in one statement. The statement writes nothing but
/// the notifications, so its commit need not wait for the disk
/// (`synchronous_commit` off for that one transaction); a notification is
/// lost in a crash either way. Ends when every driver handle is gone.
async fn announce(store: Store, mut wakes: mpsc::UnboundedReceiver<String>) {
    while let Some(first) = wakes.recv().await {
        let mut queues = vec![first];
        while let Ok(queue) = wakes.try_recv() {
            if !queues.contains(&queue) {
                queues.push(queue);
            }
        }
        let calls = (0..queues.len())
            .map(|i| format!("pg_notify($1, ${})", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT set_config('synchronous_commit', 'off', true), {calls}");
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(CHANNEL);
        for queue in &queues {
            query = query.bind(queue.as_str());
        }
        if let Err(error) = query.execute(store.pool()).await {
            tracing::debug!(%error, "queue wake-up not sent; workers will poll");
        }
    }
}
