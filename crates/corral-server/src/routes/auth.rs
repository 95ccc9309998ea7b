//! Sign-up, sign-in, token refresh and sign-out: the HTTP side of
//! [`corral_service::accounts`] and [`corral_service::sessions`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};

use corral_service::{accounts, sessions};
use corral_types::identity::{
    LoginRequest, RefreshRequest, RegisterRequest, TokenResponse, UserResponse,
};

use crate::auth::ClientInfo;
use crate::extract::ApiJson;
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
}

/// Creates an account with a personal organization.
#[utoipa::path(
    post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = UserResponse),
        (status = 409, description = "Email or username taken", body = corral_types::Problem),
        (status = 422, description = "Invalid field", body = corral_types::Problem),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    let user = accounts::register(&state, &client, body).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Exchanges a username or email and password for a token pair.
///
/// Unknown users and wrong passwords get the same answer in similar time;
/// after 5 consecutive failures a login name is locked with growing back-off
/// (429 with `Retry-After`), whether or not the user exists.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Invalid credentials", body = corral_types::Problem),
        (status = 429, description = "Locked after repeated failures", body = corral_types::Problem),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    Ok(Json(sessions::login(&state, &client, body).await?))
}

/// Exchanges a refresh token for a new pair. Each refresh token works once;
/// presenting a spent one revokes every token descended from the same sign-in.
#[utoipa::path(
    post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New token pair", body = TokenResponse),
        (status = 401, description = "Invalid, expired or reused token", body = corral_types::Problem),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    Ok(Json(
        sessions::refresh(&state, &client, &body.refresh_token).await?,
    ))
}

/// Revokes the refresh token and every token of its sign-in, the access
/// tokens included. Always 204, so it reveals nothing about the token.
#[utoipa::path(
    post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "Signed out"))
)]
pub async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    sessions::logout(&state, &client, &body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}
