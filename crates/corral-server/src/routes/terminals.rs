//! `/api/v1/sandboxes/{id}/terminals…`: persistent terminals, kept by the
//! agent inside the sandbox, and the WebSocket that attaches to one.
//!
//! Each WebSocket is one agent connection. Output is relayed as fast as
//! that client takes it; a client that stops reading backs up only its own
//! connection, and the agent (after waiting for it once, at most 500 ms)
//! drops its queue and redraws its screen when it catches up, so the PTY
//! and the other clients do not wait for it again.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use corral_core::auth::{Action, Principal};
use corral_store::SandboxRecord;
use corral_types::ErrorCode;
use corral_types::terminal::{
    OpenTerminalRequest, TerminalClientMessage, TerminalInfo, TerminalInput, TerminalServerMessage,
};

use crate::auth::Caller;
use crate::auth::ClientInfo;
use crate::extract::ApiJson;
use crate::{ApiError, AppState};
use corral_service::sandbox::processes::{self, MAX_TERMINAL_SIZE};

/// How long a client that connected without credentials has to send them.
const AUTH_WAIT: Duration = Duration::from_secs(10);
/// Largest output frame sent to a client.
const OUTPUT_FRAME: usize = 64 * 1024;
/// Least room offered to a read from the agent.
const MIN_READ: usize = 16 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sandboxes/{id}/terminals", post(open).get(list))
        .route("/api/v1/sandboxes/{id}/terminals/{tid}", delete(close))
        .route("/api/v1/sandboxes/{id}/terminals/{tid}/ws", get(attach))
}

/// Opens a terminal: a program on a PTY that keeps running with no client
/// attached.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/terminals", tag = "terminals", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = OpenTerminalRequest,
    responses(
        (status = 201, description = "Opened", body = TerminalInfo),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "Not running, or too many terminals", body = corral_types::Problem),
        (status = 422, description = "Bad size or program", body = corral_types::Problem),
    )
)]
pub async fn open(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<OpenTerminalRequest>,
) -> Result<(StatusCode, Json<TerminalInfo>), ApiError> {
    let info = processes::open_terminal(&state, &principal, &client, &id, body).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// The sandbox's terminals, oldest first.
#[utoipa::path(
    get, path = "/api/v1/sandboxes/{id}/terminals", tag = "terminals", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Terminals", body = [TerminalInfo]),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<TerminalInfo>>, ApiError> {
    Ok(Json(processes::terminals(&state, &principal, &id).await?))
}

/// Ends a terminal (its program is hung up, then killed) and forgets it.
#[utoipa::path(
    delete, path = "/api/v1/sandboxes/{id}/terminals/{tid}", tag = "terminals", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), ("tid" = String, Path, description = "Terminal id")),
    responses(
        (status = 204, description = "Ended"),
        (status = 404, description = "No such sandbox or terminal", body = corral_types::Problem),
    )
)]
pub async fn close(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path((id, tid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    processes::close_terminal(&state, &principal, &client, &id, tid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Attaches to a terminal over a WebSocket.
///
/// Credentials: `Authorization: Bearer`, a session cookie, `?token=`, or,
/// with none of these, a first message `{"type":"auth","token":"…"}`. A
/// browser's `Origin` must be this server or an allowed CORS origin.
/// The client sends JSON text frames (`input`, `resize`, `ping`) or binary
/// frames of raw input; the server sends output as binary frames, first
/// recent output and the current screen, then live output.
#[utoipa::path(
    get, path = "/api/v1/sandboxes/{id}/terminals/{tid}/ws", tag = "terminals", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("tid" = String, Path, description = "Terminal id"),
        ("token" = Option<String>, Query, description = "Access token or API key, for clients that cannot set headers"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 401, description = "Bad credentials", body = corral_types::Problem),
        (status = 403, description = "Cross-site Origin", body = corral_types::Problem),
        (status = 404, description = "No such sandbox or terminal", body = corral_types::Problem),
    )
)]
pub async fn attach(
    State(state): State<AppState>,
    principal: Option<Caller>,
    Path((id, tid)): Path<(String, String)>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    let max = state.config.sandbox.terminal_max_message_bytes;
    let upgrade = upgrade.max_message_size(max).max_frame_size(max);
    if let Some(principal) = principal {
        // Refuse over HTTP, before the upgrade, what can be refused.
        let attached = connect(&state, &principal, &id, &tid).await?;
        return Ok(upgrade.on_upgrade(move |socket| relay(state, attached, socket)));
    }
    Ok(upgrade.on_upgrade(move |mut socket| async move {
        match first_message_auth(&state, &mut socket).await {
            Ok(principal) => match connect(&state, &principal, &id, &tid).await {
                Ok(attached) => relay(state, attached, socket).await,
                Err(error) => refuse(socket, &error).await,
            },
            Err(error) => refuse(socket, &error).await,
        }
    }))
}

/// A browser's WebSocket carries the page's `Origin`: only this server and
/// the configured CORS origins may attach (cross-site WebSocket hijacking
/// would otherwise ride on the session cookie).
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let allowed = crate::auth::session::is_own_origin(&state.config, headers, origin)
        || state
            .config
            .server
            .cors_allowed_origins
            .iter()
            .any(|o| o == origin);
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("WebSocket from another site refused (Origin {origin})"),
        ))
    }
}

/// Waits for `{"type":"auth","token":…}` and checks it.
async fn first_message_auth(
    state: &AppState,
    socket: &mut WebSocket,
) -> Result<Principal, ApiError> {
    let unauthorized = |detail: &str| ApiError::new(ErrorCode::Unauthorized, detail.to_owned());
    let first = tokio::time::timeout(AUTH_WAIT, socket.recv())
        .await
        .map_err(|_| unauthorized("no credentials: send {\"type\":\"auth\",\"token\":…} first"))?;
    let Some(Ok(Message::Text(text))) = first else {
        return Err(unauthorized(
            "no credentials: send {\"type\":\"auth\",\"token\":…} first",
        ));
    };
    match serde_json::from_str::<TerminalClientMessage>(&text) {
        Ok(TerminalClientMessage::Auth { token }) => {
            let (principal, _) =
                crate::auth::authorize_token(state, &token, Action::WriteSandboxes).await?;
            Ok(principal)
        }
        _ => Err(unauthorized(
            "the first message must be {\"type\":\"auth\",\"token\":…}",
        )),
    }
}

/// What [`connect`] gives: the sandbox, the agent connection, output
/// that arrived with the agent's answer (the start of the greeting), and
/// the terminal's id.
type Attached = (SandboxRecord, tokio::net::UnixStream, Vec<u8>, String);

/// The sandbox record and an attached agent connection.
async fn connect(
    state: &AppState,
    principal: &Principal,
    id: &str,
    tid: &str,
) -> Result<Attached, ApiError> {
    let (record, stream, early) =
        processes::attach_terminal(state, principal, id, tid.to_owned()).await?;
    stream.set_nonblocking(true).map_err(ApiError::internal)?;
    let stream = tokio::net::UnixStream::from_std(stream).map_err(ApiError::internal)?;
    Ok((record, stream, early, tid.to_owned()))
}

/// Closes a WebSocket that may not attach, with the reason (policy
/// violation, 1008).
async fn refuse(mut socket: WebSocket, error: &ApiError) {
    let problem = error.problem();
    // Close reasons are capped at 123 bytes by the protocol.
    let mut reason = problem
        .detail
        .clone()
        .unwrap_or_else(|| problem.code.as_str().to_owned());
    while reason.len() > 120 {
        reason.pop();
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1008,
            reason: reason.into(),
        })))
        .await;
}

/// Relays one client and its agent connection until either ends.
/// (An attached client is activity for auto-stop: the sweep asks the agent.)
async fn relay(state: AppState, (record, agent, early, tid): Attached, socket: WebSocket) {
    let (mut from_agent, mut to_agent) = agent.into_split();
    let (mut to_client, mut from_client) = socket.split();
    if !early.is_empty()
        && to_client
            .send(Message::Binary(bytes::Bytes::from(early)))
            .await
            .is_err()
    {
        return;
    }
    let idle = Duration::from_secs(state.config.sandbox.terminal_idle_secs.max(1));
    // One timer for the whole connection, pushed back on each client message
    // (not a new one per output frame).
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    // Output is read straight into the frames' buffer (no copy per frame);
    // frames share one allocation until less than a good read is left.
    let mut buf = bytes::BytesMut::new();
    let end: (u16, String) = loop {
        if buf.capacity() < MIN_READ {
            buf.reserve(OUTPUT_FRAME);
        }
        tokio::select! {
            read = from_agent.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    // The program's exit status goes to the client before
                    // the close, so `corral shell -- CMD` can exit with it.
                    let exit = exit_message(&state, &record.id, &tid).await;
                    if let Some(exit) = exit
                        && to_client.send(Message::Text(exit.into())).await.is_err()
                    {
                        return;
                    }
                    break (1000, "the terminal ended".to_owned());
                }
                Ok(_) => {
                    // `reserve` may have given more room than a frame.
                    while !buf.is_empty() {
                        let frame = buf.split_to(buf.len().min(OUTPUT_FRAME)).freeze();
                        if to_client.send(Message::Binary(frame)).await.is_err() {
                            return;
                        }
                    }
                }
            },
            message = from_client.next() => {
                let input = match message {
                    Some(Ok(Message::Text(text))) => {
                        match serde_json::from_str::<TerminalClientMessage>(&text) {
                            Ok(TerminalClientMessage::Input { data }) => {
                                Some(TerminalInput::Input { data })
                            }
                            Ok(TerminalClientMessage::Resize { cols, rows }) => {
                                if !(1..=MAX_TERMINAL_SIZE).contains(&cols) || !(1..=MAX_TERMINAL_SIZE).contains(&rows) {
                                    break (1008, format!("cols and rows must be 1–{MAX_TERMINAL_SIZE}"));
                                }
                                Some(TerminalInput::Resize { cols, rows })
                            }
                            Ok(TerminalClientMessage::Ping) => {
                                let pong = serde_json::to_string(&TerminalServerMessage::Pong)
                                    .unwrap_or_default();
                                let pong = Message::Text(pong.into());
                                if to_client.send(pong).await.is_err() {
                                    return;
                                }
                                None
                            }
                            Ok(TerminalClientMessage::Auth { .. }) => None,
                            Err(error) => break (1003, format!("not a terminal message: {error}")),
                        }
                    }
                    Some(Ok(Message::Binary(bytes))) => Some(TerminalInput::Input {
                        data: String::from_utf8_lossy(&bytes).into_owned(),
                    }),
                    // WebSocket pings are answered by the protocol layer.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                    Some(Ok(Message::Close(_))) | None => return,
                    Some(Err(error)) => {
                        // Typically a message over the size cap.
                        break (1009, format!("{error}"));
                    }
                };
                idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                if let Some(input) = input {
                    let mut line = serde_json::to_vec(&input).unwrap_or_default();
                    line.push(b'\n');
                    if to_agent.write_all(&line).await.is_err() {
                        // The agent closed this connection: almost always the
                        // terminal ended while this input (a client's first
                        // resize, say) was on its way. Forward what it still
                        // wrote, then its status, as when the output ends;
                        // only a terminal with no status is a lost sandbox.
                        loop {
                            buf.clear();
                            match tokio::time::timeout(
                                Duration::from_secs(1),
                                from_agent.read_buf(&mut buf),
                            )
                            .await
                            {
                                Ok(Ok(n)) if n > 0 => {
                                    let frame = buf.split().freeze();
                                    if to_client.send(Message::Binary(frame)).await.is_err() {
                                        return;
                                    }
                                }
                                _ => break,
                            }
                        }
                        match exit_message(&state, &record.id, &tid).await {
                            Some(exit) => {
                                if to_client.send(Message::Text(exit.into())).await.is_err() {
                                    return;
                                }
                                break (1000, "the terminal ended".to_owned());
                            }
                            None => break (1011, "the sandbox went away".to_owned()),
                        }
                    }
                }
            },
            () = &mut idle_timer => {
                break (1000, "closed after a long time without a message from the client".to_owned());
            },
        }
    };
    let _ = to_client
        .send(Message::Close(Some(CloseFrame {
            code: end.0,
            reason: end.1.into(),
        })))
        .await;
}

/// `{"type":"exit",…}` for a terminal whose output has ended, once the
/// agent has its exit status; `None` when the terminal is gone (closed by
/// another client) or still running (its PTY closed by something else).
async fn exit_message(state: &AppState, sandbox_id: &str, tid: &str) -> Option<String> {
    let sandbox = state.sandboxes.attach(sandbox_id);
    let tid = tid.to_owned();
    let info = tokio::task::spawn_blocking(move || sandbox.terminal_wait(&tid))
        .await
        .ok()?
        .ok()?;
    if info.running {
        return None;
    }
    serde_json::to_string(&TerminalServerMessage::Exit {
        exit_code: info.exit_code,
        signal: info.signal,
    })
    .ok()
}
