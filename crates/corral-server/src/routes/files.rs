//! `/api/v1/sandboxes/{id}/files…`: file operations, carried out by the
//! agent inside the sandbox. The server never resolves a sandbox path.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::header;
use serde::Deserialize;

use corral_service::sandbox::files;
use corral_types::ErrorCode;
use corral_types::agent::FileInfo;
use corral_types::sandbox::{
    ChmodRequest, DeleteRequest, MkdirRequest, MoveRequest, ReplaceRequest, ReplaceResponse,
    SearchResponse,
};

use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

/// Bytes per chunk of a streamed download.
const DOWNLOAD_CHUNK: usize = 256 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sandboxes/{id}/files", get(list))
        .route(
            "/api/v1/sandboxes/{id}/files/content",
            get(download).put(upload),
        )
        .route("/api/v1/sandboxes/{id}/files/mkdir", post(mkdir))
        .route("/api/v1/sandboxes/{id}/files/move", post(rename))
        .route("/api/v1/sandboxes/{id}/files/delete", post(delete))
        .route("/api/v1/sandboxes/{id}/files/chmod", post(chmod))
        .route("/api/v1/sandboxes/{id}/files/replace", post(replace))
        .route("/api/v1/sandboxes/{id}/files/search", get(search))
}

/// `?path=` of file routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// Absolute path inside the sandbox.
    path: String,
}

/// A directory's entries.
#[utoipa::path(
    get, path = "/api/v1/sandboxes/{id}/files", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), PathQuery),
    responses(
        (status = 200, description = "Entries by name", body = [FileInfo]),
        (status = 404, description = "No such sandbox or path", body = corral_types::Problem),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Json<Vec<FileInfo>>, ApiError> {
    Ok(Json(
        files::list(&state, &principal, &id, query.path).await?,
    ))
}

/// Downloads a file (raw bytes, streamed; at most 1 GiB).
#[utoipa::path(
    get, path = "/api/v1/sandboxes/{id}/files/content", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), PathQuery),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream"),
        (status = 404, description = "No such sandbox or file", body = corral_types::Problem),
        (status = 413, description = "Larger than 1 GiB", body = corral_types::Problem),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
) -> Result<Response, ApiError> {
    let (size, mut reader) = files::open(&state, &principal, &id, query.path).await?;
    // Chunks cross from the blocking reader through a small channel: at
    // most a few chunks are in memory, however large the file.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut sent = 0u64;
        loop {
            let mut chunk = vec![0u8; DOWNLOAD_CHUNK];
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    sent += n as u64;
                    if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                        return; // the client went away
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if sent != size {
            // Cut short: fail the body so the client sees a broken transfer,
            // not a silently short file.
            let _ = tx.blocking_send(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file ended early",
            )));
        }
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response())
}

/// Uploads a file: the request body's raw bytes replace it. With a
/// `Content-Length` it is streamed to the sandbox and may be as large as
/// `server.upload_limit_bytes` (and the sandbox's disk); without one it is
/// taken whole, under `server.body_limit_bytes`.
#[utoipa::path(
    put, path = "/api/v1/sandboxes/{id}/files/content", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), PathQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "Written"),
        (status = 404, description = "No such sandbox or directory", body = corral_types::Problem),
        (status = 413, description = "Larger than the upload limit (or, without a Content-Length, the body limit)", body = corral_types::Problem),
        (status = 507, description = "The sandbox's disk has no room for it (`no_space`); the old file, if any, is kept", body = corral_types::Problem),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
    Query(query): Query<PathQuery>,
    headers: http::HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(size) = length else {
        // No announced size (chunked): the agent needs one, so take it whole
        // (the body limit still applies).
        let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|_| {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the upload is larger than the body limit",
            )
        })?;
        files::write(&state, &principal, &id, query.path, bytes).await?;
        return Ok(StatusCode::NO_CONTENT);
    };
    // Streamed: chunks go to the agent as they arrive, a few at a time.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let feeder = tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = tokio_stream::StreamExt::next(&mut stream).await {
            let chunk = chunk.map_err(std::io::Error::other);
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    let source = ChannelReader {
        rx,
        chunk: Bytes::new(),
    };
    let written = files::write_from(&state, &principal, &id, query.path, size, source).await;
    feeder.abort();
    written?;
    Ok(StatusCode::NO_CONTENT)
}

/// A blocking reader over the chunks an async task sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    chunk: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(error)) => return Err(error),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Creates a directory.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/files/mkdir", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")), request_body = MkdirRequest,
    responses((status = 204, description = "Created"), (status = 409, description = "Exists", body = corral_types::Problem))
)]
pub async fn mkdir(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MkdirRequest>,
) -> Result<StatusCode, ApiError> {
    files::mkdir(&state, &principal, &id, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Moves or renames a path.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/files/move", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")), request_body = MoveRequest,
    responses((status = 204, description = "Moved"), (status = 404, description = "No such path", body = corral_types::Problem))
)]
pub async fn rename(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MoveRequest>,
) -> Result<StatusCode, ApiError> {
    files::rename(&state, &principal, &id, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a path (a directory only with `recursive`).
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/files/delete", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")), request_body = DeleteRequest,
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such path", body = corral_types::Problem))
)]
pub async fn delete(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DeleteRequest>,
) -> Result<StatusCode, ApiError> {
    files::delete(&state, &principal, &id, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes a path's permission bits.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/files/chmod", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")), request_body = ChmodRequest,
    responses((status = 204, description = "Changed"), (status = 404, description = "No such path", body = corral_types::Problem))
)]
pub async fn chmod(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ChmodRequest>,
) -> Result<StatusCode, ApiError> {
    files::chmod(&state, &principal, &id, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?path=&pattern=&contains=&limit=` of a search.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Absolute directory to search under.
    path: String,
    /// Glob for file names (`*` and `?`; default `*`).
    pattern: Option<String>,
    /// Literal text: only files holding it, one match per line.
    contains: Option<String>,
    /// At most this many matches, 1–1000 (default 200).
    limit: Option<usize>,
}

/// Finds files by name (a glob) and, with `contains`, the lines holding a
/// text. The walk never follows symlinks and skips /proc, /sys and /dev.
#[utoipa::path(
    get, path = "/api/v1/sandboxes/{id}/files/search", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), SearchQuery),
    responses(
        (status = 200, description = "Matches", body = SearchResponse),
        (status = 404, description = "No such sandbox or directory", body = corral_types::Problem),
    )
)]
pub async fn search(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
    Query(query): Query<SearchQuery>,
) -> Result<Json<SearchResponse>, ApiError> {
    let query = files::Search {
        path: query.path,
        pattern: query.pattern,
        contains: query.contains,
        limit: query.limit,
    };
    Ok(Json(files::search(&state, &principal, &id, query).await?))
}

/// Replaces every occurrence of a text in a file (written whole, then
/// renamed over the old one).
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/files/replace", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")), request_body = ReplaceRequest,
    responses(
        (status = 200, description = "Replaced", body = ReplaceResponse),
        (status = 404, description = "No such sandbox or file", body = corral_types::Problem),
        (status = 422, description = "Not a UTF-8 text file, or `find` empty", body = corral_types::Problem),
    )
)]
pub async fn replace(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReplaceRequest>,
) -> Result<Json<ReplaceResponse>, ApiError> {
    Ok(Json(files::replace(&state, &principal, &id, body).await?))
}
