//! Periodic jobs: cron patterns (via `croner`; five fields, or six with
//! seconds first) turned into enqueues.
//!
//! Every replica may run a [`Scheduler`] with the same jobs. Each
//! occurrence of a schedule is enqueued under the unique key
//! `periodic:<name>:<occurrence ms>`, so however many schedulers see it, one
//! job exists per occurrence. Cron occurrences are absolute times, so
//! replicas agree on them without talking; clock skew only changes who is
//! first. An occurrence older than the lateness bound is skipped (a replica
//! starting at 10:00 does not run the 03:00 job again).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use corral_core::clock::Clock;
use croner::Cron;
use tokio_util::sync::CancellationToken;

use crate::{NewJob, Queue, QueueError, millis};

/// A job to enqueue on a schedule.
#[derive(Debug, Clone)]
pub struct PeriodicJob {
    name: String,
    pattern: String,
    cron: Cron,
    job: NewJob,
}

impl PeriodicJob {
    /// `job` at every occurrence of `pattern` (UTC), under a stable `name`.
    pub fn new(name: &str, pattern: &str, job: NewJob) -> Result<PeriodicJob, QueueError> {
        let cron = Cron::from_str(pattern).map_err(|source| QueueError::Cron {
            name: name.to_owned(),
            pattern: pattern.to_owned(),
            source,
        })?;
        Ok(PeriodicJob {
            name: name.to_owned(),
            pattern: pattern.to_owned(),
            cron,
            job,
        })
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The latest occurrence at or before `now_ms`.
    fn latest(&self, now_ms: i64) -> Option<i64> {
        let now: DateTime<Utc> = DateTime::from_timestamp_millis(now_ms)?;
        let at = self.cron.find_previous_occurrence(&now, true).ok()?;
        Some(at.timestamp_millis())
    }
}

/// What one [`Scheduler::tick`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Occurrences this scheduler enqueued.
    pub enqueued: u64,
    /// Occurrences another scheduler had enqueued first.
    pub duplicates: u64,
}

/// Enqueues the periodic jobs that are due.
#[derive(Debug)]
pub struct Scheduler {
    queue: Queue,
    clock: Arc<dyn Clock>,
    jobs: Vec<PeriodicJob>,
    max_lateness: Duration,
    /// The last occurrence handled per job, to skip repeats cheaply.
    seen: Mutex<HashMap<String, i64>>,
}

impl Scheduler {
    /// No jobs yet; occurrences more than a minute late are skipped.
    pub fn new(queue: Queue, clock: Arc<dyn Clock>) -> Scheduler {
        Scheduler {
            queue,
            clock,
            jobs: Vec::new(),
            max_lateness: Duration::from_secs(60),
            seen: Mutex::default(),
        }
    }

    /// Adds a job.
    pub fn add(&mut self, job: PeriodicJob) -> &mut Scheduler {
        self.jobs.push(job);
        self
    }

    /// How late an occurrence may be noticed and still be enqueued.
    pub fn max_lateness(&mut self, lateness: Duration) -> &mut Scheduler {
        self.max_lateness = lateness;
        self
    }

    /// Enqueues each job's latest due occurrence if it is recent enough and
    /// not yet handled here.
    pub async fn tick(&self) -> Result<TickReport, QueueError> {
        let now = self.clock.now_ms();
        let mut report = TickReport::default();
        for job in &self.jobs {
            let Some(at) = job.latest(now) else {
                continue;
            };
            if now - at > millis(self.max_lateness) {
                continue;
            }
            let already = self
                .seen
                .lock()
                .ok()
                .and_then(|seen| seen.get(&job.name).copied());
            if already.is_some_and(|seen| seen >= at) {
                continue;
            }
            let new = job
                .job
                .clone()
                .unique(format!("periodic:{}:{at}", job.name))
                .run_at(at);
            if self.queue.enqueue(new).await?.is_created() {
                report.enqueued += 1;
            } else {
                report.duplicates += 1;
            }
            if let Ok(mut seen) = self.seen.lock() {
                seen.insert(job.name.clone(), at);
            }
        }
        Ok(report)
    }

    /// Ticks every `every` until the handle is stopped.
    pub fn start(self, every: Duration) -> SchedulerHandle {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Err(error) = self.tick().await {
                    tracing::warn!(%error, "enqueueing periodic jobs failed");
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = token.cancelled() => return,
                }
            }
        });
        SchedulerHandle { stop, task }
    }
}

/// A running scheduler.
#[derive(Debug)]
pub struct SchedulerHandle {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SchedulerHandle {
    /// Stops ticking and waits for the loop to end.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
