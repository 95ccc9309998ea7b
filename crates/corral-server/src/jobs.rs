//! Background jobs: the one place job handlers are registered, and the
//! workers (and periodic scheduler) a process runs.
//!
//! `corral serve` and `corral queue work` both call [`start`], so every
//! process that runs workers knows every kind; a kind with no handler would
//! be retried until it dead-letters.

use std::time::Duration;

use corral_queue::{
    Logging, SchedulerHandle, ShutdownReport, WorkerHandle, WorkerOptions, Workers,
};

use crate::AppState;
use crate::config::Config;

/// The queue maintenance jobs (sweeps, pruning) run on.
pub const MAINTENANCE_QUEUE: &str = "maintenance";

/// Registers every job handler on `workers`. This is the one place kinds
/// are named to workers; add new kinds here.
pub fn register(mut workers: Workers, state: &AppState) -> Workers {
    let _ = state;
    workers.wrap(Logging);

    // ---- executions (`execution.run`) ----
    // Register execution handlers here, e.g.
    // `workers.register("execution.run", { let state = state.clone(); move |p, ctx| … });`
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
#[derive(Debug)]
pub struct Background {
    workers: Option<WorkerHandle>,
    scheduler: Option<SchedulerHandle>,
}

/// Starts workers with `options` (none when its concurrency is 0).
pub fn start(state: &AppState, options: WorkerOptions) -> Background {
    let workers = (options.concurrency > 0).then(|| {
        tracing::info!(
            queues = ?options.queues,
            concurrency = options.concurrency,
            driver = state.queue.driver_name(),
            "starting job workers"
        );
        register(Workers::new(state.queue.clone()), state).start(options)
    });
    Background {
        workers,
        scheduler: None,
    }
}

impl Background {
    /// Stops claiming, lets in-flight jobs finish within `grace`, then
    /// releases the rest for another worker.
    pub async fn shutdown(self, grace: Duration) -> Option<ShutdownReport> {
        if let Some(scheduler) = self.scheduler {
            scheduler.stop().await;
        }
        let workers = self.workers?;
        let report = workers.shutdown(grace).await;
        tracing::info!(
            in_flight = report.in_flight,
            released = report.released,
            "job workers stopped"
        );
        Some(report)
    }
}
