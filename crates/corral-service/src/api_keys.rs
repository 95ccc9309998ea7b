//! API keys: created with their secret shown once, listed without it,
//! turned off or revoked by their owner. A key acts for its owner in one
//! org the owner belongs to, with the scopes it was given.

use corral_core::auth::{Credential, Principal, Scope};
use corral_core::clock::{parse_rfc3339, rfc3339};
use corral_store::{NewApiKey, StoreError};
use corral_types::identity::{
    ApiKeyResponse, CreateApiKeyRequest, CreatedApiKeyResponse, UpdateApiKeyRequest,
};

use crate::audit::{ClientInfo, audit};
use crate::credentials::{self, API_KEY_VISIBLE};
use crate::{Service, ServiceError, ServiceResult};

/// The longest key name, in characters.
const NAME_MAX_CHARS: usize = 100;

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

/// The scopes asked for, each known, without repeats, at least one.
fn parse_scopes(scopes: &[String]) -> ServiceResult<Vec<Scope>> {
    if scopes.is_empty() {
        return Err(ServiceError::invalid_field(
            "scopes",
            "give at least one scope",
        ));
    }
    let mut parsed = Vec::new();
    for (i, text) in scopes.iter().enumerate() {
        let scope: Scope = text.parse().map_err(|e: corral_core::auth::UnknownValue| {
            ServiceError::invalid_field(&format!("scopes[{i}]"), e.to_string())
        })?;
        if !parsed.contains(&scope) {
            parsed.push(scope);
        }
    }
    Ok(parsed)
}

/// Audits a successful change of the caller's key `id`.
async fn audit_key(
    service: &Service,
    client: &ClientInfo,
    caller: &Principal,
    action: &str,
    id: &str,
) {
    audit(
        service,
        client,
        Some(&caller.user_id),
        None,
        action,
        "api_key",
        Some(id),
        "success",
    )
    .await;
}

/// Creates a key for the caller, within their plan's number of keys. The
/// result's `key` is the only time the secret is shown.
pub async fn create(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    input: CreateApiKeyRequest,
) -> ServiceResult<CreatedApiKeyResponse> {
    let name = input.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > NAME_MAX_CHARS {
        return Err(ServiceError::invalid_field(
            "name",
            "must be 1 to 100 characters",
        ));
    }
    let scopes = parse_scopes(&input.scopes)?;
    let now = service.clock.now_ms();
    let expires_at = match input.expires_at.as_deref() {
        None => None,
        Some(text) => {
            let at = parse_rfc3339(text).ok_or_else(|| {
                ServiceError::invalid_field("expires_at", "must be an RFC 3339 time")
            })?;
            if at <= now {
                return Err(ServiceError::invalid_field(
                    "expires_at",
                    "must be in the future",
                ));
            }
            Some(at)
        }
    };
    // A key acts in an org its owner belongs to; another org is "not found".
    let org_id = match input.org_id {
        None => caller.org_id.clone(),
        Some(org_id) => {
            if service
                .store
                .org_role(&org_id, &caller.user_id)
                .await?
                .is_none()
            {
                return Err(ServiceError::not_found("organization"));
            }
            org_id
        }
    };
    let user = service
        .store
        .user_by_id(&caller.user_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("user"))?;
    let plan = service.store.plan(&user.plan_id).await?;
    let secret = credentials::new_api_key();
    let new = NewApiKey {
        user_id: caller.user_id.clone(),
        org_id,
        name,
        prefix: secret[..API_KEY_VISIBLE].to_owned(),
        key_hash: credentials::sha256_hex(&secret),
        scopes,
        expires_at,
        max_keys: plan.and_then(|p| p.max_api_keys),
    };
    let key = service
        .store
        .create_api_key(now, new)
        .await
        .map_err(|e| match e {
            StoreError::QuotaExceeded(_) => ServiceError::Quota {
                detail: "your plan's limit on API keys is reached; revoke one or change plan"
                    .to_owned(),
                resets_at: None,
                retry_after_secs: None,
            },
            other => other.into(),
        })?;
    audit(
        service,
        client,
        Some(&caller.user_id),
        Some(&key.org_id),
        "api_key.create",
        "api_key",
        Some(&key.id),
        "success",
    )
    .await;
    Ok(CreatedApiKeyResponse {
        key: secret,
        api_key: response(key),
    })
}

/// The caller's keys, newest first, without secrets, with usage up to now.
pub async fn list(service: &Service, caller: &Principal) -> ServiceResult<Vec<ApiKeyResponse>> {
    service.key_usage.flush(&service.store).await?;
    let keys = service.store.list_api_keys(&caller.user_id).await?;
    Ok(keys.into_iter().map(response).collect())
}

/// Turns the caller's key `id` on or off; takes effect on the next request.
pub async fn update(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
    input: UpdateApiKeyRequest,
) -> ServiceResult<ApiKeyResponse> {
    if !service
        .store
        .set_api_key_active(&caller.user_id, id, input.is_active)
        .await?
    {
        return Err(ServiceError::not_found("API key"));
    }
    audit_key(service, client, caller, "api_key.update", id).await;
    let key = service
        .store
        .api_key(&caller.user_id, id)
        .await?
        .ok_or_else(|| ServiceError::not_found("API key"))?;
    Ok(response(key))
}

/// Revokes the caller's key `id` at once ("not found" when they have none such).
pub async fn revoke(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
) -> ServiceResult<()> {
    if !service.store.delete_api_key(&caller.user_id, id).await? {
        return Err(ServiceError::not_found("API key"));
    }
    audit_key(service, client, caller, "api_key.revoke", id).await;
    Ok(())
}

/// Revokes the API key the caller acts with. Any key may end itself,
/// whatever its scopes: `corral logout` revokes the key `corral login` made.
pub async fn revoke_current(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
) -> ServiceResult<()> {
    let Credential::ApiKey { key_id, .. } = &caller.credential else {
        return Err(ServiceError::BadRequest(
            "this request is not made with an API key; revoke a key by id with `DELETE /api/v1/api-keys/{id}`"
                .to_owned(),
        ));
    };
    revoke(service, caller, client, key_id).await
}
