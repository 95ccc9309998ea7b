//! `/api/v1/sandboxes/{id}/processes…`: background processes, run and
//! watched by the agent inside the sandbox, with bounded stored logs.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use corral_types::agent::SpawnRequest;
use corral_types::terminal::{
    ProcessInfo, ProcessLogs, ProcessSignalRequest, ProcessStdinRequest, StartProcessRequest,
    signal_number,
};

use crate::auth::Caller;
use crate::auth::ClientInfo;
use crate::extract::ApiJson;
use crate::routes::terminals::agent_refused;
use crate::{ApiError, AppState};
use corral_service::sandbox::{audit_step, command_argv, program_env, running};

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
    let argv = command_argv(body.command, body.argv)?;
    let record = running(&state, &principal, &id).await?;
    let request = SpawnRequest {
        argv,
        env: program_env(&record, body.env),
        cwd: body.cwd.unwrap_or_else(|| "/tmp".to_owned()),
        cols: 0,
        rows: 0,
    };
    let sandbox = state.sandboxes.attach(&record.id);
    let info = tokio::task::spawn_blocking(move || sandbox.process_start(request))
        .await
        .map_err(ApiError::internal)?
        .map_err(agent_refused("command"))?;
    audit_step(
        &state,
        &client,
        &principal,
        "sandbox.process.start",
        &record.id,
        "success",
    )
    .await;
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
    let record = running(&state, &principal, &id).await?;
    let sandbox = state.sandboxes.attach(&record.id);
    tokio::task::spawn_blocking(move || sandbox.processes())
        .await
        .map_err(ApiError::internal)?
        .map(Json)
        .map_err(agent_refused("pid"))
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
    let record = running(&state, &principal, &id).await?;
    let sandbox = state.sandboxes.attach(&record.id);
    let offset = query.offset;
    if !follow {
        return tokio::task::spawn_blocking(move || sandbox.process_logs(pid, offset))
            .await
            .map_err(ApiError::internal)?
            .map(|logs| Json(logs).into_response())
            .map_err(agent_refused("pid"));
    }
    // Refuse an unknown process over HTTP, before the stream starts.
    let probe = sandbox.clone();
    tokio::task::spawn_blocking(move || probe.process_logs(pid, u64::MAX))
        .await
        .map_err(ApiError::internal)?
        .map_err(agent_refused("pid"))?;
    Ok(follow_events(sandbox, pid, offset))
}

fn follow_events(sandbox: corral_runtime::Sandbox, pid: i32, offset: u64) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::task::spawn_blocking(move || {
        let mut last = None;
        let followed = sandbox.process_follow(pid, offset, |logs| {
            for chunk in &logs.chunks {
                let Ok(event) = Event::default().event("log").json_data(chunk) else {
                    continue;
                };
                if tx.blocking_send(event).is_err() {
                    // The client went away.
                    return false;
                }
            }
            last = Some(logs.process);
            true
        });
        let end = match (followed, last) {
            (Ok(()), Some(process)) => Event::default().event("exit").json_data(process),
            (Ok(()), None) => return,
            (Err(error), _) => Event::default()
                .event("error")
                .json_data(serde_json::json!({ "detail": error.to_string() })),
        };
        if let Ok(end) = end {
            let _ = tx.blocking_send(end);
        }
    });
    let events = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        Ok::<_, std::convert::Infallible>,
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
    let record = running(&state, &principal, &id).await?;
    let sandbox = state.sandboxes.attach(&record.id);
    tokio::task::spawn_blocking(move || sandbox.process_input(pid, &body.data, body.close))
        .await
        .map_err(ApiError::internal)?
        .map_err(agent_refused("data"))?;
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
    let number = signal_number(&body.signal).ok_or_else(|| {
        ApiError::invalid_field(
            "signal",
            "use TERM, KILL, INT, HUP, QUIT, USR1, USR2, STOP, CONT or WINCH",
        )
    })?;
    let record = running(&state, &principal, &id).await?;
    let sandbox = state.sandboxes.attach(&record.id);
    tokio::task::spawn_blocking(move || sandbox.process_signal(pid, number))
        .await
        .map_err(ApiError::internal)?
        .map_err(agent_refused("signal"))?;
    audit_step(
        &state,
        &client,
        &principal,
        "sandbox.process.signal",
        &record.id,
        "success",
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
