//! Operational endpoints: liveness, readiness, metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};

use corral_types::meta::{Check, Health, Ready};

use crate::AppState;
use crate::liveness::{JSON, health_body};
use crate::middleware::KeepBody;

/// How long `/ready` waits for the database before calling it unavailable.
const READY_DB_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// Liveness: answers as long as the process serves HTTP; touches nothing else.
#[utoipa::path(
    get, path = "/health", tag = "meta",
    responses((status = 200, description = "The process is alive", body = Health))
)]
pub async fn health() -> Response {
    ([(header::CONTENT_TYPE, JSON)], health_body()).into_response()
}

/// Readiness: 200 when the database answers, 503 otherwise.
#[utoipa::path(
    get, path = "/ready", tag = "meta",
    responses(
        (status = 200, description = "Ready to serve", body = Ready),
        (status = 503, description = "A dependency is unavailable", body = Ready),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    let (database, ok) = match tokio::time::timeout(READY_DB_TIMEOUT, state.store.ping()).await {
        Ok(Ok(latency)) => (
            Check {
                status: "ok".into(),
                latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
                error: None,
            },
            true,
        ),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "readiness: database check failed");
            (failed_check(error.to_string()), false)
        }
        Err(_) => (failed_check("timed out".into()), false),
    };
    let body = Ready {
        status: if ok { "ready" } else { "not_ready" }.into(),
        database_backend: state.store.backend().as_str().into(),
        database,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Readiness is an answer, not an error: keep the JSON body even on 503.
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(KeepBody);
    response
}

fn failed_check(error: String) -> Check {
    Check {
        status: "fail".into(),
        latency_ms: READY_DB_TIMEOUT.as_millis() as u64,
        error: Some(error),
    }
}

/// How long a scrape waits for the queue's numbers.
const QUEUE_STATS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(
    get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    // Queue numbers are read at each scrape; a slow or failing queue
    // backend leaves them out rather than holding up the scrape.
    match tokio::time::timeout(QUEUE_STATS_TIMEOUT, state.queue.stats()).await {
        Ok(Ok(stats)) => state.metrics().set_queue_stats(&stats),
        Ok(Err(error)) => tracing::warn!(%error, "cannot read queue stats for /metrics"),
        Err(_) => tracing::warn!("reading queue stats for /metrics timed out"),
    }
    let body = state.metrics().render(state.store.pool_stats());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
