//! Binding, serving and graceful shutdown.
//!
//! Served through hyper-util rather than `axum::serve` because we need a
//! header-read timeout (slowloris protection), which `axum::serve` does not
//! expose.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::{AppState, app};

/// How often buffered API-key usage is written.
const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// A failure to start or run the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The periodic jobs could not be scheduled.
    #[error("cannot schedule periodic jobs")]
    Queue(#[source] corral_queue::QueueError),
}

/// Serves `state` on the configured address until `shutdown` resolves, then
/// lets in-flight requests finish within the configured grace period.
///
/// `on_listening` is called with the bound address once the socket accepts
/// connections (port 0 resolves to a real port there).
pub async fn serve(
    state: AppState,
    shutdown: impl Future<Output = ()> + Send,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let addr = state.config.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    on_listening(local);

    let header_timeout = Duration::from_secs(state.config.server.header_read_timeout_secs);
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    let store = state.store.clone();
    let key_usage = state.key_usage.clone();
    let daily_usage = state.daily_usage.clone();
    let flusher = {
        let (store, key_usage) = (store.clone(), key_usage.clone());
        let (limiter, clock) = (state.limiter.clone(), state.clock.clone());
        let daily_usage = daily_usage.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(USAGE_FLUSH_INTERVAL);
            for round in 0u64.. {
                tick.tick().await;
                if let Err(error) = key_usage.flush(&store).await {
                    tracing::warn!(%error, "writing API-key usage failed; will retry");
                }
                if let Err(error) = daily_usage.flush(&store).await {
                    tracing::warn!(%error, "writing daily usage failed; will retry");
                }
                // Finished rate-limit windows, about once a minute.
                if round % 12 == 0
                    && let Err(error) = limiter.prune(clock.now_ms()).await
                {
                    tracing::warn!(%error, "pruning rate-limit windows failed; will retry");
                }
            }
        })
    };
    match state
        .sandboxes
        .reconcile(&state.store, state.clock.now_ms(), true)
        .await
    {
        Ok(done) => tracing::info!(
            kept = done.kept,
            failed = done.failed,
            orphans = done.orphans,
            "sandboxes reconciled with the runtime"
        ),
        // No runtime installed (or it fails): the API still serves; sandbox
        // requests will say what is wrong.
        Err(error) => tracing::warn!(%error, "cannot reconcile sandboxes with the runtime"),
    }
    // Warm pools fill in the background; the API serves meanwhile.
    let refiller = state.sandboxes.pool.enabled().then(|| {
        let state = state.clone();
        tokio::spawn(async move {
            state
                .sandboxes
                .pool
                .refill(state.driver(), &state.store)
                .await;
        })
    });
    let pool_owner = state.sandboxes.clone();
    let queue_grace = Duration::from_secs(state.config.queue.shutdown_grace_secs);
    // Workers, this host's sandbox sweep and the periodic jobs' scheduler.
    let background = corral_service::jobs::start_for_server(&state).map_err(ServeError::Queue)?;
    let liveness = crate::liveness::LivenessProbe::new(&state);
    let router = app(state);

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());

    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (router, liveness) = (router.clone(), liveness.clone());
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let fast = liveness.answer(&request);
            request.extensions_mut().insert(ConnectInfo(remote));
            let router = router.clone();
            async move {
                if let Some(response) = fast {
                    return Ok(response);
                }
                match router.oneshot(request).await {
                    Ok(response) => Ok::<_, Infallible>(response),
                    Err(never) => match never {},
                }
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: finishing in-flight requests"
    );
    // Workers stop claiming at once and get their own grace period, beside
    // the requests' (a job may take longer than a request).
    let (http, _) = tokio::join!(
        tokio::time::timeout(grace, graceful.shutdown()),
        background.shutdown(queue_grace),
    );
    if http.is_err() {
        tracing::warn!("grace period over; closing remaining connections");
    }
    flusher.abort();
    if let Some(refiller) = refiller {
        refiller.abort();
    }
    // Warm and reset execution sandboxes belong to nobody: they go with the server.
    for warm in pool_owner.pool.drain() {
        pool_owner.destroy_blocking(&warm.id).await;
    }
    if let Err(error) = key_usage.flush(&store).await {
        tracing::warn!(%error, "writing API-key usage at shutdown failed");
    }
    if let Err(error) = daily_usage.flush(&store).await {
        tracing::warn!(%error, "writing daily usage at shutdown failed");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
