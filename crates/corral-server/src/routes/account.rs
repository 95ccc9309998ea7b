//! The caller's own account, and the plans.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use corral_core::clock::rfc3339;
use corral_core::validate::{check_password, check_username, normalize_email};
use corral_types::ErrorCode;
use corral_types::identity::{
    ChangePasswordRequest, PlanResponse, QuotaUsage, UpdateMeRequest, UsageResponse, UserResponse,
};

use crate::auth::credentials;
use crate::auth::{Caller, ClientInfo, CurrentUser};
use crate::extract::ApiJson;
use crate::quota;
use crate::routes::auth::audit;

use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users/me", get(me).patch(update_me))
        .route("/api/v1/users/me/password", post(change_password))
        .route("/api/v1/users/me/usage", get(usage))
        .route("/api/v1/plans", get(plans))
}

pub fn user_response(user: &corral_store::User) -> UserResponse {
    UserResponse {
        id: user.id.clone(),
        email: user.email.clone(),
        username: user.username.clone(),
        role: user.role.as_str().to_owned(),
        plan: user.plan_id.clone(),
        is_active: user.is_active,
        email_verified: user.email_verified,
        personal_org_id: user.personal_org_id.clone(),
        created_at: rfc3339(user.created_at),
    }
}

/// The signed-in user (also with any API key).
#[utoipa::path(
    get, path = "/api/v1/users/me", tag = "account", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserResponse),
        (status = 401, description = "Not signed in", body = corral_types::Problem),
    )
)]
pub async fn me(caller: Caller) -> axum::response::Response {
    use axum::response::IntoResponse;
    // Rendered once per cached account (see `auth::cache::Cached::me_body`).
    let cell = caller.me_body();
    let rendered = match cell.get() {
        Some(bytes) => Ok(bytes.clone()),
        None => {
            // Sized for an account (about 300 bytes), in one piece.
            let mut body = Vec::with_capacity(512);
            serde_json::to_writer(&mut body, &user_response(caller.user()))
                .map(|()| cell.get_or_init(|| body.into()).clone())
        }
    };
    match rendered {
        Ok(bytes) => (
            [(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(error) => ApiError::internal(error).into_response(),
    }
}

/// Changes the caller's username or email. A new email is unverified until
/// proven again. Needs a signed-in session, not an API key.
#[utoipa::path(
    patch, path = "/api/v1/users/me", tag = "account", security(("bearer" = [])),
    request_body = UpdateMeRequest,
    responses(
        (status = 200, description = "The updated account", body = UserResponse),
        (status = 409, description = "Username or email taken", body = corral_types::Problem),
        (status = 422, description = "A value is refused", body = corral_types::Problem),
    )
)]
pub async fn update_me(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<UpdateMeRequest>,
) -> Result<Json<UserResponse>, ApiError> {
    if let Some(username) = &body.username {
        check_username(username).map_err(|m| ApiError::invalid_field("username", m))?;
    }
    let email = body
        .email
        .as_deref()
        .map(normalize_email)
        .transpose()
        .map_err(|m| ApiError::invalid_field("email", m))?;
    state
        .store
        .update_profile(
            state.clock.now_ms(),
            &user.id,
            body.username.as_deref(),
            email.as_deref(),
        )
        .await?;
    audit(
        &state,
        &client,
        Some(&user.id),
        None,
        "user.update",
        "user",
        Some(&user.id),
        "success",
    )
    .await;
    let user = state
        .store
        .user_by_id(&user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(user_response(&user)))
}

/// The caller's plan quotas and how much of each is used today.
#[utoipa::path(
    get, path = "/api/v1/users/me/usage", tag = "account", security(("bearer" = [])),
    responses(
        (status = 200, description = "Quotas and usage", body = UsageResponse),
        (status = 401, description = "Not signed in", body = corral_types::Problem),
    )
)]
pub async fn usage(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<UsageResponse>, ApiError> {
    let now = state.clock.now_ms();
    let day = quota::day_of(now);
    state.daily_usage.flush(&state.store).await?;
    let counts = state.store.daily_usage(&user.id, day).await?;
    let quota_of = |name: &str, period: Option<&str>, used: i64, limit: Option<i64>| QuotaUsage {
        name: name.to_owned(),
        period: period.map(str::to_owned),
        used,
        limit,
        remaining: limit.map(|l| (l - used).max(0)),
    };
    let mut quotas: Vec<QuotaUsage> = quota::Daily::ALL
        .iter()
        .map(|daily| {
            let used = counts
                .iter()
                .find(|(metric, _)| metric == daily.name())
                .map_or(0, |(_, count)| *count);
            quota_of(daily.name(), Some("day"), used, daily.limit(&state, &user))
        })
        .collect();
    let keys = state.store.list_api_keys(&user.id).await?.len();
    let max_keys = state.plans.get(&user.plan_id).and_then(|p| p.max_api_keys);
    quotas.push(quota_of(
        "api_keys",
        None,
        i64::try_from(keys).unwrap_or(i64::MAX),
        max_keys,
    ));
    let snippets = state.store.snippet_count(&user.id).await?;
    let max_snippets = state.plans.get(&user.plan_id).and_then(|p| p.max_snippets);
    quotas.push(quota_of("library_snippets", None, snippets, max_snippets));
    Ok(Json(UsageResponse {
        plan: user.plan_id.clone(),
        day: rfc3339(day * quota::DAY_MS)[..10].to_owned(),
        resets_at: rfc3339((day + 1) * quota::DAY_MS),
        quotas,
    }))
}

/// Every plan and its limits; `null` is unlimited.
#[utoipa::path(
    get, path = "/api/v1/plans", tag = "account",
    responses((status = 200, description = "Plans, cheapest first", body = [PlanResponse]))
)]
pub async fn plans(State(state): State<AppState>) -> Result<Json<Vec<PlanResponse>>, ApiError> {
    let plans = state.store.plans().await?;
    Ok(Json(
        plans
            .into_iter()
            .map(|p| PlanResponse {
                id: p.id,
                name: p.name,
                executions_per_day: p.executions_per_day,
                api_calls_per_day: p.api_calls_per_day,
                max_time_secs: p.max_time_secs,
                max_memory_mb: p.max_memory_mb,
                max_snippets: p.max_snippets,
                max_api_keys: p.max_api_keys,
                max_sandboxes: p.max_sandboxes,
                max_cpus: p.max_cpus,
                max_disk_mb: p.max_disk_mb,
                max_concurrent_executions: p.max_concurrent_executions,
            })
            .collect(),
    ))
}

/// Changes the caller's password and signs out every other session (their
/// refresh tokens are revoked). Needs a signed-in session, not an API key.
#[utoipa::path(
    post, path = "/api/v1/users/me/password", tag = "account", security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Changed"),
        (status = 403, description = "The current password is wrong, or an API key was used", body = corral_types::Problem),
        (status = 422, description = "The new password is refused", body = corral_types::Problem),
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let user = state
        .store
        .user_by_id(&principal.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if let Err(message) = check_password(&body.new_password, &user.username, &user.email) {
        return Err(ApiError::invalid_field("new_password", message));
    }
    let (current, hash) = (body.current_password, user.password_hash.clone());
    let matches =
        tokio::task::spawn_blocking(move || credentials::verify_password(&current, &hash))
            .await
            .map_err(ApiError::internal)?;
    if !matches {
        audit(
            &state,
            &client,
            Some(&user.id),
            None,
            "user.password_change",
            "user",
            Some(&user.id),
            "failure",
        )
        .await;
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "the current password is wrong",
        ));
    }
    let new = body.new_password;
    let new_hash = tokio::task::spawn_blocking(move || credentials::hash_password(&new))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(anyhow::anyhow!("hashing failed: {e}")))?;
    state
        .store
        .set_password(state.clock.now_ms(), &user.id, &new_hash)
        .await?;
    audit(
        &state,
        &client,
        Some(&user.id),
        None,
        "user.password_change",
        "user",
        Some(&user.id),
        "success",
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
