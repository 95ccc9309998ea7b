//! Workers: handlers registered by job kind, run up to `concurrency` at a
//! time, with heartbeats and graceful shutdown.
//!
//! One loop claims jobs for every free slot at once (one statement on the
//! database) and runs each in a task of its own, so a panic fails the
//! attempt instead of the worker. While a handler runs, its lease is
//! heartbeated; if the lease turns out lost (the job was reclaimed), the
//! handler is aborted and nothing is reported. A finished handler frees its
//! slot at once, and its completion is written together with the others
//! that finished meanwhile (one statement for many). On shutdown the loop
//! stops claiming, in-flight jobs get the grace period to finish, and
//! whatever is still running after it is aborted and released (back to
//! pending, attempt not counted).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt as _, StreamExt as _};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::middleware::{Middleware, Next};
use crate::{Claimed, DEFAULT_QUEUE, FailOutcome, Queue, QueueError};

/// What a handler returns.
pub type JobResult = Result<(), JobError>;

/// A handler's failure: retried (while attempts remain) unless permanent.
///
/// Any `std::error::Error` converts into a retryable one, so handlers can
/// use `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    message: String,
    retryable: bool,
}

impl JobError {
    /// A failure worth retrying (the default).
    pub fn retry(message: impl std::fmt::Display) -> JobError {
        JobError {
            message: message.to_string(),
            retryable: true,
        }
    }

    /// A failure no retry can fix: kept as failed at once.
    pub fn permanent(message: impl std::fmt::Display) -> JobError {
        JobError {
            message: message.to_string(),
            retryable: false,
        }
    }

    /// The message kept with the job.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether it may be retried.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(error: E) -> JobError {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        JobError::retry(message)
    }
}

/// A registered handler with its payload type erased.
pub(crate) trait ErasedHandler: Send + Sync + 'static {
    fn call(&self, payload: Value, ctx: JobContext) -> BoxFuture<'static, JobResult>;
}

struct FnHandler<P, F> {
    f: F,
    _payload: PhantomData<fn(P)>,
}

impl<P, F, Fut> ErasedHandler for FnHandler<P, F>
where
    P: DeserializeOwned + Send + 'static,
    F: Fn(P, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = JobResult> + Send + 'static,
{
    fn call(&self, payload: Value, ctx: JobContext) -> BoxFuture<'static, JobResult> {
        match serde_json::from_value::<P>(payload) {
            Ok(payload) => (self.f)(payload, ctx).boxed(),
            Err(error) => {
                let kind = ctx.kind().to_owned();
                async move {
                    Err(JobError::permanent(format!(
                        "payload does not fit kind {kind}: {error}"
                    )))
                }
                .boxed()
            }
        }
    }
}

/// What a handler knows about its job, and its lease.
#[derive(Clone)]
pub struct JobContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    job: Claimed,
    queue: Queue,
    lease: Duration,
    /// Cancelled when the lease is lost or the shutdown grace has passed.
    cancelled: CancellationToken,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.inner.job.id)
            .field("kind", &self.inner.job.kind)
            .field("attempt", &self.inner.job.attempt)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// The job's id.
    pub fn id(&self) -> &str {
        &self.inner.job.id
    }

    /// Its kind.
    pub fn kind(&self) -> &str {
        &self.inner.job.kind
    }

    /// Its queue.
    pub fn queue_name(&self) -> &str {
        &self.inner.job.queue
    }

    /// Attempts spent, this one included (1 on the first run).
    pub fn attempt(&self) -> u32 {
        self.inner.job.spent
    }

    /// Attempts allowed.
    pub fn max_attempts(&self) -> u32 {
        self.inner.job.max_attempts
    }

    /// The fencing token this run holds.
    pub fn fence(&self) -> i64 {
        self.inner.job.attempt
    }

    /// The batch this job belongs to.
    pub fn batch_id(&self) -> Option<&str> {
        self.inner.job.batch_id.as_deref()
    }

    /// The batch whose completion callback this job is.
    pub fn callback_for(&self) -> Option<&str> {
        self.inner.job.callback_for.as_deref()
    }

    /// The claim itself.
    pub fn claimed(&self) -> &Claimed {
        &self.inner.job
    }

    /// The queue, to enqueue follow-up jobs or read a batch.
    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// Extends the lease now (the worker also does so on its own schedule).
    /// On [`QueueError::LeaseLost`] the handler should stop: its result will
    /// not be recorded.
    pub async fn heartbeat(&self) -> Result<(), QueueError> {
        let result = self
            .inner
            .queue
            .heartbeat(&self.inner.job, self.inner.lease)
            .await;
        if matches!(result, Err(QueueError::LeaseLost { .. })) {
            self.inner.cancelled.cancel();
        }
        result
    }

    /// Resolves when the run should stop: its lease was lost, or shutdown's
    /// grace period is over.
    pub async fn cancelled(&self) {
        self.inner.cancelled.cancelled().await;
    }

    /// Whether [`JobContext::cancelled`] has resolved.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.is_cancelled()
    }
}

/// How workers run.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The queues to take jobs from.
    pub queues: Vec<String>,
    /// Jobs run at once.
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// How often running jobs heartbeat; `None` never (the lease must then
    /// outlast every run).
    pub heartbeat: Option<Duration>,
    /// How often an idle worker looks for work when not woken, and how often
    /// expired leases are reaped.
    pub poll_interval: Duration,
    /// The name recorded as `locked_by`.
    pub name: String,
}

impl Default for WorkerOptions {
    fn default() -> WorkerOptions {
        WorkerOptions {
            queues: vec![DEFAULT_QUEUE.to_owned()],
            concurrency: 4,
            lease: Duration::from_secs(30),
            heartbeat: Some(Duration::from_secs(10)),
            poll_interval: Duration::from_secs(1),
            name: format!("worker-{}", std::process::id()),
        }
    }
}

/// Handlers by kind and the middleware around them; [`Workers::start`] runs them.
pub struct Workers {
    queue: Queue,
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    middleware: Vec<Arc<dyn Middleware>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Workers {
    /// No handlers yet.
    pub fn new(queue: Queue) -> Workers {
        Workers {
            queue,
            handlers: HashMap::new(),
            middleware: Vec::new(),
        }
    }

    /// Runs jobs of `kind` with `handler`, which gets the payload decoded as
    /// `P` (a payload that does not decode fails the job permanently).
    pub fn register<P, F, Fut>(&mut self, kind: &str, handler: F) -> &mut Workers
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(P, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        self.handlers.insert(
            kind.to_owned(),
            Arc::new(FnHandler {
                f: handler,
                _payload: PhantomData,
            }),
        );
        self
    }

    /// Adds a middleware layer; the first added is the outermost.
    pub fn wrap(&mut self, layer: impl Middleware) -> &mut Workers {
        self.middleware.push(Arc::new(layer));
        self
    }

    /// Starts `options.concurrency` worker loops (and, on PostgreSQL, a
    /// listener that wakes them on new jobs). Needs a tokio runtime.
    pub fn start(self, options: WorkerOptions) -> WorkerHandle {
        let shared = Arc::new(Shared {
            queue: self.queue,
            handlers: self.handlers,
            middleware: self.middleware.into(),
            options,
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            in_flight: AtomicUsize::new(0),
            released: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            completions: Mutex::default(),
        });
        let mut tasks = JoinSet::new();
        {
            let shared = shared.clone();
            tasks.spawn(async move { shared.work().await });
        }
        let mut side = JoinSet::new();
        {
            let shared = shared.clone();
            side.spawn(async move { shared.reap_loop().await });
        }
        {
            let shared = shared.clone();
            side.spawn(async move { shared.listen_loop().await });
        }
        WorkerHandle {
            shared,
            tasks,
            side,
        }
    }
}

struct Shared {
    queue: Queue,
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    middleware: Arc<[Arc<dyn Middleware>]>,
    options: WorkerOptions,
    /// Stop claiming.
    stop: CancellationToken,
    /// The grace period is over: abort and release.
    abort: CancellationToken,
    in_flight: AtomicUsize,
    released: AtomicU64,
    completed: AtomicU64,
    completions: Mutex<Completions>,
}

/// Most jobs one claim asks for.
const MAX_CLAIM: usize = 64;

/// Completions waiting to be written, and whether a write is under way.
#[derive(Default)]
struct Completions {
    writing: bool,
    /// Job id, attempt, and where to answer: `Some(held)`, or `None` when
    /// the write failed (the job then completes on its own).
    waiting: Vec<(String, i64, oneshot::Sender<Option<bool>>)>,
}

/// Hands the writer's role back even if the writing task is dropped
/// mid-write; whoever arrives next writes what is waiting.
struct WriterGuard<'a> {
    completions: &'a Mutex<Completions>,
    /// Cleared once the writer has handed its role back itself.
    armed: bool,
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut pending = self.completions.lock().unwrap_or_else(|e| e.into_inner());
        pending.writing = false;
        // Anyone still waiting completes on its own.
        pending.waiting.clear();
    }
}

impl Shared {
    /// Claims jobs for every free slot at once (one statement on the
    /// database), runs each in a task of its own, and when nothing is ready
    /// waits for a wake-up or the poll interval. On stop, waits for the
    /// runs in flight.
    async fn work(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.options.concurrency.max(1)));
        let mut running = JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            if self.stop.is_cancelled() {
                break;
            }
            let mut permits = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = self.stop.cancelled() => break,
            };
            let free = slots.available_permits().min(MAX_CLAIM - 1);
            if free > 0
                && let Ok(more) = slots.clone().try_acquire_many_owned(free as u32)
            {
                permits.merge(more);
            }
            // Registered before the claim, so a wake-up between an empty
            // claim and the wait is not lost.
            let woken = self.queue.wake_signal().notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let claimed = self
                .queue
                .claim_many(
                    &self.options.queues,
                    &self.options.name,
                    self.options.lease,
                    permits.num_permits(),
                )
                .await;
            match claimed {
                Ok(jobs) if !jobs.is_empty() => {
                    for job in jobs {
                        let Some(permit) = permits.split(1) else {
                            // Never more than asked for; should it happen,
                            // give the job back rather than sit on its lease.
                            if let Err(error) = self.queue.release(&job, Duration::ZERO).await {
                                tracing::warn!(job = %job.id, %error, "could not give back an extra claim");
                            }
                            continue;
                        };
                        self.in_flight.fetch_add(1, Ordering::SeqCst);
                        let shared = self.clone();
                        running.spawn(async move {
                            shared.run(job, permit).await;
                            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                }
                Ok(_) => {
                    drop(permits);
                    tokio::select! {
                        () = &mut woken => {}
                        () = tokio::time::sleep(self.options.poll_interval) => {}
                        () = self.stop.cancelled() => break,
                    }
                }
                Err(error) => {
                    drop(permits);
                    tracing::warn!(%error, "claiming jobs failed; retrying after the poll interval");
                    tokio::select! {
                        () = tokio::time::sleep(self.options.poll_interval) => {}
                        () = self.stop.cancelled() => break,
                    }
                }
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// Records a completion together with whichever others finish
    /// meanwhile: the first to arrive writes every completion waiting (one
    /// statement on the database) while later ones queue up for the next
    /// write, so completions cost about one round trip per write, not per job.
    async fn complete(&self, job: &Claimed) -> Result<(), QueueError> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut pending = self.completions.lock().unwrap_or_else(|e| e.into_inner());
            pending.waiting.push((job.id.clone(), job.attempt, tx));
            !std::mem::replace(&mut pending.writing, true)
        };
        if lead {
            let mut writer = WriterGuard {
                completions: &self.completions,
                armed: true,
            };
            loop {
                let batch = {
                    let mut pending = self.completions.lock().unwrap_or_else(|e| e.into_inner());
                    if pending.waiting.is_empty() {
                        pending.writing = false;
                        writer.armed = false;
                        break;
                    }
                    std::mem::take(&mut pending.waiting)
                };
                let fences: Vec<(&str, i64)> = batch
                    .iter()
                    .map(|(id, attempt, _)| (id.as_str(), *attempt))
                    .collect();
                let held = self.queue.complete_fenced(&fences).await;
                match held {
                    Ok(held) => {
                        for ((_, _, tx), held) in batch.into_iter().zip(held) {
                            let _ = tx.send(Some(held));
                        }
                    }
                    // Each is retried on its own below, for its own answer.
                    Err(_) => {
                        for (_, _, tx) in batch {
                            let _ = tx.send(None);
                        }
                    }
                }
            }
        }
        match rx.await {
            Ok(Some(true)) => Ok(()),
            Ok(Some(false)) => Err(Queue::lost_lease(job)),
            Ok(None) | Err(_) => self.queue.complete(job).await,
        }
    }

    /// Runs one job in the slot `permit` holds. The slot is given back as
    /// soon as the handler has finished, so the next claim overlaps with
    /// the writing of this result (the run itself ends once it is written).
    async fn run(&self, job: Claimed, permit: OwnedSemaphorePermit) {
        let cancelled = CancellationToken::new();
        let ctx = JobContext {
            inner: Arc::new(ContextInner {
                job: job.clone(),
                queue: self.queue.clone(),
                lease: self.options.lease,
                cancelled: cancelled.clone(),
            }),
        };
        let handler = self.handlers.get(&job.kind).cloned();
        let chain = self.middleware.clone();
        let run_ctx = ctx.clone();
        let payload = job.payload.clone();
        let mut task = tokio::spawn(async move {
            let Some(handler) = handler else {
                return Err(JobError::retry(format!(
                    "no handler is registered for kind {}",
                    run_ctx.kind()
                )));
            };
            let next = Next {
                chain,
                index: 0,
                handler,
                payload,
            };
            next.run(&run_ctx).await
        });
        let beat_every = self
            .options
            .heartbeat
            .unwrap_or(Duration::from_secs(86_400))
            .clamp(Duration::from_millis(1), Duration::from_secs(86_400));
        let mut beats =
            tokio::time::interval_at(tokio::time::Instant::now() + beat_every, beat_every);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            tokio::select! {
                outcome = &mut task => break outcome,
                _ = beats.tick(), if self.options.heartbeat.is_some() => {
                    match ctx.heartbeat().await {
                        Ok(()) => {}
                        Err(QueueError::LeaseLost { .. }) => {
                            tracing::warn!(job = %job.id, attempt = job.attempt,
                                "lease lost while running; abandoning the run");
                            task.abort();
                            return;
                        }
                        Err(error) => tracing::warn!(job = %job.id, %error, "heartbeat failed"),
                    }
                }
                () = self.abort.cancelled() => {
                    cancelled.cancel();
                    task.abort();
                    match self.queue.release(&job, Duration::ZERO).await {
                        Ok(()) => {
                            self.released.fetch_add(1, Ordering::SeqCst);
                            tracing::info!(job = %job.id, "released at shutdown");
                        }
                        Err(error) => tracing::warn!(job = %job.id, %error,
                            "could not release at shutdown; its lease will expire"),
                    }
                    return;
                }
            }
        };
        drop(permit);
        let report = match outcome {
            Ok(Ok(())) => self.complete(&job).await.map(|()| None),
            Ok(Err(error)) => self
                .queue
                .fail(&job, error.message(), error.is_retryable())
                .await
                .map(Some),
            Err(join) => {
                let message = if join.is_panic() {
                    "the handler panicked"
                } else {
                    "the handler was cancelled"
                };
                self.queue.fail(&job, message, true).await.map(Some)
            }
        };
        match report {
            Ok(None) => {
                self.completed.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Some(FailOutcome::Retrying { at })) => {
                tracing::debug!(job = %job.id, retry_at = at, "attempt failed; will retry");
            }
            Ok(Some(FailOutcome::Failed)) => {
                tracing::warn!(job = %job.id, kind = %job.kind, "job failed for good");
            }
            Err(QueueError::LeaseLost { .. }) => {
                tracing::warn!(job = %job.id, attempt = job.attempt,
                    "result rejected: the lease was lost and the job reclaimed");
            }
            Err(error) => {
                tracing::error!(job = %job.id, %error,
                    "could not record the result; the job will run again when its lease expires");
            }
        }
    }

    async fn reap_loop(&self) {
        loop {
            if let Err(error) = self.queue.reap_expired().await {
                tracing::warn!(%error, "reaping expired leases failed");
            }
            tokio::select! {
                () = tokio::time::sleep(self.options.poll_interval) => {}
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// Wakes the loops when another process reports ready jobs on our queues.
    async fn listen_loop(&self) {
        loop {
            match self.queue.wake_events().await {
                Ok(None) => return,
                Ok(Some(mut events)) => loop {
                    tokio::select! {
                        event = events.next() => match event {
                            Some(queue) => {
                                if self.options.queues.contains(&queue) {
                                    self.queue.wake();
                                }
                            }
                            // Disconnected: reports may have been missed.
                            None => {
                                self.queue.wake();
                                break;
                            }
                        },
                        () = self.stop.cancelled() => return,
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "queue wake-up listener cannot connect; polling meanwhile");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = self.stop.cancelled() => return,
            }
        }
    }
}

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Jobs running when shutdown began.
    pub in_flight: usize,
    /// Of those, released unfinished when the grace period ran out.
    pub released: u64,
}

/// Running workers; shut them down with [`WorkerHandle::shutdown`]. Dropping
/// the handle leaves them running in the background.
pub struct WorkerHandle {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    side: JoinSet<()>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// Jobs running now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Jobs completed by these workers so far.
    pub fn completed(&self) -> u64 {
        self.shared.completed.load(Ordering::SeqCst)
    }

    /// Stops claiming; lets in-flight jobs finish within `grace`, then
    /// aborts and releases the rest. Returns when every loop has ended.
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        self.shared.stop.cancel();
        let in_flight = self.in_flight();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.shared.abort.cancel();
            while self.tasks.join_next().await.is_some() {}
        }
        while self.side.join_next().await.is_some() {}
        ShutdownReport {
            in_flight,
            released: self.shared.released.load(Ordering::SeqCst),
        }
    }
}
