//! API keys: created with their secret shown once, listed without it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, patch};
use axum::{Json, Router};

use corral_service::api_keys;
use corral_types::identity::{
    ApiKeyResponse, CreateApiKeyRequest, CreatedApiKeyResponse, UpdateApiKeyRequest,
};

use crate::auth::{Caller, ClientInfo};
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/api-keys", get(list).post(create))
        .route("/api/v1/api-keys/{id}", patch(update).delete(revoke))
        .route("/api/v1/api-keys/current", delete(revoke_current))
}

/// Creates a key. The response's `key` is the only time the secret is shown.
#[utoipa::path(
    post, path = "/api/v1/api-keys", tag = "api-keys", security(("bearer" = [])),
    request_body = CreateApiKeyRequest,
    responses(
        (status = 201, description = "Created; store `key` now", body = CreatedApiKeyResponse),
        (status = 422, description = "Invalid field", body = corral_types::Problem),
        (status = 429, description = "Plan limit on keys reached", body = corral_types::Problem),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    ApiJson(body): ApiJson<CreateApiKeyRequest>,
) -> Result<(StatusCode, Json<CreatedApiKeyResponse>), ApiError> {
    let created = api_keys::create(&state, &principal, &client, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The caller's keys, newest first, without secrets.
#[utoipa::path(
    get, path = "/api/v1/api-keys", tag = "api-keys", security(("bearer" = [])),
    responses((status = 200, description = "Keys", body = [ApiKeyResponse]))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Caller,
) -> Result<Json<Vec<ApiKeyResponse>>, ApiError> {
    Ok(Json(api_keys::list(&state, &principal).await?))
}

/// Turns a key on or off; takes effect on the next request.
#[utoipa::path(
    patch, path = "/api/v1/api-keys/{id}", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "Key id")),
    request_body = UpdateApiKeyRequest,
    responses(
        (status = 200, description = "Updated", body = ApiKeyResponse),
        (status = 404, description = "No such key of yours", body = corral_types::Problem),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateApiKeyRequest>,
) -> Result<Json<ApiKeyResponse>, ApiError> {
    Ok(Json(
        api_keys::update(&state, &principal, &client, &id, body).await?,
    ))
}

/// Revokes a key at once.
#[utoipa::path(
    delete, path = "/api/v1/api-keys/{id}", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key of yours", body = corral_types::Problem),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    api_keys::revoke(&state, &principal, &client, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes the API key this request is made with. Any key may end itself,
/// whatever its scopes: `corral logout` revokes the key `corral login` made.
#[utoipa::path(
    delete, path = "/api/v1/api-keys/current", tag = "api-keys", security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "The request was not made with an API key", body = corral_types::Problem),
    )
)]
pub async fn revoke_current(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
) -> Result<StatusCode, ApiError> {
    api_keys::revoke_current(&state, &principal, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
