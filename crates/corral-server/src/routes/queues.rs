//! `/api/v1/admin/queues…` and `/api/v1/admin/jobs…`: administration of
//! the job queue, over [`corral_service::queues`].

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use corral_service::queues::{self as use_case, JobSearch};
use corral_types::queue::{JobPage, JobResponse, QueueActionResponse, QueueList};

use crate::auth::Caller;
use crate::auth::ClientInfo;
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

/// Every queue that holds a job, with its numbers.
#[utoipa::path(
    get, path = "/api/v1/admin/queues", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Queues by name", body = QueueList),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
    )
)]
pub async fn list_queues(State(state): State<AppState>) -> Result<Json<QueueList>, ApiError> {
    Ok(Json(use_case::list_queues(&state).await?))
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

impl From<JobQuery> for JobSearch {
    fn from(query: JobQuery) -> JobSearch {
        JobSearch {
            state: query.state,
            queue: query.queue,
            cursor: query.cursor,
            limit: query.limit,
        }
    }
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
    Ok(Json(use_case::list_jobs(&state, query.into()).await?))
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
    Ok(Json(use_case::job(&state, &id).await?))
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
    Ok(Json(
        use_case::retry_job(&state, &principal, &client, &id).await?,
    ))
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
    Ok(Json(
        use_case::retry_queue(&state, &principal, &client, &name).await?,
    ))
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
    Ok(Json(
        use_case::clear_queue(&state, &principal, &client, &name).await?,
    ))
}
