//! `/api/v1/sandboxes/{id}/processes…`: background processes, run and
//! watched by the agent inside the sandbox, with bounded stored logs.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use corral_service::sandbox::processes::{self, LogEvent};
use corral_types::terminal::{
    ProcessInfo, ProcessLogs, ProcessSignalRequest, ProcessStdinRequest, StartProcessRequest,
};

use crate::auth::Caller;
use crate::auth::ClientInfo;
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sandboxes/{id}/processes", post(start).get(list))
        .route("/api/v1/sandboxes/{id}/processes/{pid}/logs", get(logs))
        .route("/api/v1/sandboxes/{id}/processes/{pid}/stdin", post(stdin))
        .route(
            "/api/v1/sandboxes/{id}/processes/{pid}/signal",
            post(signal),
        )
}

/// Starts a background process.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/processes", tag = "processes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = StartProcessRequest,
    responses(
        (status = 201, description = "Started", body = ProcessInfo),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "Not running, or too many processes", body = corral_types::Problem),
        (status = 422, description = "No command, or it cannot run", body = corral_types::Problem),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StartProcessRequest>,
) -> Result<(StatusCode, Json<ProcessInfo>), ApiError> {
    let info = processes::start(&state, &principal, &client, &id, body).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// The sandbox's background processes, oldest first, with status and exit code.
#[utoipa::path(
    get, path = "/api/v1/sandboxes/{id}/processes", tag = "processes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Processes", body = [ProcessInfo]),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<ProcessInfo>>, ApiError> {
    Ok(Json(processes::list(&state, &principal, &id).await?))
}

/// `?offset=&follow=` of the logs route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Start at this offset of the output (default 0: the oldest kept).
    #[serde(default)]
    offset: u64,
    /// Keep the response open and send new output as server-sent events
    /// until the process ends (also chosen by `Accept: text/event-stream`).
    #[serde(default)]
    follow: bool,
}

/// A process's stored output (the most recent megabyte); with `follow` or
/// `Accept: text/event-stream`, a stream of `log` events (one per piece of
/// output) ending with an `exit` event carrying the process.
#[utoipa::path(
    get, path = "/api/v1/sandboxes/{id}/processes/{pid}/logs", tag = "processes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), ("pid" = i32, Path, description = "Process id"), LogsQuery),
    responses(
        (status = 200, description = "Output from the offset on", body = ProcessLogs),
        (status = 404, description = "No such sandbox or process", body = corral_types::Problem),
    )
)]
pub async fn logs(
    State(state): State<AppState>,
    principal: Caller,
    Path((id, pid)): Path<(String, i32)>,
    Query(query): Query<LogsQuery>,
    headers: http::HeaderMap,
) -> Result<Response, ApiError> {
    let follow = query.follow
        || headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/event-stream"));
    if !follow {
        let logs = processes::logs(&state, &principal, &id, pid, query.offset).await?;
        return Ok(Json(logs).into_response());
    }
    let events = processes::follow(&state, &principal, &id, pid, query.offset).await?;
    Ok(follow_events(events))
}

/// A followed log as server-sent events: `log` per piece of output, then
/// `exit` (the process) or `error`.
fn follow_events(events: tokio::sync::mpsc::Receiver<LogEvent>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let frame = |event: LogEvent| {
        let framed = match event {
            LogEvent::Log(chunk) => Event::default().event("log").json_data(chunk),
            LogEvent::Exit(process) => Event::default().event("exit").json_data(process),
            LogEvent::Failed(detail) => Event::default()
                .event("error")
                .json_data(serde_json::json!({ "detail": detail })),
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

/// Writes to a process's standard input (and, with `close`, ends it).
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/processes/{pid}/stdin", tag = "processes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), ("pid" = i32, Path, description = "Process id")),
    request_body = ProcessStdinRequest,
    responses(
        (status = 204, description = "Written"),
        (status = 404, description = "No such sandbox or process", body = corral_types::Problem),
        (status = 422, description = "Its standard input is closed", body = corral_types::Problem),
    )
)]
pub async fn stdin(
    State(state): State<AppState>,
    principal: Caller,
    Path((id, pid)): Path<(String, i32)>,
    ApiJson(body): ApiJson<ProcessStdinRequest>,
) -> Result<StatusCode, ApiError> {
    processes::write_stdin(&state, &principal, &id, pid, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a signal to a process and its process group.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/processes/{pid}/signal", tag = "processes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), ("pid" = i32, Path, description = "Process id")),
    request_body = ProcessSignalRequest,
    responses(
        (status = 204, description = "Sent"),
        (status = 404, description = "No such sandbox or process", body = corral_types::Problem),
        (status = 422, description = "Unknown signal, or the process has exited", body = corral_types::Problem),
    )
)]
pub async fn signal(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path((id, pid)): Path<(String, i32)>,
    ApiJson(body): ApiJson<ProcessSignalRequest>,
) -> Result<StatusCode, ApiError> {
    processes::signal(&state, &principal, &client, &id, pid, body).await?;
    Ok(StatusCode::NO_CONTENT)
}
