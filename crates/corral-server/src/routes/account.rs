//! The caller's own account, and the plans.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use corral_service::accounts::{self, user_response};
use corral_types::identity::{
    ChangePasswordRequest, PlanResponse, UpdateMeRequest, UsageResponse, UserResponse,
};

use crate::auth::{Caller, ClientInfo, CurrentUser};
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users/me", get(me).patch(update_me))
        .route("/api/v1/users/me/password", post(change_password))
        .route("/api/v1/users/me/usage", get(usage))
        .route("/api/v1/plans", get(plans))
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
    // Rendered once per cached account (see `corral_service::cache::Cached::me_body`).
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
    Ok(Json(
        accounts::update_me(&state, &user, &client, body).await?,
    ))
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
    Ok(Json(accounts::usage(&state, &user).await?))
}

/// Every plan and its limits; `null` is unlimited.
#[utoipa::path(
    get, path = "/api/v1/plans", tag = "account",
    responses((status = 200, description = "Plans, cheapest first", body = [PlanResponse]))
)]
pub async fn plans(State(state): State<AppState>) -> Result<Json<Vec<PlanResponse>>, ApiError> {
    Ok(Json(accounts::plans(&state).await?))
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
    accounts::change_password(&state, &principal, &client, body).await?;
    Ok(StatusCode::NO_CONTENT)
}
