//! File use cases in a running sandbox, each carried out by the agent
//! inside it: nothing here resolves a sandbox path on the host. The
//! surface moves the bytes (a download's reader, an upload's source).

use std::io::{BufReader, Read, Take};
use std::os::unix::net::UnixStream;

use corral_core::auth::Principal;
use corral_runtime::{RuntimeError, Sandbox};
use corral_types::agent::{AgentRequest, AgentResponse, FileInfo};
use corral_types::sandbox::{
    ChmodRequest, DeleteRequest, MkdirRequest, MoveRequest, ReplaceRequest, ReplaceResponse,
    SearchResponse,
};

use super::{running, unreachable_sandbox};
use crate::{Service, ServiceError, ServiceResult};

/// Largest file a download serves (streamed: it is never held whole).
pub const MAX_DOWNLOAD: u64 = 1024 * 1024 * 1024;
/// Matches a search returns when it names no limit, and the most it may ask.
const DEFAULT_SEARCH_RESULTS: usize = 200;
const MAX_SEARCH_RESULTS: usize = 1000;
/// Longest file name glob of a search.
const MAX_PATTERN_BYTES: usize = 256;

/// The agent's refusal as a use case's error.
pub fn refused(error: RuntimeError) -> ServiceError {
    match error {
        RuntimeError::Refused { kind, message } => match kind.as_str() {
            "not_found" => ServiceError::NotFound(message),
            "exists" => ServiceError::Conflict(message),
            "too_large" => ServiceError::TooLarge(message),
            "no_space" => ServiceError::NoSpace(format!("the sandbox's disk is full: {message}")),
            _ => ServiceError::invalid_field("path", message),
        },
        other => unreachable_sandbox(&other),
    }
}

/// Runs an agent operation on the caller's running sandbox `id` off the
/// async threads; a refusal becomes an error with [`refused`].
pub async fn on_sandbox<T: Send + 'static>(
    service: &Service,
    caller: &Principal,
    id: &str,
    op: impl FnOnce(Sandbox) -> Result<T, RuntimeError> + Send + 'static,
) -> ServiceResult<T> {
    let record = running(service, caller, id).await?;
    let sandbox = service.driver().attach(&record.id);
    tokio::task::spawn_blocking(move || op(sandbox))
        .await
        .map_err(ServiceError::internal)?
        .map_err(refused)
}

fn unexpected(answer: &AgentResponse) -> ServiceError {
    ServiceError::internal(anyhow::anyhow!("unexpected agent answer {answer:?}"))
}

async fn file_op(
    service: &Service,
    caller: &Principal,
    id: &str,
    request: AgentRequest,
) -> ServiceResult<AgentResponse> {
    on_sandbox(service, caller, id, move |s| s.file_op(&request)).await
}

/// A directory's entries.
pub async fn list(
    service: &Service,
    caller: &Principal,
    id: &str,
    path: String,
) -> ServiceResult<Vec<FileInfo>> {
    match file_op(service, caller, id, AgentRequest::List { path }).await? {
        AgentResponse::Entries { entries } => Ok(entries),
        other => Err(unexpected(&other)),
    }
}

/// A file's size and a reader of its bytes (at most [`MAX_DOWNLOAD`]).
pub type FileReader = Take<BufReader<UnixStream>>;

/// Opens a file to read: its size and its bytes as the agent sends them.
pub async fn open(
    service: &Service,
    caller: &Principal,
    id: &str,
    path: String,
) -> ServiceResult<(u64, FileReader)> {
    on_sandbox(service, caller, id, move |s| {
        s.open_file(&path, MAX_DOWNLOAD)
    })
    .await
}

/// Replaces a file with `bytes`.
pub async fn write(
    service: &Service,
    caller: &Principal,
    id: &str,
    path: String,
    bytes: bytes::Bytes,
) -> ServiceResult<()> {
    on_sandbox(service, caller, id, move |s| {
        s.write_file(&path, &bytes, None)
    })
    .await
}

/// Replaces a file with the `size` bytes `source` yields (read on a
/// blocking thread as the agent takes them).
pub async fn write_from(
    service: &Service,
    caller: &Principal,
    id: &str,
    path: String,
    size: u64,
    mut source: impl Read + Send + 'static,
) -> ServiceResult<()> {
    on_sandbox(service, caller, id, move |s| {
        s.write_file_from(&path, size, None, &mut source)
    })
    .await
}

/// Creates a directory.
pub async fn mkdir(
    service: &Service,
    caller: &Principal,
    id: &str,
    body: MkdirRequest,
) -> ServiceResult<()> {
    let request = AgentRequest::Mkdir {
        path: body.path,
        parents: body.parents,
    };
    file_op(service, caller, id, request).await.map(drop)
}

/// Moves or renames a path.
pub async fn rename(
    service: &Service,
    caller: &Principal,
    id: &str,
    body: MoveRequest,
) -> ServiceResult<()> {
    let request = AgentRequest::Move {
        from: body.from,
        to: body.to,
    };
    file_op(service, caller, id, request).await.map(drop)
}

/// Deletes a path (a directory only with `recursive`).
pub async fn delete(
    service: &Service,
    caller: &Principal,
    id: &str,
    body: DeleteRequest,
) -> ServiceResult<()> {
    let request = AgentRequest::Delete {
        path: body.path,
        recursive: body.recursive,
    };
    file_op(service, caller, id, request).await.map(drop)
}

/// Changes a path's permission bits (`mode` in octal, at most `7777`).
pub async fn chmod(
    service: &Service,
    caller: &Principal,
    id: &str,
    body: ChmodRequest,
) -> ServiceResult<()> {
    let mode = u32::from_str_radix(&body.mode, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            ServiceError::invalid_field("mode", "must be an octal mode such as `755`")
        })?;
    let request = AgentRequest::Chmod {
        path: body.path,
        mode,
    };
    file_op(service, caller, id, request).await.map(drop)
}

/// What a search asks for, unchecked.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Absolute directory to search under.
    pub path: String,
    /// Glob for file names.
    pub pattern: Option<String>,
    /// Literal text: only files holding it, one match per line.
    pub contains: Option<String>,
    /// At most this many matches.
    pub limit: Option<usize>,
}

/// Finds files by name (a glob) and, with `contains`, the lines holding a text.
pub async fn search(
    service: &Service,
    caller: &Principal,
    id: &str,
    query: Search,
) -> ServiceResult<SearchResponse> {
    let limit = query.limit.unwrap_or(DEFAULT_SEARCH_RESULTS);
    if !(1..=MAX_SEARCH_RESULTS).contains(&limit) {
        return Err(ServiceError::invalid_field(
            "limit",
            "must be between 1 and 1000",
        ));
    }
    if query
        .pattern
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.len() > MAX_PATTERN_BYTES)
    {
        return Err(ServiceError::invalid_field(
            "pattern",
            "must be 1 to 256 characters",
        ));
    }
    let request = AgentRequest::Search {
        path: query.path,
        pattern: query.pattern,
        contains: query.contains,
        max_results: limit,
    };
    match file_op(service, caller, id, request).await? {
        AgentResponse::Matches { matches, truncated } => Ok(SearchResponse { matches, truncated }),
        other => Err(unexpected(&other)),
    }
}

/// Replaces every occurrence of a text in a file.
pub async fn replace(
    service: &Service,
    caller: &Principal,
    id: &str,
    body: ReplaceRequest,
) -> ServiceResult<ReplaceResponse> {
    if body.find.is_empty() {
        return Err(ServiceError::invalid_field("find", "must not be empty"));
    }
    let request = AgentRequest::Replace {
        path: body.path,
        find: body.find,
        replace: body.replace,
    };
    match file_op(service, caller, id, request).await? {
        AgentResponse::Replaced { count } => Ok(ReplaceResponse { replaced: count }),
        other => Err(unexpected(&other)),
    }
}
