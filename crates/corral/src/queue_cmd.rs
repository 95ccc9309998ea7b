//! `corral queue …`: the job queue of this installation, on its database
//! (like `corral admin`): counts, failed jobs, retry, clear, and `work` —
//! workers without the HTTP server, so they scale apart from it.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use corral_service::Service;
use corral_service::config::Config;

/// `corral queue`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Jobs per queue: pending, running, failed, completed.
    Stats {
        #[command(flatten)]
        config: crate::ConfigArgs,
    },
    /// Failed jobs, newest first, with their last error.
    Failed {
        #[command(flatten)]
        config: crate::ConfigArgs,
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Put a failed job back (a fresh attempt budget), or all of a queue's.
    Retry {
        #[command(flatten)]
        config: crate::ConfigArgs,
        /// The job's id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every failed job of this queue.
        #[arg(long, value_name = "QUEUE")]
        all: Option<String>,
    },
    /// Delete every job of a queue that is not running.
    Clear {
        #[command(flatten)]
        config: crate::ConfigArgs,
        /// The queue.
        queue: String,
    },
    /// Run workers only (no HTTP server) until SIGTERM or Ctrl-C, then
    /// finish or release in-flight jobs within `queue.shutdown_grace_secs`.
    Work {
        #[command(flatten)]
        config: crate::ConfigArgs,
        /// Queues to take jobs from (comma-separated) [default: `queue.queues`].
        #[arg(long, value_delimiter = ',', value_name = "Q1,Q2")]
        queues: Vec<String>,
        /// Jobs at once [default: `queue.workers`].
        #[arg(long, value_name = "N")]
        concurrency: Option<usize>,
    },
}

pub fn run(command: QueueCommand) -> anyhow::Result<()> {
    let runtime = crate::runtime()?;
    match command {
        QueueCommand::Stats { config } => runtime.block_on(stats(crate::load_existing(&config)?)),
        QueueCommand::Failed {
            config,
            queue,
            limit,
        } => runtime.block_on(failed(crate::load_existing(&config)?, queue, limit)),
        QueueCommand::Retry { config, id, all } => {
            runtime.block_on(retry(crate::load_existing(&config)?, id, all))
        }
        QueueCommand::Clear { config, queue } => {
            runtime.block_on(clear(crate::load_existing(&config)?, queue))
        }
        QueueCommand::Work {
            config,
            queues,
            concurrency,
        } => runtime.block_on(work(crate::load_existing(&config)?, queues, concurrency)),
    }
}

async fn open(config: Config) -> anyhow::Result<Service> {
    Service::open(config)
        .await
        .context("cannot open the database")
}

async fn stats(config: Config) -> anyhow::Result<()> {
    let state = open(config).await?;
    let stats = state.queue.stats().await?;
    println!(
        "{:<20} {:>8} {:>9} {:>8} {:>7} {:>10} {:>12}",
        "QUEUE", "PENDING", "SCHEDULED", "RUNNING", "FAILED", "COMPLETED", "OLDEST (s)"
    );
    for s in stats {
        println!(
            "{:<20} {:>8} {:>9} {:>8} {:>7} {:>10} {:>12}",
            s.queue,
            s.pending,
            s.scheduled,
            s.running,
            s.failed,
            s.completed,
            s.oldest_pending_ms / 1000
        );
    }
    Ok(())
}

async fn failed(config: Config, queue: Option<String>, limit: u32) -> anyhow::Result<()> {
    let state = open(config).await?;
    let jobs = state.queue.failed(queue.as_deref(), limit).await?;
    if jobs.is_empty() {
        println!("no failed jobs");
    }
    for job in jobs {
        println!(
            "{}  {}  {}  attempts {}/{}  {}",
            job.id,
            job.queue,
            job.kind,
            job.attempts,
            job.max_attempts,
            job.last_error
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    Ok(())
}

async fn retry(config: Config, id: Option<String>, all: Option<String>) -> anyhow::Result<()> {
    let state = open(config).await?;
    match (id, all) {
        (Some(id), _) => {
            if !state.queue.retry(&id).await? {
                anyhow::bail!("no failed job {id}");
            }
            println!("job {id} is queued again");
        }
        (None, Some(queue)) => {
            let count = state.queue.retry_all(Some(&queue)).await?;
            println!("{count} failed job(s) of {queue} queued again");
        }
        (None, None) => anyhow::bail!("give a job id or --all QUEUE"),
    }
    Ok(())
}

async fn clear(config: Config, queue: String) -> anyhow::Result<()> {
    let state = open(config).await?;
    let count = state.queue.clear(&queue).await?;
    println!("{count} job(s) of {queue} deleted");
    Ok(())
}

async fn work(
    config: Config,
    queues: Vec<String>,
    concurrency: Option<usize>,
) -> anyhow::Result<()> {
    let grace = Duration::from_secs(config.queue.shutdown_grace_secs);
    let state = open(config).await?;
    let mut options = corral_service::jobs::worker_options(&state.config);
    if !queues.is_empty() {
        options.queues = queues;
    }
    if let Some(n) = concurrency {
        anyhow::ensure!(n > 0, "--concurrency must be at least 1");
        options.concurrency = n;
    }
    println!(
        "corral queue work: {} worker(s) on {}",
        options.concurrency,
        options.queues.join(", ")
    );
    let background = corral_service::jobs::start(&state, options);
    corral_service::signals::shutdown_signal().await;
    println!("stopping: in-flight jobs get {}s", grace.as_secs());
    let report = background.shutdown(grace).await;
    // Reset execution sandboxes kept for the next run go with the worker.
    for kept in state.sandboxes.pool.drain() {
        state.sandboxes.destroy_blocking(&kept.id).await;
    }
    println!("stopped ({report:?})");
    Ok(())
}
