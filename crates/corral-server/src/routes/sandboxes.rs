//! `/api/v1/sandboxes`: create, list, show, change, delete; start, stop,
//! pause, resume; exec. The HTTP adapter of [`corral_service::sandbox`]:
//! each handler extracts, calls one use case and renders its answer.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use corral_service::sandbox::exec::{ExecAnswer, ExecEvent};
use corral_service::sandbox::lifecycle::ListQuery;
use corral_service::sandbox::{exec as exec_use, lifecycle};
use corral_types::agent::ExecResult;
use corral_types::sandbox::{
    CreateSandboxRequest, ExecRequestBody, SandboxPage, SandboxResponse, UpdateSandboxRequest,
};

use crate::auth::Caller;
use crate::auth::{ClientInfo, CurrentUser};
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sandboxes", post(create).get(list))
        .route(
            "/api/v1/sandboxes/{id}",
            get(show).patch(update).delete(remove),
        )
        .route("/api/v1/sandboxes/{id}/start", post(start))
        .route("/api/v1/sandboxes/{id}/stop", post(stop))
        .route("/api/v1/sandboxes/{id}/pause", post(pause))
        .route("/api/v1/sandboxes/{id}/resume", post(resume))
        .route("/api/v1/sandboxes/{id}/exec", post(exec))
        .route(
            "/api/v1/sandboxes/{id}/exec/{exec_id}/stdin",
            post(exec_stdin),
        )
        .route("/api/v1/sandboxes/{id}/stats", get(stats))
        .route("/api/v1/admin/sandboxes", get(admin_list))
}

/// Creates and starts a sandbox in the caller's org.
#[utoipa::path(
    post, path = "/api/v1/sandboxes", tag = "sandboxes", security(("bearer" = [])),
    request_body = CreateSandboxRequest,
    responses(
        (status = 201, description = "Running", body = SandboxResponse),
        (status = 422, description = "A value is refused", body = corral_types::Problem),
        (status = 429, description = "The plan's concurrent sandboxes are all in use", body = corral_types::Problem),
        (status = 503, description = "The sandbox could not start", body = corral_types::Problem),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Caller,
    CurrentUser(user): CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<CreateSandboxRequest>,
) -> Result<(StatusCode, Json<SandboxResponse>), ApiError> {
    let sandbox = lifecycle::create(&state, &principal, &user, &client, body).await?;
    Ok((StatusCode::CREATED, Json(sandbox)))
}
/// Paging of `GET /api/v1/sandboxes`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SandboxQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
    /// Only sandboxes in this state.
    state: Option<String>,
    /// Only sandboxes with this label, as `key=value`.
    label: Option<String>,
}

/// The org's sandboxes, oldest first.
#[utoipa::path(
    get, path = "/api/v1/sandboxes", tag = "sandboxes", security(("bearer" = [])),
    params(SandboxQuery),
    responses((status = 200, description = "A page of sandboxes", body = SandboxPage))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Caller,
    Query(query): Query<SandboxQuery>,
) -> Result<Json<SandboxPage>, ApiError> {
    let query = ListQuery {
        cursor: query.cursor,
        limit: query.limit,
        state: query.state,
        label: query.label,
        ..ListQuery::default()
    };
    Ok(Json(lifecycle::list(&state, &principal, query).await?))
}
/// Paging and filters of `GET /api/v1/admin/sandboxes`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AdminSandboxQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
    /// Only sandboxes in this state.
    state: Option<String>,
    /// Only sandboxes with this label, as `key=value`.
    label: Option<String>,
    /// Only this org's sandboxes.
    org_id: Option<String>,
    /// Only sandboxes on this image (as `corral image ls` names it).
    image: Option<String>,
}

/// Every org's sandboxes, oldest first (platform administrators only).
#[utoipa::path(
    get, path = "/api/v1/admin/sandboxes", tag = "admin", security(("bearer" = [])),
    params(AdminSandboxQuery),
    responses(
        (status = 200, description = "A page of sandboxes", body = SandboxPage),
        (status = 403, description = "Not an administrator", body = corral_types::Problem),
        (status = 422, description = "Invalid filter", body = corral_types::Problem),
    )
)]
pub async fn admin_list(
    State(state): State<AppState>,
    Query(query): Query<AdminSandboxQuery>,
) -> Result<Json<SandboxPage>, ApiError> {
    let query = ListQuery {
        cursor: query.cursor,
        limit: query.limit,
        state: query.state,
        label: query.label,
        org_id: query.org_id,
        image: query.image,
    };
    Ok(Json(lifecycle::admin_list(&state, query).await?))
}
/// One sandbox.
#[utoipa::path(
    get, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The sandbox", body = SandboxResponse),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
) -> Result<Json<SandboxResponse>, ApiError> {
    Ok(Json(lifecycle::show(&state, &principal, &id).await?))
}
/// Stops and deletes a sandbox and everything in it.
#[utoipa::path(
    delete, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    lifecycle::remove(&state, &principal, &client, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
/// Runs a command in a sandbox and returns how it ended. With
/// `Accept: text/event-stream` the answer is a stream of server-sent events
/// instead: with `stream_stdin`, first `started` (`{"exec_id"}`); then
/// `stdout` and `stderr` (`{"data": "…"}`, as the program writes), then
/// one `exit` (the result, with empty stdout and stderr) or `error`
/// (`{"code", "detail"}`). Output past `max_output_bytes` per stream is
/// dropped and the result says `truncated: true`.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/exec", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = ExecRequestBody,
    responses(
        (status = 200, description = "Finished (any exit code), or the event stream", content((ExecResult = "application/json"), (String = "text/event-stream"))),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "The sandbox is not running", body = corral_types::Problem),
        (status = 422, description = "Neither or both of command and argv; max_output_bytes out of range; stream_stdin without an event stream or with stdin", body = corral_types::Problem),
    )
)]
pub async fn exec(
    State(state): State<AppState>,
    principal: Caller,
    CurrentUser(user): CurrentUser,
    client: ClientInfo,
    Path(id): Path<String>,
    headers: http::HeaderMap,
    ApiJson(body): ApiJson<ExecRequestBody>,
) -> Result<axum::response::Response, ApiError> {
    let streaming = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    let answer = exec_use::exec(&state, &principal, &user, &client, &id, body, streaming).await?;
    Ok(match answer {
        ExecAnswer::Done(result) => Json::<ExecResult>(result).into_response(),
        ExecAnswer::Stream(events) => exec_events(events),
    })
}
/// An exec's events as server-sent events, taken as fast as the client
/// reads them (a client that goes away ends the program).
fn exec_events(events: tokio::sync::mpsc::Receiver<ExecEvent>) -> axum::response::Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let frame = |event: ExecEvent| {
        let framed = match event {
            ExecEvent::Started { exec_id } => Event::default()
                .event("started")
                .json_data(corral_types::sandbox::ExecStarted { exec_id }),
            ExecEvent::Output { stream, data } => Event::default()
                .event(stream)
                .json_data(serde_json::json!({ "data": data })),
            ExecEvent::Exit(result) => Event::default().event("exit").json_data(&result),
            ExecEvent::Failed(error) => {
                let problem = ApiError::from(error);
                let problem = problem.problem();
                Event::default()
                    .event("error")
                    .json_data(serde_json::json!({
                        "code": problem.code.as_str(),
                        "detail": problem.detail,
                    }))
            }
            ExecEvent::Panicked => Event::default()
                .event("error")
                .json_data(serde_json::json!({
                    "code": "internal_error",
                    "detail": "the exec failed",
                })),
        };
        framed.ok().map(Ok::<_, std::convert::Infallible>)
    };
    let events = tokio_stream::StreamExt::filter_map(
        tokio_stream::wrappers::ReceiverStream::new(events),
        frame,
    );
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Writes to the standard input of a running exec started with
/// `stream_stdin` (and, with `close`, ends it). A write waits while the
/// program has not read the earlier ones.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/exec/{exec_id}/stdin", tag = "sandboxes", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("exec_id" = String, Path, description = "From the exec stream's `started` event"),
    ),
    request_body = corral_types::terminal::ProcessStdinRequest,
    responses(
        (status = 204, description = "Written"),
        (status = 404, description = "No such sandbox, or no running exec with that id in it", body = corral_types::Problem),
        (status = 409, description = "The exec ended", body = corral_types::Problem),
        (status = 422, description = "Its standard input is closed", body = corral_types::Problem),
    )
)]
pub async fn exec_stdin(
    State(state): State<AppState>,
    principal: Caller,
    Path((id, exec_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<corral_types::terminal::ProcessStdinRequest>,
) -> Result<StatusCode, ApiError> {
    exec_use::write_stdin(&state, &principal, &id, &exec_id, body).await?;
    Ok(StatusCode::NO_CONTENT)
}
/// Changes a sandbox's name, labels or automatic stop and delete.
#[utoipa::path(
    patch, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = UpdateSandboxRequest,
    responses(
        (status = 200, description = "Changed", body = SandboxResponse),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 422, description = "A value is refused", body = corral_types::Problem),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateSandboxRequest>,
) -> Result<Json<SandboxResponse>, ApiError> {
    Ok(Json(
        lifecycle::update(&state, &principal, &client, &id, body).await?,
    ))
}
/// Starts a stopped sandbox again (a running one is left as it is), on the
/// disk it had. One in `error` is first cleaned up as a stop would.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/start", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Running", body = SandboxResponse),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "Not stopped or in error (paused, creating, starting or stopping)", body = corral_types::Problem),
        (status = 429, description = "The plan's concurrent sandboxes are all in use", body = corral_types::Problem),
        (status = 503, description = "It could not start; it stays stopped", body = corral_types::Problem),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Json<SandboxResponse>, ApiError> {
    Ok(Json(
        lifecycle::start(&state, &principal, &client, &id).await?,
    ))
}
/// Stops a sandbox: its programs end and it holds no place in the plan's
/// concurrent sandboxes until started again; its disk (`/tmp` and, for an
/// image, its writable layer) is kept. A stopped one is left as it is; one
/// in `error` is cleaned up (what is left of its container ends) and
/// becomes `stopped`, ready to start again.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/stop", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Stopped", body = SandboxResponse),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "Creating, starting or stopping", body = corral_types::Problem),
    )
)]
pub async fn stop(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Json<SandboxResponse>, ApiError> {
    Ok(Json(
        lifecycle::stop(&state, &principal, &client, &id).await?,
    ))
}
/// Freezes every program of a running sandbox; memory and files are kept.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/pause", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Paused", body = SandboxResponse),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "Not running", body = corral_types::Problem),
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Json<SandboxResponse>, ApiError> {
    Ok(Json(
        lifecycle::pause(&state, &principal, &client, &id).await?,
    ))
}
/// Thaws a paused sandbox.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/resume", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Running", body = SandboxResponse),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "Not paused", body = corral_types::Problem),
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Json<SandboxResponse>, ApiError> {
    Ok(Json(
        lifecycle::resume(&state, &principal, &client, &id).await?,
    ))
}
/// What a running or paused sandbox uses now: CPU time, memory, processes.
#[utoipa::path(
    get, path = "/api/v1/sandboxes/{id}/stats", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Its counters", body = corral_types::sandbox::SandboxStats),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "Not running or paused", body = corral_types::Problem),
    )
)]
pub async fn stats(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
) -> Result<Json<corral_types::sandbox::SandboxStats>, ApiError> {
    Ok(Json(lifecycle::stats(&state, &principal, &id).await?))
}
