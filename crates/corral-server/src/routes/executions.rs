//! `/api/v1/executions…` and `/api/v1/languages`: one-shot runs to a
//! verdict, synchronous (`wait`), queued, or in batches, over
//! [`corral_service::submit`] (which holds the rules and the plan caps).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use corral_service::submit::{self as use_case, HistorySearch, Submitted};
use corral_types::executions::{
    BatchRequest, BatchResponse, CreateExecutionRequest, ExecutionPage, ExecutionResponse,
    LanguageResponse, RunSnippetRequest,
};

use crate::auth::Caller;
use crate::auth::{ClientInfo, CurrentUser};
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/languages", get(list_languages))
        .route("/api/v1/executions", post(create).get(history))
        .route("/api/v1/executions/batch", post(create_batch))
        .route("/api/v1/executions/batch/{id}", get(batch))
        .route("/api/v1/executions/{id}", get(show))
        .route("/api/v1/admin/executions", get(admin_history))
        .route("/api/v1/library/{id}/run", post(run_snippet))
}

/// The languages this server runs.
#[utoipa::path(
    get, path = "/api/v1/languages", tag = "executions", security(("bearer" = [])),
    responses((status = 200, description = "Runnable languages", body = [LanguageResponse]))
)]
pub async fn list_languages() -> Json<Vec<LanguageResponse>> {
    Json(use_case::list_languages())
}

/// A finished execution is 200; a queued one 202.
fn rendered(submitted: Submitted) -> Response {
    match submitted {
        Submitted::Finished(done) => Json(done).into_response(),
        Submitted::Queued(queued) => (StatusCode::ACCEPTED, Json(queued)).into_response(),
    }
}

/// Runs code to a verdict: with `wait` the answer is the finished result
/// (200); otherwise 202 with its id at once (poll `GET
/// /api/v1/executions/{id}` or pass a `callback_url`).
#[utoipa::path(
    post, path = "/api/v1/executions", tag = "executions", security(("bearer" = [])),
    request_body = CreateExecutionRequest,
    responses(
        (status = 200, description = "Finished (wait)", body = ExecutionResponse),
        (status = 202, description = "Queued", body = ExecutionResponse),
        (status = 422, description = "Bad language, code, limits or callback", body = corral_types::Problem),
        (status = 429, description = "Daily executions used up", body = corral_types::Problem),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Caller,
    CurrentUser(user): CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<CreateExecutionRequest>,
) -> Result<Response, ApiError> {
    let submitted = use_case::submit(&state, &principal, &user, &client, &body).await?;
    Ok(rendered(submitted))
}

/// Runs a library snippet (the caller's own or a public one) as an
/// execution; by default the answer is the finished result.
#[utoipa::path(
    post, path = "/api/v1/library/{id}/run", tag = "executions", security(("bearer" = [])),
    params(("id" = String, Path, description = "Snippet id")),
    request_body = RunSnippetRequest,
    responses(
        (status = 200, description = "Finished (wait)", body = ExecutionResponse),
        (status = 202, description = "Queued", body = ExecutionResponse),
        (status = 404, description = "No such snippet you may see", body = corral_types::Problem),
        (status = 422, description = "Its language is not available here", body = corral_types::Problem),
    )
)]
pub async fn run_snippet(
    State(state): State<AppState>,
    principal: Caller,
    CurrentUser(user): CurrentUser,
    client: ClientInfo,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RunSnippetRequest>,
) -> Result<Response, ApiError> {
    let submitted = use_case::run_snippet(&state, &principal, &user, &client, &id, body).await?;
    Ok(rendered(submitted))
}

/// Queues several executions as one batch (each counts against the daily
/// quota); fetch them together at `GET /api/v1/executions/batch/{id}`.
#[utoipa::path(
    post, path = "/api/v1/executions/batch", tag = "executions", security(("bearer" = [])),
    request_body = BatchRequest,
    responses(
        (status = 202, description = "Queued", body = BatchResponse),
        (status = 422, description = "A bad execution (its index is in the field name)", body = corral_types::Problem),
        (status = 429, description = "Daily executions used up", body = corral_types::Problem),
    )
)]
pub async fn create_batch(
    State(state): State<AppState>,
    principal: Caller,
    CurrentUser(user): CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<BatchRequest>,
) -> Result<(StatusCode, Json<BatchResponse>), ApiError> {
    let batch = use_case::submit_batch(&state, &principal, &user, &client, &body).await?;
    Ok((StatusCode::ACCEPTED, Json(batch)))
}

/// A batch's executions, in the order they were given.
#[utoipa::path(
    get, path = "/api/v1/executions/batch/{id}", tag = "executions", security(("bearer" = [])),
    params(("id" = String, Path, description = "Batch id")),
    responses(
        (status = 200, description = "The batch", body = BatchResponse),
        (status = 404, description = "No such batch in this org", body = corral_types::Problem),
    )
)]
pub async fn batch(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
) -> Result<Json<BatchResponse>, ApiError> {
    Ok(Json(use_case::batch(&state, &principal, &id).await?))
}

/// One execution of the caller's org.
#[utoipa::path(
    get, path = "/api/v1/executions/{id}", tag = "executions", security(("bearer" = [])),
    params(("id" = String, Path, description = "Execution id")),
    responses(
        (status = 200, description = "The execution", body = ExecutionResponse),
        (status = 404, description = "No such execution in this org", body = corral_types::Problem),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
) -> Result<Json<ExecutionResponse>, ApiError> {
    Ok(Json(use_case::show(&state, &principal, &id).await?))
}

/// Filters of execution history.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only in this status.
    status: Option<String>,
    /// Only this language.
    language: Option<String>,
    /// Only this user's (administrators: any user).
    user: Option<String>,
    /// From a previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size (1–200, default 50).
    limit: Option<i64>,
}

impl From<HistoryQuery> for HistorySearch {
    fn from(query: HistoryQuery) -> HistorySearch {
        HistorySearch {
            status: query.status,
            language: query.language,
            user: query.user,
            cursor: query.cursor,
            limit: query.limit,
        }
    }
}

/// The org's executions, newest first.
#[utoipa::path(
    get, path = "/api/v1/executions", tag = "executions", security(("bearer" = [])),
    params(HistoryQuery),
    responses((status = 200, description = "A page of executions", body = ExecutionPage))
)]
pub async fn history(
    State(state): State<AppState>,
    principal: Caller,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<ExecutionPage>, ApiError> {
    Ok(Json(
        use_case::history(&state, &principal, query.into()).await?,
    ))
}

/// Every org's executions, newest first (administrators).
#[utoipa::path(
    get, path = "/api/v1/admin/executions", tag = "admin", security(("bearer" = [])),
    params(HistoryQuery),
    responses(
        (status = 200, description = "A page of executions", body = ExecutionPage),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
    )
)]
pub async fn admin_history(
    State(state): State<AppState>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<ExecutionPage>, ApiError> {
    Ok(Json(use_case::admin_history(&state, query.into()).await?))
}
