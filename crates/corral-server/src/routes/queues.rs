//! Administration of the job queue: numbers per queue, failed jobs, retry
//! and clear. Payloads of sensitive jobs never leave the server.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use corral_core::clock::rfc3339;
use corral_queue::{JobFilter, JobRecord, JobState, QueueStats};
use corral_types::queue::{
    JobPage, JobResponse, QueueActionResponse, QueueList, QueueStatsResponse,
};

use crate::auth::Caller;
use crate::auth::ClientInfo;
use crate::config::is_queue_name;
use crate::routes::admin::page_limit;
use crate::routes::auth::audit;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/queues", get(list_queues))
        .route("/api/v1/admin/queues/{name}/retry", post(retry_queue))
        .route("/api/v1/admin/queues/{name}/clear", post(clear_queue))
        .route("/api/v1/admin/jobs", get(list_jobs))
        .route("/api/v1/admin/jobs/{id}", get(get_job))
        .route("/api/v1/admin/jobs/{id}/retry", post(retry_job))
}

fn queue_error(error: corral_queue::QueueError) -> ApiError {
    ApiError::internal(anyhow::Error::new(error).context("the job queue failed"))
}

pub(crate) fn stats_response(stats: QueueStats) -> QueueStatsResponse {
    QueueStatsResponse {
        queue: stats.queue,
        pending: stats.pending,
        scheduled: stats.scheduled,
        waiting: stats.waiting,
        running: stats.running,
        failed: stats.failed,
        completed: stats.completed,
        completed_last_minute: stats.completed_last_minute,
        oldest_pending_ms: stats.oldest_pending_ms,
        mean_wait_ms: stats.mean_wait_ms,
    }
}

fn job_response(job: JobRecord) -> JobResponse {
    JobResponse {
        sensitive: job.payload.is_none(),
        id: job.id,
        queue: job.queue,
        kind: job.kind,
        state: job.state.as_str().to_owned(),
        priority: job.priority,
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        run_at: rfc3339(job.run_at),
        last_error: job.last_error,
        payload: job.payload,
        unique_key: job.unique_key,
        batch_id: job.batch_id,
        chain_id: job.chain_id,
        created_at: rfc3339(job.created_at),
        started_at: job.started_at.map(rfc3339),
        finished_at: job.finished_at.map(rfc3339),
    }
}

fn checked_queue(name: &str) -> Result<(), ApiError> {
    if is_queue_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "name",
            "queue names are 1 to 64 of a-z, 0-9, `-`, `_` and `.`",
        ))
    }
}

/// Every queue that holds a job, with its numbers.
#[utoipa::path(
    get, path = "/api/v1/admin/queues", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Queues by name", body = QueueList),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
    )
)]
pub async fn list_queues(State(state): State<AppState>) -> Result<Json<QueueList>, ApiError> {
    let stats = state.queue.stats().await.map_err(queue_error)?;
    Ok(Json(QueueList {
        driver: state.queue.driver_name().to_owned(),
        queues: stats.into_iter().map(stats_response).collect(),
    }))
}

/// Filters of `GET /api/v1/admin/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// `pending`, `running`, `completed`, `failed`, `waiting` or `cancelled`.
    state: Option<String>,
    /// Only this queue.
    queue: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
}

/// Jobs, newest first (sensitive payloads withheld).
#[utoipa::path(
    get, path = "/api/v1/admin/jobs", tag = "admin", security(("bearer" = [])),
    params(JobQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobPage),
        (status = 422, description = "A bad filter", body = corral_types::Problem),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
    )
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    Query(query): Query<JobQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let limit = page_limit(query.limit)?;
    let job_state = query
        .state
        .as_deref()
        .map(|s| {
            JobState::parse(s).ok_or_else(|| {
                ApiError::invalid_field(
                    "state",
                    "must be pending, running, completed, failed, waiting or cancelled",
                )
            })
        })
        .transpose()?;
    if let Some(queue) = &query.queue {
        checked_queue(queue).map_err(|_| {
            ApiError::invalid_field(
                "queue",
                "queue names are 1 to 64 of a-z, 0-9, `-`, `_` and `.`",
            )
        })?;
    }
    // One more than a page tells whether there is a next page.
    let fetch = u32::try_from(limit + 1).unwrap_or(201);
    let mut jobs = state
        .queue
        .list(&JobFilter {
            queue: query.queue,
            state: job_state,
            before: query.cursor,
            limit: Some(fetch),
        })
        .await
        .map_err(queue_error)?;
    let more = jobs.len() > usize::try_from(limit).unwrap_or(200);
    jobs.truncate(usize::try_from(limit).unwrap_or(200));
    let next_cursor = if more {
        jobs.last().map(|job| job.id.clone())
    } else {
        None
    };
    Ok(Json(JobPage {
        items: jobs.into_iter().map(job_response).collect(),
        next_cursor,
    }))
}

/// One job.
#[utoipa::path(
    get, path = "/api/v1/admin/jobs/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobResponse),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
        (status = 404, description = "No such job", body = corral_types::Problem),
    )
)]
pub async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobResponse>, ApiError> {
    let job = state
        .queue
        .job(&id)
        .await
        .map_err(queue_error)?
        .ok_or_else(|| ApiError::not_found("job"))?;
    Ok(Json(job_response(job)))
}

/// Puts a failed job back in its queue with a fresh attempt budget.
#[utoipa::path(
    post, path = "/api/v1/admin/jobs/{id}/retry", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job, pending again", body = JobResponse),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
        (status = 404, description = "No such job", body = corral_types::Problem),
        (status = 409, description = "The job is not failed", body = corral_types::Problem),
    )
)]
pub async fn retry_job(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Json<JobResponse>, ApiError> {
    let job = state
        .queue
        .job(&id)
        .await
        .map_err(queue_error)?
        .ok_or_else(|| ApiError::not_found("job"))?;
    if !state.queue.retry(&id).await.map_err(queue_error)? {
        return Err(ApiError::new(
            corral_types::ErrorCode::Conflict,
            format!("the job is {}, not failed", job.state.as_str()),
        ));
    }
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        None,
        "queue.job_retry",
        "job",
        Some(&id),
        "success",
    )
    .await;
    let job = state
        .queue
        .job(&id)
        .await
        .map_err(queue_error)?
        .ok_or_else(|| ApiError::not_found("job"))?;
    Ok(Json(job_response(job)))
}

/// Retries every failed job of a queue.
#[utoipa::path(
    post, path = "/api/v1/admin/queues/{name}/retry", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, description = "How many were retried", body = QueueActionResponse),
        (status = 422, description = "A bad queue name", body = corral_types::Problem),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
    )
)]
pub async fn retry_queue(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(name): Path<String>,
) -> Result<Json<QueueActionResponse>, ApiError> {
    checked_queue(&name)?;
    let count = state
        .queue
        .retry_all(Some(&name))
        .await
        .map_err(queue_error)?;
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        None,
        "queue.retry_all",
        "queue",
        Some(&name),
        "success",
    )
    .await;
    Ok(Json(QueueActionResponse { queue: name, count }))
}

/// Deletes every job of a queue that no worker holds (running jobs finish).
#[utoipa::path(
    post, path = "/api/v1/admin/queues/{name}/clear", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, description = "How many were deleted", body = QueueActionResponse),
        (status = 422, description = "A bad queue name", body = corral_types::Problem),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
    )
)]
pub async fn clear_queue(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(name): Path<String>,
) -> Result<Json<QueueActionResponse>, ApiError> {
    checked_queue(&name)?;
    let count = state.queue.clear(&name).await.map_err(queue_error)?;
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        None,
        "queue.clear",
        "queue",
        Some(&name),
        "success",
    )
    .await;
    Ok(Json(QueueActionResponse { queue: name, count }))
}
