//! API keys: created with their secret shown once, listed without it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, patch};
use axum::{Json, Router};

use corral_core::auth::Scope;
use corral_core::clock::{parse_rfc3339, rfc3339};
use corral_store::{NewApiKey, StoreError};
use corral_types::ErrorCode;
use corral_types::identity::{
    ApiKeyResponse, CreateApiKeyRequest, CreatedApiKeyResponse, UpdateApiKeyRequest,
};

use crate::auth::Caller;
use crate::auth::ClientInfo;
use crate::auth::credentials::{self, API_KEY_VISIBLE};
use crate::extract::ApiJson;
use crate::routes::auth::audit;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/api-keys", get(list).post(create))
        .route("/api/v1/api-keys/{id}", patch(update).delete(revoke))
        .route("/api/v1/api-keys/current", delete(revoke_current))
}

fn response(key: corral_store::ApiKey) -> ApiKeyResponse {
    ApiKeyResponse {
        id: key.id,
        name: key.name,
        prefix: key.prefix,
        org_id: key.org_id,
        scopes: key.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        is_active: key.is_active,
        expires_at: key.expires_at.map(rfc3339),
        last_used_at: key.last_used_at.map(rfc3339),
        usage_count: key.usage_count,
        created_at: rfc3339(key.created_at),
    }
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
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 100 characters",
        ));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::invalid_field("scopes", "give at least one scope"));
    }
    let mut scopes = Vec::new();
    for (i, s) in body.scopes.iter().enumerate() {
        let scope: Scope = s.parse().map_err(|e: corral_core::auth::UnknownValue| {
            ApiError::invalid_field(&format!("scopes[{i}]"), e.to_string())
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    let now = state.clock.now_ms();
    let expires_at = match body.expires_at.as_deref() {
        None => None,
        Some(text) => {
            let at = parse_rfc3339(text)
                .ok_or_else(|| ApiError::invalid_field("expires_at", "must be an RFC 3339 time"))?;
            if at <= now {
                return Err(ApiError::invalid_field(
                    "expires_at",
                    "must be in the future",
                ));
            }
            Some(at)
        }
    };
    // A key acts in an org its owner belongs to; another org is "not found".
    let org_id = match body.org_id {
        None => principal.org_id.clone(),
        Some(org_id) => {
            if state
                .store
                .org_role(&org_id, &principal.user_id)
                .await?
                .is_none()
            {
                return Err(ApiError::not_found("organization"));
            }
            org_id
        }
    };
    let user = state
        .store
        .user_by_id(&principal.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let plan = state.store.plan(&user.plan_id).await?;
    let secret = credentials::new_api_key();
    let new = NewApiKey {
        user_id: principal.user_id.clone(),
        org_id,
        name,
        prefix: secret[..API_KEY_VISIBLE].to_owned(),
        key_hash: credentials::sha256_hex(&secret),
        scopes,
        expires_at,
        max_keys: plan.and_then(|p| p.max_api_keys),
    };
    let key = state
        .store
        .create_api_key(now, new)
        .await
        .map_err(|e| match e {
            StoreError::QuotaExceeded(_) => ApiError::new(
                ErrorCode::QuotaExceeded,
                "your plan's limit on API keys is reached; revoke one or change plan",
            ),
            other => other.into(),
        })?;
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        Some(&key.org_id),
        "api_key.create",
        "api_key",
        Some(&key.id),
        "success",
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKeyResponse {
            key: secret,
            api_key: response(key),
        }),
    ))
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
    // Show usage up to this very request.
    state.key_usage.flush(&state.store).await?;
    let keys = state.store.list_api_keys(&principal.user_id).await?;
    Ok(Json(keys.into_iter().map(response).collect()))
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
    if !state
        .store
        .set_api_key_active(&principal.user_id, &id, body.is_active)
        .await?
    {
        return Err(ApiError::not_found("API key"));
    }
    audit(
        &state,
        &client,
        Some(&principal.user_id),
        None,
        "api_key.update",
        "api_key",
        Some(&id),
        "success",
    )
    .await;
    let key = state
        .store
        .api_key(&principal.user_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    Ok(Json(response(key)))
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
    delete_key(&state, &principal, &client, &id).await
}

/// Deletes the caller's key `id` (404 when it has none such) and audits it.
async fn delete_key(
    state: &AppState,
    principal: &Caller,
    client: &ClientInfo,
    id: &str,
) -> Result<StatusCode, ApiError> {
    if !state.store.delete_api_key(&principal.user_id, id).await? {
        return Err(ApiError::not_found("API key"));
    }
    audit(
        state,
        client,
        Some(&principal.user_id),
        None,
        "api_key.revoke",
        "api_key",
        Some(id),
        "success",
    )
    .await;
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
    let corral_core::auth::Credential::ApiKey { key_id, .. } = &principal.credential else {
        return Err(ApiError::new(
            corral_types::ErrorCode::BadRequest,
            "this request is not made with an API key; revoke a key by id with `DELETE /api/v1/api-keys/{id}`",
        ));
    };
    delete_key(&state, &principal, &client, key_id).await
}
