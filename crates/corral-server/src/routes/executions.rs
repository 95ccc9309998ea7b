//! `/api/v1/executions…` and `/api/v1/languages`: one-shot runs to a
//! verdict, synchronous (`wait`), queued, or in batches.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use corral_core::auth::Principal;
use corral_store::{ExecutionFilter, ExecutionRecord, User};
use corral_types::executions::{
    BatchRequest, BatchResponse, CreateExecutionRequest, ExecutionPage, ExecutionResponse,
    LanguageResponse, RunSnippetRequest,
};

use crate::auth::Caller;
use crate::auth::{ClientInfo, CurrentUser};
use crate::executions::{language, languages, response, valid_file_name};
use crate::extract::ApiJson;
use crate::quota::Daily;
use crate::routes::admin::{page_cut, page_limit};
use crate::routes::auth::audit;
use crate::{ApiError, AppState};

use corral_service::executions::{QUEUE, RUN_JOB, priority};

/// Largest source.
const MAX_CODE: usize = 256 * 1024;
/// Largest standard input.
const MAX_STDIN: usize = 1024 * 1024;
/// Most extra files.
const MAX_FILES: usize = 16;
/// Most executions in a batch.
const MAX_BATCH: usize = 100;
/// Largest output limit, KiB.
const MAX_OUTPUT_KB: u64 = 1024;

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
    Json(languages().iter().map(|l| l.describe()).collect())
}

/// Validates a request into a record (`queued`), within the plan's caps.
async fn record_of(
    state: &AppState,
    principal: &Principal,
    user: &User,
    request: &CreateExecutionRequest,
    batch_id: Option<&str>,
    field: &str,
) -> Result<ExecutionRecord, ApiError> {
    let at = |name: &str| format!("{field}{name}");
    let Some(lang) = language(&request.language) else {
        let known: Vec<&str> = languages().iter().map(|l| l.name.as_str()).collect();
        return Err(ApiError::invalid_field(
            &at("language"),
            format!("unknown language; this server runs: {}", known.join(", ")),
        ));
    };
    if request.code.is_empty() || request.code.len() > MAX_CODE {
        return Err(ApiError::invalid_field(
            &at("code"),
            "must be 1 byte to 256 KiB",
        ));
    }
    let stdin = request.stdin.clone().unwrap_or_default();
    if stdin.len() > MAX_STDIN {
        return Err(ApiError::invalid_field(&at("stdin"), "at most 1 MiB"));
    }
    if request.files.len() > MAX_FILES {
        return Err(ApiError::invalid_field(&at("files"), "at most 16 files"));
    }
    for file in &request.files {
        if !valid_file_name(&file.name) || file.name == lang.source_file {
            return Err(ApiError::invalid_field(
                &at("files"),
                format!(
                    "`{}`: a plain file name of [A-Za-z0-9._-] (no directories), not the source file",
                    file.name
                ),
            ));
        }
    }
    let plan = state.plans.get(&user.plan_id);
    let max_time_ms = plan.map_or(30_000, |p| {
        u64::try_from(p.max_time_secs).unwrap_or(30) * 1000
    });
    let max_memory = plan.map_or(128, |p| u64::try_from(p.max_memory_mb).unwrap_or(128));
    let time_ms = request
        .limits
        .time_ms
        .unwrap_or(lang.limits.time_ms.min(max_time_ms));
    let memory_mb = request
        .limits
        .memory_mb
        .unwrap_or(lang.limits.memory_mb.min(max_memory));
    let output_kb = request.limits.output_kb.unwrap_or(lang.limits.output_kb);
    if !(1..=max_time_ms).contains(&time_ms) {
        return Err(ApiError::invalid_field(
            &at("limits.time_ms"),
            format!("must be 1–{max_time_ms} (your plan's limit)"),
        ));
    }
    let max_wall_ms = max_time_ms.saturating_mul(4);
    let wall_ms = request
        .limits
        .wall_time_ms
        .unwrap_or_else(|| crate::executions::default_wall_ms(time_ms).min(max_wall_ms));
    if !(1..=max_wall_ms).contains(&wall_ms) {
        return Err(ApiError::invalid_field(
            &at("limits.wall_time_ms"),
            format!("must be 1–{max_wall_ms} (4 × your plan's longest execution)"),
        ));
    }
    if !(16..=max_memory).contains(&memory_mb) {
        return Err(ApiError::invalid_field(
            &at("limits.memory_mb"),
            format!("must be 16–{max_memory} (your plan's limit)"),
        ));
    }
    if !(1..=MAX_OUTPUT_KB).contains(&output_kb) {
        return Err(ApiError::invalid_field(
            &at("limits.output_kb"),
            format!("must be 1–{MAX_OUTPUT_KB}"),
        ));
    }
    if let Some(url) = &request.callback_url {
        if state.config.executions.callback_secret.is_empty() {
            return Err(ApiError::invalid_field(
                &at("callback_url"),
                "callbacks are off on this server (executions.callback_secret is not set)",
            ));
        }
        crate::callbacks::resolve(url, state.config.executions.allow_private_callbacks)
            .await
            .map_err(|why| ApiError::invalid_field(&at("callback_url"), why))?;
    }
    let files = serde_json::to_string(&request.files).map_err(ApiError::internal)?;
    let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Ok(ExecutionRecord {
        id: corral_core::id::new_id(),
        org_id: principal.org_id.clone(),
        user_id: principal.user_id.clone(),
        batch_id: batch_id.map(str::to_owned),
        language: lang.name.clone(),
        status: "queued".to_owned(),
        code: request.code.clone(),
        stdin,
        files,
        expected_output: request.expected_output.clone(),
        time_limit_ms: big(time_ms),
        wall_limit_ms: Some(big(wall_ms)),
        memory_limit_mb: big(memory_mb),
        output_limit_kb: big(output_kb),
        callback_url: request.callback_url.clone(),
        exit_code: None,
        signal: None,
        stdout: String::new(),
        stderr: String::new(),
        compile_output: String::new(),
        time_ms: None,
        wall_ms: None,
        memory_kb: None,
        error: None,
        created_at: state.clock.now_ms(),
        started_at: None,
        finished_at: None,
    })
}

/// Queues a recorded execution.
async fn enqueue(state: &AppState, user: &User, id: &str) -> Result<(), ApiError> {
    let job = corral_queue::NewJob::new(RUN_JOB, serde_json::json!({ "id": id }))
        .queue(QUEUE)
        .priority(priority(user))
        .unique(format!("execution:{id}"));
    state
        .queue
        .enqueue(job)
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("queueing the execution: {e}")))?;
    Ok(())
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
    submit(&state, &principal, &user, &client, &body).await
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
    let snippet = crate::routes::library::snippet_for(&state, &principal, &id).await?;
    let request = CreateExecutionRequest {
        language: snippet.language,
        code: snippet.code,
        stdin: body.stdin,
        limits: body.limits,
        wait: body.wait,
        ..CreateExecutionRequest::default()
    };
    submit(&state, &principal, &user, &client, &request).await
}

/// Records, counts and runs (or queues) one execution.
async fn submit(
    state: &AppState,
    principal: &Principal,
    user: &User,
    client: &ClientInfo,
    body: &CreateExecutionRequest,
) -> Result<Response, ApiError> {
    let state = state.clone();
    let record = record_of(&state, principal, user, body, None, "").await?;
    crate::quota::take(&state, user, Daily::Executions, state.clock.now_ms()).await?;
    state
        .store
        .insert_executions(std::slice::from_ref(&record))
        .await?;
    audit(
        &state,
        client,
        Some(&principal.user_id),
        Some(&principal.org_id),
        "execution.create",
        "execution",
        Some(&record.id),
        "success",
    )
    .await;
    if body.wait {
        crate::executions::run_recorded(&state, &record.id)
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
        let done = state
            .store
            .execution(Some(&principal.org_id), &record.id)
            .await?
            .ok_or_else(|| ApiError::not_found("execution"))?;
        return Ok(Json(response(&done)).into_response());
    }
    enqueue(&state, user, &record.id).await?;
    Ok((StatusCode::ACCEPTED, Json(response(&record))).into_response())
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
    if body.executions.is_empty() || body.executions.len() > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "executions",
            format!("give 1–{MAX_BATCH} executions"),
        ));
    }
    let batch_id = corral_core::id::new_id();
    let mut records = Vec::with_capacity(body.executions.len());
    for (i, request) in body.executions.iter().enumerate() {
        if request.wait {
            return Err(ApiError::invalid_field(
                &format!("executions[{i}].wait"),
                "a batch runs in the background: wait must be false",
            ));
        }
        let field = format!("executions[{i}].");
        records.push(record_of(&state, &principal, &user, request, Some(&batch_id), &field).await?);
    }
    let now = state.clock.now_ms();
    for _ in &records {
        crate::quota::take(&state, &user, Daily::Executions, now).await?;
    }
    state.store.insert_executions(&records).await?;
    for record in &records {
        enqueue(&state, &user, &record.id).await?;
    }
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        Some(&principal.org_id),
        "execution.batch",
        "execution_batch",
        Some(&batch_id),
        "success",
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchResponse {
            id: batch_id,
            finished: 0,
            total: records.len(),
            executions: records.iter().map(response).collect(),
        }),
    ))
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
    let mut records = state
        .store
        .executions(&ExecutionFilter {
            org_id: Some(principal.org_id.clone()),
            batch_id: Some(id.clone()),
            limit: i64::try_from(MAX_BATCH).unwrap_or(100),
            ..ExecutionFilter::default()
        })
        .await?;
    if records.is_empty() {
        return Err(ApiError::not_found("batch"));
    }
    // Ids are time-ordered: ascending is the order they were made in.
    records.reverse();
    let finished = records
        .iter()
        .filter(|r| !matches!(r.status.as_str(), "queued" | "running"))
        .count();
    Ok(Json(BatchResponse {
        id,
        finished,
        total: records.len(),
        executions: records.iter().map(response).collect(),
    }))
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
    state
        .store
        .execution(Some(&principal.org_id), &id)
        .await?
        .map(|r| Json(response(&r)))
        .ok_or_else(|| ApiError::not_found("execution"))
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

async fn page(
    state: &AppState,
    org_id: Option<String>,
    query: HistoryQuery,
) -> Result<Json<ExecutionPage>, ApiError> {
    let limit = page_limit(query.limit)?;
    let mut rows = state
        .store
        .executions(&ExecutionFilter {
            org_id,
            user_id: query.user,
            status: query.status,
            language: query.language,
            batch_id: None,
            before_id: query.cursor,
            limit: limit + 1,
        })
        .await?;
    let next_cursor = page_cut(&mut rows, limit, |r| r.id.clone());
    Ok(Json(ExecutionPage {
        items: rows.iter().map(response).collect(),
        next_cursor,
    }))
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
    page(&state, Some(principal.org_id.clone()), query).await
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
    page(&state, None, query).await
}
