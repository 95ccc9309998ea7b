//! Background jobs: the one place job handlers are registered, and the
//! workers (and periodic scheduler) a process runs.
//!
//! `corral serve` and `corral queue work` both call [`start`], so every
//! process that runs workers knows every kind; a kind with no handler would
//! be retried until it dead-letters.

use std::time::Duration;

use corral_queue::{
    JobContext, JobError, JobResult, Logging, NewJob, PeriodicJob, QueueError, Scheduler,
    SchedulerHandle, ShutdownReport, WorkerHandle, WorkerOptions, Workers,
};
use serde_json::{Value, json};

use crate::Service;
use crate::config::Config;

/// The queue maintenance jobs that any worker may run (pruning) go to.
pub const MAINTENANCE_QUEUE: &str = "maintenance";

/// Kind: the auto-stop/auto-delete sweep and the reconciler of one host.
pub const SANDBOX_SWEEP: &str = "sandbox.sweep";
/// Kind: deletes completed jobs older than `queue.prune_completed_after_hours`.
pub const QUEUE_PRUNE: &str = "queue.prune";
/// Kind: deletes daily quota counts older than `queue.prune_usage_after_days`.
pub const USAGE_PRUNE: &str = "usage.prune";

/// How often the scheduler looks for due periodic jobs.
const SCHEDULER_TICK: Duration = Duration::from_secs(1);

/// This host's queue. Sandboxes live on one host (its runtime, its uid
/// slots), so their sweep must run there: `corral serve` works this queue
/// itself, whatever `queue.queues` says, and `corral queue work` never does.
pub fn host_queue() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    if host.is_empty() {
        "host.local".to_owned()
    } else {
        format!("host.{host}")
    }
}

/// A cron pattern (with seconds) firing about every `secs` seconds: cron
/// steps restart each minute (or hour, day), so an interval that does not
/// divide it is rounded down to one that does.
pub fn every_pattern(secs: u64) -> String {
    fn step(n: u64, of: u64) -> u64 {
        (1..=of)
            .rev()
            .find(|d| of.is_multiple_of(*d) && *d <= n.max(1))
            .unwrap_or(1)
    }
    match secs {
        0..60 => format!("*/{} * * * * *", step(secs, 60)),
        60..3600 => format!("0 */{} * * * *", step(secs / 60, 60)),
        3600..86_400 => format!("0 0 */{} * * *", step(secs / 3600, 24)),
        _ => "0 0 0 * * *".to_owned(),
    }
}

/// The periodic jobs `corral serve` schedules: this host's sandbox sweep
/// (every `sandbox.sweep_interval_secs`), hourly pruning of completed jobs
/// and daily pruning of old quota counts.
pub fn periodic_jobs(config: &Config) -> Result<Vec<PeriodicJob>, QueueError> {
    let host = host_queue();
    Ok(vec![
        PeriodicJob::new(
            &format!("{SANDBOX_SWEEP}.{host}"),
            &every_pattern(config.sandbox.sweep_interval_secs),
            NewJob::new(SANDBOX_SWEEP, json!({})).queue(&host),
        )?,
        PeriodicJob::new(
            QUEUE_PRUNE,
            "0 17 * * * *",
            NewJob::new(QUEUE_PRUNE, json!({})).queue(MAINTENANCE_QUEUE),
        )?,
        PeriodicJob::new(
            USAGE_PRUNE,
            "0 23 3 * * *",
            NewJob::new(USAGE_PRUNE, json!({})).queue(MAINTENANCE_QUEUE),
        )?,
    ])
}

/// The sweep and reconcile `corral serve` used to run on a timer.
pub async fn sweep_job(state: Service) -> JobResult {
    match crate::sandbox::sweep(&state).await {
        Ok((0, 0)) => {}
        Ok((stopped, deleted)) => {
            tracing::info!(
                stopped,
                deleted,
                "sandboxes stopped and deleted automatically"
            );
        }
        Err(error) => {
            return Err(JobError::retry(format!(
                "the sandbox sweep failed: {error:?}"
            )));
        }
    }
    match state
        .sandboxes
        .reconcile(&state.store, state.clock.now_ms(), false)
        .await
    {
        Ok(done) if done.failed + done.orphans > 0 => tracing::info!(
            failed = done.failed,
            orphans = done.orphans,
            "sandboxes reconciled with the runtime"
        ),
        Ok(_) => {}
        // No runtime on this host: nothing to reconcile, not a job failure.
        Err(error) => tracing::debug!(%error, "cannot reconcile sandboxes with the runtime"),
    }
    Ok(())
}

async fn queue_prune_job(state: Service) -> JobResult {
    let age = Duration::from_secs(state.config.queue.prune_completed_after_hours * 3600);
    let pruned = state
        .queue
        .prune(age)
        .await
        .map_err(|e| JobError::retry(format!("pruning completed jobs failed: {e}")))?;
    if pruned > 0 {
        tracing::info!(pruned, "old completed jobs deleted");
    }
    Ok(())
}

async fn usage_prune_job(state: Service) -> JobResult {
    let keep = i64::try_from(state.config.queue.prune_usage_after_days).unwrap_or(i64::MAX);
    let before = crate::quota::day_of(state.clock.now_ms()).saturating_sub(keep);
    let pruned = state
        .store
        .prune_daily_usage(before)
        .await
        .map_err(|e| JobError::retry(format!("pruning daily usage failed: {e}")))?;
    if pruned > 0 {
        tracing::info!(pruned, "old daily quota counts deleted");
    }
    Ok(())
}

/// The payload of an `execution.run` job.
#[derive(Debug, serde::Deserialize)]
struct RunExecution {
    id: String,
}

/// Registers every job handler on `workers`. This is the one place kinds
/// are named to workers; add new kinds here.
pub fn register(mut workers: Workers, state: &Service) -> Workers {
    workers.wrap(Logging);

    // Maintenance (scheduled by `periodic_jobs`).
    let s = state.clone();
    workers.register(SANDBOX_SWEEP, move |_: Value, _: JobContext| {
        sweep_job(s.clone())
    });
    let s = state.clone();
    workers.register(QUEUE_PRUNE, move |_: Value, _: JobContext| {
        queue_prune_job(s.clone())
    });
    let s = state.clone();
    workers.register(USAGE_PRUNE, move |_: Value, _: JobContext| {
        usage_prune_job(s.clone())
    });

    // ---- executions (`execution.run`) ----
    {
        let state = state.clone();
        workers.register(
            crate::executions::RUN_JOB,
            move |payload: RunExecution, _ctx| {
                let state = state.clone();
                async move {
                    crate::executions::run_queued(&state, &payload.id)
                        .await
                        .map_err(corral_queue::JobError::retry)
                }
            },
        );
    }
    // ---- end executions ----

    workers
}

/// Worker options from `[queue]`: its queues, concurrency and lease.
pub fn worker_options(config: &Config) -> WorkerOptions {
    let lease = Duration::from_secs(config.queue.lease_secs);
    WorkerOptions {
        queues: config.queue.queues.clone(),
        concurrency: config.queue.workers,
        lease,
        heartbeat: Some(lease / 3),
        ..WorkerOptions::default()
    }
}

/// The workers and scheduler a process runs; stop them with
/// [`Background::shutdown`].
#[derive(Debug, Default)]
pub struct Background {
    workers: Vec<WorkerHandle>,
    scheduler: Option<SchedulerHandle>,
}

/// Starts workers with `options` (none when its concurrency is 0).
pub fn start(state: &Service, options: WorkerOptions) -> Background {
    let mut background = Background::default();
    if options.concurrency > 0 {
        tracing::info!(
            queues = ?options.queues,
            concurrency = options.concurrency,
            driver = state.queue.driver_name(),
            "starting job workers"
        );
        let workers = register(Workers::new(state.queue.clone()), state).start(options);
        background.workers.push(workers);
    }
    background
}

/// What `corral serve` runs besides HTTP: the configured workers, one
/// worker for this host's queue (its sandbox sweep), and the scheduler of
/// periodic jobs (every replica runs one; each occurrence is enqueued once).
pub fn start_for_server(state: &Service) -> Result<Background, QueueError> {
    let options = worker_options(&state.config);
    let host = host_queue();
    let mut background = start(state, options.clone());
    let host_workers = WorkerOptions {
        queues: vec![host],
        concurrency: 1,
        ..options
    };
    background
        .workers
        .push(register(Workers::new(state.queue.clone()), state).start(host_workers));
    let mut scheduler = Scheduler::new(state.queue.clone(), state.clock.clone());
    for job in periodic_jobs(&state.config)? {
        scheduler.add(job);
    }
    background.scheduler = Some(scheduler.start(SCHEDULER_TICK));
    Ok(background)
}

impl Background {
    /// Stops the scheduler and claiming, lets in-flight jobs finish within
    /// `grace`, then releases the rest for another worker.
    pub async fn shutdown(self, grace: Duration) -> ShutdownReport {
        if let Some(scheduler) = self.scheduler {
            scheduler.stop().await;
        }
        let mut total = ShutdownReport {
            in_flight: 0,
            released: 0,
        };
        let reports =
            futures_util::future::join_all(self.workers.into_iter().map(|w| w.shutdown(grace)))
                .await;
        for report in reports {
            total.in_flight += report.in_flight;
            total.released += report.released;
        }
        tracing::info!(
            in_flight = total.in_flight,
            released = total.released,
            "job workers stopped"
        );
        total
    }
}

#[cfg(test)]
mod tests {
    use super::every_pattern;

    #[test]
    fn intervals_become_cron_steps() {
        for (secs, pattern) in [
            (1, "*/1 * * * * *"),
            (30, "*/30 * * * * *"),
            (45, "*/30 * * * * *"),
            (60, "0 */1 * * * *"),
            (300, "0 */5 * * * *"),
            (7200, "0 0 */2 * * *"),
            (90_000, "0 0 0 * * *"),
        ] {
            assert_eq!(every_pattern(secs), pattern, "{secs}");
        }
    }
}
