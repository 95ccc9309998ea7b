//! `/api/v1/sandboxes/{id}/contexts…`: interpreter contexts, persistent
//! interpreters in a sandbox that keep their variables between runs, over
//! [`corral_service::contexts`] (which holds the kernel and its protocol).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};

use corral_service::contexts as use_case;
use corral_types::contexts::{ContextInfo, CreateContextRequest, RunCodeRequest, RunResult};

use crate::auth::Caller;
use crate::auth::{ClientInfo, CurrentUser};
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sandboxes/{id}/contexts", post(create).get(list))
        .route("/api/v1/sandboxes/{id}/contexts/{cid}", delete(remove))
        .route("/api/v1/sandboxes/{id}/contexts/{cid}/run", post(run))
}

/// Creates an interpreter context (a persistent interpreter) in the sandbox.
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/contexts", tag = "contexts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = CreateContextRequest,
    responses(
        (status = 201, description = "Created and ready", body = ContextInfo),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "Not running, or too many processes", body = corral_types::Problem),
        (status = 422, description = "Unsupported language, or its interpreter cannot start", body = corral_types::Problem),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreateContextRequest>,
) -> Result<(StatusCode, Json<ContextInfo>), ApiError> {
    let context = use_case::create(&state, &principal, &client, &id, body).await?;
    Ok((StatusCode::CREATED, Json(context)))
}

/// The sandbox's live contexts, oldest first.
#[utoipa::path(
    get, path = "/api/v1/sandboxes/{id}/contexts", tag = "contexts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Contexts", body = [ContextInfo]),
        (status = 404, description = "No such sandbox in this org", body = corral_types::Problem),
        (status = 409, description = "The sandbox is not running", body = corral_types::Problem),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<ContextInfo>>, ApiError> {
    Ok(Json(use_case::list(&state, &principal, &id).await?))
}

/// Ends a context (its interpreter is killed; its state is gone).
#[utoipa::path(
    delete, path = "/api/v1/sandboxes/{id}/contexts/{cid}", tag = "contexts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), ("cid" = String, Path, description = "Context id")),
    responses(
        (status = 204, description = "Ended"),
        (status = 404, description = "No such sandbox or context", body = corral_types::Problem),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path((id, cid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    use_case::remove(&state, &principal, &client, &id, &cid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs code in a context. Its variables, imports and definitions stay for
/// the next run; the value of a final expression and any matplotlib
/// figures come back in `results`. An exception is reported in `error`
/// (the context stays usable); so is a run past its time limit, which is
/// interrupted (a `TimeoutError`; code that ignores the interrupt ends its
/// context).
#[utoipa::path(
    post, path = "/api/v1/sandboxes/{id}/contexts/{cid}/run", tag = "contexts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox id"), ("cid" = String, Path, description = "Context id")),
    request_body = RunCodeRequest,
    responses(
        (status = 200, description = "Ran (with or without an exception)", body = RunResult),
        (status = 404, description = "No such sandbox or context", body = corral_types::Problem),
        (status = 409, description = "The context is running other code, or has ended", body = corral_types::Problem),
        (status = 422, description = "A bad time limit", body = corral_types::Problem),
    )
)]
pub async fn run(
    State(state): State<AppState>,
    principal: Caller,
    CurrentUser(user): CurrentUser,
    client: ClientInfo,
    Path((id, cid)): Path<(String, String)>,
    ApiJson(body): ApiJson<RunCodeRequest>,
) -> Result<Json<RunResult>, ApiError> {
    Ok(Json(
        use_case::run(&state, &principal, &user, &client, &id, &cid, body).await?,
    ))
}
