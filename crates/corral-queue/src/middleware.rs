//! Middleware around job handlers: each layer gets the job's context and the
//! rest of the chain, like a tower layer but for jobs. Built in: logging,
//! timing and per-kind concurrency throttling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::worker::{ErasedHandler, JobContext, JobError, JobResult};

/// A layer around every handler a [`crate::Workers`] runs.
pub trait Middleware: Send + Sync + 'static {
    /// Runs the job: usually does something, calls `next.run(ctx)`, and
    /// looks at the result.
    fn call<'a>(&'a self, ctx: &'a JobContext, next: Next) -> BoxFuture<'a, JobResult>;
}

/// The rest of the chain: the remaining layers, then the handler.
pub struct Next {
    pub(crate) chain: Arc<[Arc<dyn Middleware>]>,
    pub(crate) index: usize,
    pub(crate) handler: Arc<dyn ErasedHandler>,
    pub(crate) payload: Value,
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Next {
    /// Runs the remaining layers and the handler.
    pub fn run(self, ctx: &JobContext) -> BoxFuture<'_, JobResult> {
        match self.chain.get(self.index).cloned() {
            Some(layer) => async move {
                let next = Next {
                    index: self.index + 1,
                    ..self
                };
                layer.call(ctx, next).await
            }
            .boxed(),
            None => self.handler.call(self.payload, ctx.clone()),
        }
    }
}

/// Logs every job in a `job` span: start at debug, success at debug with
/// its duration, failure at warn with its error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Logging;

impl Middleware for Logging {
    fn call<'a>(&'a self, ctx: &'a JobContext, next: Next) -> BoxFuture<'a, JobResult> {
        let span = tracing::info_span!(
            "job",
            id = %ctx.id(),
            kind = %ctx.kind(),
            queue = %ctx.queue_name(),
            attempt = ctx.attempt(),
        );
        async move {
            let started = Instant::now();
            tracing::debug!("job started");
            let result = next.run(ctx).await;
            let ms = started.elapsed().as_millis() as u64;
            match &result {
                Ok(()) => tracing::debug!(ms, "job completed"),
                Err(error) => tracing::warn!(ms, error = %error, "job failed"),
            }
            result
        }
        .instrument(span)
        .boxed()
    }
}

/// Durations of one kind's runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimingStats {
    /// Runs.
    pub count: u64,
    /// Runs that returned an error.
    pub errors: u64,
    /// Sum of run times.
    pub total: Duration,
    /// Longest run.
    pub max: Duration,
}

/// Measures how long handlers take, per kind; clones share the numbers.
#[derive(Debug, Clone, Default)]
pub struct Timing(Arc<Mutex<HashMap<String, TimingStats>>>);

impl Timing {
    /// A fresh, empty set of numbers.
    pub fn new() -> Timing {
        Timing::default()
    }

    /// The numbers so far, by kind.
    pub fn snapshot(&self) -> HashMap<String, TimingStats> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Middleware for Timing {
    fn call<'a>(&'a self, ctx: &'a JobContext, next: Next) -> BoxFuture<'a, JobResult> {
        async move {
            let started = Instant::now();
            let result = next.run(ctx).await;
            let took = started.elapsed();
            if let Ok(mut map) = self.0.lock() {
                let entry = map.entry(ctx.kind().to_owned()).or_default();
                entry.count += 1;
                entry.errors += u64::from(result.is_err());
                entry.total += took;
                entry.max = entry.max.max(took);
            }
            result
        }
        .boxed()
    }
}

/// Lets at most `limit` jobs of each kind run at once in this process
/// (across all its workers); the rest wait, holding their leases.
#[derive(Debug, Clone)]
pub struct Throttle {
    limit: usize,
    only: Option<Vec<String>>,
    permits: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl Throttle {
    /// At most `limit` concurrent runs per kind (at least 1).
    pub fn per_kind(limit: usize) -> Throttle {
        Throttle {
            limit: limit.max(1),
            only: None,
            permits: Arc::default(),
        }
    }

    /// Applies only to these kinds.
    pub fn only(mut self, kinds: &[&str]) -> Throttle {
        self.only = Some(kinds.iter().map(|k| (*k).to_owned()).collect());
        self
    }

    fn semaphore(&self, kind: &str) -> Option<Arc<Semaphore>> {
        if let Some(only) = &self.only
            && !only.iter().any(|k| k == kind)
        {
            return None;
        }
        let mut map = self.permits.lock().ok()?;
        Some(
            map.entry(kind.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
                .clone(),
        )
    }
}

impl Middleware for Throttle {
    fn call<'a>(&'a self, ctx: &'a JobContext, next: Next) -> BoxFuture<'a, JobResult> {
        async move {
            let Some(semaphore) = self.semaphore(ctx.kind()) else {
                return next.run(ctx).await;
            };
            let _permit = semaphore
                .acquire_owned()
                .await
                .map_err(|_| JobError::retry("throttle closed"))?;
            next.run(ctx).await
        }
        .boxed()
    }
}
