//! Browser sign-in with a cookie session (see [`crate::auth::session`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http::{HeaderMap, header};

use corral_core::clock::rfc3339;
use corral_types::identity::{LoginRequest, SessionResponse};

use crate::auth::credentials::{random_token, sha256_hex};
use crate::auth::session::{self, SESSION_SECS};
use crate::auth::{ClientInfo, CurrentUser};
use crate::extract::ApiJson;
use crate::routes::account::user_response;
use crate::routes::auth::{audit, check_sign_in};
use crate::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/auth/session",
        post(sign_in).get(current).delete(sign_out),
    )
}

/// Signs in with a username or email and password and starts a browser
/// session: an HttpOnly cookie, and a CSRF token in the body. Same lockout
/// and answers as `/auth/login`.
#[utoipa::path(
    post, path = "/api/v1/auth/session", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = SessionResponse),
        (status = 401, description = "Invalid credentials", body = corral_types::Problem),
        (status = 429, description = "Locked after repeated failures", body = corral_types::Problem),
    )
)]
pub async fn sign_in(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let user = check_sign_in(&state, &client, body).await?;
    let now = state.clock.now_ms();
    let token = random_token(43);
    let expires_at = now + SESSION_SECS * 1000;
    state
        .store
        .create_session(now, &user.id, &sha256_hex(&token), expires_at)
        .await?;
    let body = SessionResponse {
        user: user_response(&user),
        csrf_token: session::csrf_token(&token),
        expires_at: rfc3339(expires_at),
    };
    Ok((
        [(
            header::SET_COOKIE,
            session::set_cookie(&state.config, Some(&token)),
        )],
        Json(body),
    )
        .into_response())
}

/// The current browser session and its CSRF token (for a page that loads
/// while already signed in).
#[utoipa::path(
    get, path = "/api/v1/auth/session", tag = "auth",
    responses(
        (status = 200, description = "The session", body = SessionResponse),
        (status = 401, description = "No live session cookie", body = corral_types::Problem),
    )
)]
pub async fn current(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
) -> Result<Json<SessionResponse>, ApiError> {
    let token = session::session_token(&state.config, &headers).ok_or_else(|| {
        ApiError::new(
            corral_types::ErrorCode::Unauthorized,
            "this endpoint is for browser sessions; no session cookie was sent",
        )
    })?;
    let (_, expires_at) = state
        .store
        .session_by_hash(&sha256_hex(&token), state.clock.now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::new(
                corral_types::ErrorCode::Unauthorized,
                "the session has ended",
            )
        })?;
    Ok(Json(SessionResponse {
        user: user_response(&user),
        csrf_token: session::csrf_token(&token),
        expires_at: rfc3339(expires_at),
    }))
}

/// Ends the browser session and clears its cookie (needs the CSRF token).
#[utoipa::path(
    delete, path = "/api/v1/auth/session", tag = "auth",
    responses((status = 204, description = "Signed out; the cookie is cleared"))
)]
pub async fn sign_out(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    client: ClientInfo,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = session::session_token(&state.config, &headers) {
        state.store.delete_session(&sha256_hex(&token)).await?;
        audit(
            &state,
            &client,
            Some(&user.id),
            None,
            "auth.session_end",
            "user",
            Some(&user.id),
            "success",
        )
        .await;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session::set_cookie(&state.config, None))],
    )
        .into_response())
}
